import type * as ort from 'onnxruntime-node';
import { KvBatch, prefillInputs } from './kv-batch.js';
import type { StepToken } from './messages.js';
import type { ForwardInputs, ModelSession } from './model-session.js';
import { logSoftmaxAt } from './sampling.js';
import type { Sequence } from './sequence.js';

/** Columns `[start, end)` of a `[rows, width]` matrix; the matrix itself when that is all of it. */
function columns(data: BigInt64Array, rows: number, width: number, start: number, end: number): BigInt64Array {
  if (start === 0 && end === width) return data;
  const out = new BigInt64Array(rows * (end - start));
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * width + start, r * width + end), r * (end - start));
  return out;
}

/**
 * The prefill of requests joining the batch, left-padded together and run in chunks of at most
 * `chunkTokens` padded tokens per pass, each chunk feeding its `present.*` to the next as past. A
 * long prompt then neither allocates the logits of every position at once (rows × length × vocab)
 * nor stalls the running streams: the loop runs a decode step between two chunks.
 */
export class ChunkedPrefill {
  private readonly full: ForwardInputs & { pads: number[] };
  private readonly chunk: number;
  private readonly promptLogprobs: Map<number, (number | null)[]>;
  private past: ort.Tensor[];
  private done = 0;

  constructor(
    readonly sequences: Sequence[],
    private readonly model: ModelSession,
    chunkTokens: number,
  ) {
    this.past = model.emptyPast(sequences.length);
    this.full = prefillInputs(sequences.map((s) => s.promptIds), this.past);
    this.chunk = Math.max(1, Math.floor(chunkTokens / sequences.length));
    this.promptLogprobs = new Map(
      sequences.filter((s) => s.params.decoderInputDetails).map((s) => [s.id, s.promptIds.map(() => null)]),
    );
    for (const s of sequences) s.markStarted();
  }

  /** Runs the next chunk; after the last one, returns the first tokens and the new rows' cache. */
  async next(): Promise<{ tokens: StepToken[]; joined: KvBatch } | null> {
    const { batch, seqLen: width } = this.full;
    const start = this.done;
    const end = Math.min(width, start + this.chunk);
    const { logits, present } = await this.model.forward({
      batch,
      seqLen: end - start,
      inputIds: columns(this.full.inputIds, batch, width, start, end),
      attentionMask: columns(this.full.attentionMask, batch, width, 0, end),
      positionIds: columns(this.full.positionIds, batch, width, start, end),
      past: this.past,
    });
    this.past = present;
    this.done = end;
    const vocab = logits.length / (batch * (end - start));
    this.sequences.forEach((s, r) => this.recordPromptLogprobs(s, r, logits, vocab, start, end));
    if (end < width) return null;
    const tokens = this.sequences.map((s, r) => {
      const rowEnd = (r + 1) * (end - start) * vocab;
      const step = s.next(logits.subarray(rowEnd - vocab, rowEnd));
      const logprobs = this.promptLogprobs.get(s.id);
      if (logprobs) step.prefill = s.prefillTokens(logprobs);
      return step;
    });
    return { tokens, joined: KvBatch.fromPrefill(this.sequences.map((s) => s.id), this.full.pads, present) };
  }

  /** The logits at column c score the prompt token at column c + 1. */
  private recordPromptLogprobs(s: Sequence, r: number, logits: Float32Array, vocab: number, start: number, end: number): void {
    const logprobs = this.promptLogprobs.get(s.id);
    if (!logprobs) return;
    const pad = this.full.pads[r];
    for (let c = Math.max(start, pad); c < end && c + 1 < this.full.seqLen; c++) {
      const j = c + 1 - pad;
      const at = (r * (end - start) + (c - start)) * vocab;
      logprobs[j] = logSoftmaxAt(logits.subarray(at, at + vocab), s.promptIds[j]);
    }
  }
}
