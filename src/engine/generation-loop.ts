import { getHeapStatistics } from 'node:v8';
import { GenerationError, serializeError } from '../errors.js';
import type { EngineStats, ForwardPassRecord } from '../types.js';
import { BatchQueue, type BatchBudget } from './batch-queue.js';
import { type KvBatch, kvData } from './kv-batch.js';
import type { FromWorker, StepToken } from './messages.js';
import type { ModelSession } from './model-session.js';
import { ChunkedPrefill, type CachedPrefix } from './prefill.js';
import type { PrefixCache, PrefixHit } from './prefix-cache.js';
import type { Sequence } from './sequence.js';
import { proposeTokens } from './speculation.js';

/** Decode steps a finished row may stay in the cache, waiting to be merged out with a joining request. */
const DEAD_ROW_STEPS = 4;

/**
 * Continuous batching in the worker. Each turn: drop cancelled rows; start a prefill of whatever
 * waiting requests fit the budgets, or run the next chunk of the one under way; merge finished
 * prefills into the running batch; run one decode step over every row; post one message per pass
 * with all the new tokens. A request arriving under load waits at most one decode step before its
 * prefill starts, and a long prompt's chunks alternate with the running streams' steps.
 *
 * With a prefix cache, every completed prefill leaves its prompt's keys and values there, and a
 * request whose prompt starts with a cached prefix prefills alone from the end of it.
 *
 * With `speculativeTokens`, a batch of one row (a lone stream, where per-stream speed matters most)
 * in the `left` or `right` layout runs a verification pass instead of a decode step whenever the
 * prompt-lookup proposer has a guess (speculation.ts): its last token plus up to k proposed ones in
 * one pass. Each position's logits go through `Sequence.next` in order, as consecutive decode steps
 * would; the row keeps every token up to the first one that differs from the proposal (that one
 * too: it is what the model chose there) and the cache keeps only those tokens' columns. Since the
 * choice at each position is the sampler's own, sampled rows (same seed, same draws) get exactly the
 * tokens they get without speculation too, only fewer of their proposals are accepted.
 */
export class GenerationLoop {
  private readonly queue: BatchQueue<Sequence>;
  private readonly running = new Map<number, Sequence>();
  private readonly cancelled = new Set<number>();
  private batch: KvBatch | null = null;
  private prefilling: ChunkedPrefill | null = null;
  private stepsWithDeadRows = 0;
  private proposedTokens = 0;
  /**
   * Back-off after verifications that kept none of their proposals: the lone row skips proposing
   * for 2, 4, ... 32 steps, so text where lookups never hit pays for few wasted verification passes.
   */
  private missedVerifications = 0;
  private skipProposals = 0;
  private acceptedTokens = 0;
  /** The pass under way, reported with the first message it sends. */
  private pass: { method: 'prefill' | 'decode'; rows: number; started: number } | null = null;
  private wake: (() => void) | null = null;
  private closed = false;
  private healthy = true;

  constructor(
    private readonly model: ModelSession,
    private readonly budget: BatchBudget & { speculativeTokens?: number },
    /** The context: no position may reach it (limits.maxTotalTokens). */
    private readonly contextTokens: number,
    private readonly post: (message: FromWorker) => void,
    private readonly prefixCache: PrefixCache | null = null,
  ) {
    this.queue = new BatchQueue(budget);
  }

  submit(sequence: Sequence): void {
    this.queue.append(sequence);
    this.wake?.();
  }

  cancel(id: number): void {
    const queued = this.queue.remove(id);
    if (queued) return queued.release();
    if (this.running.has(id) || this.prefilling?.sequences.some((s) => s.id === id)) this.cancelled.add(id);
  }

  stop(): void {
    this.closed = true;
    this.wake?.();
  }

  stats(): EngineStats {
    const heap = getHeapStatistics();
    return {
      queueSize: this.queue.size,
      batchSize: this.running.size,
      batchReservedTokens: this.reservedTokens(),
      healthy: this.healthy,
      workerMemoryBytes: heap.used_heap_size + heap.external_memory,
      ...(this.prefixCache
        ? {
            prefixCacheHits: this.prefixCache.hits,
            prefixCacheTokens: this.prefixCache.hitTokens,
            prefixCacheBytes: this.prefixCache.bytes,
          }
        : {}),
      ...(this.budget.speculativeTokens
        ? { speculativeProposedTokens: this.proposedTokens, speculativeAcceptedTokens: this.acceptedTokens }
        : {}),
    };
  }

