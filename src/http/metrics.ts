import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import { COMPILE_SECONDS_BUCKETS, type GrammarStats } from '../grammar/index.js';
import type { AdmissionController } from '../admission.js';
import type { EndEvent, Engine, EngineStats } from '../types.js';

/** TGI's duration buckets: 35 geometric steps from 0.15 ms, ratio 1.5 (protocol.md §1.6). */
const DURATION_BUCKETS = Array.from({ length: 35 }, (_, i) => 0.00015 * 1.5 ** i);
const TOKEN_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

export interface MetricsOptions {
  /** The host's registry, so our metrics join its `/metrics`; default a registry of our own. */
  registry?: Registry;
  /**
   * The `mount` label of this mount's request metrics, for several mounts in one registry (e.g.
   * `'chat'`, `'code'`). Unset: no label, and the request metrics of unnamed mounts add up.
   */
  mount?: string;
}

/** Where the engine-wide gauges read: the mount's engine (null while it loads) and its shared admission. */
export interface MetricsSource {
  engine(): Engine | null;
  admission(): AdmissionController | null;
}

export interface Metrics {
  request(): void;
  success(end: EndEvent, seconds: number): void;
  /** `err` as TGI labels it: validation, overloaded, generation, template_error, dropped, ... */
  failure(err: string): void;
  readonly registry: Registry;
  readonly contentType: string;
  render(): Promise<string>;
  /** Wires the live gauges to a mount's engine; returns the function that unwires it. */
  observe(source: MetricsSource): () => void;
  /** Records the engine's forward passes, once per registry however many mounts serve it; returns the function that stops it. */
  watch(engine: Engine): () => void;
}

/** The metrics of one registry, shared by every mount that joins it. */
interface RegistryMetrics {
  requests: Counter;
  success: Counter;
  failure: Counter;
  duration: Histogram;
  queue: Histogram;
  inference: Histogram;
  perToken: Histogram;
  inputLength: Histogram;
  generated: Histogram;
  batch: ReturnType<typeof createBatchMetrics>;
  sources: Set<MetricsSource>;
  /** Each engine's pass listener and how many mounts asked for it. */
  watched: Map<Engine, { mounts: number; unsubscribe: () => void }>;
}

const byRegistry = new WeakMap<Registry, RegistryMetrics>();

/**
 * Prometheus metrics under TGI's names and meanings, so TGI dashboards work unchanged. Several
 * mounts may join one registry: the metrics are registered once, request metrics carry each
 * mount's `mount` label, and the engine gauges and batch counters count each engine once.
 *
 * @example
 * app.use('/chat', streamingInference({ engine, metrics: { registry, mount: 'chat' } }));
 * app.use('/code', streamingInference({ engine, metrics: { registry, mount: 'code' } }));
 */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = options.registry ?? new Registry();
  const shared = byRegistry.get(registry) ?? register(registry);
  byRegistry.set(registry, shared);
  const mount = options.mount === undefined ? {} : { mount: options.mount };

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    observe(source) {
      shared.sources.add(source);
      return () => shared.sources.delete(source);
    },
    watch(engine) {
      const entry = shared.watched.get(engine) ?? { mounts: 0, unsubscribe: watchPasses(shared.batch, engine) };
      entry.mounts += 1;
      shared.watched.set(engine, entry);
      let stopped = false;
      return () => {
        if (stopped) return;
        stopped = true;
        entry.mounts -= 1;
        if (entry.mounts > 0) return;
        entry.unsubscribe();
        shared.watched.delete(engine);
      };
    },
    request: () => shared.requests.inc(mount),
    failure: (err) => shared.failure.inc({ err, ...mount }),
    success(end: EndEvent, seconds: number) {
      shared.success.inc(mount);
      shared.duration.observe(mount, seconds);
      shared.queue.observe(mount, end.timings.queueMs / 1000);
      shared.inference.observe(mount, end.timings.inferenceMs / 1000);
      shared.perToken.observe(mount, end.timings.inferenceMs / 1000 / Math.max(1, end.generatedTokens));
      shared.inputLength.observe(mount, end.inputLength);
      shared.generated.observe(mount, end.generatedTokens);
    },
  };
}

