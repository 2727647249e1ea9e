/**
 * A constrained greedy decode driven by random logits, as the sampler will run it: mask after the
 * (here absent) penalties, then argmax. Random logits stand in for the fixture model, whose output
 * is noise either way: whatever comes out valid was made valid by the grammar.
 */
import { expect } from 'vitest';
import { createRng } from '../../src/engine/prng.js';
import type { RowMatcher } from '../../src/grammar/index.js';

export interface Decoded {
  /** Generated ids without the final stop token. */
  ids: number[];
  /** Ended on a stop token with the grammar complete. */
  ended: boolean;
}

export function constrainedDecode(
  matcher: RowMatcher,
  options: { seed: number; vocabSize: number; stopTokenIds: readonly number[]; maxSteps?: number },
): Decoded {
  const random = createRng(options.seed);
  const logits = new Float32Array(options.vocabSize);
  const ids: number[] = [];
  for (let step = 0; step < (options.maxSteps ?? 4000); step++) {
    for (let i = 0; i < logits.length; i++) logits[i] = random() * 8 - 4;
    matcher.fillMask();
    matcher.applyMask(logits);
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    expect(logits[best]).toBeGreaterThan(-Infinity);
    expect(matcher.allows(best)).toBe(true);
    expect(matcher.accept(best)).toBe(true);
    if (options.stopTokenIds.includes(best)) {
      expect(matcher.isTerminated()).toBe(true);
      return { ids, ended: true };
    }
    ids.push(best);
  }
  return { ids, ended: false };
}
