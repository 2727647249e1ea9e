import type { ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { AdmissionController, engineAdmission } from '../admission.js';
import { ENGINE_OPTION_NAMES, checkEngineOptions, checkIntegerOption } from '../engine/config.js';
import { createEngine } from '../engine/engine.js';
import { InferenceError, ModelLoadError, UnavailableError, logError, type ErrorListener } from '../errors.js';
import { errorResponse, type RouteFamily } from '../protocol/error-body.js';
import { describeProgress } from '../hub/progress.js';
import { createRemoteEngine, type RemoteEngineOptions } from '../remote/index.js';
import type { CloseOptions, DownloadProgress, Engine, EngineOptions } from '../types.js';
import { readJsonBody, type BodyCarrier } from './body.js';
import type { HandlerContext } from './context.js';
import { createMetrics, type MetricsOptions } from './metrics.js';
import { serveHealth, serveInfo, serveModels, serveTokenize } from './info-routes.js';
import { serveChat, serveCompletion } from './openai-routes.js';
import { sendError } from './respond.js';
import { serveTgi } from './tgi-routes.js';

/** The options of `streamingInference()` that are the handler's own, with or without a shared engine. */
export interface HandlerOptions {
  /** Requests in flight (queued or generating) before new ones get 429. Default 128, as TGI. */
  maxConcurrentRequests?: number;
  /** Largest request body read, in bytes. Default 2,000,000, as TGI. */
  bodyLimit?: number;
  /** A streaming client that reads nothing for this long is disconnected and its generation cancelled. Default 30,000 ms. */
  stallTimeoutMs?: number;
  /** An idle stream (e.g. queued behind a full batch) gets a `: keep-alive` comment this often. Default 15,000 ms. */
  keepAliveMs?: number;
  /** Prometheus metrics at `/metrics`: on by default in a registry of our own; pass the host's registry to join it, or `false`. */
  metrics?: MetricsOptions | false;
  /**
   * Sees each unexpected error once, with `{ route, phase }`: a route failing with an error that is not
   * one of ours (`'request'`: the client got a generic 500), the model failing to load (`'load'`), and
   * the errors of the engine this handler loads (`'worker'`, `'restart'`, `'generation'`; a shared
   * engine reports those to its own `onError`). Clients never see the details. Default: one line on stderr.
   */
  onError?: ErrorListener;
  /**
   * `auto` (default): the OpenAI routes take the sampling fields a request leaves unset (temperature,
   * top_p, top_k, repetition_penalty) from the model's generation_config.json, as vLLM's
   * `--generation-config auto`; `none`: OpenAI's defaults. TGI routes never do.
   */
  generationConfig?: 'auto' | 'none';
}

/**
 * Options of `streamingInference()` in every adapter: a shared, already created `engine`, or a `model`
 * loaded in the background with the engine's options; never both, since an engine created elsewhere
 * keeps the options it was created with. Or `upstreams`: other inference servers behind our routes
 * (`createRemoteEngine` with its defaults; README "Scaling out").
 */
export type StreamingInferenceOptions = HandlerOptions &
  (
    | ({ engine: Engine } & { [K in Exclude<keyof EngineOptions, keyof HandlerOptions>]?: never })
    | (EngineOptions & { engine?: undefined })
    | ({ upstreams: RemoteEngineOptions['upstreams']; engine?: undefined } & {
        [K in Exclude<keyof EngineOptions, keyof HandlerOptions>]?: never;
      })
  );

type Serve = (ctx: HandlerContext, res: ServerResponse, body: unknown) => void | Promise<void>;

interface Route {
  method: 'GET' | 'POST';
  family: RouteFamily;
  serve: Serve;
}

const ROUTES: Record<string, Route> = {
  '/': { method: 'POST', family: 'tgi', serve: (ctx, res, body) => serveTgi(ctx, res, body, 'compat') },
  '/generate': { method: 'POST', family: 'tgi', serve: (ctx, res, body) => serveTgi(ctx, res, body, 'generate') },
  '/generate_stream': { method: 'POST', family: 'tgi', serve: (ctx, res, body) => serveTgi(ctx, res, body, 'stream') },
  '/tokenize': { method: 'POST', family: 'tgi', serve: serveTokenize },
  '/v1/chat/completions': { method: 'POST', family: 'openai', serve: serveChat },
  '/v1/completions': { method: 'POST', family: 'openai', serve: serveCompletion },
  '/v1/models': { method: 'GET', family: 'openai', serve: (ctx, res) => serveModels(ctx, res) },
  '/info': { method: 'GET', family: 'tgi', serve: (ctx, res) => serveInfo(ctx, res) },
  '/health': { method: 'GET', family: 'tgi', serve: (ctx, res) => serveHealth(ctx, res) },
  '/metrics': { method: 'GET', family: 'tgi', serve: serveMetrics },
};

/** The core request handler every adapter wraps. */
export interface InferenceHandler {
  /** Whether `path` (relative to the mount point) is one of ours; other paths go to the host's `next()`. */
  matches(path: string): boolean;
  /** Serves a request for one of our paths. Never rejects: failures become error responses. */
  handle(req: BodyCarrier, res: ServerResponse, path: string): Promise<void>;
  readonly admission: AdmissionController;
  /** Resolves with the engine once loaded. */
  ready(): Promise<Engine>;
  /** Closes the engine if this handler created it. */
  close(options?: CloseOptions): Promise<void>;
}

function routePath(path: string): string {
  const bare = path.split('?')[0];
  return bare.length > 1 && bare.endsWith('/') ? bare.slice(0, -1) : bare || '/';
}

/**
 * Builds the handler: resolves options once (bad options throw here, at startup), starts loading the
 * model unless an engine was given, and answers the routes of protocol.md.
 *
 * @example
 * const handler = createInferenceHandler({ model: './models/smollm2', maxConcurrentRequests: 8 });
 * http.createServer((req, res) => handler.matches(req.url!) ? handler.handle(req, res, req.url!) : res.end());
 */
export function createInferenceHandler(options: StreamingInferenceOptions): InferenceHandler {
  const {
    engine: shared,
    maxConcurrentRequests = 128,
    bodyLimit = 2_000_000,
    stallTimeoutMs = 30_000,
    keepAliveMs = 15_000,
    metrics: metricsOptions,
    generationConfig = 'auto',
    upstreams,
    ...engineOptions
  } = options as StreamingInferenceOptions & { upstreams?: RemoteEngineOptions['upstreams'] };
  // Every option is checked here, at startup, before a model loads.
  if (shared || upstreams) {
    const misplaced = Object.entries(options)
      .filter(([name, value]) => value !== undefined && name !== 'onError' && ENGINE_OPTION_NAMES.has(name))
      .map(([name]) => name);
    if (misplaced.length > 0) {
      throw new TypeError(`streamingInference: ${misplaced.join(', ')} cannot apply to a shared \`engine\`: pass them to its createEngine`);
    }
  } else {
    checkEngineOptions(engineOptions as EngineOptions, 'streamingInference');
  }
  for (const [name, value] of Object.entries({ maxConcurrentRequests, bodyLimit, stallTimeoutMs, keepAliveMs })) {
    checkIntegerOption('streamingInference', name, value, 1);
  }
  if (generationConfig !== 'auto' && generationConfig !== 'none') {
    throw new TypeError(`streamingInference: \`generationConfig\` must be 'auto' or 'none', got ${JSON.stringify(generationConfig)}`);
  }
  const admission = new AdmissionController({ maxConcurrentRequests });
  const metrics = metricsOptions === false ? null : createMetrics(metricsOptions);
  const onError: ErrorListener = options.onError ?? logError;
  let engine: Engine | null = shared ?? null;
  // A failed load, or an own engine whose worker could not be restarted: every route answers 500 with
  // it. Not 503: the failure is permanent, and @huggingface/inference retries a 503 at once, forever.
  let failure: InferenceError | null = null;
  let download: DownloadProgress | null = null;
  const fail = (error: unknown) => {
    failure = ModelLoadError.isInstance(error) ? error : new ModelLoadError(`Model failed to load: ${messageOf(error)}`, error);
  };
  const loading: Promise<Engine> = shared
    ? Promise.resolve(shared)
    : (upstreams
        ? createRemoteEngine({ upstreams, metrics: metrics ? { registry: metrics.registry } : false })
        : createEngine({
            ...(engineOptions as EngineOptions),
            onProgress: (progress) => {
              download = progress;
              engineOptions.onProgress?.(progress);
            },
            onError: (error, context) => {
              if (context.phase === 'restart') fail(error);
              onError(error, context);
            },
          })
      ).then(
        (e) => (engine = e),
        (error: unknown) => {
          fail(error);
          onError(error, { route: null, phase: 'load' });
          throw error;
        },
      );
  loading.catch(() => {});

  const ctx: HandlerContext = {
    engine: () => {
      if (failure) throw failure;
      if (engine) return engine;
      throw new UnavailableError(download && !download.done ? `Model is loading: ${describeProgress(download)}` : 'Model is loading');
    },
    healthy: async () => {
      if (failure) throw failure;
      return engine !== null && (await engine.health());
    },
    admission,
    bodyLimit,
    stallTimeoutMs,
    keepAliveMs,
    // One count per engine, whichever mounts serve it (the limit is the highest they declare).
    engineAdmission: (loaded) => engineAdmission(loaded, maxConcurrentRequests),
    generationConfig,
    metrics,
    newId: (prefix) => prefix + randomUUID().replaceAll('-', ''),
    nowSeconds: () => Math.floor(Date.now() / 1000),
  };

  // Join the engine's admission as soon as there is an engine, so /info shows its limit at once.
  void loading.then(
    (loaded) => ctx.engineAdmission(loaded),
    () => {},
  );
  const unobserve = metrics?.observe({ engine: () => engine, admission: () => (engine ? ctx.engineAdmission(engine) : null) });
  // A shared engine outlives this handler: its pass listener goes when the handler closes.
  const unwatch = metrics
    ? loading.then(
        (loaded) => metrics.watch(loaded),
        () => () => {},
      )
    : null;

  return {
    // With metrics off, /metrics is the host's: Express and Koa call next(), node:http servers see no match.
    matches: (path) => Object.hasOwn(ROUTES, routePath(path)) && (routePath(path) !== '/metrics' || metrics !== null),
    async handle(req, res, path) {
      const route = ROUTES[routePath(path)];
      try {
        if (req.method !== route.method && !(req.method === 'HEAD' && route.method === 'GET')) {
          res.setHeader('Allow', route.method);
          const error = new InferenceError('validation', `Method ${req.method} is not allowed; use ${route.method}`, { status: 405 });
          return sendError(res, errorResponse(error, route.family));
        }
        let body: unknown;
        if (route.method === 'POST') body = await readJsonBody(req, bodyLimit);
        await route.serve(ctx, res, body);
      } catch (error) {
        // Ours are answers (a 4xx, a 503 while loading); anything else is a bug, for the host's log.
        if (!InferenceError.isInstance(error)) onError(error, { route: routePath(path), phase: 'request' });
        sendError(res, errorResponse(error, route.family));
      }
    },
    admission,
    ready: () => loading,
    close: async (closeOptions) => {
      unobserve?.();
      (await unwatch)?.();
      if (shared) return;
      const loaded = await loading.catch(() => null);
      await loaded?.close(closeOptions);
    },
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function serveMetrics(ctx: HandlerContext, res: ServerResponse): Promise<void> {
  const { metrics } = ctx;
  if (!metrics) {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('metrics are off\n');
    return;
  }
  const text = await metrics.render();
  res.writeHead(200, { 'Content-Type': metrics.contentType }).end(text);
}
