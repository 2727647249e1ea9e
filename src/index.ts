/**
 * streaming-inference: the framework-agnostic core. Adapters live in `streaming-inference/express`
 * and `streaming-inference/koa`.
 */
export { createEngine } from './engine/engine.js';
export { AdmissionController, type Permit } from './admission.js';
export {
  InferenceError, ValidationError, OverloadedError, GenerationError, TemplateError, UnavailableError, ModelLoadError,
  type ErrorType,
} from './errors.js';
export { buildFixtureModel, ensureFixtureModel, type FixtureOptions, type FixtureSize } from './fixture/index.js';
export type * from './types.js';
