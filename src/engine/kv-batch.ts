import * as ort from 'onnxruntime-node';
import type { ForwardInputs, KvArray } from './model-session.js';

/**
 * The KV cache of a running batch, stored as TGI's `CausalLMBatch` does: one tensor per
 * `past_key_values.*` input, `[rows, kvHeads, length, headDim]`, every row left-padded so that all
 * rows end at the same column. Row r's real tokens are the last `length - pads[r]` columns.
 *
 * A decode step hands the `present.*` outputs back in as the next past without a copy; copies happen
 * only when rows join (`concat`) or leave (`filter`).
 */
export class KvBatch {
  private constructor(
    readonly rowIds: number[],
    readonly pads: number[],
    public length: number,
    public kv: ort.Tensor[],
  ) {}

  /** The batch that a prefill of `prompts` produced: `present` is `[rows, H, maxPromptLength, D]`. */
  static fromPrefill(rowIds: number[], pads: number[], present: ort.Tensor[]): KvBatch {
    return new KvBatch([...rowIds], [...pads], present[0].dims[2], present);
  }

  get size(): number {
    return this.rowIds.length;
  }

  /** Tokens the batch holds, padding included: what the cache costs in memory. */
  get paddedTokens(): number {
    return this.size * this.length;
  }

  /** Inputs of one decode step: each row's last token at its own next position. */
  decodeInputs(lastTokens: readonly number[]): ForwardInputs {
    const batch = this.size;
    const total = this.length + 1;
    const attentionMask = new BigInt64Array(batch * total);
    const positionIds = new BigInt64Array(batch);
    const inputIds = new BigInt64Array(batch);
    for (let r = 0; r < batch; r++) {
      attentionMask.fill(1n, r * total + this.pads[r], (r + 1) * total);
      positionIds[r] = BigInt(this.length - this.pads[r]);
      inputIds[r] = BigInt(lastTokens[r]);
    }
    return { batch, seqLen: 1, inputIds, attentionMask, positionIds, past: this.kv };
  }

  /** Takes a decode step's `present.*` as the new cache (one column longer). */
  advance(present: ort.Tensor[]): void {
    this.kv = present;
    this.length += 1;
  }

  /** Keeps the rows whose ids are in `keep`, in order, and drops columns that became padding in every row. */
  filter(keep: ReadonlySet<number>): void {
    const rows = this.rowIds.map((id, r) => (keep.has(id) ? r : -1)).filter((r) => r >= 0);
    if (rows.length === 0) {
      this.rowIds.length = 0;
      this.pads.length = 0;
      this.length = 0;
      this.kv = [];
      return;
    }
    const trim = Math.min(...rows.map((r) => this.pads[r]));
    if (rows.length === this.size && trim === 0) return;
    const length = this.length - trim;
    this.kv = this.kv.map((tensor) => {
      const [, heads, , dim] = tensor.dims;
      const data = allocLike(tensor.data as KvArray, rows.length * heads * length * dim);
      rows.forEach((src, dst) => copyRow(tensor.data as KvArray, this.length, src, trim, data, length, dst, 0, length, heads, dim));
      return new ort.Tensor(tensor.type as 'float32', data, [rows.length, heads, length, dim]);
    });
    const pads = rows.map((r) => this.pads[r] - trim);
    const ids = rows.map((r) => this.rowIds[r]);
    this.rowIds.splice(0, this.rowIds.length, ...ids);
    this.pads.splice(0, this.pads.length, ...pads);
    this.length = length;
  }

  /** Appends `other`'s rows, re-padding the shorter side on the left. `other` must not be used afterwards. */
  concat(other: KvBatch): void {
    if (other.size === 0) return;
    if (this.size === 0) {
      this.rowIds.push(...other.rowIds);
      this.pads.push(...other.pads);
      this.length = other.length;
      this.kv = other.kv;
      return;
    }
    const length = Math.max(this.length, other.length);
    const rows = this.size + other.size;
    this.kv = this.kv.map((mine, i) => {
      const theirs = other.kv[i];
      const [, heads, , dim] = mine.dims;
      const data = allocLike(mine.data as KvArray, rows * heads * length * dim);
      for (let r = 0; r < this.size; r++) {
        copyRow(mine.data as KvArray, this.length, r, 0, data, length, r, length - this.length, this.length, heads, dim);
      }
      for (let r = 0; r < other.size; r++) {
        copyRow(theirs.data as KvArray, other.length, r, 0, data, length, this.size + r, length - other.length, other.length, heads, dim);
      }
      return new ort.Tensor(mine.type as 'float32', data, [rows, heads, length, dim]);
    });
    for (let r = 0; r < this.size; r++) this.pads[r] += length - this.length;
    this.rowIds.push(...other.rowIds);
    this.pads.push(...other.pads.map((p) => p + length - other.length));
    this.length = length;
  }
}

/** Inputs of a prefill: prompts left-padded to the longest, pads at position 0 and masked out. */
export function prefillInputs(prompts: readonly (readonly number[])[], past: ort.Tensor[]): ForwardInputs & { pads: number[] } {
  const batch = prompts.length;
  const seqLen = Math.max(...prompts.map((p) => p.length));
  const inputIds = new BigInt64Array(batch * seqLen);
  const attentionMask = new BigInt64Array(batch * seqLen);
  const positionIds = new BigInt64Array(batch * seqLen);
  const pads = prompts.map((p) => seqLen - p.length);
  prompts.forEach((prompt, r) => {
    const start = r * seqLen + pads[r];
    prompt.forEach((id, j) => {
      inputIds[start + j] = BigInt(id);
      attentionMask[start + j] = 1n;
      positionIds[start + j] = BigInt(j);
    });
  });
  return { batch, seqLen, inputIds, attentionMask, positionIds, past, pads };
}

function allocLike(like: KvArray, length: number): KvArray {
  return like instanceof Uint16Array ? new Uint16Array(length) : new Float32Array(length);
}

/** Copies `cols` columns of one row, every head, from `src` (row length `srcLen`) into `dst`. */
function copyRow(
  src: KvArray, srcLen: number, srcRow: number, srcCol: number,
  dst: KvArray, dstLen: number, dstRow: number, dstCol: number,
  cols: number, heads: number, dim: number,
): void {
  for (let h = 0; h < heads; h++) {
    const from = ((srcRow * heads + h) * srcLen + srcCol) * dim;
    const to = ((dstRow * heads + h) * dstLen + dstCol) * dim;
    dst.set(src.subarray(from, from + cols * dim), to);
  }
}
