/**
 * streaming-inference: the framework-agnostic core: the engine, the node:http request handler, the
 * errors and the public types. Adapters live in `streaming-inference/express` and
 * `streaming-inference/koa`, the wire-format encoders in `streaming-inference/protocol`, and the
 * fixture-model builder in `streaming-inference/fixture`.
 */
export { createEngine } from './engine/engine.js';
// The same routes in front of other inference servers (TGI, vLLM, SGLang, llama.cpp, our own serve).
export {
  createRemoteEngine,
  RemoteEngine,
  type Dialect,
  type RemoteEngineOptions,
  type RemoteMetricsOptions,
  type UpstreamOptions,
  type UpstreamStatus,
} from './remote/index.js';
// An `onProgress` for a model given by Hub id: one line on a terminal (what the CLI and `npm start` print).
export { describeProgress, progressPrinter } from './hub/progress.js';
// The request handler over node:http, for servers without Express or Koa (the CLI uses it).
export { createInferenceHandler, type InferenceHandler, type MetricsOptions, type StreamingInferenceOptions } from './http/index.js';
// The type of `handler.admission`; the handler makes its own.
export type { AdmissionController } from './admission.js';
export {
  InferenceError,
  ValidationError,
  OverloadedError,
  GenerationError,
  TemplateError,
  UnavailableError,
  ModelLoadError,
  UpstreamUnavailableError,
  type ErrorType,
  type ErrorContext,
  type ErrorListener,
  type ErrorPhase,
} from './errors.js';
export type {
  ChatGenerateRequest,
  ChatMessage,
  CloseOptions,
  DownloadProgress,
  Dtype,
  EndEvent,
  Engine,
  EngineInfo,
  EngineOptions,
  EngineStats,
  FinishReason,
  ForwardPassRecord,
  GenerateOptions,
  GenerateParameters,
  GenerateRequest,
  Generation,
  GenerationDefaults,
  GenerationEvent,
  GenerationTimings,
  ModelInfo,
  PrefillToken,
  Token,
  TokenEvent,
  TokenizedToken,
  ValidationLimits,
} from './types.js';
