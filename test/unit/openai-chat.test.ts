import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { type InferenceError, ValidationError } from '../../src/errors.js';
import { ChatChunkEncoder, chatCompletionResponse, parseChatRequest } from '../../src/protocol/openai-chat.js';
import type { GenerationEvent } from '../../src/types.js';
import { endOf, eosSequence, lengthSequence } from '../fixtures/sse/events.js';

const golden = (name: string) => readFileSync(new URL(`../fixtures/sse/${name}`, import.meta.url), 'utf8');
const identity = { id: 'chatcmpl-test', created: 1_700_000_000, model: 'tiny' };
const user = [{ role: 'user', content: 'Hi' }];

function encode(events: GenerationEvent[], opts: { includeUsage: boolean; logprobs: boolean }): string {
  const encoder = new ChatChunkEncoder({ ...identity, ...opts });
  return events.flatMap((e) => encoder.push(e)).join('');
}

/** A real openai client whose every request is answered with `body`. */
function clientAnswering(body: string): OpenAI {
  return new OpenAI({
    apiKey: 'test',
    baseURL: 'http://127.0.0.1:1/v1',
    maxRetries: 0,
    fetch: async () => new Response(body, { headers: { 'content-type': 'text/event-stream' } }),
  });
}

describe('ChatChunkEncoder golden streams', () => {
  it('sends role first, one chunk per text token, delta {} with finish_reason, then [DONE]; eos maps to stop', () => {
    expect(encode(eosSequence(), { includeUsage: false, logprobs: false })).toBe(golden('chat-stream.sse'));
  });

  it('with include_usage: usage null on every chunk, then a choices:[] usage chunk', () => {
    expect(encode(eosSequence(), { includeUsage: true, logprobs: false })).toBe(golden('chat-stream-usage.sse'));
  });

  it('with logprobs: OpenAI layout with UTF-8 bytes and top_logprobs; length stays length', () => {
    expect(encode(lengthSequence({ topTokens: true }), { includeUsage: false, logprobs: true })).toBe(golden('chat-stream-logprobs.sse'));
  });

  it('sends the role chunk even when the first event is the end', () => {
    const end = endOf(eosSequence());
    const frames = new ChatChunkEncoder({ ...identity, includeUsage: false, logprobs: false }).push(end);
    expect(frames).toHaveLength(3);
    expect(frames[0]).toContain('"delta":{"role":"assistant","content":""}');
    expect(frames[1]).toContain('"finish_reason":"stop"');
    expect(frames[2]).toBe('data: [DONE]\n\n');
  });

  it('sends no chunk for a token with empty text, and refuses events after the end', () => {
    const encoder = new ChatChunkEncoder({ ...identity, includeUsage: false, logprobs: false });
    encoder.push({ type: 'token', index: 1, token: { id: 1, text: 'a', logprob: -1, special: false } });
    expect(encoder.push({ type: 'token', index: 2, token: { id: 2, text: '', logprob: -1, special: false } })).toEqual([]);
    encoder.push(endOf(eosSequence()));
    expect(() => encoder.push(endOf(eosSequence()))).toThrow(/after the end event/);
  });
});

/** A chat model's stream: one event per text, then the special eos. */
function toolSequence(texts: string[]): GenerationEvent[] {
  const tokens = texts.map((text, i) => ({ id: 40 + i, text, logprob: -0.5, special: false }));
  const eos = { id: 2, text: '</s>', logprob: -0.25, special: true };
  const events: GenerationEvent[] = tokens.map((token, i) => ({ type: 'token', index: i + 1, token }));
  events.push({
    type: 'end',
    index: tokens.length + 1,
    token: eos,
    generatedText: texts.join(''),
    finishReason: 'eos_token',
    generatedTokens: tokens.length + 1,
    seed: 1,
    inputLength: 9,
    prefill: [],
    tokens: [...tokens, eos],
    topTokensPerStep: [],
    timings: { queueMs: 1, inferenceMs: 2, firstTokenMs: 1 },
  });
  return events;
}

/** Text, then two calls; `<tool_call>` is one token, as in vocabularies that have it. */
const TEXT_THEN_TWO_CALLS = [
  'Let',
  ' me',
  ' check',
  '.',
  ' <tool_call>',
  '\n{"name": "get_weather", ',
  '"arguments": {"city": "Paris"',
  ', "unit": "c"}}\n',
  '</tool_call>',
  '\n<tool_call>\n{"name": "get_time", "arguments": {}}',
  '\n</tool_call>',
];
/** One call whose opening and closing tags are split across tokens. */
const SPLIT_TAG = ['<tool', '_call', '>\n{"name": "get_time", "arguments": ', '{', '}}\n</tool_', 'call>'];

