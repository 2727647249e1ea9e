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
 * only when rows join or leave (`merge`). In the `right` layout the tensors can also be wider than
 * the rows (`reserve`): GroupQueryAttention then writes each pass's new keys into them in place (its
 * shared past/present buffer, `inPlace`), so the graph no longer concatenates the whole cache into
 * fresh `present.*` tensors every step; only growing past the reserved width copies.
 */
export type CacheLayout = 'left' | 'anchored' | 'right';

export type KvData = Float32Array | Uint16Array;

/**
 * Columns reserved past the longest row when an in-place cache is (re)allocated: a copy every this
 * many steps at most. Few, because onnxruntime-node still hands every `present.*` output back as a
 * fresh copy of the whole buffer (measured: +64 columns cost nothing at 150 tokens, +300 cost half
 * a step more at batch 8).
 */
const HEADROOM = 32;

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

  /** Whether passes write into `kv` in place (see `reserve`); the tensors are then `width` wide, more than any row. */
  inPlace = false;
  /** The widest an in-place cache may grow: GroupQueryAttention's rotary table has no more rows. */
  private maxWidth = 0;

  /** The rows a prefill produced: row r's tokens are columns `[starts[r], starts[r] + lengths[r])` of `present`. */
  static fromPrefill(layout: CacheLayout, rowIds: number[], starts: number[], lengths: number[], present: ort.Tensor[]): KvBatch {
    return new KvBatch(layout, [...rowIds], [...starts], [...lengths], present[0].dims[2], present);
  }

  get size(): number {
    return this.rowIds.length;
  }

  /** The most tokens any row has cached. */
  get longest(): number {
    return this.lengths.reduce((a, b) => Math.max(a, b), 0);
  }

  /**
   * Makes the next pass write in place: the tensors get room for `columns` more tokens on every row,
   * re-allocated (one copy, with headroom so it is rare) only when they lack it. `right` layout only;
   * `maxWidth` bounds the width (the model's context).
   */
  reserve(columns: number, maxWidth: number): void {
    if (this.layout !== 'right') throw new Error('only right-padded rows can be written in place');
    const need = this.longest + columns;
    if (this.inPlace && need <= this.width) return;
    if (need > maxWidth) throw new Error(`a pass over ${need} columns exceeds the model's ${maxWidth}`);
    this.maxWidth = maxWidth;
    this.inPlace = true;
    this.copy([...this.rowIds.keys()], null, this.roomyWidth(need));
  }

  private roomyWidth(need: number): number {
    return Math.min(this.maxWidth, need + HEADROOM);
  }

  /**
   * Inputs of one decode step: each row's last token at its own next position. A null token marks a
   * finished row still in the cache: its output is ignored, and it gets position 0 where the layout
   * lets the engine choose, so it can never run past the model's position table.
   */
  decodeInputs(lastTokens: readonly (number | null)[]): ForwardInputs {
    const batch = this.size;
    // In place, the mask spans the whole buffer: GroupQueryAttention then takes it as the present's width.
    const total = this.inPlace ? this.width : this.width + 1;
    const attentionMask = new BigInt64Array(batch * total);
    const positionIds = new BigInt64Array(batch);
    const inputIds = new BigInt64Array(batch);
    for (let r = 0; r < batch; r++) {
      const token = lastTokens[r];
      // A finished row starts over at column 0, so that it never needs room.
      if (this.inPlace && token === null) this.lengths[r] = 0;
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
    return { batch, seqLen: 1, inputIds, attentionMask, positionIds, past: this.kv, inPlace: this.inPlace };
  }

  /**
   * Inputs of a one-row pass over `tokens` (the row's last token, then proposed ones) at the row's
   * next positions: the mask and positions are those of as many decode steps.
   */
  verifyInputs(tokens: readonly number[]): ForwardInputs {
    if (this.size !== 1 || this.layout === 'anchored')
      throw new Error('a multi-token pass needs a one-row batch in the left or right layout');
    const seqLen = tokens.length;
    const total = this.inPlace ? this.width : this.width + seqLen;
    const attentionMask = new BigInt64Array(total);
    if (this.layout === 'right') attentionMask.fill(1n, 0, this.lengths[0] + seqLen);
    else attentionMask.fill(1n, this.starts[0], total);
    const positionIds = BigInt64Array.from(tokens, (_, j) => BigInt(this.lengths[0] + j));
    const inputIds = BigInt64Array.from(tokens, (t) => BigInt(t));
    return { batch: 1, seqLen, inputIds, attentionMask, positionIds, past: this.kv, inPlace: this.inPlace };
  }

  /**
   * Takes a `verifyInputs` pass's `present.*` keeping only its first `kept` new columns (the tokens
   * that turned out to be the row's own): the rest are cut off, so the cache is exactly the one
   * `kept` decode steps would have left.
   */
  advanceBy(present: ort.Tensor[], kept: number): void {
    if (this.inPlace) {
      // The rejected tokens' keys stay behind the row's length, to be overwritten.
      this.lengths[0] += kept;
      return;
    }
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
    if (!this.inPlace) {
      this.kv = present;
      this.width = present[0].dims[2];
    }
    for (let r = 0; r < this.lengths.length; r++) this.lengths[r] += 1;
  }

  /** Keeps the rows whose ids are in `keep`, in order. */
  filter(keep: ReadonlySet<number>): void {
    this.merge(keep, null);
  }

  /**
   * Keeps the rows in `keep` and appends `other`'s, in one copy (made only if something changes).
   * `other` must have the same layout and must not be used afterwards.
   */
  merge(keep: ReadonlySet<number>, other: KvBatch | null): void {
    const rows = this.rowIds.map((id, r) => (keep.has(id) ? r : -1)).filter((r) => r >= 0);
    const incoming = other?.size ?? 0;
    if (rows.length === 0) return this.adopt(other);
    const longest = Math.max(...rows.map((r) => this.lengths[r]), other?.longest ?? 0);
    if (this.layout === 'anchored' && other && other.width !== this.width) {
      throw new Error(`anchored rows must join at the batch's width (${this.width}), not ${other.width}`);
    }
    // An in-place cache that still has room for its rows keeps its width.
    const keepsWidth = this.layout === 'anchored' || (this.inPlace && longest < this.width);
    const width = keepsWidth ? this.width : this.inPlace ? this.roomyWidth(longest + 1) : longest;
    const unchanged =
      incoming === 0 &&
      rows.length === this.size &&
      width === this.width &&
      rows.every((r) => this.startOf(this, r, width) === this.starts[r]);
    if (!unchanged) this.copy(rows, other, width);
  }

  /** Where row `r` of `batch` starts in a cache `width` columns wide. */
  private startOf(batch: KvBatch, r: number, width: number): number {
    return this.layout === 'anchored' ? batch.starts[r] : this.layout === 'right' ? 0 : width - batch.lengths[r];
  }

  /** Re-allocates the cache `width` wide with this batch's rows `rows`, then all of `other`'s. */
  private copy(rows: number[], other: KvBatch | null, width: number): void {
    const sources = [
      ...rows.map((r) => ({ batch: this as KvBatch, r })),
      ...Array.from({ length: other?.size ?? 0 }, (_, r) => ({ batch: other!, r })),
    ];
    const startOf = ({ batch, r }: { batch: KvBatch; r: number }): number => this.startOf(batch, r, width);
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

  /** Becomes `other` (or empty) without a copy; a prefill's rows are not in place until the next `reserve`. */
  private adopt(other: KvBatch | null): void {
    this.inPlace = false;
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
