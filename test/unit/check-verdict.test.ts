import { describe, expect, it } from 'vitest';
import { compareRuns, type GreedyRun, roundingTolerance } from '../../src/check.js';
import type { ModelInfo } from '../../src/types.js';

const run = (ids: number[], logprobs: number[], margins: number[]): GreedyRun => ({ ids, logprobs, margins });
const graph = (opTypes: Record<string, number>, kvDtype: 'float32' | 'float16' = 'float32') =>
  ({ kvDtype, graph: { opTypes } }) as unknown as ModelInfo;

describe('check: telling rounding from a wrong layout', () => {
  it('allows 1e-4 on float32 graphs and 0.1 where 4-bit, int8 or float16 kernels round coarsely', () => {
    expect(roundingTolerance(graph({ MatMul: 10 }))).toBe(1e-4);
    expect(roundingTolerance(graph({ 'com.microsoft.MatMulNBits': 10 }))).toBe(0.1);
    expect(roundingTolerance(graph({ DynamicQuantizeLinear: 10, MatMulInteger: 10 }))).toBe(0.1);
    expect(roundingTolerance(graph({ MatMul: 10 }, 'float16'))).toBe(0.1);
  });

  it('takes a flip at a near-tie after close logprobs for rounding', () => {
    const alone = run([1, 2, 3], [-1, -0.5, -0.7], [2, 1, 0.02]);
    const batched = run([1, 2, 4], [-1.03, -0.52, -0.7], [2, 1, 0.02]);
    expect(compareRuns(alone, batched, 0.1)).toMatchObject({
      at: 2,
      rounding: true,
      line: expect.stringMatching(/^a near-tie flipped from token 2/),
    });
  });

  it('calls a flip a difference when the best token led clearly, or the logprobs had drifted far', () => {
    const clearLead = compareRuns(run([1, 2], [-1, -0.1], [2, 1.5]), run([1, 5], [-1, -2], [2, 1.5]), 0.1);
    expect(clearLead).toMatchObject({
      at: 1,
      rounding: false,
      line: expect.stringMatching(/^DIFFERS from token 1 \(alone 2, batched 5\)/),
    });
    const drifted = compareRuns(run([1, 2, 3], [-1, -0.5, -0.7], [2, 1, 0.02]), run([1, 2, 4], [-1.3, -0.5, -0.7], [2, 1, 0.02]), 0.1);
    expect(drifted.rounding).toBe(false);
    // float32: even a near-tie after identical logprobs is a difference past 1e-4.
    expect(compareRuns(run([1, 3], [-1, -0.7], [2, 0.01]), run([1, 4], [-1, -0.7], [2, 0.01]), 1e-4).rounding).toBe(false);
  });

  it('reports identical runs as the same tokens', () => {
    const same = run([1, 2], [-1, -0.5], [2, 1]);
    expect(compareRuns(same, same, 1e-4)).toEqual({ at: null, rounding: true, line: 'same tokens' });
  });
});
