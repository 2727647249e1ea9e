import { readFileSync } from 'node:fs';
import { InferenceClient } from '@huggingface/inference';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { type InferenceError, ValidationError } from '../../src/errors.js';
import { CompletionChunkEncoder, completionResponse, parseCompletionRequest } from '../../src/protocol/openai-completions.js';
import type { GenerationEvent } from '../../src/types.js';
import { endOf, eosSequence, lengthSequence } from '../fixtures/sse/events.js';

const golden = (name: string) => readFileSync(new URL(`../fixtures/sse/${name}`, import.meta.url), 'utf8');
const identity = { id: 'cmpl-test', created: 1_700_000_000, model: 'tiny' };

function encode(events: GenerationEvent[], opts: { includeUsage: boolean; echo: boolean; prompt?: string }): string {
  const encoder = new CompletionChunkEncoder({ ...identity, ...opts });
  return events.flatMap((e) => encoder.push(e)).join('');
}

const answering = (body: string) => async () => new Response(body, { headers: { 'content-type': 'text/event-stream' } });

describe('CompletionChunkEncoder', () => {
  it('matches the golden stream: echoed prompt, finish_reason null until the last chunk, usage, [DONE]', () => {
    expect(encode(eosSequence(), { includeUsage: true, echo: true, prompt: 'Q:' })).toBe(golden('completions-stream.sse'));
  });

  it('puts the last token text and length on the last chunk, no usage key without include_usage', () => {
    const frames = new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: false });
    const text = lengthSequence().flatMap((e) => frames.push(e));
    expect(text).toHaveLength(4);
    expect(text[2]).toBe(
      'data: {"id":"cmpl-test","object":"text_completion","created":1700000000,"model":"tiny",' +
        '"choices":[{"text":"é","index":0,"logprobs":null,"finish_reason":"length"}]}\n\n',
    );
    expect(text[3]).toBe('data: [DONE]\n\n');
  });

  it('needs the prompt to echo it, and refuses events after the end', () => {
    expect(() => new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: true })).toThrow(/needs the prompt/);
    const encoder = new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: false });
    encoder.push(endOf(eosSequence()));
    expect(() => encoder.push(endOf(eosSequence()))).toThrow(/after the end event/);
  });

  it('is read by the openai SDK', async () => {
    const client = new OpenAI({
      apiKey: 'test',
      baseURL: 'http://127.0.0.1:1/v1',
      maxRetries: 0,
      fetch: answering(encode(eosSequence(), { includeUsage: true, echo: false })),
    });
    const stream = await client.completions.create({ model: 'tiny', prompt: 'Q:', stream: true, stream_options: { include_usage: true } });
    const texts: string[] = [];
    const reasons: Array<string | null> = [];
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        texts.push(choice.text);
        reasons.push(choice.finish_reason);
      }
    }
    expect(texts.join('')).toBe(' Hi!');
    expect(reasons).toEqual([null, null, 'stop']);
  });

  it('is read by @huggingface/inference textGenerationStream (which calls /v1/completions)', async () => {
    const urls: string[] = [];
    const body = encode(lengthSequence(), { includeUsage: false, echo: false });
    const client = new InferenceClient(undefined, {
      fetch: async (url) => {
        urls.push(String(url));
        return answering(body)();
      },
    }).endpoint('http://127.0.0.1:1');
    let text = '';
    for await (const chunk of client.textGenerationStream({ inputs: 'Once', parameters: { max_new_tokens: 3 } })) {
      text += (chunk as unknown as { choices: Array<{ text: string }> }).choices[0].text;
    }
    expect(text).toBe(' Hello café');
    expect(urls).toEqual(['http://127.0.0.1:1/v1/completions']);
  });
});

