import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/engine/prng.js';

const take = (random: () => number, n: number): number[] => Array.from({ length: n }, () => random());

describe('createRng', () => {
  it('gives the same sequence for the same seed', () => {
    expect(take(createRng(42), 100)).toEqual(take(createRng(42), 100));
  });

  it('gives different sequences for different seeds, including seeds that differ only in the high half', () => {
    const base = take(createRng(0), 20);
    for (const seed of [1, 2, 2 ** 32, 2 ** 52, Number.MAX_SAFE_INTEGER]) {
      const other = take(createRng(seed), 20);
      expect(other).not.toEqual(base);
      expect(other.filter((value, i) => value === base[i]).length).toBe(0);
    }
  });

  it('returns floats in [0, 1) with a mean near 1/2 and no short cycle', () => {
    const values = take(createRng(7), 20_000);
    expect(values.every((v) => v >= 0 && v < 1)).toBe(true);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(new Set(values).size).toBe(values.length);
    // Each decile holds about a tenth.
    const deciles = new Array(10).fill(0);
    for (const v of values) deciles[Math.floor(v * 10)]++;
    for (const count of deciles) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });

  it('uses the low bits of the draw too (53-bit floats)', () => {
    const values = take(createRng(3), 1000);
    expect(values.some((v) => !Number.isInteger(v * 2 ** 32))).toBe(true);
  });

  it('refuses a seed that is not a safe integer', () => {
    expect(() => createRng(1.5)).toThrow(RangeError);
    expect(() => createRng(2 ** 53)).toThrow(RangeError);
    expect(() => createRng(Number.NaN)).toThrow(RangeError);
  });
});
