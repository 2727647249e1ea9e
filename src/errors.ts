/**
 * Typed errors of the core. Each carries TGI's `error_type` and the HTTP status it maps to, so the
 * HTTP layer needs one table lookup, never a message match.
 *
 * Each class brands its prototype with its own `Symbol.for` marker, as the Vercel AI SDK's
 * `AISDKError` does, so `X.isInstance(error)` holds for an X (or a subclass of X) made by any loaded
 * copy of this package, where `instanceof` holds only within one copy.
 */

export type ErrorType =
  | 'invalid_request'
  | 'validation'
  | 'overloaded'
  | 'generation'
  | 'incomplete_generation'
  | 'template_error'
  | 'unavailable'
  | 'model_load'
  | 'internal'
  | 'upstream_unavailable';

const STATUS: Record<ErrorType, number> = {
  invalid_request: 400,
  validation: 422,
  overloaded: 429,
  generation: 424,
  incomplete_generation: 500,
  template_error: 422,
  unavailable: 503,
  model_load: 500,
  internal: 500,
  upstream_unavailable: 502,
};

/** The base class's marker is the one earlier versions used, so they and this one recognise each other. */
const BASE_MARKER = 'streaming-inference.error';

function markerOf(name: string): symbol {
  return Symbol.for(name === 'InferenceError' ? BASE_MARKER : `${BASE_MARKER}.${name}`);
}

function hasMarker(value: unknown, name: string): boolean {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[markerOf(name)] === true;
}

type ErrorClass = abstract new (...args: never[]) => InferenceError;
const CLASSES = new Map<string, ErrorClass>();

/**
 * Puts the marker and the name on the prototype rather than on each instance: an error rebuilt from
 * its serialized form (`deserializeError`) runs only the base constructor, and is still fully branded.
 */
function brand(cls: ErrorClass, name: string): void {
  Object.defineProperty(cls.prototype, markerOf(name), { value: true });
  Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true });
  CLASSES.set(name, cls);
}

export class InferenceError extends Error {
  readonly errorType: ErrorType;
  readonly status: number;
  /** Safe to show to a client: only below 500. A 5xx message may name files or ONNX nodes; clients get a fixed sentence. */
  readonly expose: boolean;
  /** OpenAI's `param`, when one request field is to blame. */
  readonly param: string | null;

  /** `status` overrides the type's usual one where HTTP has a more precise code (405, 413). */
  constructor(errorType: ErrorType, message: string, options: { cause?: unknown; param?: string | null; status?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.errorType = errorType;
    this.status = options.status ?? STATUS[errorType];
    this.expose = this.status < 500;
    this.param = options.param ?? null;
  }

  /** Any error of this package, from any loaded copy of it. */
  static isInstance(value: unknown): value is InferenceError {
    return hasMarker(value, 'InferenceError');
  }
}
brand(InferenceError, 'InferenceError');

/** TGI wording: every message is prefixed "Input validation error: ". */
export class ValidationError extends InferenceError {
  constructor(message: string, param: string | null = null) {
    super('validation', `Input validation error: ${message}`, { param });
  }

  static override isInstance(value: unknown): value is ValidationError {
    return hasMarker(value, 'ValidationError');
  }
}
brand(ValidationError, 'ValidationError');

export class OverloadedError extends InferenceError {
  constructor() {
    super('overloaded', 'Model is overloaded');
  }

  static override isInstance(value: unknown): value is OverloadedError {
    return hasMarker(value, 'OverloadedError');
  }
}
brand(OverloadedError, 'OverloadedError');

export class GenerationError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('generation', `Request failed during generation: ${message}`, { cause });
  }

  static override isInstance(value: unknown): value is GenerationError {
    return hasMarker(value, 'GenerationError');
  }
}
brand(GenerationError, 'GenerationError');

export class TemplateError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('template_error', `Template error: ${message}`, { cause });
  }

  static override isInstance(value: unknown): value is TemplateError {
    return hasMarker(value, 'TemplateError');
  }
}
brand(TemplateError, 'TemplateError');

/** The engine is loading, restarting its worker, shutting down, or closed. */
export class UnavailableError extends InferenceError {
  constructor(message: string) {
    super('unavailable', message);
  }

  static override isInstance(value: unknown): value is UnavailableError {
    return hasMarker(value, 'UnavailableError');
  }
}
brand(UnavailableError, 'UnavailableError');

/**
 * A model that cannot be served: its directory failed to load, or its worker could not be restarted.
 * The message names the file and what was expected (for the log; clients read "Model failed to load").
 */