describe('legacy logprobs', () => {
  const top = { ' Hello': -0.25, ' Hi': -2 };
  it('streams one token per chunk with its alternatives and its offset in the text', () => {
    const encoder = new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: false, logprobs: true });
    const chunks = lengthSequence({ topTokens: true })
      .flatMap((e) => encoder.push(e))
      .filter((f) => f !== 'data: [DONE]\n\n')
      .map((f) => JSON.parse(f.slice('data: '.length)).choices[0].logprobs);
    expect(chunks).toEqual([
      { tokens: [' Hello'], token_logprobs: [-0.25], top_logprobs: [top], text_offset: [0] },
      { tokens: [' caf'], token_logprobs: [-1.5], top_logprobs: [{ ' caf': -1.5, ' tea': -3 }], text_offset: [6] },
      { tokens: ['é'], token_logprobs: [-0.125], top_logprobs: [{ é: -0.125, '</s>': -4 }], text_offset: [10] },
    ]);
  });

  it('lists every generated token in the whole response, the chosen one among the alternatives even when not in the top', () => {
    const end = endOf(lengthSequence({ topTokens: true, details: true }));
    const body = completionResponse({ ...end, topTokensPerStep: [[end.tokens[1]], [], []] }, { ...identity, echo: false, logprobs: true });
    expect(body.choices[0].logprobs).toEqual({
      tokens: [' Hello', ' caf', 'é'],
      token_logprobs: [-0.25, -1.5, -0.125],
      top_logprobs: [{ ' caf': -1.5, ' Hello': -0.25 }, { ' caf': -1.5 }, { é: -0.125 }],
      text_offset: [0, 6, 10],
    });
  });

  it('leaves the eos out, and is read by the openai SDK', async () => {
    const stream = new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: false, logprobs: true });
    const body = eosSequence()
      .flatMap((e) => stream.push(e))
      .join('');
    const client = new OpenAI({ apiKey: 'test', baseURL: 'http://127.0.0.1:1/v1', maxRetries: 0, fetch: answering(body) });
    const tokens: string[] = [];
    for await (const chunk of await client.completions.create({ model: 'tiny', prompt: 'Q:', stream: true, logprobs: 0 })) {
      tokens.push(...(chunk.choices[0].logprobs?.tokens ?? []));
    }
    expect(tokens).toEqual([' Hi', '!']);
  });
});

describe('stop strings (OpenAI leaves them out)', () => {
  it('holds back a possible stop string in the stream and cuts it at the end', () => {
    const encoder = new CompletionChunkEncoder({ ...identity, includeUsage: false, echo: false, stop: ['!'] });
    const texts = eosSequence()
      .map((e, i, all) => (i === all.length - 1 ? { ...e, finishReason: 'stop_sequence' as const } : e))
      .flatMap((e) => encoder.push(e))
      .filter((f) => f !== 'data: [DONE]\n\n')
      .map((f) => JSON.parse(f.slice('data: '.length)).choices[0].text);
    expect(texts.join('')).toBe(' Hi');
  });

  it('cuts the whole text before the stop string, after the echoed prompt', () => {
    const end = { ...endOf(eosSequence()), finishReason: 'stop_sequence' as const };
    expect(completionResponse(end, { ...identity, echo: true, prompt: 'Q:', stop: ['!'] }).choices[0].text).toBe('Q: Hi');
    expect(completionResponse({ ...end, finishReason: 'eos_token' }, { ...identity, echo: false, stop: ['!'] }).choices[0].text).toBe(
      ' Hi!',
    );
  });
});

describe('completionResponse', () => {
  it('is an OpenAI text_completion, the prompt prepended when echoing', () => {
    const body = completionResponse(endOf(eosSequence()), { ...identity, echo: true, prompt: 'Q:' });
    expect(JSON.stringify(body)).toBe(
      '{"id":"cmpl-test","object":"text_completion","created":1700000000,"model":"tiny",' +
        '"choices":[{"text":"Q: Hi!","index":0,"logprobs":null,"finish_reason":"stop"}],' +
        '"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}',
    );
  });

  it('is accepted by @huggingface/inference textGeneration', async () => {
    const body = JSON.stringify(completionResponse(endOf(lengthSequence()), { ...identity, echo: false }));
    const client = new InferenceClient(undefined, {
      fetch: async () => new Response(body, { headers: { 'content-type': 'application/json' } }),
    }).endpoint('http://127.0.0.1:1');
    expect(await client.textGeneration({ inputs: 'Once' })).toEqual({ generated_text: ' Hello café' });
  });
});

