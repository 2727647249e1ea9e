import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { KvBatch } from '../../src/engine/kv-batch.js';
import { promptMatrix } from '../../src/engine/prefill.js';

const HEADS = 2;
const DIM = 2;

/**
 * A present tensor whose value at (row, head, col, d) encodes where it came from:
 * tag*1000 + row*100 + (token index)*10 + head + d/10, for row r's tokens at columns [starts[r], starts[r] + lengths[r]).
 */
function present(rows: number, width: number, tag: number, starts: number[], lengths: number[]): ort.Tensor {
  const data = new Float32Array(rows * HEADS * width * DIM);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < HEADS; h++)
      for (let t = 0; t < lengths[r]; t++)
        for (let d = 0; d < DIM; d++)
          data[((r * HEADS + h) * width + starts[r] + t) * DIM + d] = tag * 1000 + r * 100 + t * 10 + h + d / 10;
  return new ort.Tensor('float32', data, [rows, HEADS, width, DIM]);
}

/** Row r's columns of head 0, dimension 0 — the encoded (row, token) of each, empty columns as 0. */
function row(batch: KvBatch, r: number): number[] {
  const t = batch.kv[0];
  const [, , width] = t.dims;
  const out: number[] = [];
  for (let c = 0; c < width; c++) out.push((t.data as Float32Array)[(r * HEADS * width + c) * DIM]);
  return out;
}

const left = (ids: number[], pads: number[], width: number, tag: number) =>
  KvBatch.fromPrefill(
    'left',
    ids,
    pads,
    pads.map((p) => width - p),
    [
      present(
        ids.length,
        width,
        tag,
        pads,
        pads.map((p) => width - p),
      ),
    ],
  );

describe('promptMatrix', () => {
  it('left-pads prompts and masks the padding', () => {
    const inputs = promptMatrix([[5, 6, 7], [8]], 'left');
    expect(inputs.seqLen).toBe(3);
    expect(inputs.firsts).toEqual([0, 2]);
    expect([...inputs.inputIds]).toEqual([5n, 6n, 7n, 0n, 0n, 8n]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 0n, 0n, 1n]);
    expect([...inputs.positionIds]).toEqual([0n, 1n, 2n, 0n, 0n, 0n]);
  });

  it('right-pads prompts for GroupQueryAttention, which counts each row from column 0', () => {
    const inputs = promptMatrix([[5, 6, 7], [8]], 'right');
    expect(inputs.firsts).toEqual([0, 0]);
    expect([...inputs.inputIds]).toEqual([5n, 6n, 7n, 8n, 0n, 0n]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 1n, 0n, 0n]);
  });

  it('puts anchored rows behind masked columns of an empty past', () => {
    const inputs = promptMatrix([[5, 6], [8]], 'anchored', 3);
    expect([...inputs.attentionMask]).toEqual([0n, 0n, 0n, 1n, 1n, 0n, 0n, 0n, 0n, 1n]);
    expect([...inputs.inputIds]).toEqual([5n, 6n, 0n, 8n]);
  });
});

