/**
 * The Express example in Koa: an app with its own JSON route, a request logger and an auth check,
 * that mounts the LLM routes at /llm with the adapter's `prefix` option.
 *
 * Run it: `npm run build && npx tsx examples/koa-app.ts [MODEL_DIR]` (default: the tiny fixture
 * model), with `PORT` and `DEMO_API_KEY` from the environment.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import Koa, { type Middleware } from 'koa';
import { ensureFixtureModel } from 'streaming-inference/fixture';
import { streamingInference } from 'streaming-inference/koa';

export interface KoaAppOptions {
  /** A model directory in the Hugging Face ONNX layout. */
  model: string;
  /** Default 3000; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** When set, POST requests under /llm need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** No request log lines. */
  quiet?: boolean;
  /** Default 8. */
  maxConcurrentRequests?: number;
}

export interface RunningApp {
  /** e.g. `http://127.0.0.1:3000`; the LLM routes are under `${url}/llm`. */
  url: string;
  server: Server;
  close(): Promise<void>;
}

/**
 * One line per request. The LLM handler writes the Node response itself (`ctx.respond = false`),
 * so the status is read from `ctx.res`; `await next()` returns when a stream has ended.
 */
function requestLogger(quiet: boolean): Middleware {
  return async (ctx, next) => {
    const started = performance.now();
    await next();
    if (quiet) return;
    const ms = (performance.now() - started).toFixed(0);
    console.log(`${ctx.method} ${ctx.originalUrl} ${ctx.res.statusCode} ${ms} ms`);
  };
}

/** As TGI's `--api-key`: POSTs under /llm (the generation routes) need the key; GET routes stay open. */
function requireApiKey(apiKey: string | undefined): Middleware {
  const expected = Buffer.from(`Bearer ${apiKey}`);
  return async (ctx, next) => {
    if (!apiKey || ctx.method !== 'POST' || !ctx.path.startsWith('/llm/')) return next();
    const given = Buffer.from(ctx.get('authorization'));
    if (given.length === expected.length && timingSafeEqual(given, expected)) return next();
    ctx.status = 401;
    ctx.body = { error: 'Unauthorized', error_type: 'unauthorized' };
  };
}

/**
 * Starts the app and resolves once the model is loaded.
 *
 * @example
 * const app = await startKoaApp({ model: '.fixtures/tiny', port: 0, quiet: true });
 * const info = await (await fetch(`${app.url}/llm/info`)).json();
 * await app.close();
 */
export async function startKoaApp(options: KoaAppOptions): Promise<RunningApp> {
  const { model, port = 3000, host = '127.0.0.1', apiKey, quiet = false, maxConcurrentRequests = 8 } = options;
  const llm = streamingInference({ model, maxConcurrentRequests, prefix: '/llm' });
  const started = Date.now();

  const app = new Koa();
  app.use(requestLogger(quiet));
  app.use(requireApiKey(apiKey));
  app.use(llm);
  app.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || ctx.path !== '/api/status') return next();
    ctx.body = {
      service: 'example-koa-app',
      uptime_s: Math.round((Date.now() - started) / 1000),
      llm_in_flight: llm.handler.admission.inFlight,
    };
  });

  await llm.handler.ready();
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, () => resolve(s)).once('error', reject);
  });
  const address = server.address();
  const url = `http://${host}:${typeof address === 'object' && address ? address.port : port}`;
  return {
    url,
    server,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
      await llm.handler.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const model = process.argv[2] ?? (await ensureFixtureModel('tiny'));
  const app = await startKoaApp({ model, port: Number(process.env.PORT ?? 3000), apiKey: process.env.DEMO_API_KEY });
  console.log(`Koa app on ${app.url}, LLM routes under ${app.url}/llm`);
  process.once('SIGINT', () => void app.close());
}
