import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/engine/prng.js';
import {
  buildLogitsPipeline,
  createSequenceSampler,
  frequencyPenalty,
  logSoftmaxAt,
  presencePenalty,
  repetitionPenalty,
  temperature,
  topK,
  topP,
  typicalP,
  usesSampling,
  type LogitsProcessor,
  type TokenHistory,
} from '../../src/engine/sampling.js';
import type { SamplingParams } from '../../src/types.js';

const GREEDY: SamplingParams = {
  doSample: false,
  temperature: 1,
  topK: 0,
  topP: 1,
  typicalP: 1,
  repetitionPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
  seed: 0,
};
const NO_HISTORY: TokenHistory = { counts: new Map(), total: 0, generated: new Set() };

function apply(processor: LogitsProcessor, values: number[], history = NO_HISTORY): number[] {
  const logits = Float32Array.from(values);
  processor(logits, history);
  return Array.from(logits);
}
const kept = (values: number[]): number[] => values.flatMap((v, i) => (v === -Infinity ? [] : [i]));
/** Logits whose softmax is exactly `probs` up to float rounding. */
const logitsOf = (probs: number[]): number[] => probs.map(Math.log);
const logsumexp = (values: number[]): number => {
  const max = Math.max(...values);
  return max + Math.log(values.reduce((sum, v) => sum + Math.exp(v - max), 0));
};
const historyOf = (ids: number[], generated: number[] = []): TokenHistory => {
  const counts = new Map<number, number>();
  for (const id of [...ids, ...generated]) counts.set(id, (counts.get(id) ?? 0) + 1);
  return { counts, total: ids.length + generated.length, generated: new Set(generated) };
};