/** Random call ids as `call_1`, `call_2`, ... in order of appearance. */
function normaliseIds(text: string): string {
  const ids = new Map<string, string>();
  return text.replace(/call_[A-Za-z0-9]{24}/g, (id) => {
    if (!ids.has(id)) ids.set(id, `call_${ids.size + 1}`);
    return ids.get(id)!;
  });
}

function encodeTools(events: GenerationEvent[], opts: { logprobs?: boolean; stop?: string[] } = {}): string[] {
  const encoder = new ChatChunkEncoder({
    ...identity,
    includeUsage: false,
    logprobs: opts.logprobs ?? false,
    stop: opts.stop,
    toolCalls: true,
  });
  return events.flatMap((e) => encoder.push(e));
}

describe('tool calls in the chat stream', () => {
  it('golden: text, then two calls: content deltas, then per call one head delta and argument fragments; finish_reason tool_calls', () => {
    expect(normaliseIds(encodeTools(toolSequence(TEXT_THEN_TWO_CALLS)).join(''))).toBe(golden('chat-stream-tool-calls.sse'));
  });

  it('golden: a call whose tags split across tokens sends nothing until its name is known, and no tag text ever', () => {
    expect(normaliseIds(encodeTools(toolSequence(SPLIT_TAG)).join(''))).toBe(golden('chat-stream-tool-call-split-tag.sse'));
  });

  it('ids are call_ and 24 letters or digits, one per call', () => {
    const ids = encodeTools(toolSequence(TEXT_THEN_TWO_CALLS))
      .join('')
      .match(/"id":"call_[^"]*"/g);
    expect(ids).toHaveLength(2);
    for (const id of ids!) expect(id).toMatch(/^"id":"call_[A-Za-z0-9]{24}"$/);
    expect(ids![0]).not.toBe(ids![1]);
  });

  it('with logprobs, every text token reports its logprob exactly once, held back or not', () => {
    const frames = encodeTools(toolSequence(SPLIT_TAG), { logprobs: true }).filter((f) => f !== 'data: [DONE]\n\n');
    const logprobs = frames.flatMap((f) => (JSON.parse(f.slice('data: '.length)).choices[0].logprobs?.content ?? []) as unknown[]);
    expect(logprobs).toHaveLength(SPLIT_TAG.length);
  });

  it('text without calls streams unchanged, finish_reason stop; a call cut by the token budget ends with length', () => {
    const plain = toolSequence(['Hello', ' <tool', 'box>']);
    const frames = encodeTools(plain).map((f) => (f.startsWith('data: {') ? JSON.parse(f.slice(6)).choices[0] : null));
    expect(frames.map((c) => c?.delta.content ?? '').join('')).toBe('Hello <toolbox>');
    expect(frames.at(-2).finish_reason).toBe('stop');
    const cut = toolSequence(['<tool_call>\n{"name": "get_time", "arguments": {"a"']).map((e) =>
      e.type === 'end' ? { ...e, finishReason: 'length' as const } : e,
    );
    expect(encodeTools(cut).at(-2)).toContain('"finish_reason":"length"');
  });

  it('the stop string is cut before the text is read: it never becomes content after a call', () => {
    const events = toolSequence(['Hi', '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', ' END']).map((e) =>
      e.type === 'end' ? { ...e, finishReason: 'stop_sequence' as const } : e,
    );
    const chunks = encodeTools(events, { stop: [' END'] })
      .filter((f) => f !== 'data: [DONE]\n\n')
      .map((f) => JSON.parse(f.slice('data: '.length)).choices[0]);
    expect(chunks.map((c) => c.delta.content ?? '').join('')).toBe('Hi');
    expect(chunks.filter((c) => c.delta.tool_calls).map((c) => c.delta.tool_calls[0].function)).toEqual([
      { name: 'f', arguments: '' },
      { arguments: '{}' },
    ]);
    expect(chunks.at(-1).finish_reason).toBe('tool_calls');
  });

  it("the openai SDK's stream helper assembles the golden stream into a message with tool_calls", async () => {
    const final = await clientAnswering(golden('chat-stream-tool-calls.sse'))
      .chat.completions.stream({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }] })
      .finalChatCompletion();
    const [choice] = final.choices;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBe('Let me check.');
    expect(choice.message.tool_calls?.map((c) => c.type === 'function' && [c.id, c.function.name, c.function.arguments])).toEqual([
      ['call_1', 'get_weather', '{"city": "Paris", "unit": "c"}'],
      ['call_2', 'get_time', '{}'],
    ]);
  });
});