export class ModelLoadError extends InferenceError {
  constructor(message: string, cause?: unknown) {
    super('model_load', message, { cause });
  }

  static override isInstance(value: unknown): value is ModelLoadError {
    return hasMarker(value, 'ModelLoadError');
  }
}
brand(ModelLoadError, 'ModelLoadError');

/**
 * No upstream server of a remote engine could be reached (refused, reset, no answer in time). Not
 * 503, which `@huggingface/inference` retries at once, forever; busy upstreams are a 429 instead.
 */
export class UpstreamUnavailableError extends InferenceError {
  constructor(message: string) {
    super('upstream_unavailable', message);
  }

  static override isInstance(value: unknown): value is UpstreamUnavailableError {
    return hasMarker(value, 'UpstreamUnavailableError');
  }
}
brand(UpstreamUnavailableError, 'UpstreamUnavailableError');

/**
 * Plain data that crosses the worker boundary and becomes an error of the same class again, with its
 * message, stack and causes: one of ours with its type, status and param, or a built-in error.
 */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** Present on our errors only. */
  errorType?: ErrorType;
  status?: number;
  param?: string | null;
  cause?: SerializedError;
}

/** A cycle of causes must not recurse forever; real chains are two or three long. */
const MAX_CAUSES = 8;

export function serializeError(error: unknown, depth = 0): SerializedError {
  if (!(error instanceof Error) && !InferenceError.isInstance(error)) return { name: 'Error', message: String(error) };
  const data: SerializedError = { name: error.name, message: error.message, stack: error.stack };
  if (InferenceError.isInstance(error)) Object.assign(data, { errorType: error.errorType, status: error.status, param: error.param });
  if (error.cause !== undefined && depth < MAX_CAUSES) data.cause = serializeError(error.cause, depth + 1);
  return data;
}

const BUILT_IN: Record<string, ErrorConstructor> = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };

export function deserializeError(data: SerializedError): Error {
  const cause = data.cause === undefined ? undefined : deserializeError(data.cause);
  let error: Error;
  if (data.errorType !== undefined) {
    const options = { cause, param: data.param, status: data.status };
    error = Reflect.construct(InferenceError, [data.errorType, data.message, options], CLASSES.get(data.name) ?? InferenceError);
  } else {
    error = new (BUILT_IN[data.name] ?? Error)(data.message, cause === undefined ? undefined : { cause });
    if (error.name !== data.name) error.name = data.name;
  }
  if (data.stack !== undefined) error.stack = data.stack;
  return error;
}

/** Where an unexpected error happened. */
export type ErrorPhase =
  /** The model failed to load (a handler loading its own model; `createEngine` rejects instead). */
  | 'load'
  /** The engine worker died: its requests failed, and it is being restarted. */
  | 'worker'
  /** The worker could not be restarted: the engine has failed for good and answers 500. */
  | 'restart'
  /** A forward pass failed: the requests it carried got a 424. */
  | 'generation'
  /** A route failed with an error that is not one of ours (a bug): the client got a generic 500. */
  | 'request';

export interface ErrorContext {
  /** The route being served (`/generate`, `/v1/chat/completions`, ...), or null outside a request. */
  route: string | null;
  phase: ErrorPhase;
}

/** Sees each unexpected error once; clients never see its details. Should not throw. */
export type ErrorListener = (error: unknown, context: ErrorContext) => void;

/**
 * The default `onError`: one line on stderr, with the chain of causes.
 *
 * @example
 * logError(new ModelLoadError('/m/config.json not found'), { route: null, phase: 'load' });
 * // stderr: streaming-inference load: ModelLoadError: /m/config.json not found
 */
export function logError(error: unknown, context: ErrorContext): void {
  const where = context.route === null ? context.phase : `${context.phase} ${context.route}`;
  console.error(`streaming-inference ${where}: ${describeChain(error)}`);
}

function describeChain(error: unknown): string {
  const parts: string[] = [];
  let next: unknown = error;
  for (let depth = 0; next !== undefined && depth <= MAX_CAUSES; depth += 1) {
    const current = next;
    next = (current as { cause?: unknown } | null)?.cause;
    if (!(current instanceof Error) && !InferenceError.isInstance(current)) parts.push(String(current));
    // A wrapper often repeats its cause's message (GenerationError around ONNX Runtime's): say it once.
    else if (depth === 0 || !parts[parts.length - 1].includes(current.message)) parts.push(`${current.name}: ${current.message}`);
  }
  return parts.join(' <- caused by ').replace(/\s*\n\s*/g, ' ');
}
