import * as ort from 'onnxruntime-node';
import { halfBits, type HalfData } from './half.js';
import type { ForwardInputs } from './model-session.js';

/**
 * Where a row's cached tokens sit in the shared `[rows, kvHeads, width, headDim]` tensors, chosen
 * per attention family at load (see attention-family.ts) so that a row in a batch computes exactly
 * what it computes alone while other rows join and leave:
 *
 * - `left`: rows end at the last column and are left-padded; a merge re-pads them freely. Right for
 *   graphs that take positions from `position_ids` (fed per row) or from the mask's running count,
 *   where a row's padding changes nothing (Optimum's Llama/Qwen/Phi/SmolLM exports).
 * - `anchored`: left-padded too, but a row never moves once its keys are cached, because the graph
 *   takes positions from the column index (optimum's Gemma exports): rotary keys cached at one column
 *   would be wrong at another. Rows join at the column where they will end (prefilled behind a masked
 *   empty past of that width) and the width only shrinks when the batch empties.
 * - `right`: every row starts at column 0 and has its own length, the layout onnxruntime's
 *   GroupQueryAttention assumes (it derives each row's positions and write index from
 *   `ReduceSum(attention_mask) - 1`). The width is the longest row.
 *
 * A decode step hands the `present.*` outputs back in as the next past without a copy; copies happen
 * only when rows join or leave (`merge`).
 */
export type CacheLayout = 'left' | 'anchored' | 'right';

export type KvData = Float32Array | Uint16Array;

export class KvBatch {
  private constructor(
    readonly layout: CacheLayout,
    readonly rowIds: number[],
    /** First cached column of each row. */
    readonly starts: number[],
    /** Cached tokens of each row (the row's own position of its next token). */
    readonly lengths: number[],
    public width: number,
    public kv: ort.Tensor[],
  ) {}

  /** The rows a prefill produced: row r's tokens are columns `[starts[r], starts[r] + lengths[r])` of `present`. */
  static fromPrefill(layout: CacheLayout, rowIds: number[], starts: number[], lengths: number[], present: ort.Tensor[]): KvBatch {
    return new KvBatch(layout, [...rowIds], [...starts], [...lengths], present[0].dims[2], present);
  }

  get size(): number {
    return this.rowIds.length;
  }

  /**
   * Inputs of one decode step: each row's last token at its own next position. A null token marks a
   * finished row still in the cache: its output is ignored, and it gets position 0 where the layout
   * lets the engine choose, so it can never run past the model's position table.
   */
  decodeInputs(lastTokens: readonly (number | null)[]): ForwardInputs {
    const batch = this.size;
    const total = this.width + 1;
    const attentionMask = new BigInt64Array(batch * total);
    const positionIds = new BigInt64Array(batch);
    const inputIds = new BigInt64Array(batch);
    for (let r = 0; r < batch; r++) {
      const token = lastTokens[r];
      if (this.layout === 'right') {
        // GroupQueryAttention writes the new key at index sum(mask) - 1 of the row: its own length.
        attentionMask.fill(1n, r * total, r * total + (token === null ? 1 : this.lengths[r] + 1));
      } else {
        attentionMask.fill(1n, r * total + this.starts[r], (r + 1) * total);
      }
      if (token === null) continue;
      positionIds[r] = BigInt(this.lengths[r]);
      inputIds[r] = BigInt(token);
    }
    return { batch, seqLen: 1, inputIds, attentionMask, positionIds, past: this.kv };
  }

  /**
   * Inputs of a one-row pass over `tokens` (the row's last token, then proposed ones) at the row's
   * next positions: the mask and positions are those of as many decode steps.
   */
  verifyInputs(tokens: readonly number[]): ForwardInputs {
    if (this.size !== 1 || this.layout === 'anchored')
      throw new Error('a multi-token pass needs a one-row batch in the left or right layout');
    const seqLen = tokens.length;
    const total = this.width + seqLen;
    const attentionMask = new BigInt64Array(total);
    if (this.layout === 'right') attentionMask.fill(1n, 0, this.lengths[0] + seqLen);
    else attentionMask.fill(1n, this.starts[0], total);
    const positionIds = BigInt64Array.from(tokens, (_, j) => BigInt(this.lengths[0] + j));
    const inputIds = BigInt64Array.from(tokens, (t) => BigInt(t));
    return { batch: 1, seqLen, inputIds, attentionMask, positionIds, past: this.kv };
  }

