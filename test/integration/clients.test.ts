/**
 * The official clients against our routes, unchanged: the `openai` SDK on `/v1/*`, and
 * `@huggingface/inference` with `endpointUrl` set to the mount (it posts to `/v1/completions` and
 * `/v1/chat/completions`, protocol.md §6). Greedy requests, so every answer can be compared with
 * what `/generate` and `/v1/chat/completions` give for the same request.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI, { RateLimitError, UnprocessableEntityError } from 'openai';
import { InferenceClient, InferenceClientProviderApiError } from '@huggingface/inference';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { getJson, post, postForJson, sseFrames } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';

const N = 6;
const PROMPT = 'The quick brown fox';
const MESSAGES = [{ role: 'user' as const, content: 'Write a haiku' }];

let engine: Engine;
let server: RunningServer;
/** Greedy answers of our own routes, the reference for every client. */
let generated: string;
let chatContent: string;

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
  server = await startServer({ framework: 'express5', mount: 'prefix' }, { engine });
  generated = (await postForJson(`${server.url}/generate`, { inputs: PROMPT, parameters: { max_new_tokens: N, do_sample: false } })).json
    .generated_text;
  const chat = await postForJson(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: N, temperature: 0 });
  chatContent = chat.json.choices[0].message.content;
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
});

describe('openai SDK', () => {
  const client = () => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0 });

  it('chat.completions.create answers the greedy chat completion', async () => {
    const completion = await client().chat.completions.create({ model: 'tiny', messages: MESSAGES, max_tokens: N, temperature: 0 });
    expect(completion.id).toMatch(/^chatcmpl-/);
    expect(completion.choices[0].message).toMatchObject({ role: 'assistant', content: chatContent });
    expect(completion.choices[0].finish_reason).toBe('length');
    expect(completion.usage?.completion_tokens).toBe(N);
  });

  it('chat.completions.create with stream yields the same text, then usage', async () => {
    const stream = await client().chat.completions.create({
      model: 'tiny',
      messages: MESSAGES,
      max_tokens: N,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      content += chunk.choices[0]?.delta.content ?? '';
    }
    expect(content).toBe(chatContent);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.at(-2)?.choices[0].finish_reason).toBe('length');
    expect(chunks.at(-1)?.usage?.completion_tokens).toBe(N);
  });

  it('chat.completions.stream() assembles the final completion', async () => {
    const runner = client().chat.completions.stream({ model: 'tiny', messages: MESSAGES, max_tokens: N, temperature: 0 });
    const deltas: string[] = [];
    runner.on('content', (delta) => deltas.push(delta));
    const final = await runner.finalChatCompletion();
    expect(final.choices[0].message.content).toBe(chatContent);
    expect(final.choices[0].message.role).toBe('assistant');
    expect(final.choices[0].finish_reason).toBe('length');
    expect(deltas.join('')).toBe(chatContent);
  });

  it('completions.create answers what /generate gives, whole and streamed', async () => {
    const completion = await client().completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: N, temperature: 0 });
    expect(completion.choices[0].text).toBe(generated);
    expect(completion.choices[0].finish_reason).toBe('length');
    const stream = await client().completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: N, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(generated);
  });

  it('a 422 surfaces as UnprocessableEntityError naming the parameter', async () => {
    const error = await client()
      .chat.completions.create({ model: 'tiny', messages: MESSAGES, n: 2 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnprocessableEntityError);
    expect(error).toMatchObject({ status: 422, param: 'n', code: 'validation', type: 'invalid_request_error' });
  });
});

