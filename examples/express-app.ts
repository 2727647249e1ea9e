/**
 * An existing Express app with its own routes and middleware that mounts the LLM routes at /llm.
 */
import express from 'express';
import type { Server } from 'node:http';
import { streamingInference } from '../adapters/express.js';

export interface ExampleOptions {
  model: string;
  port?: number;
  host?: string;
  maxConcurrentRequests?: number;
}

export async function startExpressApp(options: ExampleOptions): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const app = express();
  app.get('/api/status', (_req, res) => res.json({ ok: true }));
  const llm = streamingInference({ model: options.model, maxConcurrentRequests: options.maxConcurrentRequests ?? 8 });
  app.use('/llm', llm);
  await llm.handler.ready();
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve(s));
  });
  const address = server.address();
  const url = `http://${options.host ?? '127.0.0.1'}:${typeof address === 'object' && address ? address.port : options.port}`;
  return {
    url,
    server,
    close: async () => {
      server.close();
      server.closeAllConnections();
      await llm.handler.close();
    },
  };
}