describe('parseCompletionRequest', () => {
  const reject = (body: unknown) => {
    try {
      parseCompletionRequest(body);
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      return err as InferenceError;
    }
    throw new Error('expected a ValidationError');
  };

  it('reads the prompt, OpenAI sampling fields and stream flags', () => {
    expect(
      parseCompletionRequest({
        model: 'tiny',
        prompt: 'Once',
        max_tokens: 8,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
    ).toEqual({
      prompt: 'Once',
      parameters: { do_sample: false, max_new_tokens: 8 },
      stream: true,
      includeUsage: true,
      model: 'tiny',
      echo: false,
      logprobs: null,
    });
  });

  it('reads the legacy logprobs integer: details on, that many alternatives per token', () => {
    expect(parseCompletionRequest({ prompt: 'x', logprobs: 2 }, { maxTopNTokens: 5 })).toMatchObject({
      logprobs: 2,
      parameters: { details: true, top_n_tokens: 2 },
    });
    const none = parseCompletionRequest({ prompt: 'x', logprobs: 0 });
    expect(none.logprobs).toBe(0);
    expect(none.parameters).toMatchObject({ details: true });
    expect(none.parameters.top_n_tokens).toBeUndefined();
  });

  it('accepts an array of one prompt, and echo or TGI return_full_text', () => {
    expect(parseCompletionRequest({ prompt: ['Once'], echo: true })).toMatchObject({ prompt: 'Once', echo: true });
    expect(parseCompletionRequest({ prompt: 'x', return_full_text: true }).echo).toBe(true);
  });

  it('reads the body @huggingface/inference builds from TGI parameters', () => {
    const body = {
      model: 'http://h',
      prompt: 'Once',
      stream: true,
      max_tokens: 5,
      do_sample: false,
      top_k: 3,
      repetition_penalty: 1.2,
      details: true,
      stop: ['\n'],
    };
    expect(parseCompletionRequest(body).parameters).toEqual({ do_sample: false, max_new_tokens: 5, repetition_penalty: 1.2, stop: ['\n'] });
  });

  it('passes best_of on to parameter validation', () => {
    expect(parseCompletionRequest({ prompt: 'x', best_of: 2 }).parameters.best_of).toBe(2);
  });

  it.each([
    [{}, 'prompt', /missing field `prompt`/],
    [{ prompt: ['a', 'b'] }, 'prompt', /Number of prompts exceeds the maximum allowed batch size of 1. Given: 2/],
    [{ prompt: [1, 2, 3] }, 'prompt', /a string or an array of one string, got an array/],
    [{ prompt: [] }, 'prompt', /array of one string/],
    [{ prompt: 5 }, 'prompt', /got a number/],
    [{ prompt: 'x', suffix: '!' }, 'suffix', /Suffix is not supported and can be achieved by preprocessing the prompt\./],
    [{ prompt: 'x', top_logprobs: 2 }, 'top_logprobs', /belongs to \/v1\/chat\/completions/],
    [{ prompt: 'x', top_logprobs: 'many' }, 'top_logprobs', /belongs to \/v1\/chat\/completions/],
    [{ prompt: 'x', logprobs: true }, 'logprobs', /must be an integer, got a boolean/],
    [{ prompt: 'x', logprobs: 1.5 }, 'logprobs', /must be an integer/],
    [{ prompt: 'x', logprobs: 21 }, 'logprobs', /<= 20/],
    [{ prompt: 'x', logprobs: 1, echo: true }, 'logprobs', /together with `echo`/],
    [{ prompt: 'x', n: 3 }, 'n', /`n` must be 1/],
    [{ prompt: 'x', echo: 'yes' }, 'echo', /boolean/],
    [{ prompt: 'x', best_of: 1.5 }, 'best_of', /integer/],
  ])('rejects %j with param %s', (body, param, message) => {
    const err = reject(body);
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });
});