function register(registry: Registry): RegistryMetrics {
  const registers = [registry];
  const labelNames = ['mount'];
  const sources = new Set<MetricsSource>();
  /** Each engine (and each shared admission) once, however many mounts serve it. */
  const engines = () => new Set([...sources].map((s) => s.engine()).filter((e): e is Engine => e !== null));
  const sumStats = (field: keyof Omit<EngineStats, 'healthy' | 'grammar'>) =>
    [...engines()].reduce((sum, e) => sum + (e.stats()[field] ?? 0), 0);
  const grammarStats = () => [...engines()].flatMap((e) => e.stats().grammar ?? []);
  const sumGrammar = (field: keyof Omit<GrammarStats, 'compileBuckets'>) => grammarStats().reduce((sum, g) => sum + g[field], 0);
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value());
      },
    });

  gauge('tgi_queue_size', 'Requests waiting for the batch', () => sumStats('queueSize'));
  gauge('tgi_batch_current_size', 'Sequences in the running batch', () => sumStats('batchSize'));
  gauge('tgi_batch_current_max_tokens', 'KV token reservation of the running batch', () => sumStats('batchReservedTokens'));
  gauge('tgi_batch_max_total_tokens', 'KV token budget of the batch', () =>
    [...engines()].reduce((sum, e) => sum + e.info.maxBatchTotalTokens, 0),
  );
  gauge('streaming_inference_worker_memory_bytes', "The engine worker's heap and KV-cache buffers", () => sumStats('workerMemoryBytes'));
  // Counted in the worker since it started: a restarted worker starts over, which Prometheus reads as a counter reset.
  const counter = (name: string, help: string, value: () => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value());
      },
    });
  counter('streaming_inference_prefix_cache_hits_total', 'Requests that reused a cached prompt prefix', () => sumStats('prefixCacheHits'));
  counter('streaming_inference_prefix_cache_tokens_total', 'Prompt tokens taken from the prefix cache instead of computed', () =>
    sumStats('prefixCacheTokens'),
  );
  gauge('streaming_inference_prefix_cache_bytes', 'Bytes the prefix cache holds', () => sumStats('prefixCacheBytes'));
  counter('streaming_inference_grammar_cache_hits_total', 'Grammar requests served by an already compiled grammar', () =>
    sumGrammar('cacheHits'),
  );
  counter('streaming_inference_grammar_cache_misses_total', 'Grammars compiled, failed compiles included', () => sumGrammar('compiles'));
  workerHistogram(registry, 'streaming_inference_grammar_compile_duration', 'Grammar compile time, cache misses only (s)', () => {
    const all = grammarStats();
    return {
      buckets: COMPILE_SECONDS_BUCKETS.map((le, i) => [le, all.reduce((sum, g) => sum + g.compileBuckets[i], 0)]),
      sum: all.reduce((sum, g) => sum + g.compileSeconds, 0),
      count: all.reduce((sum, g) => sum + g.compiles, 0),
    };
  });
  counter('streaming_inference_grammar_rejections_total', 'Grammars refused with a 422 by the grammar engine (its rules or xgrammar)', () =>
    sumGrammar('refused'),
  );
  gauge('streaming_inference_grammar_live_matchers', 'Rows whose grammar state is held, generating or about to', () =>
    sumGrammar('liveMatchers'),
  );
  gauge('streaming_inference_grammar_cached', 'Compiled grammars held, in use or idle', () => sumGrammar('cached'));
  gauge('streaming_inference_grammar_wasm_bytes', "Linear memory of the grammar engine's serving WASM instance", () =>
    sumGrammar('wasmBytes'),
  );
  gauge('streaming_inference_in_flight_requests', 'Admitted requests, queued or generating', () => {
    const admissions = new Set([...sources].map((s) => s.admission()).filter((a): a is AdmissionController => a !== null));
    return [...admissions].reduce((sum, a) => sum + a.inFlight, 0);
  });

  const histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, labelNames, buckets, registers });
  return {
    requests: new Counter({ name: 'tgi_request_count', help: 'Requests received', labelNames, registers }),
    success: new Counter({ name: 'tgi_request_success', help: 'Requests completed', labelNames, registers }),
    failure: new Counter({ name: 'tgi_request_failure', help: 'Failed requests by reason', labelNames: ['err', 'mount'], registers }),
    duration: histogram('tgi_request_duration', 'End-to-end request duration (s)', DURATION_BUCKETS),
    queue: histogram('tgi_request_queue_duration', 'Time in the queue (s)', DURATION_BUCKETS),
    inference: histogram('tgi_request_inference_duration', 'First forward pass to end (s)', DURATION_BUCKETS),
    perToken: histogram('tgi_request_mean_time_per_token_duration', 'Mean inter-token latency (s)', DURATION_BUCKETS),
    inputLength: histogram('tgi_request_input_length', 'Prompt tokens', TOKEN_BUCKETS),
    generated: histogram('tgi_request_generated_tokens', 'Generated tokens', TOKEN_BUCKETS),
    batch: createBatchMetrics(registry),
    sources,
    watched: new Map(),
  };
}

