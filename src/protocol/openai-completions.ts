/**
 * `/v1/completions`, the route `@huggingface/inference` ≥ 4.13.17 calls for `textGeneration`.
 * We send OpenAI's shape, not TGI's (protocol.md §1.9): `finish_reason` is `null` on every chunk
 * but the last, and `stop` or `length` there (never `eos_token`, `stop_sequence` or `""`).
 *
 * One prompt per request: an array of one string is accepted, a longer one is a 422 (TGI's
 * "batch size exceeded" case), token-id prompts too. `suffix` is a 422 as in TGI. `echo`, or
 * TGI's `return_full_text`, puts the prompt before the completion. `logprobs` (OpenAI's legacy
 * layout) is not implemented and refused with a 422.
 */
import { ValidationError } from '../errors.js';
import type { EndEvent, GenerateParameters, GenerationEvent } from '../types.js';
import { isPlainObject, readBoolean, readNumber, readString, typeName, type JsonObject } from './json-shape.js';
import { readSamplingParameters, readStreamFlags, type OpenAILimits } from './openai-params.js';
import {
  openaiFinishReason,
  openaiUsage,
  type OpenAIFinishReason,
  type OpenAIResponseIdentity,
  type OpenAIUsage,
} from './openai-output.js';
import { DONE_FRAME, openaiJsonFrame } from './sse.js';

export interface ParsedCompletionRequest {
  prompt: string;
  parameters: GenerateParameters;
  stream: boolean;
  includeUsage: boolean;
  model?: string;
  /** Put the prompt before the completion (the encoders do it; the engine never sees the flag). */
  echo: boolean;
}

/**
 * Decode a completions request body.
 *
 * @example
 * parseCompletionRequest({ model: 'm', prompt: 'Once', max_tokens: 8, stream: true });
 * // { prompt: 'Once', parameters: { do_sample: true, max_new_tokens: 8 }, stream: true,
 * //   includeUsage: false, model: 'm', echo: false }
 */
export function parseCompletionRequest(body: unknown, limits: OpenAILimits = {}): ParsedCompletionRequest {
  if (!isPlainObject(body)) throw new ValidationError('the request body must be a JSON object');
  const prompt = readPrompt(body);
  if (body.suffix !== undefined && body.suffix !== null) {
    throw new ValidationError('Suffix is not supported and can be achieved by preprocessing the prompt.', 'suffix');
  }
  if (body.logprobs !== undefined && body.logprobs !== null) {
    throw new ValidationError('`logprobs` is not supported on /v1/completions; use /v1/chat/completions', 'logprobs');
  }
  const parameters = readSamplingParameters(body, limits);
  const bestOf = readNumber(body, 'best_of', { integer: true });
  if (bestOf !== undefined) parameters.best_of = bestOf;
  const { stream, includeUsage } = readStreamFlags(body);
  const model = readString(body, 'model');
  const echo = (readBoolean(body, 'echo') ?? false) || (readBoolean(body, 'return_full_text') ?? false);
  return { prompt, parameters, stream, includeUsage, ...(model !== undefined ? { model } : {}), echo };
}

export interface CompletionEncoderOptions extends OpenAIResponseIdentity {
  includeUsage: boolean;
  echo: boolean;
  /** Required when `echo`. */
  prompt?: string;
}

/**
 * Turns engine events into `text_completion` chunks: the echoed prompt (if asked), one per token
 * with text, the last token's text with `finish_reason`, the usage chunk if asked, `[DONE]`.
 *
 * @example
 * const encoder = new CompletionChunkEncoder({ id: 'cmpl-1', created: 0, model: 'm', includeUsage: false, echo: false });
 * for await (const event of generation) for (const frame of encoder.push(event)) res.write(frame);
 */
export class CompletionChunkEncoder {
  readonly #opts: CompletionEncoderOptions;
  #started = false;
  #ended = false;

  constructor(opts: CompletionEncoderOptions) {
    if (opts.echo && opts.prompt === undefined) throw new TypeError('echo needs the prompt');
    this.#opts = opts;
  }

  push(event: GenerationEvent): string[] {
    if (this.#ended) throw new Error('CompletionChunkEncoder: an event arrived after the end event');
    const frames: string[] = [];
    if (!this.#started) {
      this.#started = true;
      if (this.#opts.echo && this.#opts.prompt !== '') frames.push(this.#chunk(this.#opts.prompt ?? '', null));
    }
    const text = event.token.special ? '' : event.token.text;
    if (event.type === 'token') {
      if (text !== '') frames.push(this.#chunk(text, null));
      return frames;
    }
    this.#ended = true;
    frames.push(this.#chunk(text, openaiFinishReason(event.finishReason)));
    if (this.#opts.includeUsage) frames.push(openaiJsonFrame({ ...this.#head(), choices: [], usage: openaiUsage(event) }));
    frames.push(DONE_FRAME);
    return frames;
  }

  #head() {
    const { id, created, model } = this.#opts;
    return { id, object: 'text_completion', created, model };
  }

  #chunk(text: string, finishReason: OpenAIFinishReason | null): string {
    return openaiJsonFrame({
      ...this.#head(),
      choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason }],
      ...(this.#opts.includeUsage ? { usage: null } : {}),
    });
  }
}

export interface Completion extends OpenAIResponseIdentity {
  object: 'text_completion';
  choices: Array<{ text: string; index: 0; logprobs: null; finish_reason: OpenAIFinishReason }>;
  usage: OpenAIUsage;
}

/**
 * The non-streamed `text_completion` body.
 *
 * @example
 * completionResponse(end, { id: 'cmpl-1', created: 1700000000, model: 'm', echo: false });
 * // { id: 'cmpl-1', object: 'text_completion', ..., choices: [{ text: '...', index: 0, logprobs: null, finish_reason: 'stop' }], usage: {...} }
 */
export function completionResponse(end: EndEvent, opts: OpenAIResponseIdentity & { echo: boolean; prompt?: string }): Completion {
  if (opts.echo && opts.prompt === undefined) throw new TypeError('echo needs the prompt');
  const { id, created, model } = opts;
  const text = (opts.echo ? opts.prompt : '') + end.generatedText;
  return {
    id,
    object: 'text_completion',
    created,
    model,
    choices: [{ text, index: 0, logprobs: null, finish_reason: openaiFinishReason(end.finishReason) }],
    usage: openaiUsage(end),
  };
}

function readPrompt(body: JsonObject): string {
  const prompt = body.prompt;
  if (prompt === undefined || prompt === null) throw new ValidationError('missing field `prompt`', 'prompt');
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt) && prompt.length > 1 && prompt.every((p) => typeof p === 'string')) {
    throw new ValidationError(`Number of prompts exceeds the maximum allowed batch size of 1. Given: ${prompt.length}`, 'prompt');
  }
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') return prompt[0];
  throw new ValidationError(`\`prompt\` must be a string or an array of one string, got ${typeName(prompt)}`, 'prompt');
}
