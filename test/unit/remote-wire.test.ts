/**
 * The remote engine's wire pieces on recorded upstream bytes: the SSE reader, the Prometheus gauge
 * reader, and each dialect's request builder and decoder. The TGI and OpenAI streams below were
 * recorded from our own `serve` on the tiny fixture; the vLLM and llama.cpp chunks follow their
 * documented shapes (remote-engine.md §2).
 */
import { describe, expect, it } from 'vitest';
import { validateParameters } from '../../src/params.js';
import type { Decoded } from '../../src/remote/dialect.js';
import { OpenAIDecoder, openaiChatCall, openaiCompletionCall } from '../../src/remote/openai-dialect.js';
import { promValues } from '../../src/remote/prom-text.js';
import { SseDataParser } from '../../src/remote/sse-data.js';
import { tgiGenerateCall } from '../../src/remote/tgi-dialect.js';
import { readTokenize, tokenizeCall } from '../../src/remote/tokenize.js';
import type { ValidationLimits } from '../../src/types.js';

const LIMITS: ValidationLimits = { maxBestOf: 1, maxStopSequences: 4, maxTopNTokens: 5, maxInputTokens: 2047, maxTotalTokens: 2048 };

/** Every event of a recorded stream through a decoder, then its close. */
function decodeAll(decoder: { decode(data: string): Decoded[]; close(): Decoded[] }, stream: string): Decoded[] {
  const parser = new SseDataParser();
  return [...parser.push(stream).flatMap((data) => decoder.decode(data)), ...decoder.close()];
}

describe('SseDataParser', () => {
  it('joins data lines, strips one space, skips comments and other fields, across chunk borders and CRLF', () => {
    const parser = new SseDataParser();
    expect(parser.push(': keep-alive\n\ndata:{"a":1}\n\nevent: x\ndata: two\r\ndata: lines\r\n\r\ndata: [DO')).toEqual([
      '{"a":1}',
      'two\nlines',
    ]);
    expect(parser.push('NE]\n')).toEqual([]);
    expect(parser.push('\n')).toEqual(['[DONE]']);
  });
});

describe('promValues', () => {
  it('reads the wanted gauges, summed over label sets, and ignores the rest', () => {
    const text = [
      '# HELP tgi_queue_size Requests waiting',
      '# TYPE tgi_queue_size gauge',
      'tgi_queue_size 3',
      'vllm:num_requests_waiting{model_name="a b",engine="0"} 2',
      'vllm:num_requests_waiting{model_name="c",engine="1"} 1 1700000000000',
      'tgi_queue_size_other 9',
      'llamacpp:requests_deferred NaN',
    ].join('\n');
    const values = promValues(text, ['tgi_queue_size', 'vllm:num_requests_waiting', 'llamacpp:requests_deferred', 'sglang:num_queue_reqs']);
    expect([...values]).toEqual([
      ['tgi_queue_size', 3],
      ['vllm:num_requests_waiting', 3],
    ]);
  });
});

