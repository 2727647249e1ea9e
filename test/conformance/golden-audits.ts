/**
 * Byte-exact event streams, as audits any server can be run through (our middleware over a local
 * engine, or the router over remote ones). For a greedy request, the expected stream is written out
 * from the whole answer of the same request (`/generate` with details, or a chat completion with
 * logprobs): the token ids, texts and logprobs must be the same, and the framing must be exactly
 * TGI's (`data:{...}`, no `[DONE]`) or OpenAI's (`data: {...}`, then `data: [DONE]`). Only generated
 * ids and timestamps are normalized.
 */
import { beforeAll, expect, it } from 'vitest';
import { frameJson, post, postForJson, readSse } from './http-client.js';

const N = 8;
const SEED = 7;
const PROMPT = 'It was a dark and stormy night';
const CHAT = { messages: [{ role: 'user', content: 'Say something' }], max_tokens: N, temperature: 0 };

interface TgiToken {
  id: number;
  text: string;
  logprob: number;
  special: boolean;
}
interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: unknown[];
}

const tgi = (value: unknown) => `data:${JSON.stringify(value)}\n\n`;
const openai = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
export const DONE = 'data: [DONE]\n\n';

/** Generated ids and timestamps are the only bytes that may differ between two runs. */
function normalize(stream: string): string {
  return stream.replace(/"id":"(chatcmpl|cmpl)-[0-9a-f]{32}"/g, '"id":"$1-ID"').replace(/"created":\d+/g, '"created":0');
}

/**
 * Registers the golden-stream cases; `getBaseUrl` is read when each case runs, so servers may start
 * in `beforeAll`. The server must serve the tiny fixture as `tiny`.
 *
 * @example
 * describe('express5', () => {
 *   let server: RunningServer;
 *   beforeAll(async () => { server = await startServer(variant, { engine }); });
 *   goldenStreamAudits(() => server.url);
 * });
 */
export function goldenStreamAudits(getBaseUrl: () => string): void {
  const url = (path: string) => getBaseUrl() + path;
  let reference: { generated_text: string; details: { tokens: TgiToken[]; top_tokens?: TgiToken[][] } };
  let inputLength: number;

  beforeAll(async () => {
    const parameters = { max_new_tokens: N, do_sample: false, seed: SEED, details: true, top_n_tokens: 2 };
    const { json, res } = await postForJson(url('/generate'), { inputs: PROMPT, parameters });
    reference = json;
    inputLength = Number(res.headers.get('x-prompt-tokens'));
    expect(reference.details.tokens).toHaveLength(N);
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
    const chunk = (text: string, finish: string | null) =>
      openai({ ...head, choices: [{ text, index: 0, logprobs: null, finish_reason: finish }] });
    const tokens = reference.details.tokens;
    const body = tokens
      .slice(0, -1)
      .filter((t) => t.text !== '' && !t.special)
      .map((t) => chunk(t.text, null));
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
    const res = await post(url('/v1/chat/completions'), {
      ...CHAT,
      logprobs: true,
      top_logprobs: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
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
}
