import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/fixture/cli.js';
import { FIXTURE_SIZES, buildFixtureModel, ensureFixtureModel } from '../../src/fixture/index.js';

const FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'onnx/model.onnx',
];

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'fixture-build-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const read = (dir: string, file: string) => readFile(join(dir, file));
const readJson = async (dir: string, file: string) => JSON.parse(await readFile(join(dir, file), 'utf8'));

describe('buildFixtureModel', () => {
  it('writes byte-identical files for the same seed, different weights for another', async () => {
    const a = await buildFixtureModel({ out: join(root, 'a') });
    const b = await buildFixtureModel({ out: join(root, 'b'), seed: 42 });
    const c = await buildFixtureModel({ out: join(root, 'c'), seed: 7 });
    for (const file of FILES) expect((await read(a, file)).equals(await read(b, file)), file).toBe(true);
    expect((await read(a, 'onnx/model.onnx')).equals(await read(c, 'onnx/model.onnx'))).toBe(false);
    expect((await read(a, 'tokenizer.json')).equals(await read(c, 'tokenizer.json'))).toBe(true);
  });

  it('describes the model in config.json and generation_config.json as transformers does', async () => {
    const dir = join(root, 'a');
    const shape = FIXTURE_SIZES.tiny;
    const tokenizer = await readJson(dir, 'tokenizer.json');
    expect(await readJson(dir, 'config.json')).toMatchObject({
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: shape.hidden,
      num_hidden_layers: shape.layers,
      num_attention_heads: shape.heads,
      num_key_value_heads: shape.kvHeads,
      head_dim: shape.headDim,
      intermediate_size: shape.intermediate,
      vocab_size: Object.keys(tokenizer.model.vocab).length,
      max_position_embeddings: shape.maxPositions,
      rms_norm_eps: 1e-5,
      rope_theta: 100000,
      bos_token_id: 1,
      eos_token_id: 2,
      tie_word_embeddings: true,
      torch_dtype: 'float32',
    });
    expect(await readJson(dir, 'generation_config.json')).toMatchObject({ bos_token_id: 1, eos_token_id: 2 });
  });

  it('names the float16 model model_fp16.onnx and puts external data beside the graph', async () => {
    const fp16 = await buildFixtureModel({ out: join(root, 'fp16'), weights: 'fp16' });
    expect(await readdir(join(fp16, 'onnx'))).toEqual(['model_fp16.onnx']);
    const external = await buildFixtureModel({ out: join(root, 'external'), externalData: true });
    expect((await readdir(join(external, 'onnx'))).sort()).toEqual(['model.onnx', 'model.onnx_data']);
    const graphBytes = (await stat(join(external, 'onnx/model.onnx'))).size;
    const dataBytes = (await stat(join(external, 'onnx/model.onnx_data'))).size;
    expect(graphBytes).toBeLessThan(64 * 1024);
    expect(dataBytes).toBeGreaterThan((await stat(join(root, 'a/onnx/model.onnx'))).size * 0.9);
  });
});

describe('ensureFixtureModel', () => {
  it('builds once for concurrent callers, one directory per variant, no temporary leftovers', async () => {
    const dir = join(root, 'cache');
    const [first, second, fp16, gqa, gqaAgain] = await Promise.all([
      ensureFixtureModel('tiny', { dir }),
      ensureFixtureModel('tiny', { dir }),
      ensureFixtureModel('tiny', { dir, weights: 'fp16', seed: 3 }),
      ensureFixtureModel('tiny', { dir, attention: 'gqa', weights: 'q4' }),
      ensureFixtureModel('tiny', { dir, attention: 'gqa', weights: 'q4' }),
    ]);
    expect(first).toBe(join(dir, 'tiny'));
    expect(second).toBe(first);
    expect(fp16).toBe(join(dir, 'tiny-seed3-fp16'));
    expect([gqa, gqaAgain]).toEqual([join(dir, 'tiny-gqa-q4'), join(dir, 'tiny-gqa-q4')]);
    expect(await readdir(join(gqa, 'onnx'))).toEqual(['model_q4.onnx']);
    expect((await readdir(dir)).sort()).toEqual(['tiny', 'tiny-gqa-q4', 'tiny-seed3-fp16']);
    for (const file of FILES) await stat(join(first, file));
  });

  it('rebuilds a directory left by an older builder', async () => {
    const dir = join(root, 'cache');
    const stamp = join(dir, 'tiny', 'fixture.json');
    await writeFile(stamp, '{"format":0}\n');
    await ensureFixtureModel('tiny', { dir });
    expect(JSON.parse(await readFile(stamp, 'utf8')).format).toBeGreaterThan(0);
    expect((await readdir(dir)).sort()).toEqual(['tiny', 'tiny-gqa-q4', 'tiny-seed3-fp16']);
  });
});

describe('fixture CLI', () => {
  it('rejects bad arguments with the usage line', async () => {
    const lines: string[] = [];
    expect(await main(['--size', 'huge', '--out', join(root, 'x')], (l) => lines.push(l))).toBe(2);
    expect(lines.join('\n')).toMatch(/unknown size "huge" \(expected tiny, demo, bench\)\nusage: fixture --size/);
    expect(await main(['--size', 'tiny'], (l) => lines.push(l))).toBe(2);
    lines.length = 0;
    expect(await main(['--out', join(root, 'x'), '--weights', 'int3'], (l) => lines.push(l))).toBe(2);
    expect(await main(['--out', join(root, 'x'), '--attention', 'gqa', '--positions', 'column'], (l) => lines.push(l))).toBe(2);
    expect(await main(['--out', join(root, 'x'), '--attention', 'gqa', '--logits-to-keep'], (l) => lines.push(l))).toBe(2);
    expect(lines.map((l) => l.split('\n')[0])).toEqual([
      'unknown weights "int3" (expected fp32, fp16, q4, q8)',
      'positions "column" does not apply to attention "gqa": GroupQueryAttention takes positions from attention_mask, or from position_ids ("ids")',
      'logitsToKeep does not apply to attention "gqa": onnxruntime-genai\'s builder writes no num_logits_to_keep input',
    ]);
    await expect(ensureFixtureModel('tiny', { dir: root, positions: 'rows' as 'ids' })).rejects.toThrow(
      'unknown positions "rows" (expected ids, mask, column)',
    );
  });

  it('writes the variant it is asked for', async () => {
    const out = join(root, 'cli');
    const args = ['--size', 'tiny', '--out', out, '--seed', '5', '--weights', 'fp16'];
    args.push('--positions', 'mask', '--external-data', '--logits-to-keep');
    expect(await main(args, () => {})).toBe(0);
    const stamp = await readJson(out, 'fixture.json');
    expect(stamp).toMatchObject({ seed: 5, weights: 'fp16', positions: 'mask', externalData: true, logitsToKeep: true });
    expect((await readdir(join(out, 'onnx'))).sort()).toEqual(['model_fp16.onnx', 'model_fp16.onnx_data']);
  });
});
