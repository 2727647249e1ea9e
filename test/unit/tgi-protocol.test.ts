import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GenerationError, type InferenceError, OverloadedError, ValidationError } from '../../src/errors.js';
import { parseTgiGenerateBody, tgiErrorBody, tgiGenerateResponse, tgiStreamEvent, tgiTokenizeResponse } from '../../src/protocol/tgi.js';
import { endOf, eosSequence, lengthSequence, TOP } from '../fixtures/sse/events.js';

const golden = (name: string) => readFileSync(new URL(`../fixtures/sse/${name}`, import.meta.url), 'utf8');

describe('tgiStreamEvent: /generate_stream golden streams', () => {
  it('without details: null generated_text and details until the last event', () => {
    const text = lengthSequence()
      .map((e) => tgiStreamEvent(e, { details: false, returnFullText: false }))
      .join('');
    expect(text).toBe(golden('generate-stream.sse'));
  });

  it('with details: the last event carries finish_reason, generated_tokens, seed, input_length', () => {
    const text = lengthSequence()
      .map((e) => tgiStreamEvent(e, { details: true, returnFullText: false }))
      .join('');
    expect(text).toBe(golden('generate-stream-details.sse'));
  });

  it('with top_tokens and return_full_text: alternatives on every event, the prompt prepended', () => {
    const text = lengthSequence({ topTokens: true })
      .map((e) => tgiStreamEvent(e, { details: true, returnFullText: true, prompt: 'Say:' }))
      .join('');
    expect(text).toBe(golden('generate-stream-top-tokens.sse'));
  });

  it('leaves top_tokens out when the list is empty', () => {
    const [first] = lengthSequence();
    const frame = tgiStreamEvent({ ...first, topTokens: [] }, { details: false, returnFullText: false });
    expect(frame).not.toContain('top_tokens');
  });

  it('copies only the four TGI token fields', () => {
    const [first] = lengthSequence();
    const token = { ...first.token, extra: 1 } as typeof first.token;
    const frame = tgiStreamEvent({ ...first, token }, { details: false, returnFullText: false });
    expect(frame).toBe(
      'data:{"index":1,"token":{"id":10,"text":" Hello","logprob":-0.25,"special":false},"generated_text":null,"details":null}\n\n',
    );
  });

  it('needs the prompt for return_full_text', () => {
    const end = endOf(lengthSequence());
    expect(() => tgiStreamEvent(end, { details: false, returnFullText: true })).toThrow(/needs the prompt/);
  });
});

describe('tgiGenerateResponse: /generate body', () => {
  it('is only generated_text without details', () => {
    const end = endOf(lengthSequence());
    expect(JSON.stringify(tgiGenerateResponse(end, { details: false, returnFullText: false }))).toBe('{"generated_text":" Hello café"}');
  });

  it('has details with prefill and tokens, and no top_tokens when there are none', () => {
    const end = endOf(eosSequence());
    expect(JSON.stringify(tgiGenerateResponse(end, { details: true, returnFullText: true, prompt: 'Q:' }))).toBe(
      '{"generated_text":"Q: Hi!","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":7,"prefill":[],' +
        '"tokens":[{"id":30,"text":" Hi","logprob":-0.5,"special":false},{"id":31,"text":"!","logprob":-0.75,"special":false},' +
        '{"id":2,"text":"</s>","logprob":-0.0625,"special":true}]}}',
    );
  });

  it('adds top_tokens per step, and details when only decoder_input_details is set', () => {
    const end = { ...endOf(lengthSequence({ details: true, topTokens: true })), prefill: [{ id: 1, text: '<s>', logprob: null }] };
    const body = tgiGenerateResponse(end, { details: false, decoderInputDetails: true, returnFullText: false });
    expect(body.details?.prefill).toEqual([{ id: 1, text: '<s>', logprob: null }]);
    expect(body.details?.top_tokens).toEqual(TOP);
    expect(Object.keys(body.details ?? {})).toEqual(['finish_reason', 'generated_tokens', 'seed', 'prefill', 'tokens', 'top_tokens']);
  });
});

describe('tgiErrorBody and tgiTokenizeResponse', () => {
  it('gives error and error_type', () => {
    expect(tgiErrorBody(new OverloadedError())).toEqual({ error: 'Model is overloaded', error_type: 'overloaded' });
    expect(tgiErrorBody(new GenerationError('boom'))).toEqual({
      error: 'Request failed during generation: boom',
      error_type: 'generation',
    });
  });

  it('lists tokens with character offsets in TGI key order', () => {
    expect(JSON.stringify(tgiTokenizeResponse([{ stop: 2, start: 0, text: 'Hi', id: 5 }]))).toBe(
      '[{"id":5,"text":"Hi","start":0,"stop":2}]',
    );
  });
});

describe('parseTgiGenerateBody', () => {
  const reject = (body: unknown) => {
    try {
      parseTgiGenerateBody(body);
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      return err as InferenceError;
    }
    throw new Error('expected a ValidationError');
  };

  it('passes inputs, parameters and stream through, ignoring unknown fields', () => {
    const parameters = { max_new_tokens: 5, top_p: 0.9 };
    expect(parseTgiGenerateBody({ inputs: 'Hi', parameters, stream: true, other: 1 })).toEqual({
      inputs: 'Hi',
      parameters,
      stream: true,
    });
  });

  it('leaves parameters absent when the key is absent or null (TGI then uses its other defaults)', () => {
    expect(parseTgiGenerateBody({ inputs: 'Hi' })).toEqual({ inputs: 'Hi' });
    expect('parameters' in parseTgiGenerateBody({ inputs: 'Hi', parameters: null })).toBe(false);
  });

  it('rejects a body that is not an object', () => {
    for (const body of [null, 'Hi', [1], 3]) expect(reject(body).message).toMatch(/request body must be a JSON object/);
  });

  it('rejects missing or non-string inputs, naming the field', () => {
    const missing = reject({ parameters: {} });
    expect(missing.message).toBe('Input validation error: missing field `inputs`');
    expect(missing.param).toBe('inputs');
    expect(missing.status).toBe(422);
    expect(reject({ inputs: 3 }).message).toBe('Input validation error: `inputs` must be a string, got a number');
    expect(reject({ inputs: ['a'] }).message).toMatch(/got an array/);
  });

  it('rejects parameters that are not an object and a non-boolean stream', () => {
    expect(reject({ inputs: 'x', parameters: [] }).param).toBe('parameters');
    expect(reject({ inputs: 'x', parameters: 'p' }).message).toMatch(/`parameters` must be an object, got a string/);
    expect(reject({ inputs: 'x', stream: 'yes' }).param).toBe('stream');
  });
});