  /**
   * Takes a `verifyInputs` pass's `present.*` keeping only its first `kept` new columns (the tokens
   * that turned out to be the row's own): the rest are cut off, so the cache is exactly the one
   * `kept` decode steps would have left.
   */
  advanceBy(present: ort.Tensor[], kept: number): void {
    const fed = present[0].dims[2] - this.width;
    const width = this.width + kept;
    this.kv =
      kept === fed
        ? present
        : present.map((tensor) => {
            const [rows, heads, , dim] = tensor.dims;
            const data = allocLike(kvData(tensor), rows * heads * width * dim);
            for (let r = 0; r < rows; r++) copyRow(kvData(tensor), width + fed - kept, r, 0, data, width, r, 0, width, heads, dim);
            return new ort.Tensor(tensor.type as 'float32', data, [rows, heads, width, dim]);
          });
    this.width = width;
    for (let r = 0; r < this.lengths.length; r++) this.lengths[r] += kept;
  }

  /** Takes a decode step's `present.*` as the new cache (one column wider, every row one token longer). */
  advance(present: ort.Tensor[]): void {
    this.kv = present;
    this.width = present[0].dims[2];
    for (let r = 0; r < this.lengths.length; r++) this.lengths[r] += 1;
  }

  /** Keeps the rows whose ids are in `keep`, in order. */
  filter(keep: ReadonlySet<number>): void {
    this.merge(keep, null);
  }

  /**
   * Keeps the rows in `keep` and appends `other`'s, in one copy: the only place the cache is copied.
   * `other` must have the same layout and must not be used afterwards.
   */
  merge(keep: ReadonlySet<number>, other: KvBatch | null): void {
    const rows = this.rowIds.map((id, r) => (keep.has(id) ? r : -1)).filter((r) => r >= 0);
    const incoming = other?.size ?? 0;
    if (rows.length === 0) return this.adopt(other);
    const sources = [
      ...rows.map((r) => ({ batch: this as KvBatch, r })),
      ...Array.from({ length: incoming }, (_, r) => ({ batch: other!, r })),
    ];
    const longest = Math.max(...sources.map(({ batch, r }) => batch.lengths[r]));
    if (this.layout === 'anchored' && other && other.width !== this.width) {
      throw new Error(`anchored rows must join at the batch's width (${this.width}), not ${other.width}`);
    }
    const width = this.layout === 'anchored' ? this.width : longest;
    const startOf = ({ batch, r }: { batch: KvBatch; r: number }): number =>
      this.layout === 'anchored' ? batch.starts[r] : this.layout === 'right' ? 0 : width - batch.lengths[r];
    const unchanged =
      incoming === 0 &&
      rows.length === this.size &&
      width === this.width &&
      rows.every((r) => startOf({ batch: this, r }) === this.starts[r]);
    if (unchanged) return;

    this.kv = this.kv.map((tensor, i) => {
      const [, heads, , dim] = tensor.dims;
      const data = allocLike(tensor.data as KvData, sources.length * heads * width * dim);
      sources.forEach((source, dst) => {
        const { batch, r } = source;
        const src = kvData(batch.kv[i]);
        copyRow(src, batch.width, r, batch.starts[r], data, width, dst, startOf(source), batch.lengths[r], heads, dim);
      });
      return new ort.Tensor(tensor.type as 'float32', data, [sources.length, heads, width, dim]);
    });
    const starts = sources.map(startOf);
    const lengths = sources.map(({ batch, r }) => batch.lengths[r]);
    const ids = sources.map(({ batch, r }) => batch.rowIds[r]);
    this.rowIds.splice(0, this.rowIds.length, ...ids);
    this.starts.splice(0, this.starts.length, ...starts);
    this.lengths.splice(0, this.lengths.length, ...lengths);
    this.width = width;
  }

  /** Becomes `other` (or empty) without a copy. */
  private adopt(other: KvBatch | null): void {
    this.rowIds.splice(0, this.rowIds.length, ...(other?.rowIds ?? []));
    this.starts.splice(0, this.starts.length, ...(other?.starts ?? []));
    this.lengths.splice(0, this.lengths.length, ...(other?.lengths ?? []));
    this.width = other?.width ?? 0;
    this.kv = other?.kv ?? [];
  }
}

/** A KV tensor's data as float32 values or float16 bits. */
export function kvData(tensor: ort.Tensor): KvData {
  return tensor.type === 'float16' ? halfBits(tensor.data as HalfData) : (tensor.data as Float32Array);
}

function allocLike(like: KvData, length: number): KvData {
  return like instanceof Uint16Array ? new Uint16Array(length) : new Float32Array(length);
}

/** Copies `cols` columns of one row, every head, from `src` (width `srcWidth`) into `dst`. */
function copyRow(
  src: KvData,
  srcWidth: number,
  srcRow: number,
  srcCol: number,
  dst: KvData,
  dstWidth: number,
  dstRow: number,
  dstCol: number,
  cols: number,
  heads: number,
  dim: number,
): void {
  for (let h = 0; h < heads; h++) {
    const from = ((srcRow * heads + h) * srcWidth + srcCol) * dim;
    const to = ((dstRow * heads + h) * dstWidth + dstCol) * dim;
    dst.set(src.subarray(from, from + cols * dim), to);
  }
}
