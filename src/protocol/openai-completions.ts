/**
 * `/v1/completions`, the route `@huggingface/inference` ≥ 4.13.17 calls for `textGeneration`.
 * We send OpenAI's shape, not TGI's (protocol.md §1.9): `finish_reason` is `null` on every chunk
 * but the last, and `stop` or `length` there (never `eos_token`, `stop_sequence` or `""`).
 *
 * One prompt per request: an array of one string is accepted, a longer one is a 422 (TGI's
 * "batch size exceeded" case), token-id prompts too. `suffix` is a 422 as in TGI. `echo`, or
 * TGI's `return_full_text`, puts the prompt before the completion. `logprobs` is OpenAI's legacy
 * integer (that many alternatives per token, in the legacy layout); `top_logprobs`, the chat
 * route's field, is refused rather than ignored. A matched stop string is left out of the text.
 */
import { ValidationError } from '../errors.js';
import type { EndEvent, GenerateParameters, GenerationEvent } from '../types.js';
import type { GrammarSpec } from '../grammar/spec.js';
import { isPlainObject, readBoolean, readNumber, readString, typeName, type JsonObject } from './json-shape.js';
import { readOpenAIGrammar } from './structured-output.js';
import { maxTopLogprobs, readSamplingParameters, readStreamFlags, type GenerationDefaults, type OpenAILimits } from './openai-params.js';
import {
  codePoints,
  openaiCompletionLogprobs,
  openaiFinishReason,
  openaiUsage,
  type OpenAICompletionLogprobs,
  type OpenAIFinishReason,
  type OpenAIResponseIdentity,
  type OpenAIUsage,
} from './openai-output.js';
import { StopTrimmer, trimStop } from './openai-stop.js';
import { DONE_FRAME, openaiJsonFrame } from './sse.js';

export interface ParsedCompletionRequest {
  prompt: string;
  parameters: GenerateParameters;
  /** From `response_format`, `structured_outputs`, `guided_*` or TGI's top-level `grammar`. */
  grammar?: GrammarSpec;
  stream: boolean;
  includeUsage: boolean;
  model?: string;
  /** Put the prompt before the completion (the encoders do it; the engine never sees the flag). */
  echo: boolean;
  /** Legacy `logprobs`: alternatives per token, or null when logprobs are off. */
  logprobs: number | null;
}

/**
 * Decode a completions request body.
 *
 * @example
 * parseCompletionRequest({ model: 'm', prompt: 'Once', max_tokens: 8, stream: true });
 * // { prompt: 'Once', parameters: { do_sample: true, max_new_tokens: 8 }, stream: true,
 * //   includeUsage: false, model: 'm', echo: false, logprobs: null }
 */
export function parseCompletionRequest(body: unknown, limits: OpenAILimits = {}, defaults?: GenerationDefaults): ParsedCompletionRequest {
  if (!isPlainObject(body)) throw new ValidationError('the request body must be a JSON object');
  const prompt = readPrompt(body);
  if (body.suffix !== undefined && body.suffix !== null) {
    throw new ValidationError('Suffix is not supported and can be achieved by preprocessing the prompt.', 'suffix');
  }
  if (body.top_logprobs !== undefined && body.top_logprobs !== null) {
    throw new ValidationError(
      '`top_logprobs` belongs to /v1/chat/completions; on /v1/completions `logprobs` is the number of alternatives',
      'top_logprobs',
    );
  }
  const parameters = readSamplingParameters(body, limits, defaults);
  const bestOf = readNumber(body, 'best_of', { integer: true });
  if (bestOf !== undefined) parameters.best_of = bestOf;
  const { stream, includeUsage } = readStreamFlags(body);
  const model = readString(body, 'model');
  const echo = (readBoolean(body, 'echo') ?? false) || (readBoolean(body, 'return_full_text') ?? false);
  const logprobs = readNumber(body, 'logprobs', { integer: true, min: 0, max: maxTopLogprobs(limits) }) ?? null;
  if (logprobs !== null) {
    // Prompt logprobs would need the prefill's, which a stream cannot have (TGI refuses decoder_input_details there).
    if (echo) throw new ValidationError('`logprobs` together with `echo` is not supported', 'logprobs');
    parameters.details = true;
    if (logprobs > 0) parameters.top_n_tokens = logprobs;
  }
  const grammar = readOpenAIGrammar(body, { tgiGrammar: true });
  return {
    prompt,
    parameters,
    ...(grammar ? { grammar } : {}),
    stream,
    includeUsage,
    ...(model !== undefined ? { model } : {}),
    echo,
    logprobs,
  };
}

