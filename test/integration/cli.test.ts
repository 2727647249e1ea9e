/**
 * Graceful shutdown as an operator sees it. The standalone server, `streaming-inference serve` (the
 * built `dist/cli.js`, which `npm test` builds first), gets SIGTERM while streams run: it stops
 * taking requests, lets the streams that finish within `--drain-timeout-ms` finish, ends the others
 * with an `incomplete_generation` event, and exits 0. In a host app that keeps listening,
 * `handler.close()` refuses new requests with 503 instead.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { frameJson, post, sseFrames } from '../conformance/http-client.js';
import { startServer } from '../conformance/servers.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const DRAIN_TIMEOUT_MS = 250;

let child: ChildProcess;
let url: string;
let output = '';

beforeAll(async () => {
  const model = await ensureFixtureModel('tiny');
  child = spawn(process.execPath, [CLI, 'serve', '--model', model, '--port', '0', '--drain-timeout-ms', String(DRAIN_TIMEOUT_MS)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  // With --port 0 the banner names the port the system chose.
  const deadline = Date.now() + 30_000;
  let match: RegExpExecArray | null = null;
  while (!(match = /Serving \S+ at (http:\/\/127\.0\.0\.1:\d+)/.exec(output))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the server did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  url = match[1];
});

afterAll(() => {
  if (child?.exitCode === null) child.kill('SIGKILL');
});

/** Every event's JSON, read as it comes; resolves when the server ends the stream. */
async function readStream(res: Response, onFirst: () => void): Promise<any[]> {
  expect(res.status).toBe(200);
  const events: any[] = [];
  for await (const frame of sseFrames(res.body!)) {
    events.push(frameJson(frame.raw));
    onFirst();
  }
  return events;
}

describe('streaming-inference serve on SIGTERM', () => {
  it('drains: short streams finish, long ones end with incomplete_generation, new requests are refused, exit 0', async () => {
    const greedy = (max_new_tokens: number) => ({ inputs: 'Hi', parameters: { max_new_tokens, do_sample: false } });
    // 2,000 tokens take a second or more on the tiny model, far past the drain timeout; 20 take milliseconds.
    const streaming = (max_new_tokens: number) => {
      let first!: () => void;
      const started = new Promise<void>((resolve) => (first = resolve));
      const events = post(`${url}/generate_stream`, greedy(max_new_tokens)).then((res) => readStream(res, first));
      return { started, events };
    };
    const long = streaming(2000);
    const short = streaming(20);
    await Promise.all([long.started, short.started]);
    const exited = once(child, 'exit');
    child.kill('SIGTERM');

    const shortEvents = await short.events;
    expect(shortEvents).toHaveLength(20);
    expect(typeof shortEvents.at(-1).generated_text).toBe('string');

    // A request after the signal: the CLI closed its listener (and its idle connections) first. On a new
    // connection: fetch may reuse the short stream's kept-alive one, which the draining handler answers with 503.
    const late = await new Promise<string | undefined>((resolve) => {
      const req = request(`${url}/generate`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(`HTTP ${res.statusCode}`);
      });
      req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code));
      req.end(JSON.stringify(greedy(2)));
    });
    expect(late).toBe('ECONNREFUSED');

    const longEvents = await long.events;
    expect(longEvents.length).toBeLessThan(2000);
    expect(longEvents.at(-1)).toEqual({ error: 'Incomplete generation: the engine shut down', error_type: 'incomplete_generation' });
    longEvents.slice(0, -1).forEach((event, i) => expect(event).toMatchObject({ index: i + 1, generated_text: null }));

    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(output).toContain(`SIGTERM: finishing running requests (up to ${DRAIN_TIMEOUT_MS} ms)`);
    expect(output).toContain('Stopped.');
  });
});

describe('handler.close() in a host that keeps listening', () => {
  it('refuses new requests with 503 and an unhealthy /health, and ends the running stream', async () => {
    const server = await startServer({ framework: 'express5', mount: 'root' }, { model: await ensureFixtureModel('tiny') });
    try {
      await server.handler.ready();
      const res = await post(`${server.url}/generate_stream`, { inputs: 'Hi', parameters: { max_new_tokens: 2000, do_sample: false } });
      const frames = sseFrames(res.body!);
      await frames.next();
      const closing = server.handler.close({ drainTimeoutMs: 200 });

      const refused = await post(`${server.url}/v1/completions`, { prompt: 'Late', max_tokens: 2 });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(await refused.json()).toEqual({
        error: { message: 'Engine is shutting down', type: 'server_error', param: null, code: 'unavailable' },
      });
      expect((await fetch(`${server.url}/health`)).status).toBe(503);

      let last = '';
      for await (const frame of frames) last = frame.raw;
      expect(frameJson(last)).toEqual({ error: 'Incomplete generation: the engine shut down', error_type: 'incomplete_generation' });
      await closing;
      expect(server.handler.admission.inFlight).toBe(0);
    } finally {
      await server.close();
    }
  });
});