describe('tool calls in the whole response', () => {
  const whole = (texts: string[]) => chatCompletionResponse(endOf(toolSequence(texts)), { ...identity, logprobs: false, toolCalls: true });

  it('message.tool_calls with call_ ids and arguments as JSON text; content null when there is no text', () => {
    const [choice] = whole(SPLIT_TAG).choices;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toHaveLength(1);
    const [call] = choice.message.tool_calls!;
    expect(call).toEqual({
      id: expect.stringMatching(/^call_[A-Za-z0-9]{24}$/),
      type: 'function',
      function: { name: 'get_time', arguments: '{}' },
    });
  });

  it('text before the calls is the content, as the stream sends it', () => {
    const { message } = whole(TEXT_THEN_TWO_CALLS).choices[0];
    expect(message.content).toBe('Let me check.');
    expect(message.tool_calls?.map((c) => c.function)).toEqual([
      { name: 'get_weather', arguments: '{"city": "Paris", "unit": "c"}' },
      { name: 'get_time', arguments: '{}' },
    ]);
  });

  it('no call: content as generated, no tool_calls field, finish_reason stop', () => {
    const body = whole(['Hello', ' there']);
    expect(body.choices[0].message).toEqual({ role: 'assistant', content: 'Hello there', refusal: null });
    expect(body.choices[0].finish_reason).toBe('stop');
  });
});

describe('the openai SDK reads our chat stream', () => {
  it('iterates the chunks of create({ stream: true }) and stops at [DONE]', async () => {
    const client = clientAnswering(encode(eosSequence(), { includeUsage: true, logprobs: false }));
    const stream = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? null)).toEqual(['', ' Hi', '!', null, null]);
    expect(new Set(chunks.map((c) => c.id))).toEqual(new Set(['chatcmpl-test']));
    expect(chunks.at(-1)?.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
  });

  it('assembles a final completion with .stream().finalChatCompletion(), logprobs included', async () => {
    const client = clientAnswering(encode(lengthSequence({ topTokens: true }), { includeUsage: true, logprobs: true }));
    const final = await client.chat.completions
      .stream({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], logprobs: true, top_logprobs: 2 })
      .finalChatCompletion();
    expect(final.id).toBe('chatcmpl-test');
    expect(final.choices[0].message.role).toBe('assistant');
    expect(final.choices[0].message.content).toBe(' Hello café');
    expect(final.choices[0].finish_reason).toBe('length');
    expect(final.choices[0].logprobs?.content?.map((l) => l.token)).toEqual([' Hello', ' caf', 'é']);
    expect(final.usage?.total_tokens).toBe(7);
  });
});

describe('presence_penalty', () => {
  it("passes OpenAI's presence penalty on to the engine", () => {
    const parsed = parseChatRequest({ messages: [{ role: 'user', content: 'Hi' }], presence_penalty: 0.5 });
    expect(parsed.parameters.presence_penalty).toBe(0.5);
    expect(
      parseChatRequest({ messages: [{ role: 'user', content: 'Hi' }], presence_penalty: 0 }).parameters.presence_penalty,
    ).toBeUndefined();
  });
});

