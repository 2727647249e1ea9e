/**
 * One upstream as the router sees it: where it is, whether it is up, how loaded, and the loops that
 * keep that current. A circuit breaker decides "up": a request that cannot reach it, three failed
 * attempts in a row, or a failed health probe open it (the upstream leaves every pick, and the
 * requests still waiting for its first token move elsewhere); probes with growing backoff close it
 * again once the upstream answers.
 */
import { discover, type Discovery } from './discovery.js';
import { othersLoad } from './picker.js';
import type { ResolvedUpstream } from './options.js';
import { promValues } from './prom-text.js';
import { UpstreamHttp, type UpstreamRequest, type UpstreamResponse } from './upstream-http.js';
import type { UpstreamMetrics } from './upstream-metrics.js';

/** Queue depth and running count, by engine; the first name an upstream exposes wins. */
const QUEUE_NAMES = ['tgi_queue_size', 'vllm:num_requests_waiting', 'sglang:num_queue_reqs', 'llamacpp:requests_deferred'];
const RUNNING_NAMES = ['tgi_batch_current_size', 'vllm:num_requests_running', 'sglang:num_running_reqs', 'llamacpp:requests_processing'];
/** Capacity of an upstream that does not say, e.g. vLLM. */
const DEFAULT_CAPACITY = 64;
/** Failed attempts in a row (refused, 5xx, broken streams) that open the circuit. */
const FAILURES_TO_OPEN = 3;
const OVERLOAD_COOLDOWN_MS = 1000;

export interface UpstreamSettings {
  probeIntervalMs: number;
  loadIntervalMs: number;
  maxBackoffMs: number;
  headersTimeoutMs: number;
}

export interface UpstreamLoad {
  queue: number;
  running: number;
  /** Of those, the requests of other clients (`othersLoad`). */
  others: number;
  /** When it was scraped (performance.now()). */
  at: number;
}

export class Upstream {
  readonly url: string;
  readonly dialect: ResolvedUpstream['dialect'];
  discovery: Discovery | null = null;
  up = false;
  inFlight = 0;
  /** Requests past their first token. */
  committed = 0;
  load: UpstreamLoad | null = null;
  /** Why the upstream was refused at discovery (another model); it then never joins. */
  refused: string | null = null;
  private readonly pending = new Set<AbortController>();
  private failuresInARow = 0;
  private probeFailures = 0;
  private cooldownUntil = 0;
  private probePath = '/health';
  private scraping: boolean;
  private probeTimer: NodeJS.Timeout | null = null;
  private loadTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private probing = false;
  /** When it last sent us bytes of a generation (performance.now()). */
  private lastHeard = 0;
  private firstProbe: Promise<void> | null = null;
  private readonly http: UpstreamHttp;

  constructor(
    private readonly options: ResolvedUpstream,
    private readonly settings: UpstreamSettings,
    private readonly metrics: UpstreamMetrics,
    /** Returns why a discovered upstream must not join (a different model), or null. */
    private readonly admit: (discovery: Discovery) => string | null,
  ) {
    this.url = options.url;
    this.dialect = options.dialect;
    this.scraping = settings.loadIntervalMs > 0;
    this.http = new UpstreamHttp(options.url, options.headers);
    metrics.up(this.url, false);
    metrics.inFlight(this.url, 0);
  }

  get capacity(): number {
    return this.options.capacity ?? this.discovery?.capacity ?? DEFAULT_CAPACITY;
  }

  /** The model name an OpenAI upstream is asked for. */
  get model(): string {
    return this.options.model ?? this.discovery?.modelId ?? '';
  }

  /** Starts probing; resolves after the first probe, up or not. */
  start(): Promise<void> {
    this.firstProbe ??= this.probe();
    return this.firstProbe;
  }

  stop(): void {
    this.stopped = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    if (this.loadTimer) clearTimeout(this.loadTimer);
    this.http.close();
  }

  /** Whether a new request may go here now. */
  available(now = performance.now()): boolean {
    return this.up && now >= this.cooldownUntil && this.inFlight < this.capacity;
  }

  /** Up but busy: full, or cooling down after it said it was overloaded. */
  busy(now = performance.now()): boolean {
    return this.up && !this.available(now);
  }

  /** Its queue depth if scraped recently enough to trust (llm-d's rule: twice the interval). */
  freshLoad(now = performance.now()): UpstreamLoad | null {
    return this.load && now - this.load.at <= 2 * this.settings.loadIntervalMs ? this.load : null;
  }

  request(path: string, options?: UpstreamRequest): Promise<UpstreamResponse> {
    return this.http.request(path, options);
  }

  /** An attempt starts; `controller` is aborted if the upstream goes down before its first token. */
  begin(controller: AbortController): void {
    this.inFlight += 1;
    this.pending.add(controller);
    this.metrics.inFlight(this.url, this.inFlight);
  }

  commit(controller: AbortController): void {
    this.pending.delete(controller);
    this.committed += 1;
  }

  finish(controller: AbortController, committed: boolean): void {
    this.pending.delete(controller);
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (committed) this.committed = Math.max(0, this.committed - 1);
    this.metrics.inFlight(this.url, this.inFlight);
  }

  /** Bytes of a generation arrived from it. */
  heard(): void {
    this.lastHeard = performance.now();
  }

