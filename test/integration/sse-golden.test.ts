/**
 * Byte-exact event streams. For a greedy request, the expected stream is written out from the
 * whole answer of the same request (`/generate` with details, or a chat completion with logprobs):
 * the token ids, texts and logprobs must be the same, and the framing must be exactly TGI's
 * (`data:{...}`, no `[DONE]`) or OpenAI's (`data: {...}`, then `data: [DONE]`). Only generated ids
 * and timestamps are normalized.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { frameJson, post, postForJson, readSse } from '../conformance/http-client.js';
import { startServer, variantName, type RunningServer, type ServerVariant } from '../conformance/servers.js';

const N = 8;
const SEED = 7;
const PROMPT = 'It was a dark and stormy night';
const CHAT = { messages: [{ role: 'user', content: 'Say something' }], max_tokens: N, temperature: 0 };

interface TgiToken { id: number; text: string; logprob: number; special: boolean }
interface ChatLogprob { token: string; logprob: number; bytes: number[]; top_logprobs: unknown[] }

const tgi = (value: unknown) => `data:${JSON.stringify(value)}\n\n`;
const openai = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
const DONE = 'data: [DONE]\n\n';

/** Generated ids and timestamps are the only bytes that may differ between two runs. */
function normalize(stream: string): string {
  return stream.replace(/"id":"(chatcmpl|cmpl)-[0-9a-f]{32}"/g, '"id":"$1-ID"').replace(/"created":\d+/g, '"created":0');
}

let engine: Engine;

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
});

afterAll(async () => {
  await engine?.close();
});

const VARIANTS: ServerVariant[] = [
  { framework: 'express5', mount: 'root' },
  { framework: 'koa2', mount: 'koa-mount' },
];