describe('logits processors on handcrafted rows', () => {
  it('presence penalty subtracts once from each generated token, not from prompt-only tokens', () => {
    // Prompt [0, 1], generated [2, 2, 3]: tokens 2 and 3 lose 0.5 each, however often they occurred.
    expect(apply(presencePenalty(0.5), [1, 1, 1, 1, 1], historyOf([0, 1], [2, 2, 3]))).toEqual([1, 1, 0.5, 0.5, 1]);
    expect(apply(presencePenalty(-1), [0, 0, 0], historyOf([], [1]))).toEqual([0, 1, 0]);
  });

  it('a sampler applies the presence penalty to the tokens it accepted', () => {
    const sampler = createSequenceSampler({ ...GREEDY, presencePenalty: 2 }, [0]);
    // Token 1 wins first; once generated, its penalty hands the argmax to token 2.
    expect(sampler.next(Float32Array.from([0, 3, 2]), 0).id).toBe(1);
    sampler.accept(1);
    expect(sampler.next(Float32Array.from([0, 3, 2]), 0).id).toBe(2);
  });

  it('temperature divides every logit', () => {
    expect(apply(temperature(0.5), [1, 2, 3, -1])).toEqual([2, 4, 6, -2]);
    expect(apply(temperature(2), [1, 2, 3, -1])).toEqual([0.5, 1, 1.5, -0.5]);
  });

  it('temperature never produces Infinity, even when it is tiny', () => {
    const out = apply(temperature(1e-300), [1, 2, -1]);
    expect(out.every((v) => v !== Infinity && !Number.isNaN(v))).toBe(true);
    const choice = createSequenceSampler({ ...GREEDY, temperature: 1e-300 }, []).next(Float32Array.from([1, 2, -1]), 2);
    expect(Number.isFinite(choice.logprob) || choice.logprob === 0).toBe(true);
  });

  it('top_k keeps the k largest, and ties with the k-th', () => {
    const row = [1, 5, 3, 5, 2, 0, 4, -1, 2, 3];
    expect(kept(apply(topK(3), row))).toEqual([1, 3, 6]);
    expect(kept(apply(topK(4), row))).toEqual([1, 2, 3, 6, 9]);
    expect(kept(apply(topK(1), row))).toEqual([1, 3]);
    expect(apply(topK(10), row)).toEqual(row);
    expect(apply(topK(50), row)).toEqual(row);
    // Kept logits are untouched.
    expect(apply(topK(3), row).filter((v) => v !== -Infinity)).toEqual([5, 5, 4]);
  });

  it('top_p keeps the smallest head whose probability reaches p', () => {
    const row = logitsOf([0.125, 0.5, 0.125, 0.25]);
    expect(kept(apply(topP(0.4), row))).toEqual([1]);
    expect(kept(apply(topP(0.7), row))).toEqual([1, 3]);
    const three = kept(apply(topP(0.8), row));
    expect(three).toHaveLength(3);
    expect(three).toEqual(expect.arrayContaining([1, 3]));
    expect(kept(apply(topP(0.99), row))).toEqual([0, 1, 2, 3]);
  });

  it('top_p at the exact boundary: four tokens of 0.25, p = 0.5 keeps two (lowest ids first), a hair more keeps three', () => {
    expect(kept(apply(topP(0.5), [0, 0, 0, 0]))).toEqual([0, 1]);
    expect(kept(apply(topP(0.5000001), [0, 0, 0, 0]))).toEqual([0, 1, 2]);
    expect(kept(apply(topP(0.4), [-1, 0, -1, 0, 0, 0]))).toEqual([1, 3]);
    expect(kept(apply(topP(1e-9), [0, 3, 0, 1]))).toEqual([1]);
  });

  it('typical_p keeps the tokens closest to the entropy first, with ties', () => {
    // p = [0.5, 0.25, 0.125, 0.125]; H = 1.75 ln 2; |−ln p − H| = [0.75, 0.25, 1.25, 1.25] × ln 2.
    const row = logitsOf([0.5, 0.25, 0.125, 0.125]);
    expect(kept(apply(typicalP(0.2), row))).toEqual([1]);
    expect(kept(apply(typicalP(0.5), row))).toEqual([0, 1]);
    expect(kept(apply(typicalP(0.75), row))).toEqual([0, 1]);
    // The head reaches 0.8 with one of the two 0.125 tokens; its twin is tied and stays too.
    expect(kept(apply(typicalP(0.8), row))).toEqual([0, 1, 2, 3]);
  });

  it('repetition penalty divides positive and multiplies negative logits, once per distinct seen token', () => {
    const out = apply(repetitionPenalty(2), [2, -2, 1, 0.5], historyOf([0, 1, 1]));
    expect(out).toEqual([1, -4, 1, 0.5]);
    expect(apply(repetitionPenalty(0.5), [2, -2, 1], historyOf([0, 1]))).toEqual([4, -1, 1]);
  });

  it('frequency penalty subtracts penalty × count / sequence length (TGI)', () => {
    const out = apply(frequencyPenalty(0.5), [1, 1, 1], historyOf([0, 1, 1, 1]));
    expect(out[0]).toBeCloseTo(1 - 0.5 * (1 / 4), 6);
    expect(out[1]).toBeCloseTo(1 - 0.5 * (3 / 4), 6);
    expect(out[2]).toBe(1);
    expect(apply(frequencyPenalty(-2), [0, 0], historyOf([1, 1]))[1]).toBeCloseTo(2, 6);
  });

  it('buildLogitsPipeline switches on what differs from neutral, in TGI order', () => {
    expect(buildLogitsPipeline(GREEDY)).toHaveLength(0);
    const all = buildLogitsPipeline({
      ...GREEDY,
      repetitionPenalty: 2,
      frequencyPenalty: 1,
      temperature: 0.5,
      topK: 2,
      topP: 0.9,
      typicalP: 0.9,
    });
    expect(all).toHaveLength(6);
    // A seen token's logit 4: repetition → 2, frequency (1 × 1/1) → 1, temperature 0.5 → 2.
    // Any other order gives 3 (temperature first: 8 → 4 → 3; frequency first: 3 → 1.5 → 3).
    const row = Float32Array.from([4, 0]);
    for (const process of buildLogitsPipeline({ ...GREEDY, repetitionPenalty: 2, frequencyPenalty: 1, temperature: 0.5 })) {
      process(row, historyOf([0]));
    }
    expect(Array.from(row)).toEqual([2, 0]);
  });
});

describe('usesSampling', () => {
  it('samples when do_sample or any warper is active, as TGI does', () => {
    expect(usesSampling(GREEDY)).toBe(false);
    expect(usesSampling({ ...GREEDY, repetitionPenalty: 1.2, frequencyPenalty: 1 })).toBe(false);
    expect(usesSampling({ ...GREEDY, doSample: true })).toBe(true);
    expect(usesSampling({ ...GREEDY, temperature: 0.7 })).toBe(true);
    expect(usesSampling({ ...GREEDY, topK: 5 })).toBe(true);
    expect(usesSampling({ ...GREEDY, topP: 0.9 })).toBe(true);
    expect(usesSampling({ ...GREEDY, typicalP: 0.9 })).toBe(true);
  });
});

