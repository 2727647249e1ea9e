/**
 * Choosing the next token as TGI's Python server does (`HeterogeneousNextTokenChooser`, tokens.py):
 * logits processors in a fixed order, then greedy argmax or a seeded multinomial draw, with logprobs
 * of the processed distribution. A row is 49152 floats and this runs per token per sequence, so
 * every step is a few O(V) passes (no full sort) over shared scratch buffers.
 */
import type { SamplingParams } from '../types.js';
import { createRng } from './prng.js';

/** Token counts of a sequence (prompt + generated), for the penalties. */
export interface TokenHistory {
  readonly counts: ReadonlyMap<number, number>;
  readonly total: number;
}

/** Edits one row of logits in place. */
export type LogitsProcessor = (logits: Float32Array, history: TokenHistory) => void;

export interface TokenChoice {
  id: number;
  /** log_softmax of the processed logits at `id`. */
  logprob: number;
  /** The most likely ids under the same distribution, descending; tokens a warper removed never appear. */
  topTokens: Array<{ id: number; logprob: number }>;
}

export interface SequenceSampler {
  /** Process `logits` (modified in place) and choose a token. Does not record it: call `accept`. */
  next(logits: Float32Array, topN: number): TokenChoice;
  /** Record a generated token for the penalties. */
  accept(id: number): void;
}

const F32_MAX = 3.4028234663852886e38;
const BUCKETS = 2048;
/** Up to this many, a sorted list beats a histogram for the k largest. */
const SHORT_LIST = 64;
const STEPS = new Float64Array(64).map((_, j) => 2 ** (j / 64));
const OCTAVES = new Float64Array(1076).map((_, k) => 2 ** -k);

/** Buffers shared by every sampler: `next` is synchronous, so two calls never use them at once. */
type Scratch = ReturnType<typeof allocate>;
let shared = allocate(0);

function allocate(size: number) {
  const [indices, spare, a, b] = [new Int32Array(size), new Int32Array(size), new Float64Array(size), new Float64Array(size)];
  return { indices, spare, a, b, bucketMass: new Float64Array(BUCKETS), bucketCount: new Int32Array(BUCKETS) };
}

function scratch(size: number): Scratch {
  if (shared.indices.length < size) shared = allocate(size);
  return shared;
}

/** TGI's test: do_sample, or any warper away from its neutral value. */
export function usesSampling(params: SamplingParams): boolean {
  return params.doSample || params.temperature !== 1 || params.topK !== 0 || params.topP < 1 || params.typicalP < 1;
}

/**
 * The processors `params` switch on, in TGI's order: repetition penalty, frequency penalty,
 * temperature, top-k, top-p, typical-p.
 *
 * @example
 * const pipeline = buildLogitsPipeline({ ...params, temperature: 0.7, topP: 0.9 }); // [temperature, topP]
 * for (const process of pipeline) process(row, history);
 */
export function buildLogitsPipeline(params: SamplingParams): LogitsProcessor[] {
  const pipeline: LogitsProcessor[] = [];
  if (params.repetitionPenalty !== 1) pipeline.push(repetitionPenalty(params.repetitionPenalty));
  if (params.frequencyPenalty !== 0) pipeline.push(frequencyPenalty(params.frequencyPenalty));
  if (params.temperature !== 1) pipeline.push(temperature(params.temperature));
  if (params.topK > 0) pipeline.push(topK(params.topK));
  if (params.topP < 1) pipeline.push(topP(params.topP));
  if (params.typicalP < 1) pipeline.push(typicalP(params.typicalP));
  return pipeline;
}

/** HF's CTRL penalty, once per distinct token seen: a negative logit is multiplied, a positive one divided. */
export function repetitionPenalty(penalty: number): LogitsProcessor {
  return (logits, { counts }) => {
    for (const id of counts.keys()) {
      const value = logits[id];
      logits[id] = value < 0 ? value * penalty : Math.min(value / penalty, F32_MAX);
    }
  };
}

/**
 * TGI's `HeterogeneousFrequencyPenaltyLogitsProcessor`: each token's count over prompt and generated
 * tokens, divided by their number (OpenAI uses the raw count), times the penalty.
 */
export function frequencyPenalty(penalty: number): LogitsProcessor {
  return (logits, { counts, total }) => {
    for (const [id, count] of counts) logits[id] -= (penalty * count) / total;
  };
}

/** Divides every logit; clamped, so that a tiny temperature cannot make Infinity (and a NaN softmax). */
export function temperature(value: number): LogitsProcessor {
  return (logits) => {
    for (let i = 0; i < logits.length; i++) logits[i] = Math.min(logits[i] / value, F32_MAX);
  };
}

