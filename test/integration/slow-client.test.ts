/**
 * A client that stops reading a stream: once the socket buffers are full and nothing drains them
 * for `stallTimeoutMs`, the server disconnects it and cancels its generation (counted as
 * `dropped`), and in the meantime the other streams run at their usual speed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { eventually, post, sseFrames, metricValue } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';

// Long enough that the timing checks below keep a wide margin on a busy 2-core machine.
const STALL_TIMEOUT_MS = 3000;

let engine: Engine;
let server: RunningServer;

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
  server = await startServer({ framework: 'express5', mount: 'root' }, { engine, stallTimeoutMs: STALL_TIMEOUT_MS });
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
});

/** A normal greedy stream: its duration and the longest wait between two events. */
async function timedStream(tokens: number): Promise<{ ms: number; longestGapMs: number; events: number }> {
  const started = performance.now();
  const res = await post(`${server.url}/generate_stream`, { inputs: 'Hi', parameters: { max_new_tokens: tokens, do_sample: false } });
  let last = performance.now();
  let longestGapMs = 0;
  let events = 0;
  for await (const _ of sseFrames(res.body!)) {
    const now = performance.now();
    longestGapMs = Math.max(longestGapMs, now - last);
    last = now;
    events += 1;
  }
  return { ms: performance.now() - started, longestGapMs, events };
}

/**
 * Sends a chat stream over a raw socket and never reads it. Node cannot shrink a socket's receive
 * buffer, and on loopback the kernel absorbs megabytes, so each event is made 20 kB with a long
 * `model` name (echoed in every chunk, as TGI does): the buffers are full after ~200 tokens.
 */
function stuckClient(): Socket {
  const body = JSON.stringify({
    model: 'm'.repeat(20_000),
    messages: [{ role: 'user', content: 'Hi' }],
    max_tokens: 1900,
    temperature: 0,
    stream: true,
  });
  const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
  socket.pause();
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  return socket;
}

describe('a client that stops reading', () => {
  it('is disconnected after the stall timeout, counted as dropped, and does not slow the others', async () => {
    const alone = await timedStream(500);
    const droppedBefore = await metricValue(server.url, 'tgi_request_failure{err="dropped"}');

    const socket = stuckClient();
    // Its buffers are full after ~200 tokens; the stream below overlaps the stall window that follows.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const meanwhile = await timedStream(500);
    expect(meanwhile.events).toBe(500);
    // Were the batch waiting on the stuck client, the stream would stop for the whole stall timeout.
    expect(meanwhile.longestGapMs).toBeLessThan(STALL_TIMEOUT_MS / 2);
    expect(meanwhile.ms).toBeLessThan(alone.ms * 3 + 1000);

    expect(await eventually(() => server.handler.admission.inFlight === 0, STALL_TIMEOUT_MS * 5, 50)).toBe(true);
    expect(await metricValue(server.url, 'tgi_request_failure{err="dropped"}')).toBe(droppedBefore + 1);
    expect(await eventually(() => engine.stats().batchSize === 0, 2000)).toBe(true);

    // Reading now, the client gets what the kernel held, then the end of a connection the server cut.
    socket.resume();
    let received = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
    await new Promise((resolve) => socket.once('close', resolve));
    expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(received).toContain('data: {"id":"chatcmpl-');
    expect(received).not.toContain('data: [DONE]');
  });
});

describe('keep-alive comments', () => {
  it('sends `: keep-alive` on a stream that waits idle in the queue', async () => {
    // One row at a time: the second stream is admitted and its headers sent, then it waits.
    const queued = await createEngine({ model: await ensureFixtureModel('tiny'), maxBatchSize: 1 });
    const local = await startServer({ framework: 'express5', mount: 'root' }, { engine: queued, keepAliveMs: 100 });
    try {
      const busy = (
        await post(`${local.url}/generate_stream`, { inputs: 'Keep going', parameters: { max_new_tokens: 2000, do_sample: false } })
      ).body!.getReader();
      await busy.read();
      const res = await post(`${local.url}/generate_stream`, { inputs: 'Waiting', parameters: { max_new_tokens: 2 } });
      const reader = res.body!.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      expect(first).toBe(': keep-alive\n\n');
      await reader.cancel();
      await busy.cancel();
    } finally {
      await local.close();
      await queued.close();
    }
  });
});
