import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AdmissionController } from '../admission.js';
import type { EndEvent, Engine } from '../types.js';

/** TGI's duration buckets: 35 geometric steps from 0.15 ms, ratio 1.5 (protocol.md §1.6). */
const DURATION_BUCKETS = Array.from({ length: 35 }, (_, i) => 0.00015 * 1.5 ** i);
const TOKEN_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

export interface MetricsOptions {
  /** The host's registry, so our metrics join its `/metrics`; default a registry of our own. */
  registry?: Registry;
}

export interface Metrics {
  request(): void;
  success(end: EndEvent, seconds: number): void;
  /** `err` as TGI labels it: validation, overloaded, generation, template_error, dropped, ... */
  failure(err: string): void;
  readonly registry: Registry;
  readonly contentType: string;
  render(): Promise<string>;
  /** Wires the live gauges to an engine and an admission controller. */
  observe(source: { engine: () => Engine | null; admission: AdmissionController }): void;
  /** Records the engine's forward passes (once it is loaded); returns the function that stops it. */
  watch(engine: Engine): () => void;
}

/**
 * Prometheus metrics under TGI's names and meanings, so TGI dashboards work unchanged.
 *
 * @example
 * app.use('/llm', streamingInference({ model, metrics: { registry: myRegistry } }));
 */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  let source: Parameters<Metrics['observe']>[0] | null = null;
  const stats = () => source?.engine()?.stats();

  const requests = new Counter({ name: 'tgi_request_count', help: 'Requests received', registers });
  const success = new Counter({ name: 'tgi_request_success', help: 'Requests completed', registers });
  const failure = new Counter({ name: 'tgi_request_failure', help: 'Failed requests by reason', labelNames: ['err'], registers });
  const duration = new Histogram({ name: 'tgi_request_duration', help: 'End-to-end request duration (s)', buckets: DURATION_BUCKETS, registers });
  const queue = new Histogram({ name: 'tgi_request_queue_duration', help: 'Time in the queue (s)', buckets: DURATION_BUCKETS, registers });
  const inference = new Histogram({ name: 'tgi_request_inference_duration', help: 'First forward pass to end (s)', buckets: DURATION_BUCKETS, registers });
  const perToken = new Histogram({ name: 'tgi_request_mean_time_per_token_duration', help: 'Mean inter-token latency (s)', buckets: DURATION_BUCKETS, registers });
  const inputLength = new Histogram({ name: 'tgi_request_input_length', help: 'Prompt tokens', buckets: TOKEN_BUCKETS, registers });
  const generated = new Histogram({ name: 'tgi_request_generated_tokens', help: 'Generated tokens', buckets: TOKEN_BUCKETS, registers });
  const method = ['method'];
  const passes = new Counter({ name: 'tgi_batch_inference_count', help: 'Forward passes', labelNames: method, registers });
  const passOk = new Counter({ name: 'tgi_batch_inference_success', help: 'Forward passes that succeeded', labelNames: method, registers });
  const passFailed = new Counter({ name: 'tgi_batch_inference_failure', help: 'Forward passes that failed', labelNames: method, registers });
  const passDuration = new Histogram({
    name: 'tgi_batch_forward_duration', help: 'Forward pass duration, with sampling (s)', labelNames: method, buckets: DURATION_BUCKETS, registers,
  });
  const nextSize = new Histogram({ name: 'tgi_batch_next_size', help: 'Requests in a new prefill', buckets: TOKEN_BUCKETS, registers });
  new Gauge({ name: 'tgi_queue_size', help: 'Requests waiting for the batch', registers, collect() { this.set(stats()?.queueSize ?? 0); } });
  new Gauge({ name: 'tgi_batch_current_size', help: 'Sequences in the running batch', registers, collect() { this.set(stats()?.batchSize ?? 0); } });
  new Gauge({
    name: 'tgi_batch_current_max_tokens', help: 'KV token reservation of the running batch', registers,
    collect() { this.set(stats()?.batchReservedTokens ?? 0); },
  });
  new Gauge({
    name: 'tgi_batch_max_total_tokens', help: 'KV token budget of the batch', registers,
    collect() { this.set(source?.engine()?.info.maxBatchTotalTokens ?? 0); },
  });
  new Gauge({
    name: 'streaming_inference_worker_memory_bytes', help: "The engine worker's heap and KV-cache buffers", registers,
    collect() { this.set(stats()?.workerMemoryBytes ?? 0); },
  });
  new Gauge({
    name: 'streaming_inference_in_flight_requests', help: 'Admitted requests, queued or generating', registers,
    collect() { this.set(source?.admission.inFlight ?? 0); },
  });

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    observe: (s) => (source = s),
    watch: (engine) =>
      engine.onForwardPass((pass) => {
        const labels = { method: pass.method };
        passes.inc(labels);
        (pass.ok ? passOk : passFailed).inc(labels);
        passDuration.observe(labels, pass.seconds);
        if (pass.method === 'prefill') nextSize.observe(pass.rows);
      }),
    request: () => requests.inc(),
    failure: (err) => failure.inc({ err }),
    success(end: EndEvent, seconds: number) {
      success.inc();
      duration.observe(seconds);
      queue.observe(end.timings.queueMs / 1000);
      inference.observe(end.timings.inferenceMs / 1000);
      perToken.observe(end.timings.inferenceMs / 1000 / Math.max(1, end.generatedTokens));
      inputLength.observe(end.inputLength);
      generated.observe(end.generatedTokens);
    },
  };
}