describe('createSequenceSampler', () => {
  it('greedy picks the first maximum and reports its log_softmax and the top tokens, descending', () => {
    const row = [1, 3, 2, 3, -1];
    const choice = createSequenceSampler(GREEDY, [4]).next(Float32Array.from(row), 3);
    const logZ = logsumexp(row);
    expect(choice.id).toBe(1);
    expect(choice.logprob).toBeCloseTo(3 - logZ, 6);
    expect(choice.topTokens.map((t) => t.id)).toEqual([1, 3, 2]);
    expect(choice.topTokens[2].logprob).toBeCloseTo(2 - logZ, 6);
    expect(createSequenceSampler(GREEDY, []).next(Float32Array.from(row), 0).topTokens).toEqual([]);
    expect(createSequenceSampler(GREEDY, []).next(Float32Array.from(row), 99).topTokens).toHaveLength(5);
  });

  it('greedy sees the repetition penalty over the prompt and over accepted tokens', () => {
    const sampler = createSequenceSampler({ ...GREEDY, repetitionPenalty: 2 }, [1]);
    const first = sampler.next(Float32Array.from([1.6, 3, 2.5]), 0);
    expect(first.id).toBe(2);
    expect(first.logprob).toBeCloseTo(2.5 - logsumexp([1.6, 1.5, 2.5]), 6);
    sampler.accept(2);
    // Now 1 and 2 are both penalised: [1.6, 1.5, 1.25].
    expect(sampler.next(Float32Array.from([1.6, 3, 2.5]), 0).id).toBe(0);
  });

  it('reports logprobs of the processed distribution; removed tokens are not among the top tokens', () => {
    const params = { ...GREEDY, temperature: 0.5, topK: 2, seed: 3 };
    const choice = createSequenceSampler(params, []).next(Float32Array.from([1, 2, 3]), 3);
    const logZ = logsumexp([4, 6]);
    expect([1, 2]).toContain(choice.id);
    expect(choice.logprob).toBeCloseTo((choice.id === 2 ? 6 : 4) - logZ, 6);
    expect(choice.topTokens.map((t) => t.id)).toEqual([2, 1]);
    expect(choice.topTokens[0].logprob).toBeCloseTo(6 - logZ, 6);
  });

  it('top_k = 1 sampling is deterministic', () => {
    const sampler = createSequenceSampler({ ...GREEDY, topK: 1, seed: 9 }, []);
    for (let i = 0; i < 20; i++) expect(sampler.next(Float32Array.from([0.1, 0.3, 0.2]), 0).id).toBe(1);
  });

  it('the same seed draws the same sequence, another seed a different one', () => {
    const drawAll = (seed: number): number[] => {
      const sampler = createSequenceSampler({ ...GREEDY, doSample: true, seed }, []);
      return Array.from({ length: 50 }, () => sampler.next(new Float32Array(10), 0).id);
    };
    expect(drawAll(1234)).toEqual(drawAll(1234));
    expect(drawAll(1234)).not.toEqual(drawAll(1235));
    expect(new Set(drawAll(1234)).size).toBeGreaterThan(5);
  });

  it('draws with frequencies that match the probabilities (chi-square, 20k draws)', () => {
    const probs = [0.5, 0.25, 0.125, 0.0625, 0.0625];
    const sampler = createSequenceSampler({ ...GREEDY, doSample: true, seed: 2024 }, []);
    const counts = new Array(probs.length).fill(0);
    const draws = 20_000;
    for (let i = 0; i < draws; i++) counts[sampler.next(Float32Array.from(logitsOf(probs)), 0).id]++;
    const chi2 = probs.reduce((sum, p, i) => sum + (counts[i] - p * draws) ** 2 / (p * draws), 0);
    expect(chi2).toBeLessThan(18.47); // 4 degrees of freedom, p = 0.001
  });

  it('never samples a token a warper removed', () => {
    const sampler = createSequenceSampler({ ...GREEDY, topP: 0.7, seed: 5 }, []);
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) seen.add(sampler.next(Float32Array.from(logitsOf([0.125, 0.5, 0.125, 0.25])), 0).id);
    expect([...seen].sort()).toEqual([1, 3]);
  });
});

describe('createSequenceSampler invariants under random settings', () => {
  it('always returns a kept id, a finite logprob <= 0 and descending top tokens', () => {
    const random = createRng(99);
    const pick = <T>(options: T[]): T => options[Math.floor(random() * options.length)];
    for (let trial = 0; trial < 300; trial++) {
      const params: SamplingParams = {
        doSample: random() < 0.5,
        seed: trial,
        temperature: pick([1, 0.7, 1.5, 1e-30, 1e30]),
        topK: pick([0, 1, 3, 100, 200]),
        topP: pick([1, 0.9, 0.5, 1e-9]),
        typicalP: pick([1, 0.95, 0.2]),
        repetitionPenalty: pick([1, 1.3, 1e-30, 1e30]),
        frequencyPenalty: pick([0, 2, -2]),
        presencePenalty: pick([0, 1.5, -2]),
      };
      const row = Float32Array.from({ length: 150 }, () => (random() < 0.05 ? -Infinity : (random() - 0.5) * pick([1, 20, 1e6])));
      const sampler = createSequenceSampler(params, [0, 1, 2, 2, 3]);
      const choice = sampler.next(row, 5);
      expect(choice.id).toBeGreaterThanOrEqual(0);
      expect(choice.id).toBeLessThan(150);
      expect(row[choice.id]).toBeGreaterThan(-Infinity);
      expect(choice.logprob).toBeLessThanOrEqual(1e-9);
      expect(Number.isFinite(choice.logprob)).toBe(true);
      const logprobs = choice.topTokens.map((t) => t.logprob);
      expect(logprobs).toEqual([...logprobs].sort((a, b) => b - a));
      expect(logprobs.every(Number.isFinite)).toBe(true);
    }
  });
});

