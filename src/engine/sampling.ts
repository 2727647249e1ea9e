/**
 * Choosing the next token, as TGI's Python server does (`HeterogeneousNextTokenChooser`, tokens.py):
 * logits processors in a fixed order, then greedy argmax or a seeded multinomial draw, with the
 * logprobs of the processed distribution. One row is 49152 floats and this runs per token per
 * sequence, so every step is O(V) without a full sort, on shared scratch buffers.
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
  /** Process `logits` (modified in place), choose a token. Does not record it: call `accept`. */
  next(logits: Float32Array, topN: number): TokenChoice;
  /** Record a generated token for the penalties. */
  accept(id: number): void;
}

const F32_MAX = 3.4028234663852886e38;
const STEPS = new Float64Array(64).map((_, j) => 2 ** (j / 64));
const OCTAVES = new Float64Array(1076).map((_, k) => 2 ** -k);

/**
 * e^x for x <= 0, 3–4× faster than Math.exp (relative error < 1e-13): 2^(n/64) from two tables
 * times a degree-4 polynomial for the rest, |r| <= ln2/128. Softmax over 49152 logits is the hot loop.
 */
function expNonPositive(x: number): number {
  const t = x * 92.33248261689366; // 64 / ln 2
  if (!(t > -68800)) return 0; // below 2^-1075, or NaN
  const n = Math.floor(t + 0.5);
  const r = (t - n) * 0.010830424696249145; // ln 2 / 64
  return STEPS[n & 63] * OCTAVES[-(n >> 6)] * (1 + r * (1 + r * (0.5 + r * (0.16666666666666666 + r * 0.041666666666666664))));
}

// Shared by every sampler: `next` is synchronous, so no two calls ever use them at once.
let indices = new Int32Array(0);
let scratchA = new Float64Array(0);
let scratchB = new Float64Array(0);