/**
 * A histogram counted elsewhere: the grammar compile times are observed in the worker, which sends
 * its bucket counts with the stats, and prom-client's Histogram only counts what it observes itself.
 * So this is a collector of its own, in the shape the registry renders (`_bucket`, `_sum`, `_count`).
 */
function workerHistogram(
  registry: Registry,
  name: string,
  help: string,
  read: () => { buckets: Array<[number, number]>; sum: number; count: number },
): void {
  const collector = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const { buckets, sum, count } = read();
      return {
        name,
        help,
        type: 'histogram',
        aggregator: 'sum',
        values: [
          ...buckets.map(([le, value]) => ({ metricName: `${name}_bucket`, labels: { le }, value })),
          { metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: count },
          { metricName: `${name}_sum`, labels: {}, value: sum },
          { metricName: `${name}_count`, labels: {}, value: count },
        ],
      };
    },
    // Counted in the worker since it started, like the counters above: nothing here to reset.
    reset() {},
  };
  registry.registerMetric(collector as unknown as Metric);
}

/** Counts one engine's forward passes into a registry's batch metrics. */
function watchPasses(batch: RegistryMetrics['batch'], engine: Engine): () => void {
  return engine.onForwardPass((pass) => {
    const labels = { method: pass.method };
    batch.passes.inc(labels);
    (pass.ok ? batch.passOk : batch.passFailed).inc(labels);
    batch.passDuration.observe(labels, pass.seconds);
    if (pass.method === 'prefill') batch.nextSize.observe(pass.rows);
  });
}

/** TGI's `tgi_batch_*` metrics of forward passes, by method (prefill or decode). */
function createBatchMetrics(registry: Registry) {
  const registers = [registry];
  const labelNames = ['method'];
  return {
    passes: new Counter({ name: 'tgi_batch_inference_count', help: 'Forward passes', labelNames, registers }),
    passOk: new Counter({ name: 'tgi_batch_inference_success', help: 'Forward passes that succeeded', labelNames, registers }),
    passFailed: new Counter({ name: 'tgi_batch_inference_failure', help: 'Forward passes that failed', labelNames, registers }),
    passDuration: new Histogram({
      name: 'tgi_batch_forward_duration',
      help: 'Forward pass duration, with sampling (s)',
      labelNames,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    nextSize: new Histogram({ name: 'tgi_batch_next_size', help: 'Requests in a new prefill', buckets: TOKEN_BUCKETS, registers }),
  };
}