describe('TGI dialect', () => {
  it('streams /generate_stream with details, greedy stays greedy, the HTTP layer keeps the full text', () => {
    const request = { inputs: 'Hi', parameters: { max_new_tokens: 3, return_full_text: true, stop: ['x'] } };
    const call = tgiGenerateCall(request, validateParameters(request.parameters, LIMITS, { stream: true, inputs: 'Hi' }));
    expect(call).toMatchObject({ path: '/generate_stream', whole: false });
    expect(call.body).toEqual({
      inputs: 'Hi',
      parameters: { max_new_tokens: 3, stop: ['x'], do_sample: false, details: true, return_full_text: false },
    });
  });

  it("sends our seed when sampling, and TGI's default of sampling when parameters are missing", () => {
    const params = validateParameters(undefined, LIMITS, { stream: true, inputs: 'Hi', random: () => 0.5 });
    expect((tgiGenerateCall({ inputs: 'Hi' }, params).body as any).parameters).toEqual({
      do_sample: true,
      details: true,
      return_full_text: false,
      seed: params.sampling.seed,
    });
  });

  it('asks the whole /generate for decoder_input_details, and replays it as events', () => {
    const request = { inputs: 'Hi', parameters: { max_new_tokens: 2, decoder_input_details: true } };
    const call = tgiGenerateCall(request, validateParameters(request.parameters, LIMITS, { stream: false, inputs: 'Hi' }));
    expect(call).toMatchObject({ path: '/generate', whole: true });
    const t = (id: number, text: string) => ({ id, text, logprob: -1, special: false });
    const body = JSON.stringify({
      generated_text: 'ab',
      details: {
        finish_reason: 'length',
        generated_tokens: 2,
        seed: 1,
        prefill: [
          { id: 1, text: 'H', logprob: null },
          { id: 2, text: 'i', logprob: -3 },
        ],
        tokens: [t(5, 'a'), t(6, 'b')],
      },
    });
    const events = call.decoder.decode(body);
    expect(events.map((e) => e.type)).toEqual(['token', 'end']);
    expect(events[0]).toMatchObject({ token: t(5, 'a'), prefill: [{ id: 1 }, { id: 2 }] });
    expect(events[1]).toMatchObject({
      token: t(6, 'b'),
      summary: { finishReason: 'length', generatedText: 'ab', generatedTokens: 2, inputLength: 2 },
    });
  });

  it('decodes a recorded stream: tokens with alternatives, the end with its details', () => {
    const stream =
      'data:{"index":1,"token":{"id":297,"text":" st","logprob":-1.35,"special":false},"top_tokens":[{"id":297,"text":" st","logprob":-1.35,"special":false}],"generated_text":null,"details":null}\n\n' +
      'data:{"index":2,"token":{"id":251,"text":"","logprob":-1.89,"special":false},"generated_text":null,"details":null}\n\n' +
      'data:{"index":3,"token":{"id":372,"text":"�ns","logprob":-0.98,"special":false},"generated_text":" st�ns","details":{"finish_reason":"length","generated_tokens":3,"seed":8,"input_length":2}}\n\n';
    const call = tgiGenerateCall({ inputs: 'Hi' }, validateParameters({}, LIMITS, { stream: true, inputs: 'Hi' }));
    const events = decodeAll(call.decoder, stream);
    expect(events.map((e) => e.type)).toEqual(['token', 'token', 'end']);
    expect(events[0]).toEqual({
      type: 'token',
      token: { id: 297, text: ' st', logprob: -1.35, special: false },
      topTokens: [{ id: 297, text: ' st', logprob: -1.35, special: false }],
    });
    expect(events[2]).toMatchObject({ summary: { finishReason: 'length', generatedText: ' st�ns', generatedTokens: 3, inputLength: 2 } });
  });

  it('reads an error event with its kind', () => {
    const call = tgiGenerateCall({ inputs: 'Hi' }, validateParameters({}, LIMITS, { stream: true, inputs: 'Hi' }));
    expect(call.decoder.decode('{"error":"Model is overloaded","error_type":"overloaded"}')).toEqual([
      { type: 'error', failure: { kind: 'overloaded', message: 'Model is overloaded', errorType: 'overloaded' } },
    ]);
    expect(call.decoder.started).toBe(false);
  });
});