function scratch(size: number): void {
  if (indices.length >= size) return;
  indices = new Int32Array(size);
  scratchA = new Float64Array(size);
  scratchB = new Float64Array(size);
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
 * TGI's `HeterogeneousFrequencyPenaltyLogitsProcessor`: the count of each token over prompt and
 * generated tokens, divided by their number (unlike OpenAI's raw count), times the penalty.
 */
export function frequencyPenalty(penalty: number): LogitsProcessor {
  return (logits, { counts, total }) => {
    for (const [id, count] of counts) logits[id] -= (penalty * count) / total;
  };
}

export function temperature(value: number): LogitsProcessor {
  // Clamped: a tiny temperature must not turn logits into Infinity (and the softmax into NaN).
  return (logits) => {
    for (let i = 0; i < logits.length; i++) logits[i] = Math.min(logits[i] / value, F32_MAX);
  };
}

/** Keeps logits >= the k-th largest (ties at the k-th stay, as in TGI). */
export function topK(k: number): LogitsProcessor {
  return (logits) => {
    if (k >= logits.length) return;
    scratch(logits.length);
    const n = fillIndices(logits.length);
    for (let i = 0; i < logits.length; i++) scratchA[i] = logits[i];
    const kth = selectHead(n, scratchA, null, k).key;
    for (let i = 0; i < logits.length; i++) if (logits[i] < kth) logits[i] = -Infinity;
  };
}

/** Nucleus: keeps the smallest set of most likely tokens whose probability reaches `p` (at least one). */
export function topP(p: number): LogitsProcessor {
  return (logits) => {
    scratch(logits.length);
    // Unnormalised weights against p × their sum: the same cut as on probabilities, one pass fewer.
    const { sum } = expInto(logits, scratchA);
    const n = candidates(logits, scratchA);
    const { count } = selectHead(n, scratchA, scratchA, p * sum);
    for (let j = count; j < n; j++) logits[indices[j]] = -Infinity;
  };
}

/**
 * HF's TypicalLogitsWarper: rank tokens by |−log p − entropy| ascending and keep them until their
 * probability reaches `mass`, plus any tied with the last one kept.
 */
export function typicalP(mass: number): LogitsProcessor {
  return (logits) => {
    scratch(logits.length);
    const probs = scratchA;
    const { max, sum } = expInto(logits, probs);
    const logZ = max + Math.log(sum);
    let entropy = 0;
    for (let i = 0; i < logits.length; i++) {
      probs[i] /= sum;
      if (probs[i] > 0) entropy -= probs[i] * (logits[i] - logZ);
    }
    // Keys negated, so that selectHead's "largest first" is "most typical first".
    for (let i = 0; i < logits.length; i++) scratchB[i] = probs[i] > 0 ? -Math.abs(logZ - logits[i] - entropy) : -Infinity;
    const n = candidates(logits, probs);
    const { count, key } = selectHead(n, scratchB, probs, mass);
    if (count === n) return;
    for (let j = 0; j < n; j++) if (scratchB[indices[j]] < key) logits[indices[j]] = -Infinity;
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
      scratch(logits.length);
      for (const process of pipeline) process(logits, history);
      const { max, argmax, sum } = expInto(logits, scratchA);
      const logZ = max + Math.log(sum);
      const id = random ? draw(scratchA, logits.length, random() * sum) : argmax;
      return { id, logprob: logits[id] - logZ, topTokens: topN > 0 ? topLogprobs(logits, topN, logZ) : [] };
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

/** The `n` largest finite logits as logprobs, descending, by insertion into a short sorted list. */
function topLogprobs(logits: Float32Array, n: number, logZ: number): Array<{ id: number; logprob: number }> {
  const ids: number[] = [];
  const values: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i];
    if (value === -Infinity || (values.length === n && value <= values[n - 1])) continue;
    let at = values.length === n ? n - 1 : values.length;
    while (at > 0 && values[at - 1] < value) {
      values[at] = values[at - 1];
      ids[at] = ids[at - 1];
      at--;
    }
    values[at] = value;
    ids[at] = i;
  }
  return ids.map((id, j) => ({ id, logprob: values[j] - logZ }));
}

function fillIndices(n: number): number {
  for (let i = 0; i < n; i++) indices[i] = i;
  return n;
}

/** Tokens with weight > 0 into `indices`; the others cannot be kept by top-p or typical-p. */
function candidates(logits: Float32Array, weights: Float64Array): number {
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    if (weights[i] > 0) indices[n++] = i;
    else logits[i] = -Infinity;
  }
  return n;
}

/**
 * Weighted quickselect over `indices[0, n)`: reorders them so that the head — the largest `keys`
 * first — is the shortest whose weights (1 each when `weights` is null) reach `target`. Returns the
 * head's size and the key of its last member; `count === n` when the target is never reached.
 * Expected O(n), against O(n log n) for the sort TGI does.
 */
function selectHead(n: number, keys: Float64Array, weights: Float64Array | null, target: number): { count: number; key: number } {
  let lo = 0;
  let hi = n;
  let above = 0;
  while (lo < hi) {
    const pivot = median3(keys[indices[lo]], keys[indices[(lo + hi) >> 1]], keys[indices[hi - 1]]);
    // Three-way partition: [lo, lt) > pivot, [lt, gt) == pivot, [gt, hi) < pivot.
    let lt = lo;
    let gt = hi;
    let i = lo;
    let greater = 0;
    while (i < gt) {
      const id = indices[i];
      const key = keys[id];
      if (key > pivot) {
        greater += weights ? weights[id] : 1;
        indices[i++] = indices[lt];
        indices[lt++] = id;
      } else if (key < pivot) {
        indices[i] = indices[--gt];
        indices[gt] = id;
      } else {
        i++;
      }
    }
    if (above + greater >= target) {
      hi = lt;
      continue;
    }
    above += greater;
    for (let j = lt; j < gt; j++) {
      above += weights ? weights[indices[j]] : 1;
      if (above >= target) return { count: j + 1, key: pivot };
    }
    lo = gt;
  }
  return { count: n, key: -Infinity };
}

function median3(a: number, b: number, c: number): number {
  return a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
}
