/**
 * Conformance audits of TGI's routes (protocol.md §1): `/generate`, `/generate_stream`, `POST /`,
 * `/tokenize`, `/info`, `/health`, `/metrics`.
 */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { GREEDY, N, PROMPT, TGI_TOKEN_KEYS, expectSseHeaders, type AuditContext } from './audit-kit.js';
import { frameJson, getJson, post, postForJson, readSse } from './http-client.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function tgiAudits({ url, opts, reference }: AuditContext): void {
  it('POST /generate answers JSON with generated_text only, and TGI timing headers', async () => {
    const { json, res } = await postForJson(url('/generate'), { inputs: PROMPT, parameters: GREEDY });
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(Object.keys(json)).toEqual(['generated_text']);
    expect(json.generated_text).toBe((await reference()).generated_text);
    expect(res.headers.get('x-compute-type')).toBe('cpu');
    expect(res.headers.get('x-compute-time')).toMatch(/^\d+\.\d{3}$/);
    for (const name of ['x-queue-time', 'x-inference-time', 'x-time-per-token']) expect(res.headers.get(name), name).toMatch(/^\d+$/);
    expect(res.headers.get('x-generated-tokens')).toBe(String(N));
    const tokens = (await postForJson(url('/tokenize'), { inputs: PROMPT })).json;
    expect(res.headers.get('x-prompt-tokens')).toBe(String(tokens.length));
  });

  it('POST /generate with details:true adds TGI details', async () => {
    const json = await reference();
    expect(Object.keys(json)).toEqual(['generated_text', 'details']);
    expect(Object.keys(json.details)).toEqual(['finish_reason', 'generated_tokens', 'seed', 'prefill', 'tokens']);
    expect(json.details).toMatchObject({ finish_reason: 'length', generated_tokens: N, prefill: [] });
    expect(json.details.seed === null || Number.isSafeInteger(json.details.seed)).toBe(true);
    expect(json.details.tokens).toHaveLength(N);
    for (const token of json.details.tokens) {
      expect(Object.keys(token)).toEqual(TGI_TOKEN_KEYS);
      expect(token.logprob).toBeLessThanOrEqual(0);
    }
    expect(json.details.tokens.map((t: { text: string }) => t.text).join('')).toBe(json.generated_text);
  });

  it('POST /generate reports prefill with decoder_input_details and top_tokens with top_n_tokens', async () => {
    const parameters = { ...GREEDY, decoder_input_details: true, details: true, top_n_tokens: 2 };
    const { json } = await postForJson(url('/generate'), { inputs: PROMPT, parameters });
    const { details } = json;
    expect(details.prefill.length).toBeGreaterThan(1);
    expect(Object.keys(details.prefill[0])).toEqual(['id', 'text', 'logprob']);
    expect(details.prefill[0].logprob).toBeNull();
    expect(details.top_tokens).toHaveLength(N);
    for (const [i, step] of details.top_tokens.entries()) {
      expect(step).toHaveLength(2);
      expect(step[0].id).toBe(details.tokens[i].id); // greedy picks the most likely token
    }
  });

  it('POST /generate with return_full_text prepends the prompt', async () => {
    const { json } = await postForJson(url('/generate'), { inputs: PROMPT, parameters: { ...GREEDY, return_full_text: true } });
    expect(json.generated_text).toBe(PROMPT + (await reference()).generated_text);
  });

  it('POST /generate_stream sends one data:{...} event per token, no [DONE]', async () => {
    const ref = await reference();
    const res = await post(url('/generate_stream'), { inputs: PROMPT, parameters: GREEDY });
    expectSseHeaders(res);
    const frames = await readSse(res);
    expect(frames).toHaveLength(N);
    frames.forEach((frame, i) => {
      expect(frame).toMatch(/^data:\{.*\}\n\n$/s);
      const event = frameJson(frame);
      expect(Object.keys(event)).toEqual(['index', 'token', 'generated_text', 'details']);
      expect(event.index).toBe(i + 1);
      expect(event.token).toEqual(ref.details.tokens[i]);
      expect(event.generated_text).toBe(i === N - 1 ? ref.generated_text : null);
      expect(event.details).toBeNull();
    });
  });

  it('POST /generate_stream with details:true puts stream details on the last event only', async () => {
    const ref = await reference();
    const inputLength = (await postForJson(url('/tokenize'), { inputs: PROMPT })).json.length;
    const res = await post(url('/generate_stream'), { inputs: PROMPT, parameters: { ...GREEDY, details: true, top_n_tokens: 2 } });
    const events = (await readSse(res)).map((f) => frameJson(f));
    expect(events.slice(0, -1).every((e) => e.details === null)).toBe(true);
    expect(events.every((e) => Array.isArray(e.top_tokens) && e.top_tokens.length === 2)).toBe(true);
    expect(Object.keys(events[0])).toEqual(['index', 'token', 'top_tokens', 'generated_text', 'details']);
    const { details } = events.at(-1);
    expect(Object.keys(details)).toEqual(['finish_reason', 'generated_tokens', 'seed', 'input_length']);
    expect(details).toMatchObject({ finish_reason: 'length', generated_tokens: N, input_length: inputLength });
    expect(events.at(-1).generated_text).toBe(ref.generated_text);
  });

  it('POST / (TGI compat) answers an array with the prompt prepended by default', async () => {
    const ref = await reference();
    const whole = await postForJson(url('/'), { inputs: PROMPT, parameters: GREEDY });
    expect(whole.json).toEqual([{ generated_text: PROMPT + ref.generated_text }]);
    const bare = await postForJson(url('/'), { inputs: PROMPT, parameters: { ...GREEDY, return_full_text: false } });
    expect(bare.json).toEqual([{ generated_text: ref.generated_text }]);
  });

  it('POST / with stream:true answers the /generate_stream events', async () => {
    const ref = await reference();
    const res = await post(url('/'), { inputs: PROMPT, parameters: GREEDY, stream: true });
    expectSseHeaders(res);
    const events = (await readSse(res)).map((f) => frameJson(f));
    expect(events.map((e) => e.token)).toEqual(ref.details.tokens);
    expect(events.at(-1).generated_text).toBe(PROMPT + ref.generated_text);
  });

  it('GET /info reports TGI fields and in_flight_requests', async () => {
    const info = await getJson(url('/info'));
    expect(info).toMatchObject({
      model_id: opts.modelId,
      max_concurrent_requests: opts.maxConcurrentRequests,
      in_flight_requests: 0,
    });
    for (const key of ['model_sha', 'model_pipeline_tag', 'router', 'sha', 'docker_label']) expect(info).toHaveProperty(key);
    expect(info.version).toBe(PACKAGE_VERSION);
    for (const key of [
      'max_best_of',
      'max_stop_sequences',
      'max_input_tokens',
      'max_total_tokens',
      'validation_workers',
      'max_client_batch_size',
    ]) {
      expect(Number.isSafeInteger(info[key]), key).toBe(true);
    }
    expect(info.max_input_tokens).toBeLessThan(info.max_total_tokens);
  });

  it('GET /health answers 200 with an empty body', async () => {
    const res = await fetch(url('/health'));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });

  it('POST /tokenize answers TGI tokens with character offsets', async () => {
    const { json } = await postForJson(url('/tokenize'), { inputs: PROMPT });
    expect(json.length).toBeGreaterThan(1);
    let offset = 0;
    for (const token of json) {
      expect(Object.keys(token)).toEqual(['id', 'text', 'start', 'stop']);
      expect(token.start).toBe(offset);
      expect(PROMPT.slice(token.start, token.stop)).toBe(token.text);
      offset = token.stop;
    }
    expect(offset).toBe(PROMPT.length);
  });

  it('GET /metrics answers Prometheus text with TGI counters', async () => {
    await post(url('/generate'), { inputs: PROMPT, parameters: { temperature: 0 } });
    await post(url('/generate'), { inputs: PROMPT, parameters: { max_new_tokens: 2 } });
    const res = await fetch(url('/metrics'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain('# TYPE tgi_request_count counter');
    expect(text).toMatch(/^tgi_request_count [1-9]\d*$/m);
    expect(text).toMatch(/^tgi_request_success [1-9]\d*$/m);
    expect(text).toMatch(/^tgi_request_failure\{err="validation"\} [1-9]\d*$/m);
    for (const gauge of ['tgi_queue_size', 'tgi_batch_current_size']) expect(text).toMatch(new RegExp(`^${gauge} \\d+$`, 'm'));
    // Forward passes of the shared engine, by method.
    for (const method of opts.forwardPasses === false ? [] : ['prefill', 'decode']) {
      expect(text).toMatch(new RegExp(`^tgi_batch_inference_count\\{method="${method}"\\} [1-9]\\d*$`, 'm'));
      expect(text).toMatch(new RegExp(`^tgi_batch_forward_duration_count\\{method="${method}"\\} [1-9]\\d*$`, 'm'));
    }
  });
}
