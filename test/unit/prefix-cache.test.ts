import { describe, expect, it } from 'vitest';
import { PrefixCache, type PrefixKvShape, type StoredRow } from '../../src/engine/prefix-cache.js';

const SHAPE: PrefixKvShape = { tensors: 2, heads: 2, dim: 3, dtype: 'float32' };
const BLOCK = 4;
const BLOCK_BYTES = SHAPE.tensors * SHAPE.heads * BLOCK * SHAPE.dim * 4;

/**
 * A computed prompt as the batch holds it: row `row` of `rows` rows, from column `start`, where the
 * value of tensor t, head h, token j, dim d is `t * 1e6 + h * 1e4 + tokens[j] * 10 + d`: a copy that
 * takes the wrong tensor, head, column or row shows.
 */
function computed(tokens: readonly number[], { rows = 1, row = 0, start = 0 } = {}): StoredRow {
  const width = start + tokens.length + 2;
  const { tensors, heads, dim } = SHAPE;
  const kv = Array.from({ length: tensors }, (_, t) => {
    const data = new Float32Array(rows * heads * width * dim).fill(-1);
    for (let h = 0; h < heads; h++) {
      tokens.forEach((token, j) => {
        for (let d = 0; d < dim; d++) data[((row * heads + h) * width + start + j) * dim + d] = t * 1e6 + h * 1e4 + token * 10 + d;
      });
    }
    return data;
  });
  return { kv, width, row, start };
}

