/**
 * `applyMask` against the plain reading of xgrammar's bitmask (bit `id % 32` of word `id / 32` set:
 * allowed), on masks made of the runs real grammars produce: all-clear, all-set and mixed words, a
 * vocabulary that is no multiple of 32, and a logits row wider than the vocabulary.
 */
import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/engine/prng.js';
import { GrammarRowMatcher } from '../../src/grammar/matcher.js';
import type { MatcherHandle, VectorHandle, XgrammarInstance } from '../../src/grammar/xgrammar-binding.js';

/** A matcher whose bitmask is `words`: only the two calls fillMask makes are stood in for. */
function matcherWith(words: Int32Array, vocabSize: number): GrammarRowMatcher {
  const vector = { delete() {}, size: () => words.length } as VectorHandle;
  const handle = { GetNextTokenBitmask: () => vector, delete() {} } as unknown as MatcherHandle;
  const wasm = { vecIntToView: () => words } as unknown as XgrammarInstance;
  const matcher = new GrammarRowMatcher(wasm, handle, vocabSize, () => {});
  matcher.fillMask();
  return matcher;
}

describe('applyMask', () => {
  it.each([
    [1000, 1000],
    [1000, 1024],
    [49152, 49152],
  ])('refuses exactly the clear bits (vocabulary %i, row %i)', (vocabSize, width) => {
    const random = createRng(vocabSize + width);
    for (let trial = 0; trial < 20; trial++) {
      const words = new Int32Array(Math.ceil(vocabSize / 32));
      for (let w = 0; w < words.length; w++) {
        const kind = random();
        words[w] = kind < 0.4 ? 0 : kind < 0.7 ? -1 : (random() * 2 ** 32) | 0;
      }
      const logits = Float32Array.from({ length: width }, () => random());
      const expected = logits.map((value, id) => (id < vocabSize && ((words[id >>> 5] >>> (id & 31)) & 1) === 0 ? -Infinity : value));
      matcherWith(words, vocabSize).applyMask(logits);
      expect(logits).toEqual(expected);
    }
  });
});
