import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { widenHalf } from '../../src/engine/half.js';
import { ensureFixtureGguf, fixtureLlamaModel, permuteRotaryRows, writeLlamaGguf } from '../../src/fixture/gguf/index.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../../src/fixture/gguf/ggml-blocks.js';
import { FIXTURE_SIZES } from '../../src/fixture/index.js';
import { CHAT_TEMPLATE, buildTokenizerFiles } from '../../src/fixture/tokenizer-files.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'gguf-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const half = (bits: number) => widenHalf(Uint16Array.of(bits), 0, 1)[0];

async function readBytes(file: string, offset: number | bigint, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, Number(offset));
    return buffer;
  } finally {
    await handle.close();
  }
}

describe('quantizeQ8_0', () => {
  it('writes a float16 scale max|x|/127 and 32 int8 values per block', () => {
    const values = Float32Array.from({ length: 64 }, (_, j) => (j < 32 ? j - 16 : 0));
    const bytes = quantizeQ8_0(values);
    expect(bytes.length).toBe(2 * 34);
    const d = half(bytes[0] | (bytes[1] << 8));
    expect(d).toBeCloseTo(16 / 127, 4);
    const q = new Int8Array(bytes.buffer, 2, 32);
    expect(q[0]).toBe(-127); // -16 is the largest magnitude
    expect(q[16]).toBe(0);
    for (let j = 0; j < 32; j++) expect(Math.abs(q[j] * d - values[j])).toBeLessThanOrEqual(d / 2 + 1e-3);
    expect([...bytes.subarray(34)]).toEqual(new Array(34).fill(0)); // an all-zero block has scale 0
  });
});

describe('quantizeQ4_0', () => {
  it('writes a float16 scale m/-8 and packs value j low, value j+16 high in byte j', () => {
    // m = -8 (the value of largest magnitude), so d = 1 and q = trunc(x + 8.5), clipped to 15.
    const values = Float32Array.from({ length: 32 }, (_, j) => (j - 16) / 2);
    const bytes = quantizeQ4_0(values);
    expect(bytes.length).toBe(18);
    expect(bytes[0] | (bytes[1] << 8)).toBe(0x3c00);
    const q = (j: number) => Math.min(15, Math.floor((j + 1) / 2));
    for (let j = 0; j < 16; j++) expect(bytes[2 + j], `byte ${j}`).toBe(q(j) | (q(j + 16) << 4));
  });
});

describe('permuteRotaryRows', () => {
  it("interleaves each head's two halves, as convert_hf_to_gguf's permute does", () => {
    const rows = Float32Array.from({ length: 8 }, (_, i) => i);
    expect([...permuteRotaryRows(rows, 2, 1)]).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
    const wide = Float32Array.from({ length: 8 }, (_, i) => i); // 4 rows of 2 values, one head
    expect([...permuteRotaryRows(wide, 1, 2)]).toEqual([0, 1, 4, 5, 2, 3, 6, 7]);
  });
});

