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

  /**
   * Inputs of one decode step: each row's last token at its own next position. A null token marks a
   * finished row still in the cache: it gets position 0, so it can never run past the model's
   * position table, and its output is ignored.
   */
  decodeInputs(lastTokens: readonly (number | null)[]): ForwardInputs {
    const batch = this.size;
    const total = this.length + 1;
    const attentionMask = new BigInt64Array(batch * total);
    const positionIds = new BigInt64Array(batch);
    const inputIds = new BigInt64Array(batch);
    for (let r = 0; r < batch; r++) {
      attentionMask.fill(1n, r * total + this.pads[r], (r + 1) * total);
      const token = lastTokens[r];
      if (token === null) continue;
      positionIds[r] = BigInt(this.length - this.pads[r]);
      inputIds[r] = BigInt(token);
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
    this.merge(keep, null);
  }

  /** Appends `other`'s rows, re-padding the shorter side on the left. `other` must not be used afterwards. */
  concat(other: KvBatch): void {
    this.merge(new Set(this.rowIds), other);
  }

  /**
   * Keeps the rows in `keep` and appends `other`'s, in one copy: the only place the cache is copied.
   * Columns that are padding in every remaining row are dropped.
   */
  merge(keep: ReadonlySet<number>, other: KvBatch | null): void {
    const rows = this.rowIds.map((id, r) => (keep.has(id) ? r : -1)).filter((r) => r >= 0);
    const incoming = other?.size ?? 0;
    if (rows.length === this.size && incoming === 0) {
      if (this.size === 0 || Math.min(...this.pads) === 0) return;
    }
    if (rows.length === 0 && other) return this.adopt(other);
    if (rows.length === 0 && incoming === 0) return this.adopt(null);
    const mine = rows.length > 0 ? Math.max(...rows.map((r) => this.length - this.pads[r])) : 0;
    const length = Math.max(mine, other?.length ?? 0);
    const total = rows.length + incoming;
    this.kv = this.kv.map((tensor, i) => {
      const [, heads, , dim] = tensor.dims;
      const data = allocLike(tensor.data as KvArray, total * heads * length * dim);
      rows.forEach((src, dst) => {
        copyRow(tensor.data as KvArray, this.length, src, this.length - mine, data, length, dst, length - mine, mine, heads, dim);
      });
      for (let r = 0; r < incoming; r++) {
        const theirs = other!.kv[i].data as KvArray;
        copyRow(theirs, other!.length, r, 0, data, length, rows.length + r, length - other!.length, other!.length, heads, dim);
      }
      return new ort.Tensor(tensor.type as 'float32', data, [total, heads, length, dim]);
    });
    const pads = [...rows.map((r) => this.pads[r] + length - this.length), ...(other?.pads.map((p) => p + length - other.length) ?? [])];
    const ids = [...rows.map((r) => this.rowIds[r]), ...(other?.rowIds ?? [])];
    this.rowIds.splice(0, this.rowIds.length, ...ids);
    this.pads.splice(0, this.pads.length, ...pads);
    this.length = length;
  }

  /** Becomes `other` (or empty) without a copy. */
  private adopt(other: KvBatch | null): void {
    this.rowIds.splice(0, this.rowIds.length, ...(other?.rowIds ?? []));
    this.pads.splice(0, this.pads.length, ...(other?.pads ?? []));
    this.length = other?.length ?? 0;
    this.kv = other?.kv ?? [];
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
