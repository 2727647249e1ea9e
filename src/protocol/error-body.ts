/**
 * Errors on the wire, one table for both route families ("Our decisions" §2, §3):
 *
 * | error_type             | status | OpenAI `type`          |
 * |------------------------|--------|------------------------|
 * | validation             | 422    | invalid_request_error  |
 * | template_error         | 422    | invalid_request_error  |
 * | overloaded             | 429    | rate_limit_error       |
 * | generation             | 424    | server_error           |
 * | incomplete_generation  | 500    | server_error           |
 * | model_load             | 500    | server_error           |
 * | unavailable            | 503    | server_error           |
 * | upstream_unavailable   | 502    | server_error           |
 * | invalid_request (JSON) | 400    | invalid_request_error  |
 * | anything else          | 500    | server_error           |
 *
 * OpenAI's `code` carries TGI's `error_type`, so both families expose the same machine-readable
 * reason. 429 and 503 carry `Retry-After: 1` and `retry-after-ms: 1000`, which the openai SDK
 * honours on its retries. An error that is not an `InferenceError` is a bug of ours: its message
 * may hold internals, so the client gets a generic 500 `internal`. The message of a 500 of ours may
 * name a file or an ONNX node too, so the client reads a fixed sentence instead; the host's
 * `onError` has the details.
 */
import { InferenceError } from '../errors.js';
import { DONE_FRAME, openaiJsonFrame, tgiJsonFrame } from './sse.js';
import { tgiErrorBody } from './tgi.js';

export type RouteFamily = 'tgi' | 'openai';

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** What a client may see of an error. */
interface PublicError {
  status: number;
  errorType: string;
  message: string;
  param: string | null;
}

const OPENAI_TYPE: Record<string, string> = {
  validation: 'invalid_request_error',
  template_error: 'invalid_request_error',
  invalid_request: 'invalid_request_error',
  overloaded: 'rate_limit_error',
};

const RETRY_AFTER_SECONDS = 1;

/**
 * Status, headers and JSON body for an error raised before the response started.
 *
 * @example
 * errorResponse(new OverloadedError(), 'tgi');
 * // { status: 429, headers: { 'Content-Type': 'application/json', 'Retry-After': '1', 'retry-after-ms': '1000' },
 * //   body: '{"error":"Model is overloaded","error_type":"overloaded"}' }
 */
export function errorResponse(err: unknown, family: RouteFamily): ErrorResponse {
  return respond(toPublicError(err), family);
}

/**
 * The event that ends a stream which fails after its first byte. OpenAI routes add `[DONE]`, as
 * vLLM does; TGI routes end without it.
 *
 * @example
 * inStreamErrorFrame(new GenerationError('boom'), 'tgi');
 * // 'data:{"error":"Request failed during generation: boom","error_type":"generation"}\n\n'
 */
export function inStreamErrorFrame(err: unknown, family: RouteFamily): string {
  const error = toPublicError(err);
  return family === 'tgi' ? tgiJsonFrame(tgiErrorBody(error)) : openaiJsonFrame(openaiBody(error)) + DONE_FRAME;
}

/**
 * The OpenAI error object of an error.
 *
 * @example
 * openaiErrorBody(new ValidationError('`n` must be 1', 'n'));
 * // { error: { message: 'Input validation error: `n` must be 1', type: 'invalid_request_error', param: 'n', code: 'validation' } }
 */
export function openaiErrorBody(err: unknown): OpenAIErrorBody {
  return openaiBody(toPublicError(err));
}

/** What a client reads of a 500: the message itself may hold a path or an ONNX node name. */
const HIDDEN_MESSAGE: Record<string, string> = {
  model_load: 'Model failed to load',
  incomplete_generation: 'Incomplete generation: the engine shut down',
  upstream_unavailable: 'No upstream server is reachable',
};

function toPublicError(err: unknown): PublicError {
  if (!InferenceError.isInstance(err)) return { status: 500, errorType: 'internal', message: 'Internal server error', param: null };
  // A 503 says which passing state to wait out (loading, restarting, shutting down), in words of ours only.
  const shown = err.status < 500 || err.status === 503;
  const message = shown ? err.message : (HIDDEN_MESSAGE[err.errorType] ?? 'Internal server error');
  return { status: err.status, errorType: err.errorType, message, param: err.param };
}

function respond(error: PublicError, family: RouteFamily): ErrorResponse {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (error.status === 429 || error.status === 503) {
    headers['Retry-After'] = String(RETRY_AFTER_SECONDS);
    headers['retry-after-ms'] = String(RETRY_AFTER_SECONDS * 1000);
  }
  const body = family === 'tgi' ? tgiErrorBody(error) : openaiBody(error);
  return { status: error.status, headers, body: JSON.stringify(body) };
}

function openaiBody(error: PublicError): OpenAIErrorBody {
  const type = OPENAI_TYPE[error.errorType] ?? 'server_error';
  return { error: { message: error.message, type, param: error.param, code: error.errorType } };
}