describe('KvBatch, left layout', () => {
  it('builds decode inputs with a per-row position and mask', () => {
    const batch = left([1, 2], [0, 2], 3, 1);
    const inputs = batch.decodeInputs([11, 12]);
    expect(inputs.batch).toBe(2);
    expect([...inputs.inputIds]).toEqual([11n, 12n]);
    expect([...inputs.positionIds]).toEqual([3n, 1n]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n]);
  });

  it('gives a finished row position 0 so it never runs past the position table', () => {
    const batch = left([1, 2], [0, 0], 3, 1);
    const inputs = batch.decodeInputs([11, null]);
    expect([...inputs.positionIds]).toEqual([3n, 0n]);
    expect([...inputs.inputIds]).toEqual([11n, 0n]);
  });

  it('concatenates batches of different lengths, re-padding the shorter on the left', () => {
    const a = left([1], [0], 2, 1);
    const b = left([2, 3], [0, 3], 4, 2);
    a.merge(new Set([1]), b);
    expect(a.rowIds).toEqual([1, 2, 3]);
    expect(a.starts).toEqual([2, 0, 3]);
    expect(a.width).toBe(4);
    expect(a.kv[0].dims).toEqual([3, HEADS, 4, DIM]);
    expect(row(a, 0)).toEqual([0, 0, 1000, 1010]);
    expect(row(a, 1)).toEqual([2000, 2010, 2020, 2030]);
    expect(row(a, 2)).toEqual([0, 0, 0, 2100]);
  });

  it('filters rows and trims the columns that became padding everywhere', () => {
    const batch = left([1, 2, 3], [0, 2, 3], 4, 1);
    batch.filter(new Set([2, 3]));
    expect(batch.rowIds).toEqual([2, 3]);
    expect(batch.starts).toEqual([0, 1]);
    expect(batch.width).toBe(2);
    expect(row(batch, 0)).toEqual([1100, 1110]);
    expect(row(batch, 1)).toEqual([0, 1200]);
  });

  it('does not copy when nothing changes, and empties when every row leaves', () => {
    const batch = left([1, 2], [0, 1], 3, 1);
    const before = batch.kv[0];
    batch.filter(new Set([1, 2]));
    expect(batch.kv[0]).toBe(before);
    batch.filter(new Set());
    expect(batch.size).toBe(0);
    expect(batch.width).toBe(0);
  });

  it('drops finished rows and appends new ones in one merge', () => {
    const batch = left([1, 2], [0, 3], 5, 1);
    const joining = left([3], [0], 3, 2);
    batch.merge(new Set([2]), joining);
    expect(batch.rowIds).toEqual([2, 3]);
    expect(batch.starts).toEqual([1, 0]);
    expect(batch.width).toBe(3);
    expect(row(batch, 0)).toEqual([0, 1100, 1110]);
    expect(row(batch, 1)).toEqual([2000, 2010, 2020]);
  });

  it('takes the joining batch as it is when no row stays', () => {
    const batch = left([1], [0], 4, 1);
    const joining = left([2], [0], 2, 2);
    batch.merge(new Set(), joining);
    expect(batch.rowIds).toEqual([2]);
    expect(batch.kv[0]).toBe(joining.kv[0]);
  });

  it('advances by one column per decode step without copying', () => {
    const batch = left([1], [0], 2, 1);
    const next = present(1, 3, 1, [0], [3]);
    batch.advance([next]);
    expect(batch.width).toBe(3);
    expect(batch.lengths).toEqual([3]);
    expect(batch.kv[0]).toBe(next);
  });
});

describe('KvBatch, right layout (GroupQueryAttention)', () => {
  const right = (ids: number[], lengths: number[], width: number, tag: number) =>
    KvBatch.fromPrefill(
      'right',
      ids,
      lengths.map(() => 0),
      lengths,
      [
        present(
          ids.length,
          width,
          tag,
          lengths.map(() => 0),
          lengths,
        ),
      ],
    );

  it("masks each row's own length plus the new token, so the op writes it at the row's own index", () => {
    const batch = right([1, 2], [3, 1], 3, 1);
    const inputs = batch.decodeInputs([11, 12]);
    expect([...inputs.attentionMask]).toEqual([1n, 1n, 1n, 1n, 1n, 1n, 0n, 0n]);
    expect([...inputs.positionIds]).toEqual([3n, 1n]);
  });

  it('gives a finished row one masked column, so its position is 0', () => {
    const batch = right([1, 2], [3, 2], 3, 1);
    expect([...batch.decodeInputs([11, null]).attentionMask]).toEqual([1n, 1n, 1n, 1n, 1n, 0n, 0n, 0n]);
  });

  it('merges rows of different lengths starting at column 0 and trims to the longest', () => {
    const batch = right([1, 2], [4, 2], 5, 1);
    const joining = right([3], [3], 3, 2);
    batch.merge(new Set([2]), joining);
    expect(batch.rowIds).toEqual([2, 3]);
    expect(batch.starts).toEqual([0, 0]);
    expect(batch.lengths).toEqual([2, 3]);
    expect(batch.width).toBe(3);
    expect(row(batch, 0)).toEqual([1100, 1110, 0]);
    expect(row(batch, 1)).toEqual([2000, 2010, 2020]);
  });
});

describe('KvBatch, anchored layout (positions from the column index)', () => {
  const anchored = (ids: number[], starts: number[], width: number, tag: number) =>
    KvBatch.fromPrefill(
      'anchored',
      ids,
      starts,
      starts.map((s) => width - s),
      [
        present(
          ids.length,
          width,
          tag,
          starts,
          starts.map((s) => width - s),
        ),
      ],
    );

  it('never moves a row: leaving rows keep the width, joining rows must end at it', () => {
    const batch = anchored([1, 2], [0, 3], 5, 1);
    batch.filter(new Set([2]));
    expect(batch.width).toBe(5);
    expect(batch.starts).toEqual([3]);
    expect(row(batch, 0)).toEqual([0, 0, 0, 1100, 1110]);
    const joining = anchored([3], [4], 5, 2);
    batch.merge(new Set([2]), joining);
    expect(batch.starts).toEqual([3, 4]);
    expect(row(batch, 1)).toEqual([0, 0, 0, 0, 2000]);
    expect(() => batch.merge(new Set([2, 3]), anchored([4], [0], 2, 3))).toThrow(/width/);
  });
});
