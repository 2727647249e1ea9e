/**
 * The request fields `/v1/chat/completions` and `/v1/completions` share, mapped to TGI's
 * `GenerateParameters` (protocol.md "Our decisions" §4). We follow OpenAI's semantics, not TGI's:
 *
 * - `temperature` absent: sample at temperature 1, as OpenAI does. `temperature: 0`, `top_p: 0` or
 *   TGI's `do_sample: false`: greedy, and `temperature`, `top_p`, `top_k`, `typical_p` are then not
 *   passed on (they cannot change an argmax; the penalties can, and are kept).
 * - `top_p: 1` means off (TGI rejects it, TGI#2222).
 * - `max_completion_tokens` wins over its deprecated alias `max_tokens`; absent, the engine fills the
 *   token budget (OpenAI's legacy completions default of 16 would cut off TGI clients).
 * - `presence_penalty` is OpenAI's (subtracted once per token already generated), not TGI's
 *   `presence + 2` repetition penalty, which has no basis.
 * - Refused with a 422 rather than ignored, because we cannot honour them: `n` ≠ 1, a non-empty
 *   `logit_bias`.
 * - TGI's own fields that `@huggingface/inference` ≥ 4.13.17 flattens onto the body
 *   (`top_k`, `typical_p`, `repetition_penalty`, `truncate`, `watermark`) pass through
 *   to `validateParameters`, which checks their values.
 */
import { ValidationError } from '../errors.js';
import type { GenerateParameters, ValidationLimits } from '../types.js';
import { readBoolean, readNumber, readObject, readStop, type JsonObject } from './json-shape.js';

/** Server limits the decoders check so that the error names the OpenAI field, not TGI's. */
export type OpenAILimits = Partial<Pick<ValidationLimits, 'maxStopSequences' | 'maxTopNTokens'>>;

/**
 * The sampling and stopping fields of an OpenAI body as TGI parameters.
 *
 * @example
 * readSamplingParameters({ temperature: 0, max_tokens: 5, stop: '\n' });
 * // { do_sample: false, max_new_tokens: 5, stop: ['\n'] }
 */
export function readSamplingParameters(body: JsonObject, limits: OpenAILimits = {}): GenerateParameters {
  const n = readNumber(body, 'n', { integer: true });
  if (n !== undefined && n !== 1) {
    throw new ValidationError(`\`n\` must be 1: one choice per request is supported. Given: ${n}`, 'n');
  }
  const logitBias = readObject(body, 'logit_bias');
  if (logitBias !== undefined && Object.keys(logitBias).length > 0) {
    throw new ValidationError('`logit_bias` is not supported', 'logit_bias');
  }

  const temperature = readNumber(body, 'temperature', { min: 0, max: 2 });
  const topP = readNumber(body, 'top_p', { min: 0, max: 1 });
  const doSample = readBoolean(body, 'do_sample');
  const greedy = temperature === 0 || topP === 0 || doSample === false;
  const params: GenerateParameters = { do_sample: !greedy };
  if (!greedy) {
    if (temperature !== undefined) params.temperature = temperature;
    if (topP !== undefined && topP < 1) params.top_p = topP;
    copyNumber(body, params, 'top_k', true);
    copyNumber(body, params, 'typical_p');
  }

  const maxTokens = readNumber(body, 'max_completion_tokens', { integer: true, min: 1 }) ??
    readNumber(body, 'max_tokens', { integer: true, min: 1 });
  if (maxTokens !== undefined) params.max_new_tokens = maxTokens;
  const stop = readStop(body);
  if (stop !== undefined) {
    const max = limits.maxStopSequences;
    if (max !== undefined && stop.length > max) {
      throw new ValidationError(`\`stop\` supports up to ${max} stop sequences. Given: ${stop.length}`, 'stop');
    }
    params.stop = stop;
  }
  const seed = readNumber(body, 'seed', { integer: true, min: 0 });
  if (seed !== undefined) params.seed = seed;
  const frequency = readNumber(body, 'frequency_penalty', { min: -2, max: 2 });
  if (frequency !== undefined) params.frequency_penalty = frequency;
  const presence = readNumber(body, 'presence_penalty', { min: -2, max: 2 });
  if (presence !== undefined && presence !== 0) params.presence_penalty = presence;
  copyNumber(body, params, 'repetition_penalty');
  copyNumber(body, params, 'truncate', true);
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

type NumericParam = 'top_k' | 'typical_p' | 'repetition_penalty' | 'truncate';

/** Type-check a TGI field and copy it; its range is `validateParameters`' business. */
function copyNumber(body: JsonObject, params: GenerateParameters, name: NumericParam, integer = false): void {
  const value = readNumber(body, name, { integer });
  if (value !== undefined) params[name] = value;
}