  async run(): Promise<void> {
    while (!this.closed) {
      if (this.queue.size === 0 && this.running.size === 0 && !this.prefilling) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
        continue;
      }
      await this.guard([...this.running.values()], () => this.dropCancelled());
      if (!this.prefilling) {
        const joining = this.queue.nextBatch({ size: this.running.size, reservedTokens: this.reservedTokens() }, (s, taken) =>
          this.canJoin(s, taken),
        );
        if (joining.length > 0) await this.guard(joining, () => this.startPrefill(joining));
      }
      const prefill = this.prefilling;
      if (prefill) await this.guard(prefill.sequences, () => this.prefill(prefill), 'prefill');
      await this.guard([...this.running.values()], () => this.dropCancelled());
      if (this.running.size > 0) await this.guard([...this.running.values()], () => this.decode(), 'decode');
      // Let cancellations and submissions that arrived during the pass be handled before the next one.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * An anchored row (positions from the column index) joins at the column where the batch ends, so
   * it must not be longer than the batch, and the positions of every row in its prefill, shorter
   * rows pushed right by their padding, must stay within the context.
   */
  private canJoin(sequence: Sequence, taken: readonly Sequence[]): boolean {
    // A request that reuses a cached prefix prefills alone.
    if (taken.length > 0 && (this.reusable(sequence) || this.reusable(taken[0]))) return false;
    if (this.model.attention.layout !== 'anchored') return true;
    const group = [...taken, sequence];
    const longest = Math.max(...group.map((s) => s.inputLength));
    const batch = this.running.size > 0 ? this.batch : null;
    // The batch is wider by one column per decode step between two chunks of the prefill.
    const end = batch ? batch.width + Math.ceil(longest / this.budget.maxBatchPrefillTokens) - 1 : longest;
    return longest <= end && group.every((s) => end + s.maxNewTokens <= this.contextTokens);
  }

  private startPrefill(joining: Sequence[]): void {
    const { layout } = this.model.attention;
    let offset = 0;
    if (layout === 'anchored' && this.batch && this.running.size > 0) {
      // Joining rows are prefilled behind masked columns so that they end where the batch will end
      // when they join: its width now, plus one column per decode step between two chunks.
      const longest = Math.max(...joining.map((s) => s.inputLength));
      const chunks = Math.ceil(longest / Math.max(1, Math.floor(this.budget.maxBatchPrefillTokens / joining.length)));
      offset = this.batch.width + chunks - 1 - longest;
    }
    const hit = joining.length === 1 ? this.reusable(joining[0]) : null;
    let prefix: CachedPrefix | null = null;
    if (hit) {
      prefix = { tokens: hit.tokens, past: this.prefixCache!.past(hit) };
      this.prefixCache!.recordHit(hit);
    }
    this.prefilling = new ChunkedPrefill(joining, this.model, this.budget.maxBatchPrefillTokens, layout, offset, prefix);
  }

  /**
   * The cached prefix a request would start from, or null: never for the `anchored` layout (keys
   * cached at one column are only right at that column), nor for a request that asked for its
   * prompt's logprobs (those of cached positions are not kept).
   */
  private reusable(sequence: Sequence): PrefixHit | null {
    if (!this.prefixCache || this.model.attention.layout === 'anchored' || sequence.params.decoderInputDetails) return null;
    return this.prefixCache.lookup(sequence.promptIds);
  }

  /** Keeps a completed prefill's prompt in the prefix cache: row `row` of the rows it produced. */
  private remember(sequence: Sequence, joined: KvBatch, row: number): void {
    if (!this.prefixCache || this.model.attention.layout === 'anchored') return;
    this.prefixCache.store(sequence.promptIds, { kv: joined.kv.map(kvData), width: joined.width, row, start: joined.starts[row] });
  }

  private async prefill(prefill: ChunkedPrefill): Promise<void> {
    const done = await prefill.next();
    if (!done) return this.emit([]);
    this.prefilling = null;
    // First tokens go out before the cache is merged: the copy is no part of their latency.
    this.emit(done.tokens);
    prefill.sequences.forEach((s, row) => {
      const cancelled = this.cancelled.delete(s.id);
      // A request cancelled during its prefill leaves nothing behind.
      if (!cancelled) this.remember(s, done.joined, row);
      if (!s.finished && !cancelled) this.running.set(s.id, s);
      else s.release();
    });
    if (this.batch && this.batch.size > 0) this.batch.merge(this.liveIds(), done.joined);
    else {
      done.joined.filter(this.liveIds());
      this.batch = done.joined;
    }
    this.stepsWithDeadRows = 0;
  }

  private async decode(): Promise<void> {
    const batch = this.batch!;
    // Rows that finished since the last merge ride along until it is worth copying them out.
    const rows = batch.rowIds.map((id) => this.running.get(id));
    const proposal = rows.length === 1 && rows[0] ? this.proposal(rows[0]) : [];
    if (proposal.length > 0) return this.verify(rows[0]!, proposal);
    if (this.model.attention.inPlace) batch.reserve(1, this.contextTokens);
    const { logits, present } = await this.model.forward(batch.decodeInputs(rows.map((s) => s?.lastToken ?? null)));
    batch.advance(present);
    const tokens: StepToken[] = [];
    // A row whose choice fails (its grammar broke) fails alone; the others keep their tokens.
    const broken: Array<[Sequence, unknown]> = [];
    rows.forEach((s, r) => {
      if (!s) return;
      try {
        tokens.push(s.next(logits.at(r, 0)));
      } catch (error) {
        broken.push([s, error]);
      }
    });
    for (const s of rows) if (s?.finished) this.retire(s.id);
    this.emit(tokens);
    for (const [s, error] of broken) this.fail([s], error);
    this.compact();
  }

  /** Tokens to verify after the lone row's last one; none when speculation cannot or need not run. */
  private proposal(sequence: Sequence): number[] {
    const k = Math.min(this.budget.speculativeTokens ?? 0, sequence.maxNewTokens - sequence.generated.length - 1);
    // A grammar's state cannot step back over rejected proposals: constrained rows are not speculated on.
    if (k <= 0 || sequence.constrained || this.model.attention.layout === 'anchored') return [];
    if (this.skipProposals > 0) {
      this.skipProposals -= 1;
      return [];
    }
    const proposal = proposeTokens(sequence.promptIds, sequence.generated, k);
    // GroupQueryAttention's rotary table bounds the cache's width (see compact).
    if (proposal.length > 0 && this.model.attention.layout === 'right' && this.batch!.longest + proposal.length + 1 > this.contextTokens)
      return [];
    return proposal;
  }

  /** One pass over the lone row's last token and `proposal`: see the class comment. */
  private async verify(sequence: Sequence, proposal: number[]): Promise<void> {
    const batch = this.batch!;
    if (this.model.attention.inPlace) batch.reserve(1 + proposal.length, this.contextTokens);
    const { logits, present } = await this.model.forward(batch.verifyInputs([sequence.lastToken, ...proposal]));
    const tokens: StepToken[] = [];
    for (let j = 0; j <= proposal.length && !sequence.finished; j++) {
      tokens.push(sequence.next(logits.at(0, j)));
      if (tokens[j].token.id !== proposal[j]) break;
    }
    this.proposedTokens += proposal.length;
    const accepted = tokens.filter((t, j) => t.token.id === proposal[j]).length;
    this.acceptedTokens += accepted;
    this.missedVerifications = accepted > 0 ? 0 : this.missedVerifications + 1;
    this.skipProposals = accepted > 0 ? 0 : Math.min(32, 2 ** this.missedVerifications);
    batch.advanceBy(present, tokens.length);
    if (sequence.finished) this.retire(sequence.id);
    this.emit(tokens);
    this.compact();
  }

  /**
   * Copies finished rows out of the cache, or not yet: a copy costs about one decode step, and a
   * request joining soon merges the same copy with its own. Dead rows wait at most a few steps, and
   * never when they are half the batch.
   */
  private compact(): void {
    const batch = this.batch;
    if (!batch) return;
    const dead = batch.size - this.running.size;
    if (this.running.size === 0) return void (this.batch = null);
    if (dead === 0) return void (this.stepsWithDeadRows = 0);
    this.stepsWithDeadRows += 1;
    // GroupQueryAttention's rotary table bounds the batch's width, which a finished row would widen
    // (unless written in place, where a finished row restarts at column 0).
    const tooWide = this.model.attention.layout === 'right' && !batch.inPlace && batch.width >= this.contextTokens;
    if (tooWide || dead * 2 >= batch.size || this.stepsWithDeadRows >= DEAD_ROW_STEPS) {
      batch.filter(this.liveIds());
      this.stepsWithDeadRows = 0;
    }
  }

  private reservedTokens(): number {
    let reserved = 0;
    for (const s of this.running.values()) reserved += s.reservedTokens;
    return reserved;
  }

  /** A sequence leaves the batch: it finished, was cancelled or failed. No id outlives it in `cancelled`. */
  private retire(id: number): void {
    this.running.get(id)?.release();
    this.running.delete(id);
    this.cancelled.delete(id);
  }

  private liveIds(): Set<number> {
    return new Set(this.running.keys());
  }

  private emit(tokens: StepToken[]): void {
    this.post({ type: 'step', tokens, stats: this.stats(), ...(this.pass ? { pass: this.record(true) } : {}) });
    this.pass = null;
  }

  private record(ok: boolean): ForwardPassRecord {
    const { method, rows, started } = this.pass!;
    return { method, rows, ok, seconds: (performance.now() - started) / 1000 };
  }

  private dropCancelled(): void {
    if (this.cancelled.size === 0) return;
    // A prefill whose requests all left stops; otherwise its cancelled rows are dropped when it ends.
    if (this.prefilling?.sequences.every((s) => this.cancelled.has(s.id))) {
      for (const s of this.prefilling.sequences) {
        this.cancelled.delete(s.id);
        s.release();
      }
      this.prefilling = null;
    }
    let dropped = false;
    for (const id of this.cancelled) {
      if (!this.running.has(id)) continue;
      this.retire(id);
      dropped = true;
    }
    if (!dropped) return;
    this.compact();
    // The main thread learns the new batch size even when no forward pass follows.
    this.emit([]);
  }

  /**
   * Everything that can throw in a turn (a forward pass, a cache copy, a prefill's allocation) runs
   * here: a failure fails the sequences it carried, and the loop goes on serving the others. `method`
   * names the forward pass to report, if the step is one.
   */
  private async guard(sequences: Sequence[], step: () => Promise<void> | void, method?: 'prefill' | 'decode'): Promise<void> {
    if (method) this.pass = { method, rows: sequences.length, started: performance.now() };
    try {
      await step();
      if (!this.healthy && method) {
        this.healthy = true;
        // The pass's own message still said unhealthy; the main thread must learn it recovered.
        this.emit([]);
      }
    } catch (error) {
      this.fail(sequences, error);
    }
  }

  private fail(sequences: Sequence[], error: unknown): void {
    this.healthy = false;
    const ids = sequences.map((s) => s.id);
    for (const s of sequences) s.release();
    for (const id of ids) this.retire(id);
    if (this.prefilling && this.prefilling.sequences.some((s) => ids.includes(s.id))) this.prefilling = null;
    const failure = new GenerationError(error instanceof Error ? error.message : String(error), error);
    const pass = this.pass ? { pass: this.record(false) } : {};
    this.pass = null;
    this.post({ type: 'failed', ids, error: serializeError(failure), stats: this.stats(), ...pass });
    if (this.running.size === 0) {
      this.batch = null;
      return;
    }
    try {
      this.batch?.filter(this.liveIds());
    } catch (copyError) {
      // The cache cannot shed the failed rows: the rest of the batch cannot go on either.
      this.batch = null;
      this.fail([...this.running.values()], copyError);
    }
  }
}
