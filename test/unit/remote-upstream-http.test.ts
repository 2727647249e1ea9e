/**
 * The remote engine's HTTP client against a real server on 127.0.0.1: a JSON body with its headers,
 * connections kept alive between requests, and a request that meets a kept connection the server
 * has just dropped is sent again on a new one, while one dropped on a new connection is a failure.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UpstreamHttp } from '../../src/remote/upstream-http.js';

interface Seen {
  connections: number;
  requests: Array<{ path: string; body: string; contentType: string | undefined; auth: string | undefined }>;
}

let server: Server | null = null;
let client: UpstreamHttp | null = null;

afterEach(async () => {
  client?.close();
  server?.closeAllConnections();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = null;
});

/** Echoes the request; drops the connection instead of answering `/drop`, and the second request on any connection when `dropSecond`. */
async function start(dropSecond: boolean): Promise<{ url: string; seen: Seen }> {
  const seen: Seen = { connections: 0, requests: [] };
  const onConnection = new WeakMap<object, number>();
  server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString();
    seen.requests.push({ path: req.url!, body, contentType: req.headers['content-type'], auth: req.headers.authorization });
    const count = (onConnection.get(req.socket) ?? 0) + 1;
    onConnection.set(req.socket, count);
    if (req.url === '/drop' || (dropSecond && count === 2)) return void req.socket.destroy();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ echo: body }));
  });
  server.on('connection', () => (seen.connections += 1));
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe('UpstreamHttp', () => {
  it('sends JSON with its headers and keeps the connection for the next request', async () => {
    const { url, seen } = await start(false);
    client = new UpstreamHttp(url, { authorization: 'Bearer k' });
    const res = await client.request('/generate', { json: { inputs: 'Hi' } });
    expect([res.status, res.ok, res.header('content-type')]).toEqual([200, true, 'application/json']);
    expect(await res.json()).toEqual({ echo: '{"inputs":"Hi"}' });
    expect(await (await client.request('/info')).text()).toBe('{"echo":""}');
    expect(seen.requests.map((r) => [r.path, r.contentType, r.auth])).toEqual([
      ['/generate', 'application/json', 'Bearer k'],
      ['/info', undefined, 'Bearer k'],
    ]);
    expect(seen.connections).toBe(1);
  });

  it('appends paths to a base URL that has a path of its own (a gateway prefix)', async () => {
    const { url, seen } = await start(false);
    client = new UpstreamHttp(`${url}/ollama`, {});
    await (await client.request('/v1/models')).text();
    expect(seen.requests.map((r) => r.path)).toEqual(['/ollama/v1/models']);
  });

  it('sends a request again on a new connection when the kept one was dropped before any answer', async () => {
    const { url, seen } = await start(true);
    client = new UpstreamHttp(url, {});
    await (await client.request('/a', { json: 1 })).text();
    const res = await client.request('/b', { json: 2 });
    expect(await res.json()).toEqual({ echo: '2' });
    expect(seen.requests.map((r) => r.path)).toEqual(['/a', '/b', '/b']);
    expect(seen.connections).toBe(2);
  });

  it('fails a request dropped on a new connection: the upstream itself went away', async () => {
    const { url, seen } = await start(false);
    client = new UpstreamHttp(url, {});
    await expect(client.request('/drop', { json: 1 })).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(seen.requests).toHaveLength(1);
  });
});
