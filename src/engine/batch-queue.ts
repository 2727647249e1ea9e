/** The budgets a new batch must fit (TGI's router options of the same names). */
export interface BatchBudget {
  maxBatchSize: number;
  /** Padded prompt tokens of one prefill pass: rows × longest prompt. */
  maxBatchPrefillTokens: number;
  /** KV reservation of the running batch: the sum of each sequence's `reservedTokens`. */
  maxBatchTotalTokens: number;
}

export interface QueueEntry {
  readonly id: number;
  readonly inputLength: number;
  readonly reservedTokens: number;
}

/**
 * The waiting queue and the rule that forms the next prefill, as a plain class (TGI's `State`):
 * FIFO, stopping at the first entry that does not fit, so no request is starved by smaller ones.
 */
export class BatchQueue<T extends QueueEntry> {
  private entries: T[] = [];

  constructor(private readonly budget: BatchBudget) {}

  get size(): number {
    return this.entries.length;
  }

  append(entry: T): void {
    this.entries.push(entry);
  }

  remove(id: number): T | undefined {
    const index = this.entries.findIndex((e) => e.id === id);
    return index < 0 ? undefined : this.entries.splice(index, 1)[0];
  }

  /**
   * Takes the entries that join the running batch now. An entry that alone exceeds a budget still runs
   * when the batch is empty, otherwise it would wait forever. `canJoin` is the cache layout's own
   * condition, given the entries taken before it (anchored rows can only join a batch that is at
   * least as long as they are).
   */
  nextBatch(running: { size: number; reservedTokens: number }, canJoin: (entry: T, taken: readonly T[]) => boolean = () => true): T[] {
    const taken: T[] = [];
    let reserved = running.reservedTokens;
    let longest = 0;
    for (const entry of this.entries) {
      const size = running.size + taken.length + 1;
      const prefill = Math.max(longest, entry.inputLength) * (taken.length + 1);
      const alone = running.size === 0 && taken.length === 0;
      // A prompt over the prefill budget still joins a running batch when it prefills alone: its
      // chunks then alternate with the batch's decode steps.
      const prefillFits = prefill <= this.budget.maxBatchPrefillTokens || taken.length === 0;
      const fits =
        canJoin(entry, taken) &&
        size <= this.budget.maxBatchSize &&
        prefillFits &&
        reserved + entry.reservedTokens <= this.budget.maxBatchTotalTokens;
      if (!fits && !alone) break;
      taken.push(entry);
      reserved += entry.reservedTokens;
      longest = Math.max(longest, entry.inputLength);
    }
    this.entries.splice(0, taken.length);
    return taken;
  }
}