describe('OpenAI dialect', () => {
  const validated = (parameters: object) => validateParameters(parameters, LIMITS, { stream: true });

  it('maps our resolved parameters onto OpenAI fields: greedy as temperature 0, our seed when sampling', () => {
    const greedy = openaiCompletionCall(
      { inputs: 'Hi' },
      validated({ max_new_tokens: 4, do_sample: false, stop: ['\n'], repetition_penalty: 1.2 }),
      'm',
    );
    // Logprobs always: every TGI event carries its token's, and llama.cpp sends token ids with them.
    expect(greedy.body).toEqual({
      model: 'm',
      prompt: 'Hi',
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 4,
      temperature: 0,
      repetition_penalty: 1.2,
      stop: ['\n'],
      logprobs: 1,
    });
    const sampled = validated({ temperature: 0.7, top_p: 0.9, top_k: 20, seed: 5, details: true, top_n_tokens: 2 });
    const chat = openaiChatCall({ messages: [{ role: 'user', content: 'Hi' }] }, sampled, 'm');
    expect(chat.body).toMatchObject({ temperature: 0.7, top_p: 0.9, top_k: 20, seed: 5, logprobs: true, top_logprobs: 2 });
    expect(chat.path).toBe('/v1/chat/completions');
  });

  it("sends chat messages for the upstream's template, with their template arguments", () => {
    const messages = [{ role: 'user', content: 'Hi' }];
    const call = openaiChatCall({ messages, chatTemplateKwargs: { enable_thinking: false } }, validated({}), 'm');
    expect(call.body).toMatchObject({ model: 'm', messages, chat_template_kwargs: { enable_thinking: false } });
    expect(openaiChatCall({ messages }, validated({}), 'm').body).not.toHaveProperty('chat_template_kwargs');
  });

  it('completions: holds each token back until the next, so the end event carries the last one (recorded)', () => {
    const stream =
      'data: {"object":"text_completion","choices":[{"text":" st","index":0,"logprobs":null,"finish_reason":null}],"usage":null}\n\n' +
      'data: {"object":"text_completion","choices":[{"text":"�ns","index":0,"logprobs":null,"finish_reason":"length"}],"usage":null}\n\n' +
      'data: {"object":"text_completion","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\n\n' +
      'data: [DONE]\n\n';
    const decoder = new OpenAIDecoder('completion');
    const events = decodeAll(decoder, stream);
    expect(events.map((e) => e.type)).toEqual(['token', 'end']);
    expect(events[0]).toMatchObject({ token: { id: -1, text: ' st', special: false } });
    expect(events[1]).toMatchObject({
      token: { id: -1, text: '�ns' },
      summary: { finishReason: 'length', generatedText: ' st�ns', generatedTokens: 3, inputLength: 2 },
    });
  });

  it('chat: passes tokens on at once and ends with an empty special token (recorded, with logprobs)', () => {
    const lp = (token: string, logprob: number) => ({ token, logprob, bytes: [], top_logprobs: [{ token, logprob, bytes: [] }] });
    const chunk = (delta: object, logprobs: object | null, finish: string | null) =>
      `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, logprobs, finish_reason: finish }], usage: null })}\n\n`;
    const stream =
      chunk({ role: 'assistant', content: '' }, { content: [], refusal: null }, null) +
      chunk({ content: 'ers' }, { content: [lp('ers', -1.3)], refusal: null }, null) +
      chunk({ content: '' }, { content: [lp('', -2)], refusal: null }, null) +
      chunk({}, null, 'stop') +
      'data: {"choices":[],"usage":{"prompt_tokens":60,"completion_tokens":3,"total_tokens":63}}\n\ndata: [DONE]\n\n';
    const decoder = new OpenAIDecoder('chat', 1);
    const events = decodeAll(decoder, stream);
    expect(events.map((e) => e.type)).toEqual(['token', 'token', 'end']);
    expect(events[0]).toEqual({
      type: 'token',
      token: { id: -1, text: 'ers', logprob: -1.3, special: false },
      topTokens: [{ id: -1, text: 'ers', logprob: -1.3, special: false }],
    });
    expect(events[2]).toMatchObject({
      token: { text: '', special: true },
      summary: { finishReason: 'eos_token', generatedText: 'ers', generatedTokens: 3, inputLength: 60 },
    });
  });

  it('vLLM: several tokens in one chunk, legacy logprobs, and stop_reason telling a stop string from the eos', () => {
    const decoder = new OpenAIDecoder('completion', 2);
    const events = decodeAll(
      decoder,
      'data: {"choices":[{"text":"Hello world","logprobs":{"tokens":["Hello"," world"],"token_logprobs":[-0.1,-0.2],"top_logprobs":[{"Hello":-0.1,"Hi":-2},{" world":-0.2}]},"finish_reason":"stop","stop_reason":"\\n"}]}\n\n' +
        'data: [DONE]\n\n',
    );
    expect(events).toHaveLength(2);
    expect(events[0]).toMatchObject({
      token: { text: 'Hello', logprob: -0.1 },
      topTokens: [
        { text: 'Hello', logprob: -0.1 },
        { text: 'Hi', logprob: -2 },
      ],
    });
    expect(events[1]).toMatchObject({
      token: { text: ' world' },
      summary: { finishReason: 'stop_sequence', generatedTokens: 2, inputLength: 0 },
    });
  });

  it('llama.cpp: usage on the finish chunk, no [DONE] needed once the finish came; an error event classified', () => {
    const decoder = new OpenAIDecoder('completion');
    const events = decodeAll(
      decoder,
      'data: {"choices":[{"text":"a","finish_reason":null}]}\n\ndata: {"choices":[{"text":"","finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n',
    );
    expect(events.at(-1)).toMatchObject({
      type: 'end',
      token: { text: 'a' },
      summary: { finishReason: 'eos_token', generatedTokens: 2, inputLength: 4 },
    });
    const failing = new OpenAIDecoder('chat');
    expect(
      failing.decode('{"error":{"code":500,"message":"The model produced output that does not match","type":"server_error"}}'),
    ).toEqual([
      { type: 'error', failure: { kind: 'failed', message: 'The model produced output that does not match', errorType: 'server_error' } },
    ]);
  });

  it('llama.cpp: completion logprobs in the chat layout carry token ids; alternatives beyond top_n_tokens are dropped', () => {
    const entry = (id: number, token: string, logprob: number) => ({ id, token, bytes: [], logprob });
    const chunk = {
      choices: [
        {
          text: ' you',
          logprobs: { content: [{ ...entry(405, ' you', -1.44), top_logprobs: [entry(405, ' you', -1.44), entry(342, 'ste', -1.98)] }] },
          finish_reason: 'length',
        },
      ],
    };
    const events = decodeAll(new OpenAIDecoder('completion', 1), `data: ${JSON.stringify(chunk)}\n\ndata: [DONE]\n\n`);
    expect(events).toEqual([
      {
        type: 'end',
        token: { id: 405, text: ' you', logprob: -1.44, special: false },
        topTokens: [{ id: 405, text: ' you', logprob: -1.44, special: false }],
        summary: { finishReason: 'length', generatedText: ' you', generatedTokens: 1, inputLength: 0 },
      },
    ]);
    expect(decodeAll(new OpenAIDecoder('completion'), `data: ${JSON.stringify(chunk)}\n\ndata: [DONE]\n\n`)[0]).not.toHaveProperty(
      'topTokens',
    );
  });

  it('a stream cut before its finish ends with nothing, so the engine sees it as broken', () => {
    const decoder = new OpenAIDecoder('completion');
    const events = decodeAll(decoder, 'data: {"choices":[{"text":"a","finish_reason":null}]}\n\n');
    expect(events).toEqual([]);
    expect(decoder.started).toBe(true);
  });
});

