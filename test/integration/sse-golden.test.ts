/**
 * Byte-exact event streams (test/conformance/golden-audits.ts) from our middleware over a local
 * engine, in two adapter variants; and the streams of a generation that stops inside a character or
 * fails after its first byte.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { DONE, goldenStreamAudits } from '../conformance/golden-audits.js';
import { frameJson, post, postForJson, readSse } from '../conformance/http-client.js';
import { startServer, variantName, type RunningServer, type ServerVariant } from '../conformance/servers.js';
import { faultModelOptions } from '../support/fault-model.js';

interface TgiToken {
  id: number;
  text: string;
  logprob: number;
  special: boolean;
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
    beforeAll(async () => {
      server = await startServer(variant, { engine });
    });
    afterAll(async () => {
      await server?.close();
    });
    goldenStreamAudits(() => server.url);
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
    const probe = await postForJson(server.url + '/generate', {
      inputs: 'Hello',
      parameters: { max_new_tokens: 60, do_sample: false, details: true },
    });
    const tokens: TgiToken[] = probe.json.details.tokens;
    const stopAt = tokens.findIndex((t) => t.text === '' && !t.special) + 1;
    expect(stopAt, 'the probe found a token that ends inside a character').toBeGreaterThan(0);
    const parameters = { max_new_tokens: stopAt, do_sample: false };
    const whole = (await postForJson(server.url + '/generate', { inputs: 'Hello', parameters })).json.generated_text as string;

    const events = (await readSse(await post(server.url + '/generate_stream', { inputs: 'Hello', parameters }))).map((f) => frameJson(f));
    expect(events.at(-1).generated_text).toBe(whole);
    expect(events.map((e) => e.token.text).join('')).toBe(whole);

    const body = { prompt: 'Hello', max_tokens: stopAt, temperature: 0 };
    const chunks = (await readSse(await post(server.url + '/v1/completions', { ...body, stream: true })))
      .slice(0, -1)
      .map((f) => frameJson(f));
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
    faulty = await createEngine(await faultModelOptions(FAIL_AT));
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
    expect(error).toMatch(
      /^data: \{"error":\{"message":"Request failed during generation: [^\n]+","type":"server_error","param":null,"code":"generation"\}\}\n\n$/,
    );
    expect(frames.slice(0, -2).every((f) => frameJson(f).object === 'text_completion')).toBe(true);
  });

  it("whole answers fail with 424 in the route family's shape", async () => {
    const tgiRes = await post(url('/generate'), { inputs: prompt, parameters });
    expect(tgiRes.status).toBe(424);
    expect(await tgiRes.json()).toEqual({ error: expect.stringMatching(/^Request failed during generation: /), error_type: 'generation' });
    const openaiRes = await post(url('/v1/completions'), { prompt, max_tokens: 30, temperature: 0 });
    expect(openaiRes.status).toBe(424);
    expect(await openaiRes.json()).toEqual({
      error: {
        message: expect.stringMatching(/^Request failed during generation: /),
        type: 'server_error',
        param: null,
        code: 'generation',
      },
    });
    const metrics = await (await fetch(url('/metrics'))).text();
    expect(metrics).toMatch(/^tgi_request_failure\{err="generation"\} 4$/m);
  });
});
