/**
 * Engine faults as clients see them, over real HTTP: a forward pass that fails inside ONNX Runtime
 * fails the requests it carried — a 424 before the response started, an error event after — and
 * the next request is served; `/health` probes its way back to 200, `/metrics` counts the failure
 * as `generation`, and no permit is left behind. A worker thread that dies is replaced while
 * requests get 503.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { eventually, frameJson, post, readSse, metricValue } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { faultModelOptions } from '../support/fault-model.js';

/** The tiny model, built so that any forward pass over exactly 24 positions fails. */
const FAIL_AT = 24;
const PROMPT_TOKENS = 10;
/** The prefill (10 positions) and the decode passes over 11 … 23 positions each yield a token; the next pass fails. */
const TOKENS_BEFORE_FAILURE = FAIL_AT - PROMPT_TOKENS;
const GENERATION_ERROR = /^Request failed during generation: .+/;

let engine: Engine;
let server: RunningServer;
let prompt: string;

async function inFlight(): Promise<number> {
  return ((await (await fetch(`${server.url}/info`)).json()) as { in_flight_requests: number }).in_flight_requests;
}

beforeAll(async () => {
  engine = await createEngine(await faultModelOptions(FAIL_AT));
  server = await startServer({ framework: 'express5', mount: 'root' }, { engine });
  // ' a' is one token of the fixture's byte-level BPE, and 'a' another.
  prompt = 'a' + ' a'.repeat(PROMPT_TOKENS - 1);
  const tokens = await (await post(`${server.url}/tokenize`, { inputs: prompt })).json();
  expect(tokens).toHaveLength(PROMPT_TOKENS);
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
});

/** Long enough to reach the failing pass; greedy, so every run takes the same path. */
const tgiBody = () => ({ inputs: prompt, parameters: { max_new_tokens: 30, do_sample: false } });
const completionBody = (stream: boolean) => ({ prompt, max_tokens: 30, temperature: 0, stream });

describe('a forward pass that fails', () => {
  it("/generate: 424 with TGI's generation error; /health probes back to 200; the next request succeeds", async () => {
    const failuresBefore = await metricValue(server.url, 'tgi_request_failure{err="generation"}');
    const res = await post(`${server.url}/generate`, tgiBody());
    expect(res.status).toBe(424);
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = (await res.json()) as object;
    expect(Object.keys(body)).toEqual(['error', 'error_type']);
    expect(body).toEqual({ error: expect.stringMatching(GENERATION_ERROR), error_type: 'generation' });

    // The last pass failed; /health answers from a one-token probe, which succeeds.
    expect(engine.stats().healthy).toBe(false);
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('');

    const next = await post(`${server.url}/generate`, { inputs: 'Next', parameters: { max_new_tokens: 5, do_sample: false } });
    expect(next.status).toBe(200);
    expect(await next.json()).toEqual({ generated_text: expect.any(String) });
    expect(await metricValue(server.url, 'tgi_request_failure{err="generation"}')).toBe(failuresBefore + 1);
    expect(await inFlight()).toBe(0);
  });

  it("/generate_stream: the tokens before the failure, then TGI's error event, and the stream ends", async () => {
    const res = await post(`${server.url}/generate_stream`, tgiBody());
    expect(res.status).toBe(200);
    const frames = await readSse(res);
    expect(frames).toHaveLength(TOKENS_BEFORE_FAILURE + 1);
    frames.slice(0, -1).forEach((frame, i) => expect(frameJson(frame)).toMatchObject({ index: i + 1, generated_text: null }));
    const last = frames.at(-1)!;
    expect(last).toMatch(/^data:\{"error"/);
    expect(frameJson(last)).toEqual({ error: expect.stringMatching(GENERATION_ERROR), error_type: 'generation' });
    expect(await inFlight()).toBe(0);
  });

  it('/v1/completions streamed: chunks, then an OpenAI error object, then [DONE]', async () => {
    const res = await post(`${server.url}/v1/completions`, completionBody(true));
    expect(res.status).toBe(200);
    const frames = await readSse(res);
    expect(frames.at(-1)).toBe('data: [DONE]\n\n');
    const error = frames.at(-2)!;
    expect(error).toMatch(/^data: \{"error"/);
    expect(frameJson(error)).toEqual({
      error: { message: expect.stringMatching(GENERATION_ERROR), type: 'server_error', param: null, code: 'generation' },
    });
    // One chunk per token with text (tokens that end inside a character have none yet).
    const chunks = frames.slice(0, -2).map((f) => frameJson(f));
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.length).toBeLessThanOrEqual(TOKENS_BEFORE_FAILURE);
    for (const chunk of chunks) expect(chunk).toMatchObject({ object: 'text_completion', choices: [{ finish_reason: null }] });
  });

  it('/v1/completions whole: 424 with the OpenAI error object', async () => {
    const res = await post(`${server.url}/v1/completions`, completionBody(false));
    expect(res.status).toBe(424);
    expect(await res.json()).toEqual({
      error: { message: expect.stringMatching(GENERATION_ERROR), type: 'server_error', param: null, code: 'generation' },
    });
  });

  it('counts every failure as `generation` in /metrics, serves /health, and leaks no permit', async () => {
    expect(await metricValue(server.url, 'tgi_request_failure{err="generation"}')).toBe(4);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect(await inFlight()).toBe(0);
    expect(server.handler.admission.inFlight).toBe(0);
    expect(engine.stats()).toMatchObject({ batchSize: 0, queueSize: 0 });
  });
});

describe('a worker that dies', () => {
  it('is replaced: meanwhile 503 and an unhealthy /health, then served again', async () => {
    const local = await createEngine({ model: await ensureFixtureModel('tiny') });
    const localServer = await startServer({ framework: 'express5', mount: 'root' }, { engine: local });
    try {
      const body = { inputs: 'Again', parameters: { max_new_tokens: 3, do_sample: false } };
      expect((await post(`${localServer.url}/generate`, body)).status).toBe(200);
      // Stands in for the worker thread dying; done idle, as terminating it inside ONNX Runtime's
      // native run() can take the process down (see engine-faults.test.ts).
      await (local as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();

      const during = await post(`${localServer.url}/generate`, body);
      expect(during.status).toBe(503);
      expect(during.headers.get('retry-after')).toBe('1');
      expect(await during.json()).toEqual({ error: expect.stringMatching(/restart/), error_type: 'unavailable' });
      const health = await fetch(`${localServer.url}/health`);
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ error: 'unhealthy', error_type: 'healthcheck' });

      expect(await eventually(async () => (await fetch(`${localServer.url}/health`)).status === 200, 20_000, 100)).toBe(true);
      const after = await post(`${localServer.url}/generate`, body);
      expect(after.status).toBe(200);
      expect(await after.json()).toEqual({ generated_text: expect.any(String) });
      expect(localServer.handler.admission.inFlight).toBe(0);
    } finally {
      await localServer.close();
      await local.close();
    }
  });
});
