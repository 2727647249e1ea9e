/** The scheduler's admission of waiting requests into the running batch: FIFO, within the batch size and both token budgets. */
import { describe, expect, it } from 'vitest';
import { BatchQueue } from '../../src/engine/batch-queue.js';

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

  it('lets a prompt over the prefill budget join a running batch when it prefills alone (in chunks)', () => {
    const queue = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 10, maxBatchTotalTokens: 1000 });
    [entry(1, 50), entry(2, 5)].forEach((e) => queue.append(e));
    expect(queue.nextBatch({ size: 2, reservedTokens: 20 }).map((e) => e.id)).toEqual([1]);
    expect(queue.nextBatch({ size: 3, reservedTokens: 80 }).map((e) => e.id)).toEqual([2]);
  });

  it('asks the cache layout whether an entry can join', () => {
    const queue = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 1000 });
    [entry(1, 5), entry(2, 5)].forEach((e) => queue.append(e));
    expect(queue.nextBatch({ size: 1, reservedTokens: 0 }, (e) => e.id !== 1)).toEqual([]);
    expect(queue.nextBatch({ size: 1, reservedTokens: 0 }).map((e) => e.id)).toEqual([1, 2]);
  });

  it('takes an entry that fills a budget exactly, and stops at one token over it', () => {
    // Prefill: two rows padded to the longer prompt, 2 × 10 = 20 = the budget; a third row makes 30.
    const prefill = new BatchQueue({ maxBatchSize: 8, maxBatchPrefillTokens: 20, maxBatchTotalTokens: 1000 });
    [entry(1, 4), entry(2, 10), entry(3, 1)].forEach((e) => prefill.append(e));
    expect(prefill.nextBatch({ size: 0, reservedTokens: 0 }).map((e) => e.id)).toEqual([1, 2]);
    // KV: 60 reserved + 40 = 100 fits; the next 40 would be 140.
    const kv = new BatchQueue({ maxBatchSize: 8, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 100 });
    [entry(1, 5, 40), entry(2, 5, 40)].forEach((e) => kv.append(e));
    expect(kv.nextBatch({ size: 1, reservedTokens: 60 }).map((e) => e.id)).toEqual([1]);
    expect(kv.nextBatch({ size: 1, reservedTokens: 61 })).toEqual([]);
    // Size: a batch of 3 with room for 4 takes one.
    const size = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 1000 });
    [entry(1, 5), entry(2, 5)].forEach((e) => size.append(e));
    expect(size.nextBatch({ size: 3, reservedTokens: 0 }).map((e) => e.id)).toEqual([1]);
  });

  it('removes a cancelled entry', () => {
    const queue = new BatchQueue({ maxBatchSize: 4, maxBatchPrefillTokens: 100, maxBatchTotalTokens: 100 });
    queue.append(entry(1, 5));
    expect(queue.remove(1)?.id).toBe(1);
    expect(queue.remove(1)).toBeUndefined();
    expect(queue.size).toBe(0);
  });
});
