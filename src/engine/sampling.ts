/**
 * Choosing the next token as TGI's Python server does (`HeterogeneousNextTokenChooser`, tokens.py):
 * logits processors in a fixed order, then greedy argmax or a seeded multinomial draw, with logprobs
 * of the processed distribution. A row is 49152 floats and this runs per token per sequence, so
 * every step is a few O(V) passes (no full sort) over shared scratch buffers.
 */
import type { RowMatcher } from '../grammar/index.js';
import type { SamplingParams } from '../types.js';
import { createRng } from './prng.js';
import { F32_MAX, SHORT_LIST, argmax, candidates, draw, expInto, expNonPositive, findCut, largest, scratch } from './row-select.js';

/** Token counts of a sequence (prompt + generated), for the penalties. */
export interface TokenHistory {
  readonly counts: ReadonlyMap<number, number>;
  readonly total: number;
  /** The tokens generated so far (not the prompt's), for the presence penalty. */
  readonly generated: ReadonlySet<number>;
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

/** TGI's test: do_sample, or any warper away from its neutral value. */
export function usesSampling(params: SamplingParams): boolean {
  return params.doSample || params.temperature !== 1 || params.topK !== 0 || params.topP < 1 || params.typicalP < 1;
}

/**
 * The processors `params` switch on, in TGI's order: repetition penalty, frequency penalty (then
 * the presence penalty TGI lacks), temperature, top-k, top-p, typical-p.
 *
 * @example
 * const pipeline = buildLogitsPipeline({ ...params, temperature: 0.7, topP: 0.9 }); // [temperature, topP]
 * for (const process of pipeline) process(row, history);
 */
export function buildLogitsPipeline(params: SamplingParams): LogitsProcessor[] {
  return [...penalties(params), ...warpers(params)];
}

/** The processors that edit logits by the token history; a grammar's mask comes after them (TGI's order). */
function penalties(params: SamplingParams): LogitsProcessor[] {
  const pipeline: LogitsProcessor[] = [];
  if (params.repetitionPenalty !== 1) pipeline.push(repetitionPenalty(params.repetitionPenalty));
  if (params.frequencyPenalty !== 0) pipeline.push(frequencyPenalty(params.frequencyPenalty));
  if (params.presencePenalty !== 0) pipeline.push(presencePenalty(params.presencePenalty));
  return pipeline;
}

/** The processors that reshape the distribution; after the grammar's mask, so they see only allowed tokens. */
function warpers(params: SamplingParams): LogitsProcessor[] {
  const pipeline: LogitsProcessor[] = [];
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

/** OpenAI's and vLLM's presence penalty: subtracted once from each token the generation has used. */
export function presencePenalty(penalty: number): LogitsProcessor {
  return (logits, { generated }) => {
    for (const id of generated) logits[id] -= penalty;
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
 * `promptIds`). Greedy unless `usesSampling(params)`. With a `grammar`, the tokens it refuses are
 * masked between the penalties and the warpers, so logprobs and top tokens describe the masked
 * distribution; the caller advances the matcher with the chosen token.
 *
 * @example
 * const sampler = createSequenceSampler(params.sampling, promptIds);
 * const { id, logprob, topTokens } = sampler.next(lastRow, 5);
 * sampler.accept(id);
 */
export function createSequenceSampler(params: SamplingParams, promptIds: readonly number[], grammar?: RowMatcher): SequenceSampler {
  const counts = new Map<number, number>();
  const generated = new Set<number>();
  const history = { counts, total: 0, generated };
  const count = (id: number): void => {
    counts.set(id, (counts.get(id) ?? 0) + 1);
    history.total++;
  };
  promptIds.forEach(count);
  const accept = (id: number): void => {
    count(id);
    generated.add(id);
  };
  const before = penalties(params);
  const after = warpers(params);
  const random = usesSampling(params) ? createRng(params.seed) : null;

  return {
    accept,
    next(logits, topN) {
      for (const process of before) process(logits, history);
      if (grammar) {
        grammar.fillMask();
        grammar.applyMask(logits);
      }
      for (const process of after) process(logits, history);
      // A greedy choice nobody reads the logprob of needs no pass over exp(logits).
      if (!random && params.skipLogprobs && topN === 0) return { id: argmax(logits), logprob: NaN, topTokens: [] };
      const weights = scratch(logits.length).a;
      const { max, argmax: best, sum } = expInto(logits, weights);
      const logZ = max + Math.log(sum);
      const id = random ? draw(weights, logits.length, random() * sum) : best;
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