describe('readTokenize', () => {
  it("names the text as each server's /tokenize does: TGI's `inputs`, llama.cpp's `content`, vLLM's `prompt`", () => {
    expect(tokenizeCall('tgi', 'Hi')).toEqual({ path: '/tokenize', body: { inputs: 'Hi' } });
    expect(tokenizeCall('openai', 'Hi').body).toMatchObject({ inputs: 'Hi', content: 'Hi', prompt: 'Hi', with_pieces: true });
  });

  it('passes TGI tokens through and gives llama.cpp pieces character offsets', () => {
    const tgi = [{ id: 1, text: 'Hi', start: 0, stop: 2 }];
    expect(readTokenize('Hi', tgi)).toEqual(tgi);
    expect(
      readTokenize('Hi you', {
        tokens: [
          { id: 5, piece: 'Hi' },
          { id: 9, piece: ' you' },
        ],
      }),
    ).toEqual([
      { id: 5, text: 'Hi', start: 0, stop: 2 },
      { id: 9, text: ' you', start: 2, stop: 6 },
    ]);
    expect(
      readTokenize('é', {
        tokens: [
          { id: 1, piece: [195] },
          { id: 2, piece: [169] },
        ],
      }),
    ).toEqual([
      { id: 1, text: '', start: 0, stop: 0 },
      { id: 2, text: '', start: 0, stop: 0 },
    ]);
  });
});
