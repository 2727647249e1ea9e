/**
 * Admission and cancellation over real HTTP: requests past `maxConcurrentRequests` get an immediate
 * 429 while the admitted ones complete; a client that goes away (streamed, not streamed, or still
 * queued) frees its permit and its place in the batch or queue and counts as `dropped`; and a host's
 * `compression()` does not hold events back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { createGunzip } from 'node:zlib';
import compression from 'compression';
import type { NextFunction, Request, Response } from 'express';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { eventually, frameJson, getJson, post, sseFrames, metricValue } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';

let engine: Engine;

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
});

afterAll(async () => {
  await engine?.close();
});

/** Long enough (hundreds of ms on the tiny model) for every request of a test to overlap. */
const LONG = { inputs: 'Hi', parameters: { max_new_tokens: 1500 } };

describe('admission', () => {
  const LIMIT = 3;
  const EXTRA = 4;
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ framework: 'express5', mount: 'prefix' }, { engine, maxConcurrentRequests: LIMIT });
  });
  afterAll(async () => {
    await server?.close();
  });

  it(`refuses at once what exceeds ${LIMIT} in flight with 429 and Retry-After, and completes the rest`, async () => {
    const started = performance.now();
    const outcomes = await Promise.all(
      Array.from({ length: LIMIT + EXTRA }, async () => {
        const res = await post(`${server.url}/generate_stream`, LONG);
        const headersAt = performance.now() - started;
        if (res.status !== 200) return { res, headersAt, body: await res.text(), endAt: headersAt, events: 0 };
        let events = 0;
        let last: any = null;
        for await (const frame of sseFrames(res.body!)) {
          events += 1;
          last = frameJson(frame.raw);
        }
        return { res, headersAt, body: last, endAt: performance.now() - started, events };
      }),
    );
    const refused = outcomes.filter((o) => o.res.status === 429);
    const served = outcomes.filter((o) => o.res.status === 200);
    expect(refused).toHaveLength(EXTRA);
    expect(served).toHaveLength(LIMIT);
    for (const { res, body } of refused) {
      expect(body).toBe('{"error":"Model is overloaded","error_type":"overloaded"}');
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.headers.get('retry-after-ms')).toBe('1000');
    }
    // "At once": every refusal came back while every admitted stream was still running.
    expect(Math.max(...refused.map((o) => o.headersAt))).toBeLessThan(Math.min(...served.map((o) => o.endAt)));
    for (const { body, events } of served) {
      expect(typeof body.generated_text).toBe('string');
      expect(events).toBe(body.index);
    }
    expect(await metricValue(server.url, 'tgi_request_failure{err="overloaded"}')).toBe(EXTRA);
    expect((await getJson(`${server.url}/info`)).in_flight_requests).toBe(0);
  });
});

