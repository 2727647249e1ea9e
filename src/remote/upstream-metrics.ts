/**
 * Per-upstream Prometheus metrics, beside TGI's `tgi_*` ones in the same registry. Values are set
 * as they change rather than collected, so two engines sharing a registry reuse the same metrics.
 */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

/** TGI's duration buckets, as the mount's histograms use. */
const DURATION_BUCKETS = Array.from({ length: 35 }, (_, i) => 0.00015 * 1.5 ** i);

/** How an attempt on one upstream ended. */
export type Outcome = 'ok' | 'overloaded' | 'unavailable' | 'invalid' | 'error' | 'cancelled';

export interface UpstreamMetrics {
  up(upstream: string, up: boolean): void;
  inFlight(upstream: string, count: number): void;
  queue(upstream: string, depth: number): void;
  outcome(upstream: string, outcome: Outcome): void;
  /** A request moved on from this upstream before its first token, and why. */
  failover(upstream: string, reason: Outcome): void;
  firstToken(upstream: string, seconds: number): void;
}

const NONE: UpstreamMetrics = { up() {}, inFlight() {}, queue() {}, outcome() {}, failover() {}, firstToken() {} };

export function createUpstreamMetrics(registry: Registry | null): UpstreamMetrics {
  if (!registry) return NONE;
  const registers = [registry];
  const labelNames = ['upstream'];
  const reuse = <T extends Metric>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const up = reuse(
    'streaming_inference_upstream_up',
    () =>
      new Gauge({
        name: 'streaming_inference_upstream_up',
        help: 'Upstream passes its health probe (1) or not (0)',
        labelNames,
        registers,
      }),
  );
  const inFlight = reuse(
    'streaming_inference_upstream_in_flight',
    () =>
      new Gauge({
        name: 'streaming_inference_upstream_in_flight',
        help: 'Requests we sent the upstream that are not finished',
        labelNames,
        registers,
      }),
  );
  const queue = reuse(
    'streaming_inference_upstream_queue',
    () =>
      new Gauge({
        name: 'streaming_inference_upstream_queue',
        help: "The upstream's own queue depth, as last scraped",
        labelNames,
        registers,
      }),
  );
  const requests = reuse(
    'streaming_inference_upstream_requests_total',
    () =>
      new Counter({
        name: 'streaming_inference_upstream_requests_total',
        help: 'Attempts on the upstream by outcome',
        labelNames: ['upstream', 'outcome'],
        registers,
      }),
  );
  const failovers = reuse(
    'streaming_inference_upstream_failovers_total',
    () =>
      new Counter({
        name: 'streaming_inference_upstream_failovers_total',
        help: 'Requests moved to another upstream before their first token',
        labelNames: ['upstream', 'reason'],
        registers,
      }),
  );
  const firstToken = reuse(
    'streaming_inference_upstream_first_token_seconds',
    () =>
      new Histogram({
        name: 'streaming_inference_upstream_first_token_seconds',
        help: 'Dispatch to first token (s)',
        labelNames,
        buckets: DURATION_BUCKETS,
        registers,
      }),
  );
  return {
    up: (upstream, isUp) => up.set({ upstream }, isUp ? 1 : 0),
    inFlight: (upstream, count) => inFlight.set({ upstream }, count),
    queue: (upstream, depth) => queue.set({ upstream }, depth),
    outcome: (upstream, outcome) => requests.inc({ upstream, outcome }),
    failover: (upstream, reason) => failovers.inc({ upstream, reason }),
    firstToken: (upstream, seconds) => firstToken.observe({ upstream }, seconds),
  };
}
