/**
 * Conformance audits of errors raised before the response starts ("Our decisions" §1–§3): each route
 * family's shape, with a real status also on streaming routes.
 */
import { expect, it } from 'vitest';
import { CHAT, GREEDY, PROMPT, errorOf, expectOpenAIError, expectTgiError, type AuditContext } from './audit-kit.js';
import { getJson, post, postForJson } from './http-client.js';

export function errorAudits({ url, opts }: AuditContext): void {
  it("malformed JSON is a 400 in the route family's shape", async () => {
    for (const path of ['/generate', '/generate_stream', '/']) {
      expectTgiError(await errorOf(await post(url(path), '{"inputs": '), 400), 'invalid_request');
    }
    for (const path of ['/v1/chat/completions', '/v1/completions']) {
      expectOpenAIError(await errorOf(await post(url(path), 'not json'), 400), 'invalid_request_error', 'invalid_request');
    }
  });

  it("an invalid parameter is a 422 with TGI's message, also on streaming routes", async () => {
    const cases: Array<[object, string]> = [
      [{ temperature: 0 }, '`temperature` must be strictly positive'],
      [{ top_k: 0 }, '`top_k` must be strictly positive'],
      [{ max_new_tokens: 0 }, '`max_new_tokens` must be strictly positive'],
      [{ stop: ['a', 'b', 'c', 'd', 'e'] }, '`stop` supports up to 4 stop sequences. Given: 5'],
    ];
    for (const path of ['/generate', '/generate_stream', '/']) {
      for (const [parameters, message] of cases) {
        const res = await post(url(path), { inputs: PROMPT, parameters, stream: path === '/' });
        expectTgiError(await errorOf(res, 422), 'validation', `Input validation error: ${message}`);
      }
    }
    const empty = await post(url('/generate_stream'), { inputs: '', parameters: GREEDY });
    expectTgiError(await errorOf(empty, 422), 'validation', 'Input validation error: `inputs` cannot be empty');
    const inputLength = (await postForJson(url('/tokenize'), { inputs: PROMPT })).json.length;
    const { max_total_tokens: maxTotal } = await getJson(url('/info'));
    const budget = await post(url('/generate'), { inputs: PROMPT, parameters: { max_new_tokens: maxTotal } });
    const message = `\`inputs\` tokens + \`max_new_tokens\` must be <= ${maxTotal}. Given: ${inputLength} \`inputs\` tokens and ${maxTotal} \`max_new_tokens\``;
    expectTgiError(await errorOf(budget, 422), 'validation', `Input validation error: ${message}`);
  });

  it("chat with n:2, or another unsupported value, is a 422 in OpenAI's shape, also when streaming", async () => {
    for (const stream of [false, true]) {
      const res = await post(url('/v1/chat/completions'), { ...CHAT, n: 2, stream });
      expectOpenAIError(await errorOf(res, 422), 'invalid_request_error', 'validation', 'n');
    }
    const suffix = await post(url('/v1/completions'), { prompt: PROMPT, suffix: 'x', stream: true });
    expectOpenAIError(await errorOf(suffix, 422), 'invalid_request_error', 'validation', 'suffix');
    const noMessages = await post(url('/v1/chat/completions'), { max_tokens: 2 });
    expectOpenAIError(await errorOf(noMessages, 422), 'invalid_request_error', 'validation', 'messages');
  });

  it('a wrong method is a 405 JSON with Allow', async () => {
    const get = await fetch(url('/generate'));
    expect(get.headers.get('allow')).toBe('POST');
    expectTgiError(await errorOf(get, 405), 'validation');
    const chat = await fetch(url('/v1/chat/completions'));
    expectOpenAIError(await errorOf(chat, 405), 'invalid_request_error', 'validation');
    for (const path of ['/health', '/info', '/v1/models', '/metrics']) {
      const res = await post(url(path), {});
      expect(res.headers.get('allow'), path).toBe('GET');
      await errorOf(res, 405);
    }
  });

  it('a body over bodyLimit is a 413 JSON, with or without Content-Length', async () => {
    const big = { inputs: 'x'.repeat(opts.bodyLimit), parameters: GREEDY };
    expectTgiError(await errorOf(await post(url('/generate'), big), 413), 'validation');
    const chat = { ...CHAT, messages: [{ role: 'user', content: 'x'.repeat(opts.bodyLimit) }] };
    expectOpenAIError(await errorOf(await post(url('/v1/chat/completions'), chat), 413), 'invalid_request_error', 'validation');
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        const piece = new TextEncoder().encode(JSON.stringify(big));
        for (let i = 0; i < piece.length; i += 256) controller.enqueue(piece.subarray(i, i + 256));
        controller.close();
      },
    });
    const res = await fetch(url('/generate_stream'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chunked,
      duplex: 'half',
    } as RequestInit);
    expectTgiError(await errorOf(res, 413), 'validation');
  });
}