describe('stop strings (OpenAI leaves them out)', () => {
  const stopped = (events: GenerationEvent[]) =>
    events.map((e) => (e.type === 'end' ? { ...e, finishReason: 'stop_sequence' as const } : e));

  it('streams the content without the stop string and never sends a part of it', () => {
    const encoder = new ChatChunkEncoder({ ...identity, includeUsage: false, logprobs: false, stop: ['!'] });
    const deltas = stopped(eosSequence())
      .flatMap((e) => encoder.push(e))
      .filter((f) => f !== 'data: [DONE]\n\n')
      .map((f) => JSON.parse(f.slice('data: '.length)).choices[0].delta.content);
    expect(deltas.join('')).toBe(' Hi');
  });

  it('releases held-back text when the generation ends for another reason', () => {
    const encoder = new ChatChunkEncoder({ ...identity, includeUsage: false, logprobs: false, stop: ['! no'] });
    const content = eosSequence()
      .flatMap((e) => encoder.push(e))
      .filter((f) => f !== 'data: [DONE]\n\n')
      .map((f) => JSON.parse(f.slice('data: '.length)).choices[0].delta.content ?? '')
      .join('');
    expect(content).toBe(' Hi!');
  });

  it('cuts the whole content before the stop string; TGI-style eos and length keep everything', () => {
    const end = endOf(stopped(eosSequence()));
    expect(chatCompletionResponse(end, { ...identity, logprobs: false, stop: ['!'] }).choices[0].message.content).toBe(' Hi');
    expect(chatCompletionResponse(endOf(eosSequence()), { ...identity, logprobs: false, stop: ['!'] }).choices[0].message.content).toBe(
      ' Hi!',
    );
  });
});

describe('chatCompletionResponse', () => {
  it('is an OpenAI chat.completion with usage', () => {
    const body = chatCompletionResponse(endOf(eosSequence()), { ...identity, logprobs: false });
    expect(JSON.stringify(body)).toBe(
      '{"id":"chatcmpl-test","object":"chat.completion","created":1700000000,"model":"tiny","choices":[{"index":0,' +
        '"message":{"role":"assistant","content":" Hi!","refusal":null},"logprobs":null,"finish_reason":"stop"}],' +
        '"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}',
    );
  });

  it('lists logprobs of every non-special token with its alternatives', () => {
    const body = chatCompletionResponse(endOf(eosSequence()), { ...identity, logprobs: true });
    expect(body.choices[0].logprobs).toEqual({
      content: [
        { token: ' Hi', logprob: -0.5, bytes: [32, 72, 105], top_logprobs: [] },
        { token: '!', logprob: -0.75, bytes: [33], top_logprobs: [] },
      ],
      refusal: null,
    });
    const withTop = chatCompletionResponse(endOf(lengthSequence({ details: true, topTokens: true })), { ...identity, logprobs: true });
    expect(withTop.choices[0].logprobs?.content[1].top_logprobs.map((t) => t.token)).toEqual([' caf', ' tea']);
  });
});

