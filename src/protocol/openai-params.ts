/**
 * The request fields `/v1/chat/completions` and `/v1/completions` share, mapped to TGI's
 * `GenerateParameters` (protocol.md "Our decisions" §4). We follow OpenAI's semantics, not TGI's:
 *
 * - `temperature` absent: sample at temperature 1, as OpenAI does. `temperature: 0`, `top_p: 0` or
 *   TGI's `do_sample: false`: greedy, and `temperature`, `top_p`, `top_k`, `typical_p` are then not
 *   passed on (they cannot change an argmax; the penalties can, and are kept).
 * - The model's `generation_config.json` fills what the request leaves unset (vLLM's
 *   `--generation-config auto`): `temperature`, `top_p`, `top_k`, `repetition_penalty`. A config
 *   with `do_sample: false` makes a request that sets no sampling field greedy, as transformers
 *   would generate.
 * - `top_p: 1` means off (TGI rejects it, TGI#2222).
 * - `max_completion_tokens` wins over its deprecated alias `max_tokens`; absent, the engine fills the
 *   token budget (OpenAI's legacy completions default of 16 would cut off TGI clients).
 * - `presence_penalty` is OpenAI's (subtracted once per token already generated), not TGI's
 *   `presence + 2` repetition penalty, which has no basis.
 * - Refused with a 422 rather than ignored, because we cannot honour them: `n` ≠ 1, a non-empty
 *   `logit_bias`.
 * - TGI's own fields that `@huggingface/inference` ≥ 4.13.17 flattens onto the body
 *   (`top_k`, `typical_p`, `repetition_penalty`, `truncate`, `watermark`) are type-checked here
 *   and pass through to `validateParameters`, which checks their values.
 */
import { ValidationError } from '../errors.js';
import type { GenerateParameters, GenerationDefaults, ValidationLimits } from '../types.js';
import { checkStopCount, I32_MAX, readBoolean, readNumber, readObject, readStop, type JsonObject } from './json-shape.js';

export type { GenerationDefaults };

/** Server limits the decoders check so that the error names the OpenAI field, not TGI's. */
export type OpenAILimits = Partial<Pick<ValidationLimits, 'maxStopSequences' | 'maxTopNTokens'>>;

/** OpenAI's own upper bound for `top_logprobs`, and ours for the legacy `logprobs`. */
const MAX_TOP_LOGPROBS = 20;

/** The most alternatives per token a request may ask for: OpenAI's bound or the server's `maxTopNTokens`. */
export function maxTopLogprobs(limits: OpenAILimits): number {
  return Math.min(MAX_TOP_LOGPROBS, limits.maxTopNTokens ?? MAX_TOP_LOGPROBS);
}

/**
 * The sampling and stopping fields of an OpenAI body as TGI parameters, with the model's
 * `defaults` for the sampling fields the body leaves unset.
 *
 * @example
 * readSamplingParameters({ temperature: 0, max_tokens: 5, stop: '\n' });
 * // { do_sample: false, max_new_tokens: 5, stop: ['\n'] }
 * readSamplingParameters({ max_tokens: 5 }, {}, { temperature: 0.7, topP: 0.8, topK: 20 });
 * // { do_sample: true, temperature: 0.7, top_p: 0.8, top_k: 20, max_new_tokens: 5 }
 */