/** The past tensors' values, as `computed` writes them, for `tokens`. */
function expectPast(cache: PrefixCache, prompt: number[], tokens: number[]): void {
  const hit = cache.lookup(prompt);
  expect(hit?.tokens).toBe(tokens.length);
  const past = cache.past(hit!);
  expect(past).toHaveLength(SHAPE.tensors);
  past.forEach((tensor, t) => {
    expect(tensor.dims).toEqual([1, SHAPE.heads, tokens.length, SHAPE.dim]);
    const data = tensor.data as Float32Array;
    for (let h = 0; h < SHAPE.heads; h++) {
      tokens.forEach((token, j) => {
        for (let d = 0; d < SHAPE.dim; d++) expect(data[(h * tokens.length + j) * SHAPE.dim + d]).toBe(t * 1e6 + h * 1e4 + token * 10 + d);
      });
    }
  });
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('PrefixCache', () => {
  it('finds the longest cached whole-block prefix and leaves at least one token to compute', () => {
    const cache = new PrefixCache(1e6, SHAPE, BLOCK);
    const prompt = range(1, 10);
    cache.store(prompt, computed(prompt, { rows: 3, row: 1, start: 2 }));
    // Two whole blocks of ten tokens are kept.
    expect(cache.size).toBe(2);
    expect(cache.bytes).toBe(2 * BLOCK_BYTES);
    expectPast(cache, [...prompt, 99], range(1, 8));
    expectPast(cache, range(1, 9), range(1, 8));
    // Eight tokens: the second block would leave nothing to compute.
    expectPast(cache, range(1, 8), range(1, 4));
    expect(cache.lookup(range(1, 4))).toBeNull();
    expectPast(cache, [1, 2, 3, 4, 5, 6, 7, 0, 9], range(1, 4));
    expect(cache.lookup([0, 2, 3, 4, 5, 6, 7, 8, 9])).toBeNull();
  });

  it('matches a block only after the same blocks: the same tokens later in another prompt are no hit', () => {
    const cache = new PrefixCache(1e6, SHAPE, BLOCK);
    cache.store([1, 2, 3, 4, 5, 6, 7, 8], computed([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(cache.lookup([5, 6, 7, 8, 9])).toBeNull();
    cache.store([5, 6, 7, 8, 1, 2, 3, 4], computed([5, 6, 7, 8, 1, 2, 3, 4]));
    expect(cache.size).toBe(4);
    expectPast(cache, [5, 6, 7, 8, 1, 2, 3, 4, 0], [5, 6, 7, 8, 1, 2, 3, 4]);
  });

  it('shares the blocks of a common prefix and extends a chain with the turns that follow', () => {
    const cache = new PrefixCache(1e6, SHAPE, BLOCK);
    const system = range(1, 8);
    cache.store([...system, 20, 21, 22, 23], computed([...system, 20, 21, 22, 23]));
    cache.store([...system, 30, 31, 32, 33], computed([...system, 30, 31, 32, 33]));
    expect(cache.size).toBe(4);
    expectPast(cache, [...system, 30, 31, 32, 33, 40], [...system, 30, 31, 32, 33]);
    expectPast(cache, [...system, 20, 21, 22, 23, 40], [...system, 20, 21, 22, 23]);
  });

  it('evicts the least recently used chains, ends first, and never holds more than its budget', () => {
    const cache = new PrefixCache(5 * BLOCK_BYTES, SHAPE, BLOCK);
    const a = range(100, 8);
    const b = range(200, 8);
    const c = range(300, 8);
    cache.store(a, computed(a));
    cache.store(b, computed(b));
    expect(cache.lookup([...a, 0])?.tokens).toBe(8);
    // a is now more recent than b: c's two blocks take b's place, its end block first.
    cache.store(c, computed(c));
    expect(cache.bytes).toBeLessThanOrEqual(5 * BLOCK_BYTES);
    expect(cache.lookup([...a, 0])?.tokens).toBe(8);
    expect(cache.lookup([...c, 0])?.tokens).toBe(8);
    expect(cache.lookup([...b, 0])?.tokens ?? 0).toBeLessThan(8);
    for (let n = 0; n < 20; n++) {
      const p = range(1000 + n * 10, 9);
      cache.store(p, computed(p));
      expect(cache.bytes).toBeLessThanOrEqual(5 * BLOCK_BYTES);
    }
  });

  it('keeps the first blocks of a prompt longer than its budget, and nothing when one block does not fit', () => {
    const cache = new PrefixCache(3 * BLOCK_BYTES, SHAPE, BLOCK);
    const long = range(1, 40);
    cache.store(long, computed(long));
    expect(cache.size).toBe(3);
    expectPast(cache, long, range(1, 12));
    const tiny = new PrefixCache(BLOCK_BYTES - 1, SHAPE, BLOCK);
    tiny.store(long, computed(long));
    expect(tiny.bytes).toBe(0);
    expect(tiny.lookup(long)).toBeNull();
  });

  it('shares no memory with the tensors it copies from or hands out', () => {
    const cache = new PrefixCache(1e6, SHAPE, BLOCK);
    const prompt = range(1, 8);
    const source = computed(prompt);
    cache.store(prompt, source);
    source.kv.forEach((data) => data.fill(7));
    const hit = cache.lookup([...prompt, 0])!;
    const first = cache.past(hit);
    for (const tensor of first) (tensor.data as Float32Array).fill(9);
    expectPast(cache, [...prompt, 0], prompt);
    const buffers = new Set([...source.kv, ...first.map((t) => t.data as Float32Array)].map((d) => d.buffer));
    expect(buffers.size).toBe(source.kv.length + first.length);
  });

  it('stores float16 bits as they are', () => {
    const shape: PrefixKvShape = { tensors: 1, heads: 1, dim: 2, dtype: 'float16' };
    const cache = new PrefixCache(1e6, shape, 2);
    const bits = Uint16Array.from([0x3c00, 0x4000, 0x4200, 0x4400, 0x7bff, 0x0001]);
    cache.store([1, 2, 3], { kv: [bits], width: 3, row: 0, start: 0 });
    const past = cache.past(cache.lookup([1, 2, 3])!);
    expect(past[0].type).toBe('float16');
    expect(Array.from(past[0].data as Uint16Array)).toEqual([0x3c00, 0x4000, 0x4200, 0x4400]);
  });
});
