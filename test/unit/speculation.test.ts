import { describe, expect, it } from 'vitest';
import { proposeTokens } from '../../src/engine/speculation.js';

describe('proposeTokens (prompt lookup)', () => {
  it("follows vLLM's example: the longest suffix n-gram's earlier occurrence, as many tokens as follow it", () => {
    expect(proposeTokens([1, 2, 3, 4, 2, 3], [], 4, 2, 3)).toEqual([4, 2, 3]);
  });

  it('prefers the longest n-gram over a shorter, earlier one', () => {
    // [8, 9] occurs first at 0, but the 3-gram [7, 8, 9] occurs at 4.
    expect(proposeTokens([8, 9, 1, 0, 7, 8, 9, 2, 5, 7, 8, 9], [], 2)).toEqual([2, 5]);
  });

  it('takes the earliest occurrence among equally long ones', () => {
    expect(proposeTokens([4, 5, 1, 4, 5, 2, 4, 5], [], 1)).toEqual([1]);
  });

  it('stops at k tokens and at the end of the context; an occurrence may overlap the suffix', () => {
    expect(proposeTokens([1, 2, 3, 4, 5, 6, 1, 2], [], 3)).toEqual([3, 4, 5]);
    expect(proposeTokens([5, 5, 5], [], 4)).toEqual([5]);
  });

  it('proposes nothing without a match of at least minN tokens, or when k is 0', () => {
    expect(proposeTokens([1, 2, 3, 4, 5], [], 4)).toEqual([]);
    // A single repeated token is not enough with the default minimum of two.
    expect(proposeTokens([1, 2, 3, 1], [], 4)).toEqual([]);
    expect(proposeTokens([1], [], 4)).toEqual([]);
    expect(proposeTokens([], [], 4)).toEqual([]);
    expect(proposeTokens([1, 2, 1, 2], [], 0)).toEqual([]);
  });

  it('reads prompt and output as one text, matches across the boundary included', () => {
    expect(proposeTokens([1, 2, 3, 4], [2, 3], 4)).toEqual(proposeTokens([1, 2, 3, 4, 2, 3], [], 4));
    expect(proposeTokens([8, 9], [1, 8, 9], 2)).toEqual([1, 8]);
  });
});