/** Keeps logits >= the k-th largest (ties with the k-th stay, as in TGI). */
export function topK(k: number): LogitsProcessor {
  return (logits) => {
    let kth: number;
    if (k <= SHORT_LIST) {
      const { values } = largest(logits, k);
      if (values.length < k) return;
      kth = values[k - 1];
    } else {
      const s = scratch(logits.length);
      let n = 0;
      for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity) s.indices[n++] = i;
      if (k >= n) return;
      kth = findCut(s, n, logits, null, k).key;
    }
    for (let i = 0; i < logits.length; i++) if (logits[i] < kth) logits[i] = -Infinity;
  };
}

/** Nucleus: keeps the smallest set of most likely tokens whose probability reaches `p` (at least one). */
export function topP(p: number): LogitsProcessor {
  return (logits) => {
    const s = scratch(logits.length);
    // Unnormalised weights against p × their sum: the same cut as on probabilities, one pass fewer.
    // Tokens under (1 − p) / V of the mass weigh less than 1 − p together: they are cut, unsorted.
    const { sum } = expInto(logits, s.a);
    const n = candidates(logits, s.a, s.indices, ((1 - p) * sum) / logits.length);
    const { key, ties } = findCut(s, n, logits, s.a, p * sum);
    let tiesLeft = ties;
    for (let i = 0; i < logits.length; i++) {
      if (logits[i] < key || (logits[i] === key && tiesLeft-- <= 0)) logits[i] = -Infinity;
    }
  };
}

/**
 * HF's TypicalLogitsWarper: rank tokens by |−log p − entropy| ascending and keep them until their
 * probability reaches `mass`, plus any tied with the last one kept.
 */
export function typicalP(mass: number): LogitsProcessor {
  return (logits) => {
    const s = scratch(logits.length);
    const { a: probs, b: keys } = s;
    const { max, sum } = expInto(logits, probs);
    const logZ = max + Math.log(sum);
    let entropy = 0;
    for (let i = 0; i < logits.length; i++) {
      probs[i] /= sum;
      if (probs[i] > 0) entropy -= probs[i] * (logits[i] - logZ);
    }
    // Negated, so that findCut's "largest first" is "most typical first".
    for (let i = 0; i < logits.length; i++) keys[i] = -Math.abs(logZ - logits[i] - entropy);
    const { key } = findCut(s, candidates(logits, probs, s.indices, 0), keys, probs, mass);
    for (let i = 0; i < logits.length; i++) if (keys[i] < key) logits[i] = -Infinity;
  };
}

/**
 * A sampler for one sequence: its processors, its seeded PRNG, its token counts (starting with
 * `promptIds`). Greedy unless `usesSampling(params)`.
 *
 * @example
 * const sampler = createSequenceSampler(params.sampling, promptIds);
 * const { id, logprob, topTokens } = sampler.next(lastRow, 5);
 * sampler.accept(id);
 */
export function createSequenceSampler(params: SamplingParams, promptIds: readonly number[]): SequenceSampler {
  const counts = new Map<number, number>();
  const history = { counts, total: 0 };
  const accept = (id: number): void => {
    counts.set(id, (counts.get(id) ?? 0) + 1);
    history.total++;
  };
  promptIds.forEach(accept);
  const pipeline = buildLogitsPipeline(params);
  const random = usesSampling(params) ? createRng(params.seed) : null;

  return {
    accept,
    next(logits, topN) {
      for (const process of pipeline) process(logits, history);
      const weights = scratch(logits.length).a;
      const { max, argmax, sum } = expInto(logits, weights);
      const logZ = max + Math.log(sum);
      const id = random ? draw(weights, logits.length, random() * sum) : argmax;
      const top = largest(logits, topN);
      return { id, logprob: logits[id] - logZ, topTokens: top.ids.map((t, j) => ({ id: t, logprob: top.values[j] - logZ })) };
    },
  };
}

/**
 * log_softmax of one row at `id`, for the prompt logprobs of `decoder_input_details`.
 *
 * @example
 * logSoftmaxAt(new Float32Array([0, 0]), 1); // -0.693…
 */
export function logSoftmaxAt(logits: Float32Array, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += expNonPositive(logits[i] - max);
  return logits[id] - max - Math.log(sum);
}

/**
 * e^x for x <= 0, 3–4× faster than Math.exp with a relative error under 1e-13: 2^(n/64) from two
 * tables times a degree-4 polynomial of the rest (|r| <= ln2/128). Softmax is the hot loop.
 */
function expNonPositive(x: number): number {
  const t = x * 92.33248261689366; // 64 / ln 2
  if (!(t > -68800)) return 0; // below 2^-1075, or NaN
  const n = Math.floor(t + 0.5);
  const r = (t - n) * 0.010830424696249145; // ln 2 / 64
  return STEPS[n & 63] * OCTAVES[-(n >> 6)] * (1 + r * (1 + r * (0.5 + r * (0.16666666666666666 + r * 0.041666666666666664))));
}

