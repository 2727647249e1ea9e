import type * as ort from 'onnxruntime-node';
import { type CacheLayout, KvBatch } from './kv-batch.js';
import type { StepToken } from './messages.js';
import type { ForwardInputs, Logits, ModelSession } from './model-session.js';
import { logSoftmaxAt } from './sampling.js';
import type { Sequence } from './sequence.js';

/** Columns `[start, end)` of a `[rows, width]` matrix; the matrix itself when that is all of it. */
function columns(data: BigInt64Array, rows: number, width: number, start: number, end: number): BigInt64Array {
  if (start === 0 && end === width) return data;
  const out = new BigInt64Array(rows * (end - start));
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * width + start, r * width + end), r * (end - start));
  return out;
}

/** The whole prompt matrix of a prefill, padded as the layout wants, behind `offset` masked empty columns. */
interface PromptMatrix {
  batch: number;
  seqLen: number;
  offset: number;
  inputIds: BigInt64Array;
  /** `[batch, offset + seqLen]`. */
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  /** Column (in `[0, seqLen)`) of each row's first prompt token. */
  firsts: number[];
}

/**
 * Prompts padded to the longest: on the left for the `left` and `anchored` layouts (every row ends
 * at the last column), on the right for `right`. Pads are masked out and get position 0. With
 * `cached`, the `offset` past columns are not masked: they hold the one row's first prompt tokens
 * (a prefix cache hit), and its tokens here follow them in position.
 */
export function promptMatrix(prompts: readonly (readonly number[])[], layout: CacheLayout, offset = 0, cached = false): PromptMatrix {
  const batch = prompts.length;
  const seqLen = Math.max(...prompts.map((p) => p.length));
  const total = offset + seqLen;
  const inputIds = new BigInt64Array(batch * seqLen);
  const attentionMask = new BigInt64Array(batch * total);
  const positionIds = new BigInt64Array(batch * seqLen);
  const firsts = prompts.map((p) => (layout === 'right' ? 0 : seqLen - p.length));
  const before = cached ? offset : 0;
  prompts.forEach((prompt, r) => {
    attentionMask.fill(1n, r * total, r * total + before);
    prompt.forEach((id, j) => {
      inputIds[r * seqLen + firsts[r] + j] = BigInt(id);
      attentionMask[r * total + offset + firsts[r] + j] = 1n;
      positionIds[r * seqLen + firsts[r] + j] = BigInt(before + j);
    });
  });
  return { batch, seqLen, offset, inputIds, attentionMask, positionIds, firsts };
}

/** A prompt's first tokens whose keys and values the prefix cache had: `past` is `[1, kvHeads, tokens, headDim]`. */
export interface CachedPrefix {
  tokens: number;
  past: ort.Tensor[];
}

/**
 * The prefill of requests joining the batch, padded together and run in chunks of at most
 * `chunkTokens` padded tokens per pass, each chunk feeding its `present.*` to the next as past. A
 * long prompt then neither allocates the logits of every position at once (rows × length × vocab)
 * nor stalls the running streams: the loop runs a decode step between two chunks.
 *
 * `anchored` rows are prefilled behind `offset` masked columns, so that they end where the running
 * batch will end when they join. GroupQueryAttention (`right`) refuses a multi-row pass with a past,
 * so its multi-row prefills run in one pass (the queue's prefill budget keeps those small anyway).
 *
 * A request with a `prefix` from the prefix cache prefills alone, from the end of its prefix, with the
 * prefix as the past of its first chunk; the row it hands the batch holds its whole prompt.
 */
export class ChunkedPrefill {
  private readonly full: PromptMatrix;
  private readonly chunk: number;
  private readonly promptLogprobs: Map<number, (number | null)[]>;
  /** Each row's prompt tokens that this prefill computes: all of them, or those after the cached prefix. */
  private readonly computed: number[][];
  private past: ort.Tensor[];
  private done = 0;

