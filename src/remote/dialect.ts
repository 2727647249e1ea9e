/**
 * What the remote engine asks of a dialect: a request to send, and a decoder that turns what comes
 * back into the engine's tokens. Decoders are pure and never see a socket, so they are tested on
 * recorded streams.
 */
import type { FinishReason, PrefillToken, Token } from '../types.js';

/** How an upstream refused or failed a request, which decides whether another upstream is tried. */
export type FailureKind =
  /** Busy (429, 503, an `overloaded` event): try another; our client gets 429 if all are. */
  | 'overloaded'
  /** The request itself is wrong (400, 422, a validation event): no retry, our client gets 422. */
  | 'invalid'
  /** Anything else (5xx, an error event, a stream that stops early): try another before the first token. */
  | 'failed';

export interface UpstreamFailure {
  kind: FailureKind;
  message: string;
  /** The upstream's own error type (TGI's `error_type`, OpenAI's `code`), when it gave one. */
  errorType?: string;
  /** Seconds the upstream asked us to wait (`Retry-After`). */
  retryAfter?: number;
}

export interface EndSummary {
  finishReason: FinishReason;
  generatedText: string;
  generatedTokens: number;
  /** Prompt tokens as the upstream counted them; 0 when it did not say. */
  inputLength: number;
}

export type Decoded =
  | { type: 'token'; token: Token; topTokens?: Token[]; prefill?: PrefillToken[] }
  | { type: 'end'; token: Token; topTokens?: Token[]; prefill?: PrefillToken[]; summary: EndSummary }
  | { type: 'error'; failure: UpstreamFailure };

export interface StreamDecoder {
  /** What one event's `data` (or, for a whole answer, its JSON body) means. */
  decode(data: string): Decoded[];
  /** The stream ended: whatever completes it, or nothing when it ended too early. */
  close(): Decoded[];
  /** A token has arrived (the commit point), even one the decoder still holds back. */
  readonly started: boolean;
}

/** One request to an upstream. */
export interface UpstreamCall {
  path: string;
  body: unknown;
  /** The answer is one JSON body rather than an event stream. */
  whole: boolean;
  decoder: StreamDecoder;
}

/** Our own marker for what an OpenAI stream cannot tell: the token id, or a logprob it was not asked for. */
export const UNKNOWN_ID = -1;

/** A token without id, as OpenAI streams carry them; `logprob` NaN (null in JSON) when not asked for. */
export function textToken(text: string, logprob = Number.NaN, special = false): Token {
  return { id: UNKNOWN_ID, text, logprob, special };
}

/** Classifies an upstream's error type (TGI's `error_type`, OpenAI's `code` or `type`). */
export function failureKind(type: unknown, status = 0): FailureKind {
  if (status === 429 || status === 503 || type === 'overloaded' || type === 'rate_limit_error') return 'overloaded';
  if (status === 400 || status === 422) return 'invalid';
  if (type === 'validation' || type === 'template_error' || type === 'invalid_request' || type === 'invalid_request_error')
    return 'invalid';
  return 'failed';
}
