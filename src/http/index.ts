export { createInferenceHandler, type InferenceHandler, type StreamingInferenceOptions } from './handler.js';
export { createMetrics, type Metrics, type MetricsOptions } from './metrics.js';
