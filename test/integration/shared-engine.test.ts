/**
 * One engine behind several mounts: admission counts per engine (each mount may keep a lower limit
 * of its own), /info reports engine-wide figures, several mounts join one host registry with a
 * `mount` label on request metrics and forward passes counted once, and `metrics: false` leaves
 * /metrics to the host (Express next(), Koa next, a node:http server's own code).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Koa from 'koa';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamingInference as expressInference } from '../../adapters/express.js';
import { streamingInference as koaInference } from '../../adapters/koa.js';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createInferenceHandler } from '../../src/http/handler.js';
import type { Engine } from '../../src/types.js';
import { eventually, getJson, post, sseFrames } from '../conformance/http-client.js';

const LONG = { inputs: 'Hi', parameters: { max_new_tokens: 1500 } };

let engine: Engine;
let server: Server;
let base: string;
const registry = new Registry();
const passes = { count: 0 };

async function listen(listener: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const s = createServer(listener);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return { server: s, base: `http://127.0.0.1:${(s.address() as AddressInfo).port}` };
}

/** A stream that holds its permit until `stop()`: three frames read, the rest left unread. */
async function holdStream(url: string): Promise<{ stop(): void }> {
  const controller = new AbortController();
  const res = await post(url, LONG, { signal: controller.signal });
  expect(res.status).toBe(200);
  const frames = sseFrames(res.body!);
  for (let i = 0; i < 3; i++) expect((await frames.next()).done).toBe(false);
  return { stop: () => controller.abort() };
}

const idle = () =>
  eventually(async () => (await getJson(`${base}/a/info`)).in_flight_requests === 0 && engine.stats().batchSize === 0, 5000);

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
  engine.onForwardPass(() => (passes.count += 1));
  const app = express();
  // Two mounts of one engine at 3 and 2 requests, both in the host's registry; a third with metrics off.
  app.use('/a', expressInference({ engine, maxConcurrentRequests: 3, metrics: { registry, mount: 'a' } }));
  app.use('/b', expressInference({ engine, maxConcurrentRequests: 2, metrics: { registry, mount: 'b' } }));
  app.use('/plain', expressInference({ engine, maxConcurrentRequests: 1, metrics: false }));
  app.get('/plain/metrics', (_req, res) => void res.type('text/plain').send('host metrics'));
  app.get('/metrics', async (_req, res) => void res.type(registry.contentType).send(await registry.metrics()));
  ({ server, base } = await listen(app));
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await engine?.close();
});

describe('admission shared by the mounts of one engine', () => {
  it('counts requests on every mount against one engine-wide limit, the highest a mount declared', async () => {
    const held = [await holdStream(`${base}/a/generate_stream`), await holdStream(`${base}/a/generate_stream`)];
    // /b allows 2 and has none of its own, but the engine has 2 of its 3 in flight.
    held.push(await holdStream(`${base}/b/generate_stream`));
    const refused = await post(`${base}/b/generate`, { inputs: 'Hi', parameters: { max_new_tokens: 1 } });
    expect(refused.status).toBe(429);
    const info = await getJson(`${base}/b/info`);
    expect(info).toMatchObject({ max_concurrent_requests: 3, in_flight_requests: 3 });
    expect(await getJson(`${base}/a/info`)).toMatchObject({ max_concurrent_requests: 3, in_flight_requests: 3 });
    held.forEach((h) => h.stop());
    expect(await idle()).toBe(true);
  });

  it("keeps a mount's own lower limit", async () => {
    const held = [await holdStream(`${base}/b/generate_stream`), await holdStream(`${base}/b/generate_stream`)];
    expect((await post(`${base}/b/generate`, { inputs: 'Hi', parameters: { max_new_tokens: 1 } })).status).toBe(429);
    const admitted = await post(`${base}/a/generate`, { inputs: 'Hi', parameters: { max_new_tokens: 1 } });
    expect(admitted.status).toBe(200);
    await admitted.text();
    held.forEach((h) => h.stop());
    expect(await idle()).toBe(true);
  });
});

describe('several mounts in one host registry', () => {
  it('registers once, labels request metrics by mount, and counts each forward pass once', async () => {
    await (await post(`${base}/a/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } })).text();
    await (await post(`${base}/b/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } })).text();
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/^tgi_request_success\{mount="a"\} [1-9]\d*$/m);
    expect(text).toMatch(/^tgi_request_success\{mount="b"\} [1-9]\d*$/m);
    expect(text).toMatch(/^tgi_request_failure\{err="overloaded",mount="b"\} 2$/m);
    const counted = [...text.matchAll(/^tgi_batch_inference_count\{method="\w+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    expect(counted).toBe(passes.count);
    // Each mount's /metrics is the same registry.
    expect(await (await fetch(`${base}/b/metrics`)).text()).toMatch(/^tgi_request_success\{mount="a"\}/m);
  });
});

describe('metrics: false leaves /metrics to the host', () => {
  it('Express: next() reaches the host route', async () => {
    const res = await fetch(`${base}/plain/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('host metrics');
  });

  it('Koa: next reaches the host middleware', async () => {
    const app = new Koa();
    app.use(koaInference({ engine, maxConcurrentRequests: 1, metrics: false, prefix: '/llm' }));
    app.use((ctx) => {
      ctx.body = `host ${ctx.path}`;
    });
    const koa = await listen(app.callback());
    try {
      expect(await (await fetch(`${koa.base}/llm/metrics`)).text()).toBe('host /llm/metrics');
      expect((await fetch(`${koa.base}/llm/health`)).status).toBe(200);
    } finally {
      await new Promise((resolve) => koa.server.close(resolve));
    }
  });

  it('node:http: the handler does not claim /metrics', () => {
    const handler = createInferenceHandler({ engine, maxConcurrentRequests: 1, metrics: false });
    expect(handler.matches('/metrics')).toBe(false);
    expect(handler.matches('/health')).toBe(true);
    expect(createInferenceHandler({ engine, maxConcurrentRequests: 1 }).matches('/metrics')).toBe(true);
  });
});
