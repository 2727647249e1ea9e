/**
 * What the router does with chat, TGI routes, `/tokenize` and chat templates over an OpenAI-dialect
 * upstream: our own `serve` spoken to as an OpenAI server (`#dialect=openai`), which makes the
 * router's answers comparable with what that server answers itself. Chat messages go to the
 * upstream's `/v1/chat/completions` and its own template (the router has none); TGI routes go to
 * its `/v1/completions`; `/tokenize` goes to its `/tokenize`; what an upstream cannot do is a 4xx in
 * the route family's shape that never reaches it. The same over llama-server is in remote-llamacpp.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { InferenceError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createRemoteEngine, type RemoteEngine } from '../../src/remote/index.js';
import { frameJson, getJson, metricValue, post, postForJson, readSse } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { startScripted } from '../support/fault-servers.js';
import { startServe, type ServeProcess } from '../support/serve-process.js';

const MESSAGES = [{ role: 'user', content: 'Tell me about the sea' }];

let upstream: ServeProcess;
let engine: RemoteEngine;
let server: RunningServer;
const url = (path: string) => server.url + path;
const asked = () => metricValue(upstream.url, 'tgi_request_count');

beforeAll(async () => {
  upstream = await startServe(['--model', await ensureFixtureModel('tiny'), '--threads', '1']);
  const registry = new Registry();
  engine = await createRemoteEngine({ upstreams: [`${upstream.url}#dialect=openai`], metrics: { registry } });
  server = await startServer({ framework: 'express5', mount: 'root' }, { engine, metrics: { registry } });
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
  await upstream?.close();
});

describe('chat over an OpenAI-dialect upstream', () => {
  it("is the upstream's own answer: its template renders the messages, streamed or whole", async () => {
    const body = { messages: MESSAGES, max_tokens: 8, temperature: 0 };
    const own = (await postForJson(`${upstream.url}/v1/chat/completions`, body)).json;
    const routed = (await postForJson(url('/v1/chat/completions'), body)).json;
    expect(routed.choices[0].message.content).toBe(own.choices[0].message.content);
    // The prompt as the upstream's template made it; the router, which has no template, only relays the count.
    expect(routed.usage).toEqual(own.usage);
    const frames = await readSse(await post(url('/v1/chat/completions'), { ...body, stream: true }));
    const content = frames
      .slice(0, -1)
      .map((f) => frameJson(f).choices[0]?.delta?.content ?? '')
      .join('');
    expect(content).toBe(own.choices[0].message.content);
  });

  it('refuses `tools` with a 422 that never reaches the upstream: the tool calls it parses could not come back', async () => {
    const before = await asked();
    const tools = [{ type: 'function', function: { name: 'weather', parameters: { type: 'object', properties: {} } } }];
    const res = await post(url('/v1/chat/completions'), { messages: MESSAGES, tools, max_tokens: 8 });
    expect(res.status).toBe(422);
    expect(((await res.json()) as any).error).toMatchObject({ type: 'invalid_request_error', param: 'tools', code: 'validation' });
    expect(await asked()).toBe(before);
  });
});

describe('TGI routes over an OpenAI-dialect upstream', () => {
  it("are its /v1/completions: the same text, with each token's logprob", async () => {
    const own = (await postForJson(`${upstream.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 8, temperature: 0 })).json;
    const { json } = await postForJson(url('/generate'), {
      inputs: 'Once upon a time',
      parameters: { max_new_tokens: 8, do_sample: false, details: true },
    });
    expect(json.generated_text).toBe(own.choices[0].text);
    expect(json.details).toMatchObject({ finish_reason: 'length', generated_tokens: 8 });
    expect(json.details.tokens.every((t: { logprob: number }) => t.logprob <= 0)).toBe(true);
  });

  it('refuse what the OpenAI wire cannot carry, in TGI shape, before asking the upstream', async () => {
    const before = await asked();
    const res = await post(url('/generate'), { inputs: 'Hi', parameters: { max_new_tokens: 2, decoder_input_details: true } });
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({
      error: 'Input validation error: `decoder_input_details` is not available through OpenAI-dialect upstreams',
      error_type: 'validation',
    });
    expect(await asked()).toBe(before);
  });
});

describe('tokens and templates through the upstream', () => {
  it("/tokenize is the upstream's own", async () => {
    const inputs = 'Hello world, how are you?';
    const own = (await postForJson(`${upstream.url}/tokenize`, { inputs })).json;
    const { json } = await postForJson(url('/tokenize'), { inputs });
    expect(json).toEqual(own);
    expect(json.map((t: { text: string }) => t.text).join('')).toBe(inputs);
  });

  it('a chat template the upstream cannot render is a 404 invalid_request, not a failure', async () => {
    // Our server renders templates inside its chat route only; llama.cpp's /apply-template is tested beside it.
    const error = await engine.applyChatTemplate(MESSAGES).catch((e: unknown) => e);
    expect(InferenceError.isInstance(error) && [error.status, error.errorType, error.message]).toEqual([
      404,
      'invalid_request',
      '/apply-template is not available through the remote upstreams',
    ]);
  });

  it('/tokenize through an upstream without it is a 404 in TGI shape', async () => {
    const info = await getJson(`${upstream.url}/info`);
    const bare = await startScripted(info, { kind: 'status', status: 500 });
    const router = await createRemoteEngine({ upstreams: [bare.url], metrics: false });
    const mount = await startServer({ framework: 'express5', mount: 'root' }, { engine: router, metrics: false });
    try {
      const res = await post(`${mount.url}/tokenize`, { inputs: 'Hi' });
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: '/tokenize is not available through the remote upstreams', error_type: 'invalid_request' });
      expect(router.status()[0].up).toBe(true);
    } finally {
      await mount.close();
      await router.close();
      await bare.close();
    }
  });
});
