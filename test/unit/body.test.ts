/** readJsonBody on real node:http requests from 127.0.0.1. */
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceError } from '../../src/errors.js';
import { readJsonBody, type BodyCarrier } from '../../src/http/body.js';

const LIMIT = 1000;
let server: Server;
let url: string;
/** Given what a request marked `x-case: halfway` ended with: its client cannot see the answer. */
let onHalfway: (outcome: { read: Promise<unknown> }) => void = () => {};

beforeAll(async () => {
  server = createServer((req: BodyCarrier, res) => {
    // A header stands in for a host body parser that ran before us.
    const host = req.headers['x-host-body'];
    if (typeof host === 'string') req.body = host === 'empty-object' ? {} : host === 'string' ? '{"s":1}' : JSON.parse(host);
    const outcome = readJsonBody(req, LIMIT);
    if (req.headers['x-case'] === 'halfway') onHalfway({ read: outcome.catch((error: unknown) => error) });
    outcome.then(
      (value) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value })),
      (error: InferenceError) => res.writeHead(error.status).end(error.message),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const send = async (body: RequestInit['body'], headers: Record<string, string> = {}) => {
  const res = await fetch(url, {
    method: 'POST',
    body,
    headers,
    ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit);
  return { status: res.status, text: await res.text() };
};

describe('readJsonBody', () => {
  it('reads and parses the body', async () => {
    expect(await send('{"inputs":"Hi","n":[1,2]}')).toEqual({ status: 200, text: '{"value":{"inputs":"Hi","n":[1,2]}}' });
  });

  it("takes a host parser's object, or parses a host's string", async () => {
    expect((await send(undefined, { 'x-host-body': '{"parsed":true}' })).text).toBe('{"value":{"parsed":true}}');
    expect((await send(undefined, { 'x-host-body': 'string' })).text).toBe('{"value":{"s":1}}');
  });

  it('reads the stream itself when a host parser left {} without reading it (not a JSON content type)', async () => {
    expect((await send('{"a":1}', { 'x-host-body': 'empty-object', 'content-type': 'text/plain' })).text).toBe('{"value":{"a":1}}');
  });

  it('400 for an empty body or broken JSON', async () => {
    expect(await send('')).toMatchObject({ status: 400, text: expect.stringMatching(/the request body is empty/) });
    expect(await send('{"a":')).toMatchObject({ status: 400, text: expect.stringMatching(/^Failed to parse the request body as JSON/) });
  });

  it('413 from the declared length, before reading', async () => {
    expect(await send('x'.repeat(LIMIT + 1))).toMatchObject({ status: 413, text: expect.stringMatching(/exceeds 1000 bytes/) });
  });

  it('413 for a chunked body that grows past the limit', async () => {
    const chunk = new TextEncoder().encode(' '.repeat(300));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ >= 10) return controller.close();
        controller.enqueue(chunk);
      },
    });
    expect((await send(body)).status).toBe(413);
  });

  it('400 past 128 levels of nesting; 128 is fine', async () => {
    const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    expect((await send(nested(128))).status).toBe(200);
    expect(await send(nested(129))).toMatchObject({ status: 400, text: expect.stringMatching(/nested deeper than 128/) });
    expect((await send(undefined, { 'x-host-body': nested(129) })).status).toBe(400);
  });

  it('rejects with a 400 when the upload stops half way, and does not hang', async () => {
    const outcome = new Promise<{ read: Promise<unknown> }>((resolve) => (onHalfway = resolve));
    const socket = connect(Number(new URL(url).port), '127.0.0.1', () => {
      socket.write('POST / HTTP/1.1\r\nHost: x\r\nx-case: halfway\r\nContent-Length: 100\r\n\r\n{"inputs":"Hi');
    });
    socket.on('error', () => {});
    const { read } = await outcome;
    socket.destroy();
    const error = await read;
    expect(InferenceError.isInstance(error)).toBe(true);
    expect((error as InferenceError).status).toBe(400);
  });
});
