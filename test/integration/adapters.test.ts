/**
 * The conformance suite against every adapter variant (Express 4 and 5, Koa 2 and 3; at the root,
 * under a prefix, under koa-mount), the host app's own routes beside ours, host body parsers, and
 * the loading states of a middleware that loads its own model.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express5 from 'express';
import express4 from 'express4';
import type { Context, Next } from 'koa';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { post, postForJson } from '../conformance/http-client.js';
import { serverAudits, type ServerAuditOptions } from '../conformance/server-audits.js';
import { HOST, MOUNT_PATH, SERVER_VARIANTS, startServer, variantName, type RunningServer } from '../conformance/servers.js';

const AUDIT: ServerAuditOptions = { modelId: 'tiny', bodyLimit: 1024, maxConcurrentRequests: 8 };
const REQUEST = { inputs: 'Hello there', parameters: { max_new_tokens: 3, do_sample: false } };

let model: string;
let engine: Engine;

beforeAll(async () => {
  model = await ensureFixtureModel('tiny');
  engine = await createEngine({ model });
});

afterAll(async () => {
  await engine?.close();
});

for (const variant of SERVER_VARIANTS) {
  describe(variantName(variant), () => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await startServer(variant, { engine, bodyLimit: AUDIT.bodyLimit, maxConcurrentRequests: AUDIT.maxConcurrentRequests });
    });
    afterAll(async () => {
      await server?.close();
    });

    serverAudits(() => server.url, AUDIT);

    it("keeps the host's middleware and routes working beside ours", async () => {
      const hello = await fetch(server.origin + HOST.routePath);
      expect(hello.status).toBe(200);
      expect(await hello.json()).toEqual({ host: variant.framework });
      expect(hello.headers.get(HOST.header)).toBe(variant.framework);
      // The host's middleware ran before ours, and its header survives our writeHead, SSE included.
      const health = await fetch(`${server.url}/health`);
      expect(health.headers.get(HOST.header)).toBe(variant.framework);
      const stream = await post(`${server.url}/generate_stream`, REQUEST);
      expect(stream.headers.get(HOST.header)).toBe(variant.framework);
      await stream.text();
    });

    it("lets paths that are not ours fall through to the host's 404", async () => {
      const outside = variant.mount === 'root' ? `${MOUNT_PATH}/generate` : '/generate';
      for (const path of [`${server.url}/nope`, `${server.url}/generate/more`, `${server.url}/v1`, server.origin + outside]) {
        const res = await fetch(path);
        expect(res.status, path).toBe(404);
        expect(await res.text(), path).toBe(HOST.notFoundBody);
      }
    });

    it('matches its routes with a query string or a trailing slash', async () => {
      expect((await fetch(`${server.url}/health?probe=1`)).status).toBe(200);
      expect((await fetch(`${server.url}/health/`)).status).toBe(200);
      const { json } = await postForJson(`${server.url}/generate?x=1`, REQUEST);
      expect(typeof json.generated_text).toBe('string');
    });
  });
}

describe("a host's body parser in front of ours", () => {
  const servers: RunningServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  for (const [framework, express] of [
    ['express4', express4],
    ['express5', express5],
  ] as const) {
    it(`${framework} with express.json(): we use its req.body`, async () => {
      const server = await startServer({ framework, mount: 'prefix' }, { engine }, { before: [express.json()] });
      servers.push(server);
      const { json } = await postForJson(`${server.url}/generate`, REQUEST);
      expect(json.generated_text).toBe(await greedyText(REQUEST.inputs));
      const chat = await postForJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: 'user', content: 'Hi' }],
        max_tokens: 2,
        temperature: 0,
      });
      expect(chat.json.usage.completion_tokens).toBe(2);
      const stream = await post(`${server.url}/generate_stream`, REQUEST);
      expect(stream.headers.get('content-type')).toBe('text/event-stream');
      expect((await stream.text()).split('\n\n').filter(Boolean)).toHaveLength(3);
    });
  }

  for (const framework of ['koa2', 'koa3'] as const) {
    it(`${framework} with a body parser that sets ctx.request.body: we use it`, async () => {
      // What @koa/bodyparser does: consume the stream, leave the parsed value on ctx.request.body.
      const bodyParser = async (ctx: Context, next: Next) => {
        if (ctx.method === 'POST') {
          const chunks: Buffer[] = [];
          for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
          (ctx.request as { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        }
        await next();
      };
      const server = await startServer({ framework, mount: 'prefix' }, { engine }, { before: [bodyParser] });
      servers.push(server);
      const { json } = await postForJson(`${server.url}/generate`, REQUEST);
      expect(json.generated_text).toBe(await greedyText(REQUEST.inputs));
      const stream = await post(`${server.url}/v1/completions`, { prompt: REQUEST.inputs, max_tokens: 3, temperature: 0, stream: true });
      expect((await stream.text()).endsWith('data: [DONE]\n\n')).toBe(true);
    });
  }
});

describe('a middleware that loads its own model', () => {
  it('answers 503 while loading, then serves once ready()', async () => {
    const server = await startServer({ framework: 'express5', mount: 'prefix' }, { model });
    try {
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ error: 'unhealthy', error_type: 'healthcheck' });
      const generate = await post(`${server.url}/generate`, REQUEST);
      expect(generate.status).toBe(503);
      expect(generate.headers.get('retry-after')).toBe('1');
      expect(await generate.json()).toEqual({ error: 'Model is loading', error_type: 'unavailable' });
      const chat = await post(`${server.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Hi' }] });
      expect(chat.status).toBe(503);
      expect(((await chat.json()) as { error: object }).error).toMatchObject({ message: 'Model is loading', code: 'unavailable' });

      await server.handler.ready();
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
      expect((await fetch(`${server.url}/info`)).status).toBe(200);
      const { json } = await postForJson(`${server.url}/generate`, REQUEST);
      expect(json.generated_text).toBe(await greedyText(REQUEST.inputs));
    } finally {
      await server.close();
    }
  });

  it('with a bad model directory answers 500 model_load, /health too, without the path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'si-bad-model-'));
    await writeFile(join(dir, 'config.json'), '{"model_type": "llama"}');
    const server = await startServer({ framework: 'koa3', mount: 'prefix' }, { model: dir });
    try {
      await expect(server.handler.ready()).rejects.toThrow();
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(500);
      expect(await health.json()).toEqual({ error: 'Model failed to load', error_type: 'model_load' });
      const generate = await post(`${server.url}/generate`, REQUEST);
      expect(generate.status).toBe(500);
      expect(await generate.json()).toEqual({ error: 'Model failed to load', error_type: 'model_load' });
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function greedyText(inputs: string): Promise<string> {
  for await (const event of engine.generate({ inputs, parameters: REQUEST.parameters })) {
    if (event.type === 'end') return event.generatedText;
  }
  throw new Error('no end event');
}

describe('inside an express.Router', () => {
  for (const [name, express] of [
    ['Express 4', express4],
    ['Express 5', express5],
  ] as const) {
    it(`${name}: serves the routes under the router's and the mount's paths, beside the router's own routes`, async () => {
      const { streamingInference } = await import('../../adapters/express.js');
      const app = express();
      const router = express.Router();
      router.get('/status', (_req, res) => res.json({ router: true }));
      router.use('/ai', streamingInference({ engine }));
      app.use('/api', router);
      const server = await new Promise<Server>((resolve) => {
        const s = app.listen(0, '127.0.0.1', () => resolve(s));
      });
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      try {
        expect(await (await fetch(`${base}/api/status`)).json()).toEqual({ router: true });
        const { json } = await postForJson(`${base}/api/ai/generate`, REQUEST);
        expect(typeof json.generated_text).toBe('string');
        expect((await fetch(`${base}/api/ai/health`)).status).toBe(200);
        expect((await fetch(`${base}/api/ai/nope`)).status).toBe(404);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  }
});
