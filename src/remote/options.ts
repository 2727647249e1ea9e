/**
 * Options of the remote engine, checked once where they are given: a bad URL or a negative interval
 * is a TypeError at startup, never a failure per request.
 */
import type { Registry } from 'prom-client';
import type { ValidationLimits } from '../types.js';

/**
 * The wire an upstream speaks. `tgi`: TGI's `/generate_stream` and `/info` (TGI itself and our own
 * `serve`), lossless for every route. `openai`: `/v1/completions` and `/v1/chat/completions` (vLLM,
 * SGLang, llama.cpp's llama-server, Ollama's `/v1`, any OpenAI-compatible server).
 */
export type Dialect = 'tgi' | 'openai';

export interface UpstreamOptions {
  /** Base URL, e.g. `http://10.0.0.5:8080`; the routes are appended to it. */
  url: string;
  /** Default `tgi`. */
  dialect?: Dialect;
  /** Sent with every request, e.g. `{ authorization: 'Bearer …' }`. */
  headers?: Record<string, string>;
  /** Requests we send it at once, at most. Default: what it reports (`/info`, llama.cpp `/props`), else 64. */
  capacity?: number;
  /** The model name sent to an OpenAI upstream; default the first of its `/v1/models`. */
  model?: string;
}

export interface RemoteMetricsOptions {
  /** Where the per-upstream metrics go: pass the registry of the mount's metrics so one `/metrics` shows both. */
  registry?: Registry;
}

export interface RemoteEngineOptions {
  /** URLs (dialect `tgi`) or upstream options; at least one. */
  upstreams: ReadonlyArray<string | UpstreamOptions>;
  /**
   * The `model_id` we report. Default the upstreams' own, which must then agree: different models
   * behind one name would answer the same request differently.
   */
  modelId?: string;
  /** Validation limits that override the discovered ones (the smallest over the upstreams). */
  limits?: Partial<ValidationLimits>;
  /** Health probe (`GET /health`) interval per upstream; a down upstream is probed with backoff. `0`: no probes, a down upstream gets a trial request after its backoff. Default 2,000 ms. */
  probeIntervalMs?: number;
  /** Queue-depth scrape (`GET /metrics`) interval per upstream; `0` turns scraping off. Default 500 ms. */
  loadIntervalMs?: number;
  /** An upstream that has not answered with headers this long after a request is treated as unreachable. Default 10,000 ms. */
  headersTimeoutMs?: number;
  /** Upstreams tried for one request before it fails. Default min(3, upstreams). */
  maxAttempts?: number;
  /** Longest wait between probes of a down upstream. Default 8 × `probeIntervalMs` (or 16 s without probes). */
  maxBackoffMs?: number;
  /** How long `createRemoteEngine` waits for the first upstream to answer its discovery. Default 60,000 ms. */
  startTimeoutMs?: number;
  /** Per-upstream Prometheus metrics; `false` for none. */
  metrics?: RemoteMetricsOptions | false;
  /** Randomness of the picker, for tests. */
  random?: () => number;
}

export interface ResolvedUpstream {
  url: string;
  dialect: Dialect;
  headers: Record<string, string>;
  capacity: number | null;
  model: string | null;
}

export interface ResolvedRemoteOptions {
  upstreams: ResolvedUpstream[];
  modelId: string | null;
  limits: Partial<ValidationLimits>;
  probeIntervalMs: number;
  loadIntervalMs: number;
  headersTimeoutMs: number;
  maxAttempts: number;
  maxBackoffMs: number;
  startTimeoutMs: number;
  metrics: RemoteMetricsOptions | false;
  random: () => number;
}

const DIALECTS: readonly Dialect[] = ['tgi', 'openai'];

/**
 * Checks and completes the options. An upstream given as a string may carry its options in the URL
 * fragment, which is never sent: `http://10.0.0.6:8000#dialect=openai&capacity=32` (the CLI's form).
 *
 * @example
 * resolveRemoteOptions({ upstreams: ['http://127.0.0.1:8080', { url: 'http://127.0.0.1:8000', dialect: 'openai' }] });
 */
