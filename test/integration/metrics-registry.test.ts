import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Counter, Registry } from 'prom-client';
import { streamingInference } from '../../adapters/express.js';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { post } from '../conformance/http-client.js';

let engine: Engine;
let server: Server;
let base: string;

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
  // A host app with its own registry, its own counter and its own /metrics endpoint.
  const registry = new Registry();
  const hits = new Counter({ name: 'host_requests_total', help: 'Requests the host served', registers: [registry] });
  const app = express();
  app.use((_req, _res, next) => (hits.inc(), next()));
  app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()));
  app.use('/llm', streamingInference({ engine, metrics: { registry } }));
  app.use('/plain', streamingInference({ engine, metrics: false }));
  server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await engine?.close();
});

describe('metrics in the host registry', () => {
  it("puts TGI's metrics into the host's own registry and endpoint", async () => {
    const res = await post(`${base}/llm/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } });
    expect(res.status).toBe(200);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/^host_requests_total [1-9]\d*$/m);
    expect(text).toMatch(/^tgi_request_count 1$/m);
    expect(text).toMatch(/^tgi_request_success 1$/m);
    expect(text).toMatch(/^tgi_batch_inference_count\{method="decode"\} 1$/m);
    // The mount's own /metrics serves the same registry.
    expect(await (await fetch(`${base}/llm/metrics`)).text()).toMatch(/^host_requests_total [1-9]\d*$/m);
  });

  it('turns the route off with metrics: false', async () => {
    expect((await fetch(`${base}/plain/metrics`)).status).toBe(404);
  });
});