for (const variant of VARIANTS) {
  describe(`golden streams, ${variantName(variant)}`, () => {
    let server: RunningServer;
    let url: (path: string) => string;
    let reference: { generated_text: string; details: { tokens: TgiToken[]; top_tokens?: TgiToken[][] } };
    let inputLength: number;

    beforeAll(async () => {
      server = await startServer(variant, { engine });
      url = (path) => server.url + path;
      const parameters = { max_new_tokens: N, do_sample: false, seed: SEED, details: true, top_n_tokens: 2 };
      const { json, res } = await postForJson(url('/generate'), { inputs: PROMPT, parameters });
      reference = json;
      inputLength = Number(res.headers.get('x-prompt-tokens'));
      expect(reference.details.tokens).toHaveLength(N);
    });

    afterAll(async () => {
      await server?.close();
    });

    const tgiEvents = (opts: { details: boolean; topTokens: boolean; fullText: boolean }) =>
      reference.details.tokens
        .map((token, i) => {
          const last = i === N - 1;
          return tgi({
            index: i + 1,
            token,
            ...(opts.topTokens ? { top_tokens: reference.details.top_tokens![i] } : {}),
            generated_text: last ? (opts.fullText ? PROMPT : '') + reference.generated_text : null,
            details: last && opts.details ? { finish_reason: 'length', generated_tokens: N, seed: SEED, input_length: inputLength } : null,
          });
        })
        .join('');

    it('/generate_stream: one data:{...} per token, generated_text on the last, no [DONE]', async () => {
      const res = await post(url('/generate_stream'), { inputs: PROMPT, parameters: { max_new_tokens: N, do_sample: false } });
      expect(await res.text()).toBe(tgiEvents({ details: false, topTokens: false, fullText: false }));
    });

    it('/generate_stream with details and top_n_tokens', async () => {
      const parameters = { max_new_tokens: N, do_sample: false, seed: SEED, details: true, top_n_tokens: 2 };
      const res = await post(url('/generate_stream'), { inputs: PROMPT, parameters });
      expect(await res.text()).toBe(tgiEvents({ details: true, topTokens: true, fullText: false }));
    });

    it('POST / with stream:true: the same events, the prompt before the final text', async () => {
      const res = await post(url('/'), { inputs: PROMPT, parameters: { max_new_tokens: N, do_sample: false }, stream: true });
      expect(await res.text()).toBe(tgiEvents({ details: false, topTokens: false, fullText: true }));
    });

    it('/v1/completions stream: a chunk per token with text, the last with finish_reason, [DONE]', async () => {
      const res = await post(url('/v1/completions'), { prompt: PROMPT, max_tokens: N, temperature: 0, stream: true });
      const head = { id: 'cmpl-ID', object: 'text_completion', created: 0, model: 'tiny' };
      const chunk = (text: string, finish: string | null) => openai({ ...head, choices: [{ text, index: 0, logprobs: null, finish_reason: finish }] });
      const tokens = reference.details.tokens;
      const body = tokens.slice(0, -1).filter((t) => t.text !== '' && !t.special).map((t) => chunk(t.text, null));
      const last = tokens.at(-1)!;
      const expected = [...body, chunk(last.special ? '' : last.text, 'length'), DONE].join('');
      expect(normalize(await res.text())).toBe(expected);
    });

    it('/v1/chat/completions stream: role chunk, content chunks, finish chunk, [DONE]', async () => {
      const whole = (await postForJson(url('/v1/chat/completions'), { ...CHAT, logprobs: true })).json;
      const tokens: ChatLogprob[] = whole.choices[0].logprobs.content;
      const head = { id: 'chatcmpl-ID', object: 'chat.completion.chunk', created: 0, model: 'tiny' };
      const chunk = (delta: object, finish: string | null) =>
        openai({ ...head, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
      const expected = [
        chunk({ role: 'assistant', content: '' }, null),
        ...tokens.filter((t) => t.token !== '').map((t) => chunk({ content: t.token }, null)),
        chunk({}, 'length'),
        DONE,
      ].join('');
      const res = await post(url('/v1/chat/completions'), { ...CHAT, stream: true });
      expect(normalize(await res.text())).toBe(expected);
    });

    it('/v1/chat/completions stream with logprobs and include_usage', async () => {
      const whole = (await postForJson(url('/v1/chat/completions'), { ...CHAT, logprobs: true, top_logprobs: 2 })).json;
      const tokens: ChatLogprob[] = whole.choices[0].logprobs.content;
      const head = { id: 'chatcmpl-ID', object: 'chat.completion.chunk', created: 0, model: 'tiny' };
      const chunk = (delta: object, logprobs: object | null, finish: string | null) =>
        openai({ ...head, choices: [{ index: 0, delta, logprobs, finish_reason: finish }], usage: null });
      const expected = [
        chunk({ role: 'assistant', content: '' }, { content: [], refusal: null }, null),
        ...tokens.map((t) => chunk({ content: t.token }, { content: [t], refusal: null }, null)),
        chunk({}, null, 'length'),
        openai({ ...head, choices: [], usage: whole.usage }),
        DONE,
      ].join('');
      const res = await post(url('/v1/chat/completions'), { ...CHAT, logprobs: true, top_logprobs: 2, stream: true, stream_options: { include_usage: true } });
      expect(normalize(await res.text())).toBe(expected);
    });

    it('ids are unique per response and shared by its chunks', async () => {
      const ids = new Set<string>();
      for (let i = 0; i < 2; i++) {
        const frames = await readSse(await post(url('/v1/chat/completions'), { ...CHAT, stream: true }));
        const chunkIds = new Set(frames.slice(0, -1).map((f) => frameJson(f).id as string));
        expect(chunkIds.size).toBe(1);
        ids.add([...chunkIds][0]);
      }
      expect(ids.size).toBe(2);
    });
  });
}

describe('a generation that stops inside a character', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ framework: 'express5', mount: 'root' }, { engine });
  });
  afterAll(async () => {
    await server?.close();
  });

  // The tiny model's byte-level vocabulary often splits a character over tokens; a token that ends
  // mid-character streams '' until the character completes. When the generation stops right there,
  // the held-back bytes must still reach the stream, or the streamed texts fall short of the final
  // text (design.md: "the concatenation of all streamed texts equals decode(all ids)").
  it('streams texts that add up to generated_text, on TGI and OpenAI routes', async () => {
    const probe = await postForJson(server.url + '/generate', { inputs: 'Hello', parameters: { max_new_tokens: 60, do_sample: false, details: true } });
    const tokens: TgiToken[] = probe.json.details.tokens;
    const stopAt = tokens.findIndex((t) => t.text === '' && !t.special) + 1;
    expect(stopAt, 'the probe found a token that ends inside a character').toBeGreaterThan(0);
    const parameters = { max_new_tokens: stopAt, do_sample: false };
    const whole = (await postForJson(server.url + '/generate', { inputs: 'Hello', parameters })).json.generated_text as string;

    const events = (await readSse(await post(server.url + '/generate_stream', { inputs: 'Hello', parameters }))).map((f) => frameJson(f));
    expect(events.at(-1).generated_text).toBe(whole);
    expect(events.map((e) => e.token.text).join('')).toBe(whole);

    const body = { prompt: 'Hello', max_tokens: stopAt, temperature: 0 };
    const chunks = (await readSse(await post(server.url + '/v1/completions', { ...body, stream: true }))).slice(0, -1).map((f) => frameJson(f));
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(whole);
  });
});