export function resolveRemoteOptions(options: RemoteEngineOptions): ResolvedRemoteOptions {
  if (!options || !Array.isArray(options.upstreams) || options.upstreams.length === 0) {
    throw new TypeError('createRemoteEngine: `upstreams` must be a non-empty array of URLs or { url, dialect } objects');
  }
  const upstreams = options.upstreams.map((spec, i) => resolveUpstream(spec, i));
  const seen = new Set<string>();
  for (const { url } of upstreams) {
    if (seen.has(url)) throw new TypeError(`createRemoteEngine: upstream ${url} is listed twice`);
    seen.add(url);
  }
  const probeIntervalMs = duration(options.probeIntervalMs, 'probeIntervalMs', 2000, true);
  return {
    upstreams,
    modelId: options.modelId ?? null,
    limits: { ...options.limits },
    probeIntervalMs,
    loadIntervalMs: duration(options.loadIntervalMs, 'loadIntervalMs', 500, true),
    headersTimeoutMs: duration(options.headersTimeoutMs, 'headersTimeoutMs', 10_000, false),
    maxAttempts: positiveInteger(options.maxAttempts, 'maxAttempts') ?? Math.min(3, upstreams.length),
    maxBackoffMs: duration(options.maxBackoffMs, 'maxBackoffMs', probeIntervalMs > 0 ? 8 * probeIntervalMs : 16_000, false),
    startTimeoutMs: duration(options.startTimeoutMs, 'startTimeoutMs', 60_000, false),
    metrics: options.metrics ?? {},
    random: options.random ?? Math.random,
  };
}

function resolveUpstream(spec: string | UpstreamOptions, i: number): ResolvedUpstream {
  const where = `createRemoteEngine: upstreams[${i}]`;
  const given: UpstreamOptions = typeof spec === 'string' ? fromFragment(spec, where) : spec;
  if (!given || typeof given.url !== 'string') throw new TypeError(`${where} must be a URL or an object with \`url\``);
  let parsed: URL;
  try {
    parsed = new URL(given.url);
  } catch {
    throw new TypeError(`${where}: ${JSON.stringify(given.url)} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError(`${where}: ${given.url} is not http(s)`);
  const dialect = given.dialect ?? 'tgi';
  if (!DIALECTS.includes(dialect)) throw new TypeError(`${where}: dialect must be "tgi" or "openai", got ${JSON.stringify(dialect)}`);
  if (given.headers !== undefined && (typeof given.headers !== 'object' || given.headers === null)) {
    throw new TypeError(`${where}: headers must be an object`);
  }
  return {
    url: (parsed.origin + parsed.pathname).replace(/\/+$/, ''),
    dialect,
    headers: { ...given.headers },
    capacity: positiveInteger(given.capacity, `upstreams[${i}].capacity`),
    model: given.model ?? null,
  };
}

/** `http://host:8000#dialect=openai&capacity=32&model=name`. */
function fromFragment(spec: string, where: string): UpstreamOptions {
  const hash = spec.indexOf('#');
  if (hash === -1) return { url: spec };
  const params = new URLSearchParams(spec.slice(hash + 1));
  const options: UpstreamOptions = { url: spec.slice(0, hash) };
  for (const [key, value] of params) {
    if (key === 'dialect') options.dialect = value as Dialect;
    else if (key === 'capacity') options.capacity = Number(value);
    else if (key === 'model') options.model = value;
    else throw new TypeError(`${where}: unknown option "${key}" in ${spec} (dialect, capacity, model)`);
  }
  return options;
}

function duration(value: number | undefined, name: string, fallback: number, zeroAllowed: boolean): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0 || (!zeroAllowed && value === 0)) {
    throw new TypeError(`createRemoteEngine: \`${name}\` must be a ${zeroAllowed ? 'non-negative' : 'positive'} number of milliseconds`);
  }
  return value;
}

function positiveInteger(value: number | undefined, name: string): number | null {
  if (value === undefined) return null;
  if (!Number.isSafeInteger(value) || value < 1)
    throw new TypeError(`createRemoteEngine: \`${name}\` must be a positive integer, got ${value}`);
  return value;
}