  succeeded(): void {
    this.failuresInARow = 0;
  }

  /** A failed attempt; `unreachable` (refused, reset, no headers in time) opens the circuit at once. */
  failed(unreachable: boolean): void {
    this.failuresInARow += 1;
    if (unreachable || this.failuresInARow >= FAILURES_TO_OPEN) this.markDown();
  }

  /** It said it was busy: leave it out of picks for its `Retry-After`, or a second. */
  overloaded(retryAfterSeconds?: number): void {
    const ms = retryAfterSeconds !== undefined && retryAfterSeconds > 0 ? Math.min(retryAfterSeconds * 1000, 30_000) : OVERLOAD_COOLDOWN_MS;
    this.cooldownUntil = performance.now() + ms;
  }

  private markDown(): void {
    const wasUp = this.up;
    this.setUp(false);
    // Requests that have no token yet lose nothing by moving; they are aborted and fail over.
    for (const controller of this.pending) controller.abort(new UpstreamDownError(this.url));
    if (wasUp && !this.stopped) this.schedule(this.backoff());
  }

  private setUp(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    this.metrics.up(this.url, up);
    if (up) {
      this.failuresInARow = 0;
      this.probeFailures = 0;
      this.scheduleScrape(0);
    }
  }

  private backoff(): number {
    const base = this.settings.probeIntervalMs || 1000;
    return Math.min(this.settings.maxBackoffMs, base * 2 ** Math.min(this.probeFailures, 16));
  }

  private schedule(ms: number): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probe(), ms);
    this.probeTimer.unref();
  }

  /** One health check, then the next one scheduled: the interval when up, the backoff when down. */
  private async probe(): Promise<void> {
    if (this.stopped || this.refused || this.probing) return;
    this.probing = true;
    const asked = performance.now();
    // A busy server may answer its probe late while it streams to us; bytes from it prove it alive.
    let ok = (await this.healthy()) || (this.up && this.lastHeard >= asked);
    // Discovered again on every return: it may come back with other limits (a restart with new flags).
    if (ok && !this.up) ok = await this.discover();
    this.probing = false;
    if (this.stopped) return;
    if (ok) {
      this.setUp(true);
    } else {
      this.probeFailures += 1;
      if (this.up) this.markDown();
    }
    if (this.refused) return;
    if (ok && this.settings.probeIntervalMs === 0) return;
    this.schedule(ok ? this.settings.probeIntervalMs : this.backoff());
  }

  /** Without active probes, a down upstream is simply given another chance after its backoff. */
  private async healthy(): Promise<boolean> {
    if (this.settings.probeIntervalMs === 0) return true;
    try {
      const res = await this.request(this.probePath, { signal: AbortSignal.timeout(this.settings.probeIntervalMs) });
      await res.text();
      // A server without /health (Ollama): its model list says it answers.
      if (res.status === 404 && this.probePath === '/health') {
        this.probePath = '/v1/models';
        return this.healthy();
      }
      return res.ok;
    } catch {
      return false;
    }
  }

  private async discover(): Promise<boolean> {
    try {
      const found = await discover(this.dialect, (path) => this.getJson(path));
      this.refused = this.admit(found);
      if (this.refused) return false;
      this.discovery = found;
      return true;
    } catch {
      return false;
    }
  }

  private async getJson(path: string): Promise<unknown> {
    const res = await this.request(path, { signal: AbortSignal.timeout(this.settings.headersTimeoutMs) });
    if (!res.ok) {
      await res.text();
      throw new Error(`${this.url}${path}: HTTP ${res.status}`);
    }
    return res.json();
  }

  private scheduleScrape(ms: number): void {
    if (!this.scraping || this.stopped) return;
    if (this.loadTimer) clearTimeout(this.loadTimer);
    this.loadTimer = setTimeout(() => void this.scrape(), ms);
    this.loadTimer.unref();
  }

  private async scrape(): Promise<void> {
    if (!this.up || this.stopped) return;
    const interval = this.settings.loadIntervalMs;
    try {
      const res = await this.request('/metrics', { signal: AbortSignal.timeout(2 * interval) });
      const text = await res.text();
      if (res.status === 404 || res.status === 501) {
        // No metrics (llama.cpp without --metrics, Ollama): route on our own counts only.
        this.scraping = false;
        return;
      }
      if (res.ok) this.readLoad(text);
    } catch {
      // A missed scrape only lets the sample go stale; health is the probe's business.
    }
    this.scheduleScrape(interval);
  }

  private readLoad(text: string): void {
    const values = promValues(text, [...QUEUE_NAMES, ...RUNNING_NAMES]);
    const first = (names: string[]) => names.map((name) => values.get(name)).find((v) => v !== undefined);
    const queue = first(QUEUE_NAMES);
    if (queue === undefined) return;
    const running = first(RUNNING_NAMES) ?? 0;
    this.load = { queue, running, others: othersLoad({ queue, running, ours: this.inFlight }), at: performance.now() };
    this.metrics.queue(this.url, queue);
  }
}

/** The reason an attempt is aborted when its upstream is found down. */
export class UpstreamDownError extends Error {
  constructor(url: string) {
    super(`upstream ${url} is down`);
    this.name = 'UpstreamDownError';
  }
}