describe('a generation that fails after its first byte', () => {
  /** A fixture whose forward pass over exactly this many positions fails inside ONNX Runtime. */
  const FAIL_AT = 24;
  let faulty: Engine;
  let server: RunningServer;
  let prompt: string;
  const url = (path: string) => server.url + path;

  beforeAll(async () => {
    faulty = await createEngine({ model: await ensureFixtureModel('tiny', { failAtLength: FAIL_AT }) });
    server = await startServer({ framework: 'koa3', mount: 'prefix' }, { engine: faulty });
    // A 10-token prompt: the prefill and the decode steps up to length 23 stream tokens, the next pass fails.
    const candidates = [' q', ' z', ' k', ' 7'].flatMap((word) => Array.from({ length: 12 }, (_, k) => 'x' + word.repeat(k)));
    for (const candidate of candidates) {
      if ((await faulty.tokenize(candidate)).length === 10) {
        prompt = candidate;
        break;
      }
    }
    expect(prompt, 'a prompt of exactly 10 tokens').toBeDefined();
  });

  afterAll(async () => {
    await server?.close();
    await faulty?.close();
  });

  const STREAMED = FAIL_AT - 10;
  const parameters = { max_new_tokens: 30, do_sample: false };

  it('/generate_stream: the token events, then a TGI error event, and no [DONE]', async () => {
    const res = await post(url('/generate_stream'), { inputs: prompt, parameters });
    expect(res.status).toBe(200);
    const frames = await readSse(res);
    expect(frames).toHaveLength(STREAMED + 1);
    expect(frames.slice(0, -1).every((f) => /^data:\{"index":\d+,"token":/.test(f))).toBe(true);
    expect(frames.at(-1)).toMatch(/^data:\{"error":"Request failed during generation: [^\n]+","error_type":"generation"\}\n\n$/);
  });

  it('/v1/completions stream: the chunks, then an OpenAI error event and [DONE]', async () => {
    const res = await post(url('/v1/completions'), { prompt, max_tokens: 30, temperature: 0, stream: true });
    expect(res.status).toBe(200);
    const frames = await readSse(res);
    expect(frames.at(-1)).toBe(DONE);
    const error = frames.at(-2)!;
    expect(error).toMatch(/^data: \{"error":\{"message":"Request failed during generation: [^\n]+","type":"server_error","param":null,"code":"generation"\}\}\n\n$/);
    expect(frames.slice(0, -2).every((f) => frameJson(f).object === 'text_completion')).toBe(true);
  });

  it('whole answers fail with 424 in the route family\'s shape', async () => {
    const tgiRes = await post(url('/generate'), { inputs: prompt, parameters });
    expect(tgiRes.status).toBe(424);
    expect(await tgiRes.json()).toEqual({ error: expect.stringMatching(/^Request failed during generation: /), error_type: 'generation' });
    const openaiRes = await post(url('/v1/completions'), { prompt, max_tokens: 30, temperature: 0 });
    expect(openaiRes.status).toBe(424);
    expect(await openaiRes.json()).toEqual({
      error: { message: expect.stringMatching(/^Request failed during generation: /), type: 'server_error', param: null, code: 'generation' },
    });
    const metrics = await (await fetch(url('/metrics'))).text();
    expect(metrics).toMatch(/^tgi_request_failure\{err="generation"\} 4$/m);
  });
});