export function readSamplingParameters(body: JsonObject, limits: OpenAILimits = {}, defaults: GenerationDefaults = {}): GenerateParameters {
  const n = readNumber(body, 'n', { integer: true });
  if (n !== undefined && n !== 1) {
    throw new ValidationError(`\`n\` must be 1: one choice per request is supported. Given: ${n}`, 'n');
  }
  const logitBias = readObject(body, 'logit_bias');
  if (logitBias !== undefined && Object.keys(logitBias).length > 0) {
    throw new ValidationError('`logit_bias` is not supported', 'logit_bias');
  }

  // Every range is checked here, also of the fields a greedy request then drops: a value that sampling
  // would refuse is refused whatever the other fields say.
  const temperature = readNumber(body, 'temperature', { min: 0, max: 2 });
  const topP = readNumber(body, 'top_p', { min: 0, max: 1 });
  const topK = readNumber(body, 'top_k', { integer: true, min: 1, max: I32_MAX });
  const typicalP = readNumber(body, 'typical_p', { above: 0, max: 1 });
  const doSample = readBoolean(body, 'do_sample');
  const model = usableDefaults(defaults);
  const asked = temperature !== undefined || topP !== undefined || topK !== undefined || doSample !== undefined;
  const greedy = temperature === 0 || topP === 0 || doSample === false || (!asked && model.doSample === false);
  const params: GenerateParameters = { do_sample: !greedy };
  if (!greedy) {
    const t = temperature ?? model.temperature;
    const p = topP ?? model.topP;
    const k = topK ?? model.topK;
    if (t !== undefined) params.temperature = t;
    if (p !== undefined && p < 1) params.top_p = p;
    if (k !== undefined) params.top_k = k;
    if (typicalP !== undefined) params.typical_p = typicalP;
  }

  const maxTokens =
    readNumber(body, 'max_completion_tokens', { integer: true, min: 1 }) ?? readNumber(body, 'max_tokens', { integer: true, min: 1 });
  if (maxTokens !== undefined) params.max_new_tokens = maxTokens;
  const stop = readStop(body);
  if (stop !== undefined) {
    checkStopCount(stop, limits.maxStopSequences);
    params.stop = stop;
  }
  const seed = readNumber(body, 'seed', { integer: true, min: 0 });
  if (seed !== undefined) params.seed = seed;
  const frequency = readNumber(body, 'frequency_penalty', { min: -2, max: 2 });
  if (frequency !== undefined) params.frequency_penalty = frequency;
  const presence = readNumber(body, 'presence_penalty', { min: -2, max: 2 });
  if (presence !== undefined && presence !== 0) params.presence_penalty = presence;
  const repetitionPenalty = readNumber(body, 'repetition_penalty') ?? model.repetitionPenalty;
  if (repetitionPenalty !== undefined) params.repetition_penalty = repetitionPenalty;
  const truncate = readNumber(body, 'truncate', { integer: true });
  if (truncate !== undefined) params.truncate = truncate;
  const watermark = readBoolean(body, 'watermark');
  if (watermark !== undefined) params.watermark = watermark;
  return params;
}

export interface StreamFlags {
  stream: boolean;
  includeUsage: boolean;
}

/**
 * `stream` and `stream_options.include_usage`. Like OpenAI and vLLM, `stream_options` without
 * `stream: true` is an error rather than silently dropped.
 *
 * @example
 * readStreamFlags({ stream: true, stream_options: { include_usage: true } }); // { stream: true, includeUsage: true }
 */
export function readStreamFlags(body: JsonObject): StreamFlags {
  const stream = readBoolean(body, 'stream') ?? false;
  const options = readObject(body, 'stream_options');
  if (options === undefined) return { stream, includeUsage: false };
  if (!stream) throw new ValidationError('`stream_options` is only allowed when `stream` is true', 'stream_options');
  const includeUsage = options.include_usage ?? false;
  if (typeof includeUsage !== 'boolean') {
    throw new ValidationError('`stream_options.include_usage` must be a boolean', 'stream_options.include_usage');
  }
  return { stream, includeUsage };
}

/**
 * The defaults a request can inherit: a value out of its field's range (a hand-edited config) is
 * dropped rather than turned into a 422 on every request that leaves the field unset.
 */
function usableDefaults(defaults: GenerationDefaults): GenerationDefaults {
  const ok = (value: number | undefined, check: (v: number) => boolean) => value !== undefined && Number.isFinite(value) && check(value);
  const usable: GenerationDefaults = {};
  if (ok(defaults.temperature, (t) => t > 0 && t <= 2)) usable.temperature = defaults.temperature;
  if (ok(defaults.topP, (p) => p > 0 && p <= 1)) usable.topP = defaults.topP;
  if (ok(defaults.topK, (k) => Number.isSafeInteger(k) && k > 0)) usable.topK = defaults.topK;
  if (ok(defaults.repetitionPenalty, (r) => r > 0)) usable.repetitionPenalty = defaults.repetitionPenalty;
  if (typeof defaults.doSample === 'boolean') usable.doSample = defaults.doSample;
  return usable;
}
