/**
 * Conformance audits of the OpenAI routes (protocol.md "Our decisions" §4, §3): chat completions and
 * completions, whole and streamed, and `/v1/models`.
 */
import { expect, it } from 'vitest';
import { CHAT, N, PROMPT, expectSseHeaders, type AuditContext } from './audit-kit.js';
import { frameJson, post, postForJson, readSse } from './http-client.js';

export function openaiAudits({ url, opts, reference }: AuditContext): void {
  it('POST /v1/chat/completions answers a chat.completion', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { json, res } = await postForJson(url('/v1/chat/completions'), CHAT);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(json.id).toMatch(/^chatcmpl-\w+$/);
    expect(json).toMatchObject({ object: 'chat.completion', model: opts.modelId });
    expect(json.created).toBeGreaterThanOrEqual(before);
    expect(json.choices).toHaveLength(1);
    const [choice] = json.choices;
    expect(choice).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    expect(choice.message).toEqual({ role: 'assistant', content: expect.any(String), refusal: null });
    const { prompt_tokens, completion_tokens, total_tokens } = json.usage;
    expect(completion_tokens).toBe(N);
    expect(total_tokens).toBe(prompt_tokens + completion_tokens);
    const again = (await postForJson(url('/v1/chat/completions'), { ...CHAT, model: 'my-model' })).json;
    expect(again.model).toBe('my-model');
    expect(again.id).not.toBe(json.id);
    expect(again.choices[0].message.content).toBe(choice.message.content);
  });

  it('POST /v1/chat/completions streams chunks with one id, the role first, finish_reason, [DONE]', async () => {
    const whole = (await postForJson(url('/v1/chat/completions'), CHAT)).json;
    const res = await post(url('/v1/chat/completions'), { ...CHAT, stream: true });
    expectSseHeaders(res);
    const frames = await readSse(res);
    expect(frames.at(-1)).toBe('data: [DONE]\n\n');
    const chunks = frames.slice(0, -1).map((f) => {
      expect(f).toMatch(/^data: \{.*\}\n\n$/s);
      return frameJson(f);
    });
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0].id).toMatch(/^chatcmpl-\w+$/);
    expect(new Set(chunks.map((c) => c.created)).size).toBe(1);
    for (const chunk of chunks) {
      expect(chunk).toMatchObject({ object: 'chat.completion.chunk', model: opts.modelId });
      expect('usage' in chunk).toBe(false);
      expect(chunk.choices).toHaveLength(1);
    }
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.slice(1).every((c) => !('role' in c.choices[0].delta))).toBe(true);
    expect(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(chunks.at(-1).choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: 'length' });
    const content = chunks.map((c) => c.choices[0].delta.content ?? '').join('');
    expect(content).toBe(whole.choices[0].message.content);
  });

  it('POST /v1/chat/completions with stream_options.include_usage ends with a usage chunk', async () => {
    const whole = (await postForJson(url('/v1/chat/completions'), CHAT)).json;
    const res = await post(url('/v1/chat/completions'), { ...CHAT, stream: true, stream_options: { include_usage: true } });
    const frames = await readSse(res);
    expect(frames.at(-1)).toBe('data: [DONE]\n\n');
    const chunks = frames.slice(0, -1).map((f) => frameJson(f));
    const usage = chunks.at(-1);
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual(whole.usage);
    expect(usage.id).toBe(chunks[0].id);
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.at(-2).choices[0].finish_reason).toBe('length');
  });

  it('POST /v1/chat/completions accepts what the openai SDK sends: stop as a string, top_p 1, n 1', async () => {
    const { json } = await postForJson(url('/v1/chat/completions'), { ...CHAT, stop: 'zzzz', top_p: 1, n: 1, max_completion_tokens: 2 });
    expect(json.usage.completion_tokens).toBe(2);
  });

  it('POST /v1/completions answers a text_completion equal to /generate', async () => {
    const ref = await reference();
    const { json } = await postForJson(url('/v1/completions'), { prompt: PROMPT, max_tokens: N, temperature: 0 });
    expect(json.id).toMatch(/^cmpl-\w+$/);
    expect(json).toMatchObject({ object: 'text_completion', model: opts.modelId });
    expect(json.choices).toEqual([{ text: ref.generated_text, index: 0, logprobs: null, finish_reason: 'length' }]);
    expect(json.usage.completion_tokens).toBe(N);
  });

  it('POST /v1/completions streams text_completion chunks and [DONE]', async () => {
    const ref = await reference();
    const res = await post(url('/v1/completions'), { prompt: PROMPT, max_tokens: N, temperature: 0, stream: true });
    expectSseHeaders(res);
    const frames = await readSse(res);
    expect(frames.at(-1)).toBe('data: [DONE]\n\n');
    const chunks = frames.slice(0, -1).map((f) => frameJson(f));
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.object === 'text_completion')).toBe(true);
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(ref.generated_text);
    expect(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(chunks.at(-1).choices[0].finish_reason).toBe('length');
  });

  it('GET /v1/models lists the model', async () => {
    const res = await fetch(url('/v1/models'));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      object: 'list',
      data: [{ id: opts.modelId, object: 'model', created: 0, owned_by: expect.any(String) }],
    });
  });
}