describe('logSoftmaxAt', () => {
  it('is log_softmax of the row at one id', () => {
    expect(logSoftmaxAt(Float32Array.from([0, 0]), 1)).toBeCloseTo(-Math.LN2, 10);
    expect(logSoftmaxAt(Float32Array.from([1, 2, 3]), 2)).toBeCloseTo(3 - logsumexp([1, 2, 3]), 6);
    expect(logSoftmaxAt(Float32Array.from([1, -Infinity, 3]), 0)).toBeCloseTo(1 - logsumexp([1, 3]), 6);
  });

  it('matches a Math.exp reference to 1e-12 over a wide row (its exp is a table and a polynomial)', () => {
    const random = createRng(5);
    const row = Float32Array.from({ length: 4096 }, () => (random() - 0.5) * 200);
    const logZ = logsumexp(Array.from(row));
    for (const id of [0, 17, 4095])
      expect(Math.abs(logSoftmaxAt(row, id) - (row[id] - logZ))).toBeLessThan(1e-12 * Math.max(1, Math.abs(row[id] - logZ)));
  });
});

describe('warpers on a full 49152-token row agree with sort-based references (TGI / HF)', () => {
  const V = 49152;
  const random = createRng(11);
  const rows = Array.from({ length: 3 }, (_, r) => Float32Array.from({ length: V }, () => (random() - 0.5) * (r + 1) * 8));
  const softmax = (row: Float32Array): number[] => {
    const values = Array.from(row);
    const logZ = logsumexp(values);
    return values.map((v) => Math.exp(v - logZ));
  };

  function referenceTopP(row: Float32Array, p: number): number[] {
    const probs = softmax(row);
    const order = probs.map((_, i) => i).sort((a, b) => probs[a] - probs[b]);
    const keep: number[] = [];
    let cumulative = 0;
    order.forEach((id, j) => {
      cumulative += probs[id];
      if (cumulative > 1 - p || j === order.length - 1) keep.push(id);
    });
    return keep.sort((a, b) => a - b);
  }

  function referenceTypical(row: Float32Array, mass: number): number[] {
    const probs = softmax(row);
    const entropy = -probs.reduce((sum, q) => sum + (q > 0 ? q * Math.log(q) : 0), 0);
    const shifted = probs.map((q) => Math.abs(-Math.log(q) - entropy));
    const order = shifted.map((_, i) => i).sort((a, b) => shifted[a] - shifted[b]);
    let cumulative = 0;
    let last = 0;
    while (last < order.length - 1 && (cumulative += probs[order[last]]) < mass) last++;
    return shifted.flatMap((s, i) => (s <= shifted[order[last]] ? [i] : []));
  }

  it('top_k', () => {
    for (const row of rows) {
      for (const k of [1, 50, 5000]) {
        const kth = Array.from(row).sort((a, b) => b - a)[k - 1];
        const expected = Array.from(row).flatMap((v, i) => (v >= kth ? [i] : []));
        expect(kept(apply(topK(k), Array.from(row)))).toEqual(expected);
      }
    }
  });

  it('top_p', () => {
    for (const row of rows) {
      for (const p of [0.1, 0.5, 0.9, 0.99]) expect(kept(apply(topP(p), Array.from(row)))).toEqual(referenceTopP(row, p));
    }
  });

  it('a flat row: top_p keeps exactly its share, typical_p keeps everything (all tie), top_k keeps everything', () => {
    expect(kept(apply(topP(0.5), new Array(V).fill(0)))).toHaveLength(V / 2);
    expect(kept(apply(typicalP(0.5), new Array(V).fill(0)))).toHaveLength(V);
    expect(kept(apply(topK(100), new Array(V).fill(0)))).toHaveLength(V);
  });

  it('typical_p', () => {
    for (const row of rows) {
      for (const mass of [0.2, 0.9]) expect(kept(apply(typicalP(mass), Array.from(row)))).toEqual(referenceTypical(row, mass));
    }
  });
});
