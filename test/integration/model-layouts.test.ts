/**
 * The file layouts people download, built from the fixture and loaded by the real engine: each must
 * give the tokens the fixture gives in its own layout.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { EngineInfo, EngineOptions } from '../../src/types.js';

let root: string;
let reference: number[];

async function greedy(options: EngineOptions): Promise<{ ids: number[]; info: EngineInfo }> {
  const engine = await createEngine(options);
  try {
    const ids: number[] = [];
    for await (const event of engine.generate({ inputs: 'Layout check', parameters: { max_new_tokens: 8, do_sample: false } })) {
      ids.push(event.token.id);
    }
    return { ids, info: engine.info };
  } finally {
    await engine.close();
  }
}

/** Renames the data file a graph names, in the graph too: the name has the same length, so no protobuf length changes. */
async function renameDataFile(graph: string, from: string, to: string): Promise<void> {
  expect(to.length).toBe(from.length);
  const bytes = await readFile(graph);
  let replaced = 0;
  for (let at = bytes.indexOf(from); at !== -1; at = bytes.indexOf(from, at + from.length)) {
    bytes.write(to, at, 'latin1');
    replaced++;
  }
  expect(replaced).toBeGreaterThan(0);
  await writeFile(graph, bytes);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'si-layouts-'));
  reference = (await greedy({ model: await ensureFixtureModel('tiny') })).ids;
  expect(reference).toHaveLength(8);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('model file layouts', () => {
  it("loads Xenova's onnx/decoder_model_merged.onnx name", async () => {
    const dir = join(root, 'xenova');
    await cp(await ensureFixtureModel('tiny'), dir, { recursive: true });
    await rename(join(dir, 'onnx/model.onnx'), join(dir, 'onnx/decoder_model_merged.onnx'));
    const { ids, info } = await greedy({ model: dir });
    expect(info.onnxFile).toBe(join(dir, 'onnx/decoder_model_merged.onnx'));
    expect(ids).toEqual(reference);
  });

  it('loads the file modelFile names, with .onnx.data weights that ONNX Runtime finds from the graph', async () => {
    const dir = join(root, 'model-file');
    await cp(await ensureFixtureModel('tiny', { externalData: true }), dir, { recursive: true });
    await mkdir(join(dir, 'cpu-int4'));
    await rename(join(dir, 'onnx/model.onnx'), join(dir, 'cpu-int4/model.onnx'));
    await rename(join(dir, 'onnx/model.onnx_data'), join(dir, 'cpu-int4/model.onnx.data'));
    await renameDataFile(join(dir, 'cpu-int4/model.onnx'), 'model.onnx_data', 'model.onnx.data');
    const { ids, info } = await greedy({ model: dir, modelFile: 'cpu-int4/model.onnx' });
    expect(info.onnxFile).toBe(join(dir, 'cpu-int4/model.onnx'));
    expect(ids).toEqual(reference);
  });

  it('loads an onnxruntime-genai folder without config.json or generation_config.json, stopping on its eos ids', async () => {
    const dir = join(root, 'genai');
    await cp(await ensureFixtureModel('tiny', { externalData: true }), dir, { recursive: true });
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    await rm(join(dir, 'config.json'));
    await rm(join(dir, 'generation_config.json'));
    // The data file keeps the name the graph's initializers give it, whatever the graph is called.
    await rename(join(dir, 'onnx/model.onnx'), join(dir, 'phi-mini-cpu.onnx'));
    await rename(join(dir, 'onnx/model.onnx_data'), join(dir, 'model.onnx_data'));
    const genai = {
      model: {
        type: 'llama',
        context_length: config.max_position_embeddings,
        vocab_size: config.vocab_size,
        eos_token_id: [config.eos_token_id, 7],
        decoder: {
          filename: 'phi-mini-cpu.onnx',
          head_size: config.head_dim,
          hidden_size: config.hidden_size,
          num_attention_heads: config.num_attention_heads,
          num_hidden_layers: config.num_hidden_layers,
          num_key_value_heads: config.num_key_value_heads,
        },
      },
      // The builder dumps the whole GenerationConfig: top_k 50 and repetition_penalty 1.0 are its defaults, not the authors' choice.
      search: { do_sample: true, temperature: 0.6, top_k: 50, top_p: 0.95, repetition_penalty: 1.0 },
    };
    await writeFile(join(dir, 'genai_config.json'), JSON.stringify(genai));
    const { ids, info } = await greedy({ model: dir });
    expect(info.onnxFile).toBe(join(dir, 'phi-mini-cpu.onnx'));
    expect(info.eosTokenIds).toEqual([config.eos_token_id, 7]);
    expect(info.generationDefaults).toEqual({ doSample: true, temperature: 0.6, topP: 0.95 });
    // Greedy tokens stop at the first eos id, so compare up to where the reference would have stopped.
    const stop = reference.findIndex((id) => id === 7);
    expect(ids).toEqual(stop === -1 ? reference : reference.slice(0, stop + 1));
  });
});