/** exp(logit − max) of every token into `out`; the first maximum wins the argmax, as torch's does. */
function expInto(logits: Float32Array, out: Float64Array): { max: number; argmax: number; sum: number } {
  let max = -Infinity;
  let argmax = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > max) {
      max = logits[i];
      argmax = i;
    }
  }
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = expNonPositive(logits[i] - max);
  return { max, argmax, sum };
}

/** Inverse-CDF draw over unnormalised weights; `target` is uniform in [0, sum of weights). */
function draw(weights: Float64Array, n: number, target: number): number {
  let last = 0;
  for (let i = 0; i < n; i++) {
    if (weights[i] === 0) continue;
    target -= weights[i];
    if (target < 0) return i;
    last = i;
  }
  return last; // rounding left a sliver of `target`: the last token with weight takes it
}

/**
 * The `n` largest finite logits, descending (ties by id), by insertion into a short sorted list:
 * one pass in which nearly every logit fails the first comparison.
 */
function largest(logits: Float32Array, n: number): { ids: number[]; values: number[] } {
  const ids: number[] = [];
  const values: number[] = [];
  for (let i = 0; n > 0 && i < logits.length; i++) {
    const value = logits[i];
    if (value === -Infinity || (values.length === n && value <= values[n - 1])) continue;
    let at = values.length === n ? n - 1 : values.length;
    for (; at > 0 && values[at - 1] < value; at--) {
      values[at] = values[at - 1];
      ids[at] = ids[at - 1];
    }
    values[at] = value;
    ids[at] = i;
  }
  return { ids, values };
}

/** Tokens with a weight > 0 and >= `floor` into `indices`, in order; the others' logits become -Infinity. */
function candidates(logits: Float32Array, weights: Float64Array, indices: Int32Array, floor: number): number {
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    if (weights[i] > 0 && weights[i] >= floor) indices[n++] = i;
    else logits[i] = -Infinity;
  }
  return n;
}

/** The end of a head of candidates: its last key, and how many candidates equal to it are inside. */
interface Cut {
  key: number;
  ties: number;
}

/**
 * Cut the shortest head of the candidates `indices[0, n)` — largest `keys` first, ties by id — whose
 * weights (1 each when null) reach `target`; never reached (rounding): all of them. A histogram of the
 * keys finds the bucket where the head ends, and only that bucket's members go to the next round,
 * until few are left to sort: O(n) passes with predictable branches, where TGI sorts the whole row
 * (and a quickselect mispredicts every other comparison). Overwrites `indices`.
 */
function findCut(s: Scratch, n: number, keys: ArrayLike<number>, weights: Float64Array | null, target: number): Cut {
  const { indices, spare: buckets, bucketMass, bucketCount } = s;
  for (;;) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = 0; j < n; j++) {
      const key = keys[indices[j]];
      if (key < lo) lo = key;
      if (key > hi) hi = key;
    }
    if (n <= SHORT_LIST || !(hi > lo)) return walkSorted(indices, n, keys, weights, target, hi > lo);
    const scale = (BUCKETS - 1) / (hi - lo);
    bucketMass.fill(0);
    bucketCount.fill(0);
    for (let j = 0; j < n; j++) {
      const id = indices[j];
      const b = ((hi - keys[id]) * scale) | 0;
      buckets[j] = b;
      bucketMass[b] += weights ? weights[id] : 1;
      bucketCount[b]++;
    }
    let edge = 0;
    for (; edge < BUCKETS && bucketMass[edge] < target; edge++) target -= bucketMass[edge];
    if (edge === BUCKETS) return { key: lo, ties: Infinity };
    // A range too narrow to split (a denormal width) is sorted instead.
    if (bucketCount[edge] === n) return walkSorted(indices, n, keys, weights, target, true);
    let kept = 0;
    for (let j = 0; j < n; j++) if (buckets[j] === edge) indices[kept++] = indices[j];
    n = kept;
  }
}

/** The base case: sort the candidates (unless all keys are equal: they are in id order already) and walk. */
function walkSorted(indices: Int32Array, n: number, keys: ArrayLike<number>, weights: Float64Array | null, target: number, sort: boolean): Cut {
  const order = indices.subarray(0, n);
  if (sort) order.sort((a, b) => keys[b] - keys[a] || a - b);
  let above = 0;
  for (let j = 0; j < n; j++) {
    above += weights ? weights[order[j]] : 1;
    if (above < target) continue;
    const key = keys[order[j]];
    let ties = 1;
    while (ties <= j && keys[order[j - ties]] === key) ties++;
    return { key, ties };
  }
  return { key: n > 0 ? keys[order[n - 1]] : -Infinity, ties: Infinity };
}