export interface CompletionEncoderOptions extends OpenAIResponseIdentity {
  includeUsage: boolean;
  echo: boolean;
  /** Required when `echo`. */
  prompt?: string;
  /** The request's stop strings: a matched one is left out of the text, as OpenAI does. */
  stop?: readonly string[];
  /** Send each token's legacy logprobs (its alternatives come with the events). */
  logprobs?: boolean;
}

/**
 * Turns engine events into `text_completion` chunks: the echoed prompt (if asked), one per token
 * with text (or with logprobs, when asked), the last token's text with `finish_reason`, the usage
 * chunk if asked, `[DONE]`. Text that may begin a stop string waits for the next token.
 *
 * @example
 * const encoder = new CompletionChunkEncoder({ id: 'cmpl-1', created: 0, model: 'm', includeUsage: false, echo: false });
 * for await (const event of generation) for (const frame of encoder.push(event)) res.write(frame);
 */
export class CompletionChunkEncoder {
  readonly #opts: CompletionEncoderOptions;
  readonly #stop: StopTrimmer;
  /** Where the next token's text starts, for `text_offset`. */
  #offset = 0;
  #started = false;
  #ended = false;

  constructor(opts: CompletionEncoderOptions) {
    if (opts.echo && opts.prompt === undefined) throw new TypeError('echo needs the prompt');
    this.#opts = opts;
    this.#stop = new StopTrimmer(opts.stop ?? []);
  }

  push(event: GenerationEvent): string[] {
    if (this.#ended) throw new Error('CompletionChunkEncoder: an event arrived after the end event');
    const frames: string[] = [];
    if (!this.#started) {
      this.#started = true;
      if (this.#opts.echo && this.#opts.prompt !== '') frames.push(this.#chunk(this.#opts.prompt ?? '', null, null));
    }
    const { token } = event;
    const piece = token.special ? '' : token.text;
    const logprobs = this.#opts.logprobs && !token.special ? openaiCompletionLogprobs([token], [event.topTokens], this.#offset) : null;
    this.#offset += codePoints(piece);
    if (event.type === 'token') {
      const text = this.#stop.push(piece);
      if (text !== '' || logprobs) frames.push(this.#chunk(text, logprobs, null));
      return frames;
    }
    this.#ended = true;
    frames.push(this.#chunk(this.#stop.finish(piece, event.finishReason), logprobs, openaiFinishReason(event.finishReason)));
    if (this.#opts.includeUsage) frames.push(openaiJsonFrame({ ...this.#head(), choices: [], usage: openaiUsage(event) }));
    frames.push(DONE_FRAME);
    return frames;
  }

  #head() {
    const { id, created, model } = this.#opts;
    return { id, object: 'text_completion', created, model };
  }

  #chunk(text: string, logprobs: OpenAICompletionLogprobs | null, finishReason: OpenAIFinishReason | null): string {
    return openaiJsonFrame({
      ...this.#head(),
      choices: [{ text, index: 0, logprobs, finish_reason: finishReason }],
      ...(this.#opts.includeUsage ? { usage: null } : {}),
    });
  }
}

export interface Completion extends OpenAIResponseIdentity {
  object: 'text_completion';
  choices: Array<{ text: string; index: 0; logprobs: OpenAICompletionLogprobs | null; finish_reason: OpenAIFinishReason }>;
  usage: OpenAIUsage;
}

/**
 * The non-streamed `text_completion` body.
 *
 * @example
 * completionResponse(end, { id: 'cmpl-1', created: 1700000000, model: 'm', echo: false });
 * // { id: 'cmpl-1', object: 'text_completion', ..., choices: [{ text: '...', index: 0, logprobs: null, finish_reason: 'stop' }], usage: {...} }
 */
export function completionResponse(
  end: EndEvent,
  opts: OpenAIResponseIdentity & { echo: boolean; prompt?: string; stop?: readonly string[]; logprobs?: boolean },
): Completion {
  if (opts.echo && opts.prompt === undefined) throw new TypeError('echo needs the prompt');
  const { id, created, model } = opts;
  const text = (opts.echo ? opts.prompt : '') + trimStop(end.generatedText, opts.stop ?? [], end.finishReason);
  const logprobs = opts.logprobs ? openaiCompletionLogprobs(end.tokens, end.topTokensPerStep, 0) : null;
  return {
    id,
    object: 'text_completion',
    created,
    model,
    choices: [{ text, index: 0, logprobs, finish_reason: openaiFinishReason(end.finishReason) }],
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
