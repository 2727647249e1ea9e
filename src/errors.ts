/**
 * Typed errors of the core. Each carries TGI's `error_type` and the HTTP status it maps to, so the
 * HTTP layer needs one table lookup, never a message match.
 */

export type ErrorType =
  | 'invalid_request'
  | 'validation'
  | 'overloaded'
  | 'generation'
  | 'incomplete_generation'
  | 'template_error'
  | 'unavailable'
  | 'model_load';

const STATUS: Record<ErrorType, number> = {
  invalid_request: 400,
  validation: 422,
  overloaded: 429,
  generation: 424,
  incomplete_generation: 500,
  template_error: 422,
  unavailable: 503,
  model_load: 500,
};

const BRAND = Symbol.for('streaming-inference.error');

export class InferenceError extends Error {
  readonly errorType: ErrorType;
  readonly status: number;
  /** Safe to show to a client. */
  readonly expose = true;
  /** OpenAI's `param`, when one request field is to blame. */
  readonly param: string | null;
  readonly [BRAND] = true;

  /** `status` overrides the type's usual one where HTTP has a more precise code (405, 413). */
  constructor(errorType: ErrorType, message: string, options: { cause?: unknown; param?: string | null; status?: number } = {}) {
    super(message, { cause: options.cause });
    this.name = 'InferenceError';
    this.errorType = errorType;
    this.status = options.status ?? STATUS[errorType];
    this.param = options.param ?? null;
  }

  /** Works across two loaded copies of the package, where `instanceof` does not. */
  static isInstance(value: unknown): value is InferenceError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** TGI wording: every message is prefixed "Input validation error: ". */
export class ValidationError extends InferenceError {
  constructor(message: string, param: string | null = null) {
    super('validation', `Input validation error: ${message}`, { param });
    this.name = 'ValidationError';
  }
}

export class OverloadedError extends InferenceError {
  constructor() {
    super('overloaded', 'Model is overloaded');
    this.name = 'OverloadedError';
  }
}

export class GenerationError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('generation', `Request failed during generation: ${message}`, { cause });
    this.name = 'GenerationError';
  }
}

export class TemplateError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('template_error', `Template error: ${message}`, { cause });
    this.name = 'TemplateError';
  }
}

/** The engine is loading, shutting down, or closed. */
export class UnavailableError extends InferenceError {
  constructor(message: string) {
    super('unavailable', message);
    this.name = 'UnavailableError';
  }
}

/** A model directory that cannot be served; the message names the file and what was expected. */
export class ModelLoadError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('model_load', message, { cause });
    this.name = 'ModelLoadError';
  }
}

/** Plain data that crosses the worker boundary and becomes the same typed error again. */
export interface SerializedError {
  errorType: ErrorType;
  message: string;
  param: string | null;
}

export function serializeError(error: unknown): SerializedError {
  if (InferenceError.isInstance(error)) return { errorType: error.errorType, message: error.message, param: error.param };
  const message = error instanceof Error ? error.message : String(error);
  return { errorType: 'generation', message: `Request failed during generation: ${message}`, param: null };
}

export function deserializeError(data: SerializedError): InferenceError {
  return new InferenceError(data.errorType, data.message, { param: data.param });
}
