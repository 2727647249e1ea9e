/**
 * An existing Express app — its own JSON route, a request logger, a JSON body parser, an auth check —
 * that mounts the LLM routes at /llm and serves the demo page at /.
 *
 * Run it: `npm run build && npx tsx examples/express-app.ts [MODEL_DIR]` (default: the tiny fixture
 * model), with `PORT` and `DEMO_API_KEY` from the environment.
 *
 * It imports the package by its name, as your app would; inside this repository that resolves to
 * `dist/` (Node's package self-reference), hence the build first.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { ensureFixtureModel } from 'streaming-inference/fixture';
import { streamingInference } from 'streaming-inference/express';

type LlmOptions = Parameters<typeof streamingInference>[0];

export interface ExpressAppOptions {
  /** A model directory in the Hugging Face ONNX layout, or a Hub id `org/name`. */
  model: string;
  /** Which ONNX file of the model (e.g. `q4`), and the download progress of a model given by Hub id. */
  dtype?: LlmOptions['dtype'];
  onProgress?: LlmOptions['onProgress'];
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

const DEMO_DIR = fileURLToPath(new URL('./demo/', import.meta.url));

/** One line per request once its response is over; a stream is logged when it ends. */
function requestLogger(quiet: boolean): RequestHandler {
  return (req, res, next) => {
    const started = performance.now();
    res.on('close', () => {
      if (quiet) return;
      const ms = (performance.now() - started).toFixed(0);
      console.log(`${req.method} ${req.originalUrl} ${res.statusCode} ${ms} ms${res.writableFinished ? '' : ' (client went away)'}`);
    });
    next();
  };
}

/**
 * Like TGI's `--api-key`: the routes that generate (all POSTs) need the key; `/info`, `/health`,
 * `/metrics` and `/v1/models` stay open, so the demo page can show the server state without it.
 */
function requireApiKey(apiKey: string | undefined): RequestHandler {
  const expected = Buffer.from(`Bearer ${apiKey}`);
  return (req, res, next) => {
    if (!apiKey || req.method !== 'POST') return next();
    const given = Buffer.from(req.get('authorization') ?? '');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return next();
    res.status(401).json({ error: 'Unauthorized', error_type: 'unauthorized' });
  };
}

/** The app's own error handler: JSON errors (e.g. a malformed body that express.json() refused). */
const jsonErrors: ErrorRequestHandler = (error, _req, res, next) => {
  if (res.headersSent) return next(error);
  const status = Number(error.status ?? error.statusCode) || 500;
  res.status(status).json({ error: status < 500 ? error.message : 'Internal server error', error_type: 'app' });
};

/**
 * Starts the app and resolves once the model is loaded.
 *
 * @example
 * const app = await startExpressApp({ model: '.fixtures/tiny', port: 0, quiet: true });
 * await fetch(`${app.url}/llm/generate`, { method: 'POST', headers: { 'content-type': 'application/json' },
 *   body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 5 } }) });
 * await app.close();
 */
export async function startExpressApp(options: ExpressAppOptions): Promise<RunningApp> {
  const { model, dtype, onProgress, port = 3000, host = '127.0.0.1', apiKey, quiet = false, maxConcurrentRequests = 8 } = options;
  const llm = streamingInference({ model, dtype, onProgress, maxConcurrentRequests });
  const started = Date.now();

  const app = express();
  app.use(requestLogger(quiet));
  // The handler uses req.body when a parser ran first; our bodyLimit (2 MB) only applies when it reads the body itself.
  app.use(express.json({ limit: '2mb' }));
  app.use(express.static(DEMO_DIR));
  app.get('/api/status', (_req, res) => {
    res.json({
      service: 'example-express-app',
      uptime_s: Math.round((Date.now() - started) / 1000),
      llm_in_flight: llm.handler.admission.inFlight,
    });
  });
  app.use('/llm', requireApiKey(apiKey), llm);
  app.use(jsonErrors);

  await llm.handler.ready();
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, (error?: Error) => (error ? reject(error) : resolve(s)));
  });
  const address = server.address();
  const url = `http://${host}:${typeof address === 'object' && address ? address.port : port}`;
  return {
    url,
    server,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      // Open streams end here; their generations are cancelled like any client that goes away.
      server.closeAllConnections();
      await closed;
      await llm.handler.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const model = process.argv[2] ?? (await ensureFixtureModel('tiny'));
  const app = await startExpressApp({ model, port: Number(process.env.PORT ?? 3000), apiKey: process.env.DEMO_API_KEY });
  console.log(`Express app on ${app.url} (demo page), LLM routes under ${app.url}/llm`);
  process.once('SIGINT', () => void app.close());
}