describe('@huggingface/inference with endpointUrl', () => {
  /** Where the client posted, to pin the routes protocol.md §6.1 says it uses. */
  const posted: string[] = [];
  const recordingFetch: typeof fetch = (input, init) => {
    posted.push(String(input));
    return fetch(input, init);
  };
  const hf = (endpointUrl = server.url) => new InferenceClient(undefined, { endpointUrl, fetch: recordingFetch });
  const parameters = { max_new_tokens: N, do_sample: false };

  it('textGeneration posts to /v1/completions and returns the /generate text', async () => {
    posted.length = 0;
    const output = await hf().textGeneration({ model: 'tiny', inputs: PROMPT, parameters });
    expect(output.generated_text).toBe(generated);
    // An endpoint given as `.../v1` reaches the same route.
    const viaV1 = await hf(`${server.url}/v1`).textGeneration({ model: 'tiny', inputs: PROMPT, parameters });
    expect(viaV1.generated_text).toBe(generated);
    expect(posted).toEqual([`${server.url}/v1/completions`, `${server.url}/v1/completions`]);
  });

  it('textGenerationStream yields /v1/completions chunks whose texts make the /generate text', async () => {
    posted.length = 0;
    let text = '';
    for await (const chunk of hf().textGenerationStream({ model: 'tiny', inputs: PROMPT, parameters })) {
      // ≥ 4.13.17 yields the raw completion chunks, not TGI's {token, generated_text} (protocol.md §6.2).
      const { choices } = chunk as unknown as { choices: Array<{ text: string }> };
      text += choices[0]?.text ?? '';
    }
    expect(text).toBe(generated);
    expect(posted).toEqual([`${server.url}/v1/completions`]);
  });

  it('chatCompletion and chatCompletionStream answer the greedy chat completion', async () => {
    posted.length = 0;
    const request = { model: 'tiny', messages: MESSAGES, max_tokens: N, temperature: 0 };
    const whole = await hf().chatCompletion(request);
    expect(whole.choices[0].message.content).toBe(chatContent);
    let content = '';
    for await (const chunk of hf().chatCompletionStream(request)) content += chunk.choices[0]?.delta.content ?? '';
    expect(content).toBe(chatContent);
    expect(posted).toEqual([`${server.url}/v1/chat/completions`, `${server.url}/v1/chat/completions`]);
  });
});

describe('overload through the clients', () => {
  let small: RunningServer;
  let holder: AbortController;

  beforeAll(async () => {
    small = await startServer({ framework: 'koa3', mount: 'prefix' }, { engine, maxConcurrentRequests: 1 });
    // Hold the only permit with a long stream that has started.
    holder = new AbortController();
    const res = await post(
      `${small.url}/generate_stream`,
      { inputs: 'Hi', parameters: { max_new_tokens: 2000 } },
      { signal: holder.signal },
    );
    expect(res.status).toBe(200);
    await sseFrames(res.body!).next();
  });

  afterAll(async () => {
    holder?.abort();
    await small?.close();
  });

  it('openai: a 429 is a RateLimitError with Retry-After, streamed or not', async () => {
    const client = new OpenAI({ baseURL: `${small.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const whole = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, max_tokens: 2 }).catch((e: unknown) => e);
    expect(whole).toBeInstanceOf(RateLimitError);
    expect(whole).toMatchObject({ status: 429, code: 'overloaded', type: 'rate_limit_error', message: '429 Model is overloaded' });
    expect((whole as RateLimitError).headers.get('retry-after')).toBe('1');
    const streamed = await client.completions
      .create({ model: 'tiny', prompt: PROMPT, max_tokens: 2, stream: true })
      .catch((e: unknown) => e);
    expect(streamed).toBeInstanceOf(RateLimitError);
  });

  it('@huggingface/inference: a 429 is a provider error (no retry), with the message', async () => {
    const client = new InferenceClient(undefined, { endpointUrl: small.url });
    const error = await (async () => {
      for await (const _ of client.chatCompletionStream({ model: 'tiny', messages: MESSAGES, max_tokens: 2 })) return null;
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InferenceClientProviderApiError);
    expect((error as Error).message).toBe('Failed to perform inference: Model is overloaded');
    expect((error as InferenceClientProviderApiError).httpResponse.status).toBe(429);
    // The permit was held throughout: the stream that holds it is still being served.
    expect((await getJson(`${small.url}/info`)).in_flight_requests).toBe(1);
  });
});
