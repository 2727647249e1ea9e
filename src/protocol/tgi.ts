/**
 * TGI's wire format (protocol.md §1): request decoding for `/`, `/generate` and `/generate_stream`,
 * and the JSON those routes answer with. Key order follows TGI's serde structs so that our output
 * compares byte for byte with a real TGI's.
 */
import { ValidationError, type InferenceError } from '../errors.js';
import type {
  EndEvent,
  FinishReason,
  GenerateParameters,
  GenerateRequest,
  GenerationEvent,
  PrefillToken,
  Token,
  TokenizedToken,
} from '../types.js';
import { isPlainObject, typeName } from './json-shape.js';
import { tgiJsonFrame } from './sse.js';

export interface TgiTextOptions {
  /** Prepend the prompt to `generated_text`; `prompt` is then required. */
  returnFullText: boolean;
  prompt?: string;
}

export interface TgiStreamOptions extends TgiTextOptions {
  /** Put `details` on the last event. */
  details: boolean;
}

export interface TgiGenerateOptions extends TgiTextOptions {
  details: boolean;
  /** TGI shows `details` when either flag is set. */
  decoderInputDetails?: boolean;
}

export interface TgiStreamDetails {
  finish_reason: FinishReason;
  generated_tokens: number;
  seed: number | null;
  input_length: number;
}

export interface TgiStreamResponse {
  index: number;
  token: Token;
  top_tokens?: Token[];
  generated_text: string | null;
  details: TgiStreamDetails | null;
}

export interface TgiDetails {
  finish_reason: FinishReason;
  generated_tokens: number;
  seed: number | null;
  prefill: PrefillToken[];
  tokens: Token[];
  top_tokens?: Token[][];
}

export interface TgiGenerateResponse {
  generated_text: string;
  details?: TgiDetails;
}

export interface TgiErrorBody {
  error: string;
  error_type: string;
}

/** A decoded TGI request body; `parameters` is absent when the key was (TGI then uses other defaults). */
export type TgiGenerateBody = GenerateRequest & { stream?: boolean };

/**
 * The `StreamResponse` object of one event (protocol.md §1.4).
 *
 * @example
 * tgiStreamResponse(tokenEvent, { details: false, returnFullText: false });
 * // { index: 1, token: {...}, generated_text: null, details: null }
 */
export function tgiStreamResponse(event: GenerationEvent, opts: TgiStreamOptions): TgiStreamResponse {
  const end = event.type === 'end' ? event : null;
  return {
    index: event.index,
    token: tgiToken(event.token),
    ...(event.topTokens !== undefined && event.topTokens.length > 0 ? { top_tokens: event.topTokens.map(tgiToken) } : {}),
    generated_text: end ? fullText(end, opts) : null,
    details:
      end && opts.details
        ? {
            finish_reason: end.finishReason,
            generated_tokens: end.generatedTokens,
            seed: end.seed,
            input_length: end.inputLength,
          }
        : null,
  };
}

/**
 * One `/generate_stream` SSE frame: `data:<json>\n\n`, no space, no `[DONE]` after the last.
 *
 * @example
 * tgiStreamEvent(endEvent, { details: true, returnFullText: false });
 * // 'data:{"index":3,"token":{...},"generated_text":"...","details":{"finish_reason":"length",...}}\n\n'
 */
export function tgiStreamEvent(event: GenerationEvent, opts: TgiStreamOptions): string {
  return tgiJsonFrame(tgiStreamResponse(event, opts));
}

/**
 * The `/generate` body (protocol.md §1.3). `POST /` wraps it in an array.
 *
 * @example
 * tgiGenerateResponse(end, { details: false, returnFullText: false }); // { generated_text: '...' }
 */
export function tgiGenerateResponse(end: EndEvent, opts: TgiGenerateOptions): TgiGenerateResponse {
  const response: TgiGenerateResponse = { generated_text: fullText(end, opts) };
  if (!opts.details && !opts.decoderInputDetails) return response;
  const details: TgiDetails = {
    finish_reason: end.finishReason,
    generated_tokens: end.generatedTokens,
    seed: end.seed,
    prefill: end.prefill.map((t) => ({ id: t.id, text: t.text, logprob: t.logprob })),
    tokens: end.tokens.map(tgiToken),
  };
  if (end.topTokensPerStep.length > 0) details.top_tokens = end.topTokensPerStep.map((step) => step.map(tgiToken));
  response.details = details;
  return response;
}

/**
 * TGI's `ErrorResponse`. Takes an `InferenceError`; `errorResponse` in error-body.ts also handles
 * errors that must not be shown.
 *
 * @example
 * tgiErrorBody(new OverloadedError()); // { error: 'Model is overloaded', error_type: 'overloaded' }
 */
export function tgiErrorBody(err: Pick<InferenceError, 'message'> & { errorType: string }): TgiErrorBody {
  return { error: err.message, error_type: err.errorType };
}

/**
 * The `/tokenize` body: an array of `{id, text, start, stop}` with character offsets.
 *
 * @example
 * tgiTokenizeResponse(await engine.tokenize('Hi')); // [{ id: 1, text: 'Hi', start: 0, stop: 2 }]
 */
export function tgiTokenizeResponse(tokens: readonly TokenizedToken[]): TokenizedToken[] {
  return tokens.map((t) => ({ id: t.id, text: t.text, start: t.start, stop: t.stop }));
}

/**
 * Check the shape of a `/`, `/generate` or `/generate_stream` body. Parameter values are left to
 * `validateParameters`; `parameters: null` counts as absent.
 *
 * @example
 * parseTgiGenerateBody({ inputs: 'Hi', parameters: { max_new_tokens: 5 }, stream: true });
 * // { inputs: 'Hi', parameters: { max_new_tokens: 5 }, stream: true }
 */
export function parseTgiGenerateBody(body: unknown): TgiGenerateBody {
  if (!isPlainObject(body)) throw new ValidationError('the request body must be a JSON object');
  const { inputs, parameters, stream } = body;
  if (inputs === undefined) throw new ValidationError('missing field `inputs`', 'inputs');
  if (typeof inputs !== 'string') throw new ValidationError(`\`inputs\` must be a string, got ${typeName(inputs)}`, 'inputs');
  const request: TgiGenerateBody = { inputs };
  if (parameters !== undefined && parameters !== null) {
    if (!isPlainObject(parameters)) {
      throw new ValidationError(`\`parameters\` must be an object, got ${typeName(parameters)}`, 'parameters');
    }
    request.parameters = parameters as GenerateParameters;
  }
  if (stream !== undefined && stream !== null) {
    if (typeof stream !== 'boolean') throw new ValidationError(`\`stream\` must be a boolean, got ${typeName(stream)}`, 'stream');
    request.stream = stream;
  }
  return request;
}

/** Copy only TGI's four fields, in TGI's order. */
function tgiToken(t: Token): Token {
  return { id: t.id, text: t.text, logprob: t.logprob, special: t.special };
}

function fullText(end: EndEvent, opts: TgiTextOptions): string {
  if (!opts.returnFullText) return end.generatedText;
  if (opts.prompt === undefined) throw new TypeError('returnFullText needs the prompt');
  return opts.prompt + end.generatedText;
}