describe('a client that goes away', () => {
  let server: RunningServer;
  const idle = async () =>
    (await getJson(`${server.url}/info`)).in_flight_requests === 0 && engine.stats().batchSize === 0 && engine.stats().queueSize === 0;

  beforeAll(async () => {
    server = await startServer({ framework: 'koa3', mount: 'root' }, { engine, maxConcurrentRequests: 1 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('mid-stream: the sequence leaves the batch, the permit is released, the next request is admitted', async () => {
    const controller = new AbortController();
    const res = await post(`${server.url}/generate_stream`, LONG, { signal: controller.signal });
    expect(res.status).toBe(200);
    const frames = sseFrames(res.body!);
    for (let i = 0; i < 3; i++) expect((await frames.next()).done).toBe(false);
    expect(engine.stats().batchSize).toBe(1);
    expect((await getJson(`${server.url}/info`)).in_flight_requests).toBe(1);
    controller.abort();

    expect(await eventually(idle, 2000)).toBe(true);
    const next = await post(`${server.url}/generate_stream`, { inputs: 'Hi', parameters: { max_new_tokens: 2 } });
    expect(next.status).toBe(200);
    await next.text();
    expect(await metricValue(server.url, 'tgi_request_failure{err="dropped"}')).toBe(1);
  });

  it('during a non-streamed /generate: the generation is cancelled and the permit released', async () => {
    const controller = new AbortController();
    const pending = post(`${server.url}/generate`, LONG, { signal: controller.signal }).catch((error: Error) => error);
    expect(await eventually(() => engine.stats().batchSize === 1, 2000, 2)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    expect(await pending).toMatchObject({ name: 'AbortError' });

    expect(await eventually(idle, 2000)).toBe(true);
    expect(await metricValue(server.url, 'tgi_request_failure{err="dropped"}')).toBe(2);
    const next = await post(`${server.url}/generate`, { inputs: 'Hi', parameters: { max_new_tokens: 2 } });
    expect(next.status).toBe(200);
    await next.text();
  });
});

describe('a client that goes away while its request waits in the queue', () => {
  let single: Engine;
  let server: RunningServer;
  beforeAll(async () => {
    // One sequence per batch, so a second request waits in the scheduler's queue.
    single = await createEngine({ model: await ensureFixtureModel('tiny'), maxBatchSize: 1 });
    server = await startServer({ framework: 'express4', mount: 'root' }, { engine: single, maxConcurrentRequests: 2 });
  });
  afterAll(async () => {
    await server?.close();
    await single?.close();
  });

  it('leaves the queue and frees its permit while the running request goes on', async () => {
    const running = new AbortController();
    const first = await post(`${server.url}/generate_stream`, LONG, { signal: running.signal });
    await sseFrames(first.body!).next();
    const waiting = new AbortController();
    const second = post(`${server.url}/generate`, LONG, { signal: waiting.signal }).catch((error: Error) => error);
    expect(await eventually(() => single.stats().queueSize === 1, 2000, 2)).toBe(true);
    expect((await getJson(`${server.url}/info`)).in_flight_requests).toBe(2);
    waiting.abort();
    expect(await second).toMatchObject({ name: 'AbortError' });

    const dequeued = async () => single.stats().queueSize === 0 && (await getJson(`${server.url}/info`)).in_flight_requests === 1;
    expect(await eventually(dequeued, 2000)).toBe(true);
    expect(single.stats().batchSize).toBe(1);
    expect(await metricValue(server.url, 'tgi_request_failure{err="dropped"}')).toBe(1);
    running.abort();
    expect(await eventually(async () => (await getJson(`${server.url}/info`)).in_flight_requests === 0, 2000)).toBe(true);
  });
});

interface GzipStreamResult {
  encoding: string | undefined;
  events: number;
  /** Separate reads of decoded bytes: one per flushed event when nothing buffers. */
  reads: number;
  /**
   * Events the client had once the first one arrived: few if it arrived while the stream was still
   * generating, all of them if something held the stream back. (The engine's batch size is no
   * signal: a request's first token goes out before its row joins the batch.)
   */
  eventsAtFirstEvent: number;
}

/** Reads an event stream with `accept-encoding: gzip`, gunzipping incrementally if the server compressed it. */
function readAcceptingGzip(url: string, body: unknown): Promise<GzipStreamResult> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'accept-encoding': 'gzip' } }, (res) => {
      const encoding = res.headers['content-encoding'];
      const decoded = encoding === 'gzip' ? res.pipe(createGunzip()) : res;
      const result: GzipStreamResult = { encoding, events: 0, reads: 0, eventsAtFirstEvent: -1 };
      let text = '';
      decoded.on('data', (chunk: Buffer) => {
        result.reads += 1;
        text += chunk.toString('utf8');
        const complete = text.split('\n\n').length - 1;
        if (result.events === 0 && complete > 0) result.eventsAtFirstEvent = complete;
        result.events = complete;
      });
      decoded.on('end', () => resolve(result));
      decoded.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe("a host's compression() in front of ours", () => {
  const STREAM = { inputs: 'Hi', parameters: { max_new_tokens: 300, do_sample: false } };
  const servers: RunningServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  it('leaves the event stream uncompressed (no-transform), so events arrive one by one', async () => {
    const server = await startServer({ framework: 'express5', mount: 'prefix' }, { engine }, { before: [compression()] });
    servers.push(server);
    const result = await readAcceptingGzip(`${server.url}/generate_stream`, STREAM);
    expect(result.encoding).toBeUndefined();
    expect(result.events).toBe(300);
    expect(result.eventsAtFirstEvent).toBeLessThan(50);
    expect(result.reads).toBeGreaterThan(10);
    // compression() is active for the rest of the app: a large JSON answer is gzipped.
    const whole = await new Promise<string | undefined>((resolve, reject) => {
      const req = request(
        `${server.url}/generate`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'accept-encoding': 'gzip' } },
        (res) => {
          res.resume().on('end', () => resolve(res.headers['content-encoding']));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ ...STREAM, parameters: { ...STREAM.parameters, max_new_tokens: 50, details: true } }));
    });
    expect(whole).toBe('gzip');
  });

  it('flushes each event through gzip when a proxy-like host strips no-transform', async () => {
    // Runs after compression() registered its header hook, so compression() sees the edited header.
    const stripNoTransform = (_req: Request, res: Response, next: NextFunction) => {
      const writeHead = res.writeHead;
      res.writeHead = function (this: Response, status: number, ...rest: any[]) {
        const headers = rest.at(-1);
        if (headers && typeof headers === 'object' && 'Cache-Control' in headers)
          rest[rest.length - 1] = { ...headers, 'Cache-Control': 'no-cache' };
        return writeHead.call(this, status, ...rest);
      } as Response['writeHead'];
      next();
    };
    const server = await startServer({ framework: 'express4', mount: 'prefix' }, { engine }, { before: [compression(), stripNoTransform] });
    servers.push(server);
    const result = await readAcceptingGzip(`${server.url}/generate_stream`, STREAM);
    expect(result.encoding).toBe('gzip');
    expect(result.events).toBe(300);
    expect(result.eventsAtFirstEvent).toBeLessThan(50);
    expect(result.reads).toBeGreaterThan(10);
  });
});
