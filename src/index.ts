/**
 * streaming-inference: the framework-agnostic core. Adapters live in `streaming-inference/express`
 * and `streaming-inference/koa`.
 */
export { createEngine } from './engine/engine.js';
// The request handler over node:http, for servers without Express or Koa (the CLI uses it).
export {
  createInferenceHandler, createMetrics, type InferenceHandler, type Metrics, type MetricsOptions, type StreamingInferenceOptions,
} from './http/index.js';
export { AdmissionController, type Permit } from './admission.js';
export {
  InferenceError, ValidationError, OverloadedError, GenerationError, TemplateError, UnavailableError, ModelLoadError,
  type ErrorType,
} from './errors.js';
export { buildFixtureModel, ensureFixtureModel, type FixtureOptions, type FixtureSize } from './fixture/index.js';
export type * from './types.js';
