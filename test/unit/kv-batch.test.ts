import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { KvBatch, prefillInputs } from '../../src/engine/kv-batch.js';
import { BatchQueue } from '../../src/engine/batch-queue.js';

const HEADS = 2;
const DIM = 2;

/** A present tensor whose value at (row, head, col, d) encodes where it came from: tag*1000 + row*100 + col*10 + head + d/10. */
function present(rows: number, length: number, tag: number, pads: number[]): ort.Tensor {
  const data = new Float32Array(rows * HEADS * length * DIM);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < HEADS; h++)
      for (let c = pads[r]; c < length; c++)
        for (let d = 0; d < DIM; d++) data[((r * HEADS + h) * length + c) * DIM + d] = tag * 1000 + r * 100 + (c - pads[r]) * 10 + h + d / 10;
  return new ort.Tensor('float32', data, [rows, HEADS, length, DIM]);
}

/** Row r's real columns of head 0, dimension 0 — the encoded (row, col) of each, padding as 0. */
function row(batch: KvBatch, r: number): number[] {
  const t = batch.kv[0];
  const [, , length] = t.dims;
  const out: number[] = [];
  for (let c = 0; c < length; c++) out.push((t.data as Float32Array)[((r * HEADS) * length + c) * DIM]);
  return out;
}

describe('prefillInputs', () => {
  it('left-pads prompts and masks the padding', () => {
    const inputs = prefillInputs([[5, 6, 7], [8]], []);
    expect(inputs.seqLen).toBe(3);
    expect(inputs.pads).toEqual([0, 2]);
    expect([...inputs.inputIds]).toEqual([5n, 6n, 7n, 0n, 0n, 8n]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 0n, 0n, 1n]);
    expect([...inputs.positionIds]).toEqual([0n, 1n, 2n, 0n, 0n, 0n]);
  });
});

describe('KvBatch', () => {
  it('builds decode inputs with a per-row position and mask', () => {
    const batch = KvBatch.fromPrefill([1, 2], [0, 2], [present(2, 3, 1, [0, 2])]);
    const inputs = batch.decodeInputs([11, 12]);
    expect(inputs.batch).toBe(2);
    expect([...inputs.inputIds]).toEqual([11n, 12n]);
    expect([...inputs.positionIds]).toEqual([3n, 1n]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n]);
  });

  it('gives a finished row position 0 so it never runs past the position table', () => {
    const batch = KvBatch.fromPrefill([1, 2], [0, 0], [present(2, 3, 1, [0, 0])]);
    const inputs = batch.decodeInputs([11, null]);
    expect([...inputs.positionIds]).toEqual([3n, 0n]);
    expect([...inputs.inputIds]).toEqual([11n, 0n]);
  });

  it('concatenates batches of different lengths, re-padding the shorter on the left', () => {
    const a = KvBatch.fromPrefill([1], [0], [present(1, 2, 1, [0])]);
    const b = KvBatch.fromPrefill([2, 3], [0, 3], [present(2, 4, 2, [0, 3])]);
    a.concat(b);
    expect(a.rowIds).toEqual([1, 2, 3]);
    expect(a.pads).toEqual([2, 0, 3]);
    expect(a.length).toBe(4);
    expect(a.kv[0].dims).toEqual([3, HEADS, 4, DIM]);
    expect(row(a, 0)).toEqual([0, 0, 1000, 1010]);
    expect(row(a, 1)).toEqual([2000, 2010, 2020, 2030]);
    expect(row(a, 2)).toEqual([0, 0, 0, 2100]);
  });

  it('filters rows and trims the columns that became padding everywhere', () => {
    const batch = KvBatch.fromPrefill([1, 2, 3], [0, 2, 3], [present(3, 4, 1, [0, 2, 3])]);
    batch.filter(new Set([2, 3]));
    expect(batch.rowIds).toEqual([2, 3]);
    expect(batch.pads).toEqual([0, 1]);
    expect(batch.length).toBe(2);
    expect(batch.kv[0].dims).toEqual([2, HEADS, 2, DIM]);
    expect(row(batch, 0)).toEqual([1100, 1110]);
    expect(row(batch, 1)).toEqual([0, 1200]);
  });

  it('does not copy when nothing changes, and empties when every row leaves', () => {
    const batch = KvBatch.fromPrefill([1, 2], [0, 1], [present(2, 3, 1, [0, 1])]);
    const before = batch.kv[0];
    batch.filter(new Set([1, 2]));
    expect(batch.kv[0]).toBe(before);
    batch.filter(new Set());
    expect(batch.size).toBe(0);
    expect(batch.length).toBe(0);
  });

  it('drops finished rows and appends new ones in one merge', () => {
    const batch = KvBatch.fromPrefill([1, 2], [0, 3], [present(2, 5, 1, [0, 3])]);
    const joining = KvBatch.fromPrefill([3], [0], [present(1, 3, 2, [0])]);
    batch.merge(new Set([2]), joining);
    // Row 2 had 2 real columns, the new row 3: the longest real length is 3.
    expect(batch.rowIds).toEqual([2, 3]);
    expect(batch.pads).toEqual([1, 0]);
    expect(batch.length).toBe(3);
    expect(row(batch, 0)).toEqual([0, 1100, 1110]);
    expect(row(batch, 1)).toEqual([2000, 2010, 2020]);
  });

  it('takes the joining batch as it is when no row stays', () => {
    const batch = KvBatch.fromPrefill([1], [0], [present(1, 4, 1, [0])]);
    const joining = KvBatch.fromPrefill([2], [0], [present(1, 2, 2, [0])]);
    batch.merge(new Set(), joining);
    expect(batch.rowIds).toEqual([2]);
    expect(batch.kv[0]).toBe(joining.kv[0]);
  });

  it('advances by one column per decode step without copying', () => {
    const batch = KvBatch.fromPrefill([1], [0], [present(1, 2, 1, [0])]);
    const next = present(1, 3, 1, [0]);
    batch.advance([next]);
    expect(batch.length).toBe(3);
    expect(batch.kv[0]).toBe(next);
  });
});