  constructor(
    readonly sequences: Sequence[],
    private readonly model: ModelSession,
    chunkTokens: number,
    private readonly layout: CacheLayout,
    offset = 0,
    prefix: CachedPrefix | null = null,
  ) {
    // The prompt logprobs of cached positions were never computed.
    if (prefix && (sequences.length !== 1 || offset !== 0 || layout === 'anchored' || sequences[0].params.decoderInputDetails)) {
      throw new Error('a cached prefix is only reused by a request prefilled alone, in the left or right layout, without prompt logprobs');
    }
    this.computed = sequences.map((s) => (prefix ? s.promptIds.slice(prefix.tokens) : s.promptIds));
    this.full = prefix ? promptMatrix(this.computed, layout, prefix.tokens, true) : promptMatrix(this.computed, layout, offset);
    this.past = prefix ? prefix.past : model.emptyPast(sequences.length, offset);
    const oneShot = layout === 'right' && sequences.length > 1;
    this.chunk = oneShot ? this.full.seqLen : Math.max(1, Math.floor(chunkTokens / sequences.length));
    this.promptLogprobs = new Map(sequences.filter((s) => s.params.decoderInputDetails).map((s) => [s.id, s.promptIds.map(() => null)]));
    for (const s of sequences) s.markStarted();
  }

  /** The width of the cache this prefill produces. */
  get width(): number {
    return this.full.offset + this.full.seqLen;
  }

  /** Forward passes still to run. */
  get remainingChunks(): number {
    return Math.ceil((this.full.seqLen - this.done) / this.chunk);
  }

  /** Runs the next chunk; after the last one, returns the first tokens and the new rows' cache. */
  async next(): Promise<{ tokens: StepToken[]; joined: KvBatch } | null> {
    const { seqLen: width, offset } = this.full;
    const start = this.done;
    const end = Math.min(width, start + this.chunk);
    const last = end === width;
    const { logits, present } = await this.model.forward(this.chunkInputs(start, end, last));
    this.past = present;
    this.done = end;
    this.sequences.forEach((s, r) => this.recordPromptLogprobs(s, r, logits, start, end));
    if (!last) return null;
    const tokens = this.sequences.map((s, r) => {
      // The row's last prompt token: the last column, or its own end in a right-padded matrix.
      const column = this.full.firsts[r] + this.computed[r].length - 1;
      const step = s.next(logits.at(r, logits.columns - (end - column)));
      const logprobs = this.promptLogprobs.get(s.id);
      if (logprobs) step.prefill = s.prefillTokens(logprobs);
      return step;
    });
    const ids = this.sequences.map((s) => s.id);
    const lengths = this.sequences.map((s) => s.promptIds.length);
    // A cached prefix's columns are the row's own first tokens.
    const starts = this.full.firsts.map((first, r) => offset + first - (lengths[r] - this.computed[r].length));
    return { tokens, joined: KvBatch.fromPrefill(this.layout, ids, starts, lengths, present) };
  }

  private chunkInputs(start: number, end: number, last: boolean): ForwardInputs {
    const { batch, seqLen: width, offset } = this.full;
    // Only the last chunk's last column is sampled: the graph may skip the other logits, unless a
    // row asked for the prompt's logprobs or the rows end at different columns.
    const rowsEndTogether = this.layout !== 'right' || this.computed.every((prompt) => prompt.length === width);
    const logitsToKeep = last && this.promptLogprobs.size === 0 && rowsEndTogether ? 1 : 0;
    return {
      batch,
      seqLen: end - start,
      inputIds: columns(this.full.inputIds, batch, width, start, end),
      attentionMask: columns(this.full.attentionMask, batch, offset + width, 0, offset + end),
      positionIds: columns(this.full.positionIds, batch, width, start, end),
      past: this.past,
      logitsToKeep: last ? logitsToKeep : this.promptLogprobs.size > 0 ? 0 : 1,
    };
  }

  /** The logits at column c score the prompt token at column c + 1. */
  private recordPromptLogprobs(s: Sequence, r: number, logits: Logits, start: number, end: number): void {
    const logprobs = this.promptLogprobs.get(s.id);
    if (!logprobs) return;
    const first = this.full.firsts[r];
    for (let c = Math.max(start, first); c < end && c + 1 < first + s.promptIds.length; c++) {
      const j = c + 1 - first;
      logprobs[j] = logSoftmaxAt(logits.at(r, c - start), s.promptIds[j]);
    }
  }
}
