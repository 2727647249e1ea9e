/**
 * Koa adapter (Koa 2 and 3), also under koa-mount.
 *
 * @example
 * import Koa from 'koa';
 * import { streamingInference } from 'streaming-inference/koa';
 *
 * const app = new Koa();
 * app.use(streamingInference({ model: './models/smollm2', maxConcurrentRequests: 8, prefix: '/llm' }));
 * app.listen(3000);
 */
import type { Context, Middleware, Next } from 'koa';
import { createInferenceHandler, type InferenceHandler, type StreamingInferenceOptions } from '../src/http/index.js';

export type KoaStreamingInferenceOptions = StreamingInferenceOptions & {
  /** Mount path, e.g. '/llm'. Default: the root. */
  prefix?: string;
};

export type StreamingInferenceMiddleware = Middleware & { handler: InferenceHandler };

/** The path below `prefix`, or null when the request is outside it. */
function below(prefix: string, path: string): string | null {
  if (!prefix) return path;
  if (path === prefix) return '/';
  return path.startsWith(`${prefix}/`) ? path.slice(prefix.length) : null;
}

export function streamingInference(options: KoaStreamingInferenceOptions): StreamingInferenceMiddleware {
  const { prefix = '', ...rest } = options;
  const mount = prefix.replace(/\/+$/, '');
  const handler = createInferenceHandler(rest);
  const middleware = async (ctx: Context, next: Next) => {
    const path = below(mount, ctx.path);
    if (path === null || !handler.matches(path)) return next();
    // We write the Node response ourselves (SSE), so Koa must not respond after us.
    ctx.respond = false;
    // A client leaving mid-stream is routine (its generation is cancelled); Koa would log it as an error.
    const onerror = ctx.onerror.bind(ctx);
    ctx.onerror = (error) => {
      const code = (error as NodeJS.ErrnoException | null)?.code;
      if (ctx.res.headersSent && (code === 'EPIPE' || code === 'ECONNRESET')) return;
      onerror(error);
    };
    const body = (ctx.request as { body?: unknown }).body;
    if (body !== undefined) (ctx.req as { body?: unknown }).body = body;
    await handler.handle(ctx.req, ctx.res, path);
  };
  return Object.assign(middleware, { handler });
}
