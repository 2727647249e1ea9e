/** SseWriter over a real node:http response on 127.0.0.1, read by real clients. */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { SseWriter } from '../../src/http/sse-writer.js';

let server: Server | null = null;

/** A server whose only request is handed to `serve`, and its URL. */
async function serving(serve: (res: ServerResponse) => void | Promise<void>): Promise<string> {
  server = createServer((_req, res) => void serve(res));
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = null;
});

describe('SseWriter', () => {
  it('sends the SSE headers at once, then each frame as written, and ends the response', async () => {
    const url = await serving(async (res) => {
      const writer = new SseWriter(res, 1000, 60_000);
      writer.open({ 'x-extra': 'yes' });
      expect(await writer.write('data:1\n\n')).toBe(true);
      expect(await writer.write('data:2\n\n')).toBe(true);
      writer.end();
      writer.end();
    });
    const res = await fetch(url);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-cache, no-transform');
    expect(res.headers.get('x-extra')).toBe('yes');
    expect(await res.text()).toBe('data:1\n\ndata:2\n\n');
  });

  it('sends a keep-alive comment on an idle stream', async () => {
    const url = await serving((res) => {
      const writer = new SseWriter(res, 1000, 20);
      writer.open();
      res.on('close', () => writer.end());
    });
    const res = await fetch(url);
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    expect(new TextDecoder().decode(value)).toBe(': keep-alive\n\n');
    await reader.cancel();
  });

  it('answers false once the client is gone, without writing', async () => {
    const closed = new Promise<boolean>((resolve) => {
      void serving((res) => {
        const writer = new SseWriter(res, 1000, 60_000);
        writer.open();
        res.on('close', async () => {
          resolve(await writer.write('data:late\n\n'));
          writer.end();
        });
      }).then(async (url) => {
        const controller = new AbortController();
        const res = await fetch(url, { signal: controller.signal });
        expect(res.status).toBe(200);
        controller.abort();
      });
    });
    expect(await closed).toBe(false);
  });

  it('disconnects a client that stops reading for stallTimeoutMs, and the waiting write answers false', async () => {
    const result = new Promise<{ writes: number; ok: boolean }>((resolve) => {
      void serving(async (res) => {
        const writer = new SseWriter(res, 100, 60_000);
        writer.open();
        const frame = `data:${'x'.repeat(1 << 20)}\n\n`;
        let writes = 0;
        // Fill the socket and the client's buffers until a write has to wait; the client never reads.
        for (;;) {
          writes += 1;
          if (!(await writer.write(frame))) return resolve({ writes, ok: false });
          if (writes > 1000) return resolve({ writes, ok: true });
        }
      }).then((url) => {
        const { port } = new URL(url);
        const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
        socket.pause();
        socket.on('error', () => {});
      });
    });
    const { ok, writes } = await result;
    expect(ok).toBe(false);
    expect(writes).toBeGreaterThan(1);
  });
});