describe('BatchQueue', () => {
  const entry = (id: number, inputLength: number, reservedTokens = inputLength + 10) => ({ id, inputLength, reservedTokens });

  it('takes entries FIFO and stops at the first that does not fit', () => {
    const queue = new BatchQueue({ maxBatchSize: 8, maxBatchPrefillTokens: 20, maxBatchTotalTokens: 1000 });
    [entry(1, 5), entry(2, 5), entry(3, 12), entry(4, 1)].forEach((e) => queue.append(e));
    // 1 and 2: 2 rows × 5 = 10 tokens; adding 3 would be 3 × 12 = 36 > 20, and 4 must not jump the queue.
    expect(queue.nextBatch({ size: 0, reservedTokens: 0 }).map((e) => e.id)).toEqual([1, 2]);
    expect(queue.size).toBe(2);
  });

  it('respects the batch size and the KV budget of the running batch', () => {
    const queue = new BatchQueue({ maxBatchSize: 3, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 100 });
    [entry(1, 5, 30), entry(2, 5, 30), entry(3, 5, 30)].forEach((e) => queue.append(e));
    expect(queue.nextBatch({ size: 1, reservedTokens: 50 }).map((e) => e.id)).toEqual([1]);
    expect(queue.nextBatch({ size: 2, reservedTokens: 80 })).toEqual([]);
  });

  it('runs an oversized entry alone rather than never', () => {
    const queue = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 10, maxBatchTotalTokens: 10 });
    queue.append(entry(1, 50));
    expect(queue.nextBatch({ size: 1, reservedTokens: 5 })).toEqual([]);
    expect(queue.nextBatch({ size: 0, reservedTokens: 0 }).map((e) => e.id)).toEqual([1]);
  });

  it('removes a cancelled entry', () => {
    const queue = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 100 });
    queue.append(entry(1, 5));
    expect(queue.remove(1)?.id).toBe(1);
    expect(queue.remove(1)).toBeUndefined();
    expect(queue.size).toBe(0);
  });
});