describe('parseChatRequest', () => {
  const reject = (body: unknown, limits = {}) => {
    try {
      parseChatRequest(body, limits);
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      return err as InferenceError;
    }
    throw new Error('expected a ValidationError');
  };

  it('defaults to OpenAI sampling (temperature 1), no stream, no usage, no logprobs', () => {
    expect(parseChatRequest({ messages: user })).toEqual({
      messages: user,
      toolCalls: false,
      parameters: { do_sample: true },
      stream: false,
      includeUsage: false,
      logprobs: false,
      topLogprobs: 0,
    });
  });

  it('maps the OpenAI sampling fields to TGI parameters', () => {
    const parsed = parseChatRequest({
      model: 'tiny',
      messages: user,
      temperature: 0.7,
      top_p: 0.9,
      max_tokens: 20,
      stop: ['\n', 'END'],
      seed: 3,
      frequency_penalty: 0.5,
      presence_penalty: 0,
      n: 1,
      logit_bias: {},
      user: 'ignored',
    });
    expect(parsed.model).toBe('tiny');
    expect(parsed.parameters).toEqual({
      do_sample: true,
      temperature: 0.7,
      top_p: 0.9,
      max_new_tokens: 20,
      stop: ['\n', 'END'],
      seed: 3,
      frequency_penalty: 0.5,
    });
  });

  it('makes temperature 0 and top_p 0 greedy, dropping the warpers but keeping the penalties', () => {
    const greedy = { do_sample: false, repetition_penalty: 1.1 };
    expect(parseChatRequest({ messages: user, temperature: 0, top_p: 0.5, top_k: 4, repetition_penalty: 1.1 }).parameters).toEqual(greedy);
    expect(parseChatRequest({ messages: user, top_p: 0, repetition_penalty: 1.1 }).parameters).toEqual(greedy);
  });

  it('treats top_p 1 as off, a stop string as one sequence, and max_completion_tokens over max_tokens', () => {
    expect(parseChatRequest({ messages: user, top_p: 1, stop: 'x', max_tokens: 9, max_completion_tokens: 4 }).parameters).toEqual({
      do_sample: true,
      stop: ['x'],
      max_new_tokens: 4,
    });
  });

  it('treats null fields as absent, as OpenAI clients send them', () => {
    expect(parseChatRequest({ messages: user, temperature: null, stop: null, n: null, seed: null }).parameters).toEqual({
      do_sample: true,
    });
  });

  it('passes TGI extensions (top_k, typical_p, repetition_penalty, truncate, watermark) through', () => {
    const params = { top_k: 5, typical_p: 0.5, repetition_penalty: 1.2, truncate: 10, watermark: false };
    expect(parseChatRequest({ messages: user, ...params }).parameters).toEqual({ do_sample: true, ...params });
  });

  it('turns logprobs into details and top_logprobs into top_n_tokens', () => {
    const parsed = parseChatRequest({ messages: user, logprobs: true, top_logprobs: 3 });
    expect(parsed.parameters).toEqual({ do_sample: true, details: true, top_n_tokens: 3 });
    expect([parsed.logprobs, parsed.topLogprobs]).toEqual([true, 3]);
  });

  it('reads stream and stream_options.include_usage', () => {
    const parsed = parseChatRequest({ messages: user, stream: true, stream_options: { include_usage: true } });
    expect([parsed.stream, parsed.includeUsage]).toEqual([true, true]);
  });

  it('reads response_format json_object into a grammar', () => {
    expect(parseChatRequest({ messages: user, response_format: { type: 'json_object' } }).grammar).toEqual({
      type: 'json_schema',
      schema: { type: 'object' },
    });
  });

  it('tools: kept for the template, read back as tool_calls, and the tool choice is the grammar; response_format text is no constraint', () => {
    const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }];
    const parsed = parseChatRequest({ messages: user, tools, tool_choice: 'required', response_format: { type: 'text' } });
    expect(parsed).toMatchObject({ tools, toolCalls: true, grammar: { type: 'structural_tag', atLeastOne: true, stopAfterFirst: false } });
    expect(parsed.toolPrompt).toBeUndefined();
    expect(parseChatRequest({ messages: user, tools, tool_prompt: 'Use f.' }).toolPrompt).toBe('Use f.');
    expect(parseChatRequest({ messages: user, tools, parallel_tool_calls: false }).grammar).toMatchObject({ stopAfterFirst: true });
  });

  it('tool_choice none, or no tools: nothing in the prompt, nothing constrained, nothing parsed', () => {
    const tools = [{ type: 'function', function: { name: 'f' } }];
    for (const body of [
      { messages: user, tools, tool_choice: 'none' },
      { messages: user, tools: [] },
    ]) {
      const parsed = parseChatRequest(body);
      expect([parsed.tools, parsed.toolCalls, parsed.grammar]).toEqual([undefined, false, undefined]);
    }
    // With none, another constraint is fine.
    expect(parseChatRequest({ messages: user, tools, tool_choice: 'none', response_format: { type: 'json_object' } }).grammar).toEqual({
      type: 'json_schema',
      schema: { type: 'object' },
    });
  });

  it('accepts text content parts, null content, earlier tool calls and their results', () => {
    const messages = [
      { role: 'system', content: [{ type: 'text', text: 'Be brief.' }] },
      { role: 'assistant', content: null, tool_calls: [{ id: '1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: { a: 1 } } }] },
      { role: 'tool', content: 'ok', tool_call_id: '1' },
    ];
    expect(parseChatRequest({ messages }).messages).toEqual(messages);
  });

  it.each([
    [{}, 'messages', /missing field `messages`/],
    [{ messages: [] }, 'messages', /non-empty array/],
    [{ messages: 'Hi' }, 'messages', /non-empty array, got a string/],
    [{ messages: ['Hi'] }, 'messages[0]', /must be an object/],
    [{ messages: [{ content: 'Hi' }] }, 'messages[0].role', /role` must be a non-empty string/],
    [{ messages: [{ role: 'user', content: 3 }] }, 'messages[0].content', /string or an array of content parts/],
    [
      { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
      'messages[0].content[0]',
      /text only. Given: "image_url"/,
    ],
    [{ messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'messages[0].content[0].text', /must be a string/],
    [{ messages: user, n: 2 }, 'n', /`n` must be 1.*Given: 2/],
    [{ messages: user, presence_penalty: 2.5 }, 'presence_penalty', /<= 2/],
    [{ messages: user, logit_bias: { '50256': -100 } }, 'logit_bias', /not supported/],
    [{ messages: user, temperature: 2.5 }, 'temperature', /must be >= 0 and <= 2. Given: 2.5/],
    [{ messages: user, temperature: '1' }, 'temperature', /must be a number, got a string/],
    [{ messages: user, top_p: 1.5 }, 'top_p', /<= 1/],
    [{ messages: user, max_tokens: 0 }, 'max_tokens', />= 1/],
    [{ messages: user, max_completion_tokens: 2.5 }, 'max_completion_tokens', /integer/],
    [{ messages: user, stop: [1] }, 'stop', /string or an array of strings/],
    [{ messages: user, seed: -1 }, 'seed', />= 0/],
    [{ messages: user, frequency_penalty: 3 }, 'frequency_penalty', /<= 2/],
    [{ messages: user, top_logprobs: 2 }, 'top_logprobs', /requires `logprobs` to be true/],
    [{ messages: user, logprobs: true, top_logprobs: 21 }, 'top_logprobs', /<= 20/],
    [{ messages: user, logprobs: 'yes' }, 'logprobs', /boolean/],
    [{ messages: user, stream_options: { include_usage: true } }, 'stream_options', /only allowed when `stream` is true/],
    [{ messages: user, stream: true, stream_options: { include_usage: 1 } }, 'stream_options.include_usage', /boolean/],
    [{ messages: user, tools: {} }, 'tools', /must be an array, got an object/],
    [{ messages: user, tools: [{ type: 'function' }] }, 'tools[0].function', /must be an object/],
    [{ messages: user, tool_choice: 'required' }, 'tool_choice', /"required" needs `tools`/],
    [{ messages: user, tool_choice: { type: 'function', function: { name: 'f' } } }, 'tool_choice.function.name', /not in `tools`/],
    [
      {
        messages: user,
        tools: [{ type: 'function', function: { name: 'f' } }],
        tool_choice: { type: 'function', function: { name: 'g' } },
      },
      'tool_choice.function.name',
      /names the function "g", which is not in `tools`/,
    ],
    [
      { messages: user, tools: [{ type: 'function', function: { name: 'f' } }], response_format: { type: 'json_object' } },
      'tools',
      /cannot be combined with `response_format`/,
    ],
    [
      { messages: user, tools: [{ type: 'function', function: { name: 'f' } }], structured_outputs: { regex: 'a+' } },
      'tools',
      /cannot be combined/,
    ],
    [{ messages: user, response_format: { type: 'xml' } }, 'response_format.type', /must be "text", "json_object" or "json_schema"/],
    [{ messages: user, model: 3 }, 'model', /string/],
    [{ messages: [{ role: 'user', content: 'Hi', name: 3 }] }, 'messages[0].name', /must be a string, got a number/],
    [{ messages: [{ role: 'tool', content: 'ok', tool_call_id: {} }] }, 'messages[0].tool_call_id', /must be a string/],
    [{ messages: [{ role: 'assistant', content: null, tool_calls: 'f()' }] }, 'messages[0].tool_calls', /must be an array/],
    [{ messages: [{ role: 'assistant', tool_calls: ['f()'] }] }, 'messages[0].tool_calls[0]', /must be an object, got a string/],
    [{ messages: [{ role: 'assistant', tool_calls: [{ id: '1' }] }] }, 'messages[0].tool_calls[0].function', /must be an object/],
    [
      { messages: [{ role: 'assistant', tool_calls: [{ type: 'custom', function: { name: 'f', arguments: '{}' } }] }] },
      'messages[0].tool_calls[0].type',
      /must be "function"/,
    ],
    [
      { messages: [{ role: 'assistant', tool_calls: [{ function: { name: '', arguments: '{}' } }] }] },
      'messages[0].tool_calls[0].function.name',
      /non-empty string/,
    ],
    [
      { messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: 3 } }] }] },
      'messages[0].tool_calls[0].function.arguments',
      /JSON string \(or an object\), got a number/,
    ],
    [
      { messages: [{ role: 'assistant', tool_calls: [{ id: 3, function: { name: 'f', arguments: '{}' } }] }] },
      'messages[0].tool_calls[0].id',
      /string/,
    ],
    [{ messages: user, top_k: 'x', temperature: 0 }, 'top_k', /must be an integer, got a string/],
    [{ messages: user, typical_p: [], do_sample: false }, 'typical_p', /must be a number/],
    // Out of range is refused even when greedy drops the field: it would be refused when sampling.
    [{ messages: user, typical_p: 5, temperature: 0 }, 'typical_p', /`typical_p` must be > 0 and <= 1. Given: 5/],
    [{ messages: user, typical_p: 0, do_sample: false }, 'typical_p', /must be > 0 and <= 1/],
    [{ messages: user, top_k: 0, temperature: 0 }, 'top_k', /`top_k` must be >= 1 and <= 2147483647. Given: 0/],
    [{ messages: user, top_k: -5, top_p: 0 }, 'top_k', /must be >= 1/],
    [{ messages: user, top_k: 2 ** 40, do_sample: false }, 'top_k', /must be >= 1 and <= 2147483647/],
    [{ messages: user, chat_template_kwargs: 'think' }, 'chat_template_kwargs', /must be an object, got a string/],
    [{ messages: user, chat_template_kwargs: [] }, 'chat_template_kwargs', /must be an object, got an array/],
    [{ messages: user, chat_template_kwargs: { messages: [] } }, 'chat_template_kwargs.messages', /set by the server/],
    [
      { messages: user, chat_template_kwargs: { add_generation_prompt: false } },
      'chat_template_kwargs.add_generation_prompt',
      /set by the server/,
    ],
    [{ messages: user, chat_template_kwargs: { bos_token: '' } }, 'chat_template_kwargs.bos_token', /set by the server/],
    [{ messages: user, chat_template_kwargs: { raise_exception: 1 } }, 'chat_template_kwargs.raise_exception', /set by the server/],
  ])('rejects %j with param %s', (body, param, message) => {
    const err = reject(body);
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
    expect(err.status).toBe(422);
  });

  it('checks stop and top_logprobs against the server limits, naming the OpenAI field', () => {
    const stop = reject({ messages: user, stop: ['a', 'b', 'c'] }, { maxStopSequences: 2 });
    expect([stop.param, stop.message]).toEqual(['stop', 'Input validation error: `stop` supports up to 2 stop sequences. Given: 3']);
    expect(reject({ messages: user, logprobs: true, top_logprobs: 6 }, { maxTopNTokens: 5 }).param).toBe('top_logprobs');
  });

  it('passes chat_template_kwargs on for the template', () => {
    const kwargs = { enable_thinking: false, documents: [{ title: 't', text: 'x' }] };
    expect(parseChatRequest({ messages: user, chat_template_kwargs: kwargs }).chatTemplateKwargs).toEqual(kwargs);
  });

  it("fills unset sampling fields from the model's generation config (vLLM's --generation-config auto)", () => {
    const qwen = { temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05, doSample: true };
    expect(parseChatRequest({ messages: user }, {}, qwen).parameters).toEqual({
      do_sample: true,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 20,
      repetition_penalty: 1.05,
    });
    // What the request sets wins; greedy keeps the penalty, which can change an argmax.
    expect(parseChatRequest({ messages: user, temperature: 0.2, top_k: 5 }, {}, qwen).parameters).toEqual({
      do_sample: true,
      temperature: 0.2,
      top_p: 0.8,
      top_k: 5,
      repetition_penalty: 1.05,
    });
    expect(parseChatRequest({ messages: user, temperature: 0 }, {}, qwen).parameters).toEqual({
      do_sample: false,
      repetition_penalty: 1.05,
    });
  });

  it('keeps greedy decoding when the generation config says do_sample: false, unless the request asks to sample', () => {
    const greedy = { temperature: 0.6, doSample: false };
    expect(parseChatRequest({ messages: user }, {}, greedy).parameters).toEqual({ do_sample: false });
    expect(parseChatRequest({ messages: user, temperature: 0.9 }, {}, greedy).parameters).toEqual({ do_sample: true, temperature: 0.9 });
    expect(parseChatRequest({ messages: user, top_p: 0.5 }, {}, greedy).parameters).toEqual({
      do_sample: true,
      temperature: 0.6,
      top_p: 0.5,
    });
  });

  it('ignores generation config values out of range instead of failing every request', () => {
    const broken = { temperature: -1, topP: 7, topK: 2.5, repetitionPenalty: 0 };
    expect(parseChatRequest({ messages: user }, {}, broken).parameters).toEqual({ do_sample: true });
  });

  it('rejects a body that is not an object', () => {
    expect(reject([user]).message).toMatch(/JSON object/);
  });
});