describe('writeLlamaGguf', () => {
  const shape = FIXTURE_SIZES.tiny;
  const model = fixtureLlamaModel({ size: 'tiny' });

  it('writes llama metadata, the gpt2 tokenizer and the tensors convert_hf_to_gguf names', async () => {
    const file = join(root, 'tiny-f32.gguf');
    await writeLlamaGguf(file, model, 'F32');
    const info = await readGgufFileInfo(file, { logWarnings: false });
    expect(info.version).toBe(3);
    const m = info.metadata as Record<string, any>;
    expect(m.general).toMatchObject({ architecture: 'llama', file_type: 0, quantization_version: 2 });
    expect(m.llama).toMatchObject({
      block_count: shape.layers,
      context_length: shape.maxPositions,
      embedding_length: shape.hidden,
      feed_forward_length: shape.intermediate,
      vocab_size: shape.vocab,
      attention: { head_count: shape.heads, head_count_kv: shape.kvHeads, key_length: shape.headDim, value_length: shape.headDim },
      rope: { freq_base: 100000, dimension_count: shape.headDim },
    });
    expect(m.llama.attention.layer_norm_rms_epsilon).toBeCloseTo(1e-5, 10);

    const files = buildTokenizerFiles({ vocabSize: shape.vocab, modelMaxLength: shape.maxPositions });
    const hf = files['tokenizer.json'] as { model: { vocab: Record<string, number>; merges: string[] } };
    const tok = m.tokenizer.ggml;
    expect(tok.model).toBe('gpt2');
    expect(tok.pre).toBe('gpt-2');
    expect(tok.tokens.slice(0, 4)).toEqual(['<|endoftext|>', '<|im_start|>', '<|im_end|>', 'Ā']);
    expect(tok.tokens.every((t: string, id: number) => id < 3 || hf.model.vocab[t] === id)).toBe(true);
    expect(tok.token_type.slice(0, 5)).toEqual([3, 3, 3, 1, 1]);
    expect(tok.merges).toEqual(hf.model.merges);
    expect(tok).toMatchObject({
      bos_token_id: 1,
      eos_token_id: 2,
      unknown_token_id: 0,
      padding_token_id: 2,
      add_bos_token: false,
      add_eos_token: false,
    });
    expect(m.tokenizer.chat_template).toBe(CHAT_TEMPLATE);

    const tensors = info.tensorInfo!;
    expect(tensors.length).toBe(2 + 9 * shape.layers);
    expect(tensors.map((t) => t.name)).not.toContain('output.weight'); // tied: llama.cpp reuses token_embd
    const byName = new Map(tensors.map((t) => [t.name, t]));
    expect(byName.get('token_embd.weight')!.dimensions.map(Number)).toEqual([shape.hidden, shape.vocab]);
    expect(byName.get('blk.1.attn_k.weight')!.dimensions.map(Number)).toEqual([shape.hidden, shape.kvHeads * shape.headDim]);
    expect(byName.get('blk.1.ffn_down.weight')!.dimensions.map(Number)).toEqual([shape.intermediate, shape.hidden]);
    expect(byName.get('output_norm.weight')!.dimensions.map(Number)).toEqual([shape.hidden]);

    // attn_q holds q_proj in PyTorch's [out, in] layout with its rows permuted per head.
    const q = byName.get('blk.0.attn_q.weight')!;
    const stored = new Float32Array(new Uint8Array(await readBytes(file, q.fileOffset, shape.hidden * shape.hidden * 4)).buffer);
    const expected = permuteRotaryRows(model.weight('model.layers.0.self_attn.q_proj.weight'), shape.heads, shape.hidden);
    expect(stored).toEqual(expected);
    const norm = byName.get('output_norm.weight')!;
    const gains = new Float32Array(new Uint8Array(await readBytes(file, norm.fileOffset, shape.hidden * 4)).buffer);
    expect(gains).toEqual(model.weight('model.norm.weight'));
  });

  it('quantizes matrices in Q8_0 and Q4_0 files, keeps norms F32 and the tied embedding Q8_0', async () => {
    const types = { F32: 0, Q4_0: 2, Q8_0: 8 };
    for (const [fileType, fileTypeId, matrix] of [
      ['Q8_0', 7, types.Q8_0],
      ['Q4_0', 2, types.Q4_0],
    ] as const) {
      const file = join(root, `tiny-${fileType}.gguf`);
      await writeLlamaGguf(file, model, fileType);
      const info = await readGgufFileInfo(file, { logWarnings: false });
      expect((info.metadata as Record<string, any>).general.file_type).toBe(fileTypeId);
      const byName = new Map(info.tensorInfo!.map((t) => [t.name, t]));
      expect(byName.get('blk.0.attn_q.weight')!.ggmlType, fileType).toBe(matrix);
      expect(byName.get('blk.1.ffn_down.weight')!.ggmlType, fileType).toBe(matrix);
      expect(byName.get('blk.0.attn_norm.weight')!.ggmlType, fileType).toBe(types.F32);
      expect(byName.get('token_embd.weight')!.ggmlType, fileType).toBe(types.Q8_0);

      const embedding = byName.get('token_embd.weight')!;
      const firstRow = model.weight('model.embed_tokens.weight').subarray(0, shape.hidden);
      const expected = quantizeQ8_0(firstRow);
      expect(new Uint8Array(await readBytes(file, embedding.fileOffset, expected.length))).toEqual(expected);
    }
  });

  it('refuses a tokenizer whose size differs from the model, and other pre-tokenizers', async () => {
    const small = buildTokenizerFiles({ vocabSize: 400, modelMaxLength: 2048 });
    await expect(writeLlamaGguf(join(root, 'x.gguf'), { ...model, tokenizer: small }, 'F32')).rejects.toThrow(
      /400 tokens.*vocab_size is 512/,
    );
    const files = buildTokenizerFiles({ vocabSize: shape.vocab, modelMaxLength: 2048 });
    const metaspace = { ...files, 'tokenizer.json': { ...files['tokenizer.json'], pre_tokenizer: { type: 'Metaspace' } } };
    await expect(writeLlamaGguf(join(root, 'y.gguf'), { ...model, tokenizer: metaspace }, 'F32')).rejects.toThrow(/pre-tokenizer/);
    await expect(writeLlamaGguf(join(root, 'z.gguf'), model, 'Q5_K' as 'F32')).rejects.toThrow(/unknown GGUF file type/);
  });
});

describe('ensureFixtureGguf', () => {
  it('writes a file once and reuses it while current', async () => {
    const dir = join(root, 'cache');
    const file = await ensureFixtureGguf('tiny', { type: 'Q4_0', dir });
    expect(file).toBe(join(dir, 'tiny-q4_0.gguf'));
    const first = await stat(file);
    expect(await ensureFixtureGguf('tiny', { type: 'Q4_0', dir })).toBe(file);
    expect((await stat(file)).mtimeMs).toBe(first.mtimeMs);
    expect(await ensureFixtureGguf('tiny', { type: 'Q4_0', dir, seed: 7 })).toBe(join(dir, 'tiny-seed7-q4_0.gguf'));
  });
});
