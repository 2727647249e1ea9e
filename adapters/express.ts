/**
 * Express adapter (Express 4 and 5).
 *
 * @example
 * import express from 'express';
 * import { streamingInference } from 'streaming-inference/express';
 *
 * const app = express();
 * app.use('/llm', streamingInference({ model: './models/smollm2', maxConcurrentRequests: 8 }));
 * app.listen(3000);
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { createInferenceHandler, type InferenceHandler, type StreamingInferenceOptions } from '../src/http/index.js';

export type { StreamingInferenceOptions } from '../src/http/index.js';

/** The middleware, with the core handler attached for `ready()` and `close()`. */
export type StreamingInferenceMiddleware = RequestHandler & { handler: InferenceHandler };

export function streamingInference(options: StreamingInferenceOptions): StreamingInferenceMiddleware {
  const handler = createInferenceHandler(options);
  const middleware = (req: Request, res: Response, next: NextFunction) => {
    // Inside app.use('/llm', ...) or a Router, Express has already stripped the mount path from req.url.
    if (!handler.matches(req.url)) return next();
    handler.handle(req, res, req.url).catch(next);
  };
  return Object.assign(middleware, { handler });
}
