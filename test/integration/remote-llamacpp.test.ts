/**
 * The router in front of llama.cpp's `llama-server` (OpenAI dialect), a real server of another make,
 * on the tiny fixture's weights as a GGUF: the OpenAI conformance audits, the TGI routes' tokens as
 * far as that dialect carries them, discovery of its slots and context, its queue scraped from `/metrics`,
 * backpressure at its slot count, and cancellation of streamed and non-streamed requests (llama.cpp
 * keeps generating a non-streamed request whose client left, so only streaming upstream frees the
 * slot). The binary is built once by test/support/build-llama-server.sh (`.ci/run` does it); the suite
 * runs when it is there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createRemoteEngine, type RemoteEngine } from '../../src/remote/index.js';
import type { AuditContext } from '../conformance/audit-kit.js';
import { eventually, frameJson, getJson, post, postForJson, readSse } from '../conformance/http-client.js';
import { openaiAudits } from '../conformance/openai-audits.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { llamaServerBinary, startLlamaServer, writeAsciiGguf, type LlamaServer } from '../support/llama-server.js';

const binary = llamaServerBinary();
const SLOTS = 2;

describe.runIf(binary !== null)('llama-server behind the router', () => {
  let dir: string;
  let llama: LlamaServer;
  let engine: RemoteEngine;
  let server: RunningServer;
  const url = (path: string) => server.url + path;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'remote-llamacpp-'));
    const model = join(dir, 'tiny-ascii.gguf');
    await writeAsciiGguf(model);
    llama = await startLlamaServer(binary!, model, SLOTS);
    const registry = new Registry();
    // Named as our own server names the fixture, so the audits' expectations hold unchanged.
    engine = await createRemoteEngine({
      upstreams: [{ url: llama.url, dialect: 'openai' }],
      modelId: 'tiny',
      probeIntervalMs: 500,
      loadIntervalMs: 100,
      metrics: { registry },
    });
    server = await startServer({ framework: 'express5', mount: 'root' }, { engine, metrics: { registry } });
  });

  afterAll(async () => {
    await server?.close();
    await engine?.close();
    await llama?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const busySlots = async () =>
    ((await getJson(`${llama.url}/slots`)) as Array<{ is_processing: boolean }>).filter((s) => s.is_processing).length;

  describe('OpenAI conformance through the router', () => {
    const context: AuditContext = {
      url,
      opts: { modelId: 'tiny', bodyLimit: 2_000_000, maxConcurrentRequests: 128 },
      reference: async () =>
        (await postForJson(url('/generate'), { inputs: 'Once upon a time', parameters: { max_new_tokens: 5, do_sample: false } })).json,
    };
    openaiAudits(context);
  });

  it("discovers its slots as capacity and a slot's context as the token limit, and scrapes its queue", async () => {
    expect(engine.status()).toMatchObject([{ url: llama.url, dialect: 'openai', up: true, capacity: SLOTS }]);
    expect(engine.info.limits).toMatchObject({ maxTotalTokens: 2048, maxInputTokens: 2047 });
    expect(await eventually(() => engine.status()[0].queue !== null, 2000)).toBe(true);
  });

  // Byte-exact golden streams do not hold here: llama.cpp's logprobs differ in their last digits between
  // two runs of one request (the second reuses the cached prompt). Tokens, ids and texts do hold.
  it("streams the tokens of the whole answer, with llama.cpp's token ids, on TGI and OpenAI routes", async () => {
    const parameters = { max_new_tokens: 12, do_sample: false };
    const tgi = (await postForJson(url('/generate'), { inputs: 'Once upon a time', parameters: { ...parameters, details: true } })).json;
    expect(tgi.details).toMatchObject({ finish_reason: 'length', generated_tokens: 12 });
    expect(tgi.details.tokens.every((t: { id: number; logprob: number }) => t.id >= 0 && t.logprob <= 0)).toBe(true);
    const events = (await readSse(await post(url('/generate_stream'), { inputs: 'Once upon a time', parameters }))).map((f) =>
      frameJson(f),
    );
    expect(events.map((e) => [e.token.id, e.token.text])).toEqual(
      tgi.details.tokens.map((t: { id: number; text: string }) => [t.id, t.text]),
    );
    expect(events.at(-1).generated_text).toBe(tgi.generated_text);
    const whole = (await postForJson(url('/v1/completions'), { prompt: 'Once upon a time', max_tokens: 12, temperature: 0 })).json;
    expect(whole.choices[0].text).toBe(tgi.generated_text);
  });

  it("renders chat templates with llama.cpp's /apply-template and tokenizes with its /tokenize", async () => {
    const prompt = await engine.applyChatTemplate([{ role: 'user', content: 'Tell me about the sea' }]);
    expect(prompt).toContain('Tell me about the sea');
    const own = (await postForJson(`${llama.url}/apply-template`, { messages: [{ role: 'user', content: 'Tell me about the sea' }] })).json;
    expect(prompt).toBe(own.prompt);
    const inputs = 'Once upon a time';
    const { json } = await postForJson(url('/tokenize'), { inputs });
    expect(json.map((t: { text: string }) => t.text).join('')).toBe(inputs);
    const ids = (await postForJson(`${llama.url}/tokenize`, { content: inputs })).json.tokens;
    expect(json.map((t: { id: number }) => t.id)).toEqual(ids);
  });

  it('answers 429 at once beyond its slots, rather than letting it defer', async () => {
    const controllers = [new AbortController(), new AbortController()];
    const long = controllers.map((c) =>
      post(url('/generate_stream'), { inputs: 'Once', parameters: { max_new_tokens: 1500, do_sample: false } }, { signal: c.signal })
        .then((r) => r.text())
        .catch(() => 'aborted'),
    );
    expect(await eventually(async () => (await busySlots()) === SLOTS, 5000)).toBe(true);
    const extra = await post(url('/v1/chat/completions'), { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(extra.status).toBe(429);
    expect(extra.headers.get('retry-after')).toBe('1');
    controllers.forEach((c) => c.abort());
    await Promise.all(long);
    expect(await eventually(async () => (await busySlots()) === 0, 1000)).toBe(true);
  });

  it('frees its slots within a second when clients leave, streamed and non-streamed', async () => {
    const requests: Array<[string, object]> = [
      ['/generate', { inputs: 'Once', parameters: { max_new_tokens: 1500, do_sample: false } }],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1500, temperature: 0, stream: true }],
    ];
    const controllers = requests.map(() => new AbortController());
    const pending = requests.map(([path, body], i) =>
      post(url(path), body, { signal: controllers[i].signal })
        .then((r) => r.text())
        .catch(() => 'aborted'),
    );
    expect(await eventually(async () => (await busySlots()) === SLOTS, 5000)).toBe(true);
    controllers.forEach((c) => c.abort());
    expect(await eventually(async () => (await busySlots()) === 0, 1000, 5)).toBe(true);
    expect(await Promise.all(pending)).toEqual(['aborted', 'aborted']);
    expect(await eventually(() => engine.status()[0].inFlight === 0 && server.handler.admission.inFlight === 0, 1000)).toBe(true);
  });
});
