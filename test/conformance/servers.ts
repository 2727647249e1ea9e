/**
 * Real servers for the integration tests: each framework variant (Express 4 and 5, Koa 2 and 3, and
 * bare node:http with `createInferenceHandler`, as the CLI serves) with our middleware mounted at
 * the root, under a prefix, or (Koa) under koa-mount, on
 * 127.0.0.1 port 0. Every host app also has routes and middleware of its own, so a test can check
 * that mounting us leaves them working and that paths we do not own fall through to the host.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express5, { type RequestHandler } from 'express';
import express4 from 'express4';
import Koa3 from 'koa';
import Koa2 from 'koa2';
import mount from 'koa-mount';
import { streamingInference as expressInference } from '../../adapters/express.js';
import { streamingInference as koaInference } from '../../adapters/koa.js';
import { createInferenceHandler, type InferenceHandler, type StreamingInferenceOptions } from '../../src/http/index.js';

/** `node`: a node:http server that asks `handler.matches()` and answers the rest itself. */
export type Framework = 'express4' | 'express5' | 'koa2' | 'koa3' | 'node';
/** `prefix`: Express `app.use('/llm', mw)` or the Koa adapter's `prefix`; `koa-mount`: `mount('/llm', mw)`. */
export type MountStyle = 'root' | 'prefix' | 'koa-mount';

export interface ServerVariant {
  framework: Framework;
  mount: MountStyle;
}

/** Every combination the adapters support. */
export const SERVER_VARIANTS: readonly ServerVariant[] = [
  { framework: 'express4', mount: 'root' },
  { framework: 'express4', mount: 'prefix' },
  { framework: 'express5', mount: 'root' },
  { framework: 'express5', mount: 'prefix' },
  { framework: 'koa2', mount: 'root' },
  { framework: 'koa2', mount: 'prefix' },
  { framework: 'koa2', mount: 'koa-mount' },
  { framework: 'koa3', mount: 'root' },
  { framework: 'koa3', mount: 'prefix' },
  { framework: 'koa3', mount: 'koa-mount' },
  { framework: 'node', mount: 'root' },
  { framework: 'node', mount: 'prefix' },
];

export const MOUNT_PATH = '/llm';

/** What the host apps answer, so a test can tell the host's responses from ours. */
export const HOST = {
  /** Set by a host middleware that runs before ours, on every response. */
  header: 'x-host-middleware',
  /** A host route registered after our middleware: reaching it proves we called `next()`. */
  routePath: '/host/hello',
  /** The host's catch-all answer: status 404, text/plain. */
  notFoundBody: 'host 404',
} as const;

export interface RunningServer {
  /** Where our routes live, without a trailing slash: the origin, or the origin plus `/llm`. */
  url: string;
  /** `http://127.0.0.1:PORT`, for the host's own routes. */
  origin: string;
  handler: InferenceHandler;
  close(): Promise<void>;
}

export function variantName(v: ServerVariant): string {
  return `${v.framework} ${v.mount === 'root' ? 'at the root' : v.mount === 'prefix' ? `under ${MOUNT_PATH}` : `under koa-mount ${MOUNT_PATH}`}`;
}

export interface StartOptions {
  /** Host middleware installed ahead of ours (Express or Koa middleware to match the variant), e.g. `compression()`. */
  before?: unknown[];
}

/**
 * Starts one variant with our middleware built from `options` (pass `engine` to share one).
 *
 * @example
 * const server = await startServer({ framework: 'koa3', mount: 'prefix' }, { engine });
 * await fetch(`${server.url}/health`);
 * await server.close();
 */
export async function startServer(
  variant: ServerVariant,
  options: StreamingInferenceOptions,
  start: StartOptions = {},
): Promise<RunningServer> {
  const { listener, handler } =
    variant.framework === 'node'
      ? nodeApp(variant, options)
      : variant.framework.startsWith('express')
        ? expressApp(variant, options, start.before ?? [])
        : koaApp(variant, options, start.before ?? []);
  const server = createServer(listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: variant.mount === 'root' ? origin : origin + MOUNT_PATH,
    origin,
    handler,
    close: () => closeServer(server, handler),
  };
}

function expressApp(variant: ServerVariant, options: StreamingInferenceOptions, before: unknown[]) {
  const express = variant.framework === 'express4' ? express4 : express5;
  const app = express();
  app.use((_req, res, next) => {
    res.setHeader(HOST.header, variant.framework);
    next();
  });
  for (const middleware of before) app.use(middleware as RequestHandler);
  const middleware = expressInference(options);
  if (variant.mount === 'root') app.use(middleware);
  else app.use(MOUNT_PATH, middleware);
  app.get(HOST.routePath, (_req, res) => {
    res.json({ host: variant.framework });
  });
  app.use((_req, res) => {
    res.status(404).type('text/plain').send(HOST.notFoundBody);
  });
  return { listener: app as RequestListener, handler: middleware.handler };
}

function koaApp(variant: ServerVariant, options: StreamingInferenceOptions, before: unknown[]) {
  const Koa = variant.framework === 'koa2' ? Koa2 : Koa3;
  const app = new Koa();
  app.use(async (ctx, next) => {
    ctx.set(HOST.header, variant.framework);
    await next();
  });
  for (const middleware of before) app.use(middleware as Koa3.Middleware);
  const middleware = variant.mount === 'prefix' ? koaInference({ ...options, prefix: MOUNT_PATH }) : koaInference(options);
  app.use(variant.mount === 'koa-mount' ? mount(MOUNT_PATH, middleware) : middleware);
  app.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === HOST.routePath) ctx.body = { host: variant.framework };
    else await next();
  });
  app.use((ctx) => {
    ctx.status = 404;
    ctx.type = 'text/plain';
    ctx.body = HOST.notFoundBody;
  });
  return { listener: app.callback() as RequestListener, handler: middleware.handler };
}

/** The core handler on node:http, with the same host header, host route and host 404 as the framework apps. */
function nodeApp(variant: ServerVariant, options: StreamingInferenceOptions) {
  const handler = createInferenceHandler(options);
  const listener: RequestListener = (req, res) => {
    res.setHeader(HOST.header, variant.framework);
    const url = req.url ?? '/';
    const under = url === MOUNT_PATH || url.startsWith(`${MOUNT_PATH}/`) || url.startsWith(`${MOUNT_PATH}?`);
    const ours = variant.mount === 'root' ? url : under ? url.slice(MOUNT_PATH.length) || '/' : null;
    if (ours !== null && handler.matches(ours)) return void handler.handle(req, res, ours);
    if (req.method === 'GET' && url === HOST.routePath) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ host: variant.framework }));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end(HOST.notFoundBody);
  };
  return { listener, handler };
}

/** Stops accepting, drops idle keep-alive sockets, and closes the engine if the handler owns it. */
async function closeServer(server: Server, handler: InferenceHandler): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await handler.close();
}
