import { InferenceClient } from '@huggingface/inference';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import {
  GenerationError,
  InferenceError,
  ModelLoadError,
  OverloadedError,
  TemplateError,
  UnavailableError,
  ValidationError,
} from '../../src/errors.js';
import { errorResponse, inStreamErrorFrame, openaiErrorBody } from '../../src/protocol/error-body.js';

const JSON_TYPE = { 'Content-Type': 'application/json' };
const RETRY = { ...JSON_TYPE, 'Retry-After': '1', 'retry-after-ms': '1000' };

describe('errorResponse: one table for both route families', () => {
  it.each([
    [new ValidationError('`top_k` must be strictly positive', 'top_k'), 422, JSON_TYPE, 'validation', 'invalid_request_error', 'top_k'],
    [new TemplateError('no chat template'), 422, JSON_TYPE, 'template_error', 'invalid_request_error', null],
    [new OverloadedError(), 429, RETRY, 'overloaded', 'rate_limit_error', null],
    [new GenerationError('shard failed'), 424, JSON_TYPE, 'generation', 'server_error', null],
    [
      new InferenceError('incomplete_generation', 'Incomplete generation: the engine shut down'),
      500,
      JSON_TYPE,
      'incomplete_generation',
      'server_error',
      null,
    ],
    [new ModelLoadError('Model failed to load'), 500, JSON_TYPE, 'model_load', 'server_error', null],
    [new UnavailableError('the engine is shutting down'), 503, RETRY, 'unavailable', 'server_error', null],
  ])('%s → %i', (err, status, headers, errorType, openaiType, param) => {
    const tgi = errorResponse(err, 'tgi');
    expect(tgi).toEqual({ status, headers, body: JSON.stringify({ error: err.message, error_type: errorType }) });
    const openai = errorResponse(err, 'openai');
    expect(openai.status).toBe(status);
    expect(openai.headers).toEqual(headers);
    expect(JSON.parse(openai.body)).toEqual({ error: { message: err.message, type: openaiType, param, code: errorType } });
  });

  it('hides the message of an unexpected error behind a generic 500', () => {
    for (const err of [new Error('/secret/path: ENOENT'), 'string thrown', undefined]) {
      expect(errorResponse(err, 'tgi')).toEqual({
        status: 500,
        headers: JSON_TYPE,
        body: '{"error":"Internal server error","error_type":"internal"}',
      });
      expect(errorResponse(err, 'openai').body).toBe(
        '{"error":{"message":"Internal server error","type":"server_error","param":null,"code":"internal"}}',
      );
    }
  });

  it('recognises an InferenceError from another copy of the package by its brand', () => {
    const foreign = Object.assign(Object.create(null), {
      [Symbol.for('streaming-inference.error')]: true,
      status: 422,
      errorType: 'validation',
      message: 'Input validation error: x',
      param: null,
    });
    expect(errorResponse(foreign, 'tgi').status).toBe(422);
  });
});

describe('a body that is not JSON', () => {
  const malformed = (detail: string) => new InferenceError('invalid_request', `Failed to parse the request body as JSON: ${detail}`);
  it('is a 400 in the family shape', () => {
    expect(errorResponse(malformed('Unexpected end of JSON input'), 'tgi')).toEqual({
      status: 400,
      headers: JSON_TYPE,
      body: '{"error":"Failed to parse the request body as JSON: Unexpected end of JSON input","error_type":"invalid_request"}',
    });
    expect(JSON.parse(errorResponse(malformed('x'), 'openai').body)).toEqual({
      error: {
        message: 'Failed to parse the request body as JSON: x',
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_request',
      },
    });
  });
});

describe('inStreamErrorFrame', () => {
  it('is a TGI data: event without a space and without [DONE]', () => {
    expect(inStreamErrorFrame(new GenerationError('boom'), 'tgi')).toBe(
      'data:{"error":"Request failed during generation: boom","error_type":"generation"}\n\n',
    );
  });

  it('is an OpenAI error event followed by [DONE]', () => {
    expect(inStreamErrorFrame(new GenerationError('boom'), 'openai')).toBe(
      'data: {"error":{"message":"Request failed during generation: boom","type":"server_error","param":null,"code":"generation"}}\n\n' +
        'data: [DONE]\n\n',
    );
  });

  it('hides an unexpected error in a stream too', () => {
    expect(inStreamErrorFrame(new TypeError('x is undefined'), 'tgi')).toBe(
      'data:{"error":"Internal server error","error_type":"internal"}\n\n',
    );
  });

  it('openaiErrorBody gives the object alone', () => {
    expect(openaiErrorBody(new ValidationError('`n` must be 1', 'n'))).toEqual({
      error: { message: 'Input validation error: `n` must be 1', type: 'invalid_request_error', param: 'n', code: 'validation' },
    });
  });
});

describe('real clients read our errors', () => {
  const openaiAnswering = (status: number, headers: Record<string, string>, body: string) =>
    new OpenAI({
      apiKey: 'test',
      baseURL: 'http://127.0.0.1:1/v1',
      maxRetries: 0,
      fetch: async () => new Response(body, { status, headers }),
    });
  const messages = [{ role: 'user' as const, content: 'Hi' }];

  it('openai: a 422 becomes UnprocessableEntityError with message, param and code', async () => {
    const { status, headers, body } = errorResponse(new ValidationError('`n` must be 1', 'n'), 'openai');
    const err = await openaiAnswering(status, headers, body)
      .chat.completions.create({ model: 'm', messages })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(err.message).toBe('422 Input validation error: `n` must be 1');
    expect([err.param, err.code, err.type]).toEqual(['n', 'validation', 'invalid_request_error']);
  });

  it('openai: a 429 becomes RateLimitError', async () => {
    const { status, headers, body } = errorResponse(new OverloadedError(), 'openai');
    const err = await openaiAnswering(status, headers, body)
      .chat.completions.create({ model: 'm', messages, stream: true })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.message).toBe('429 Model is overloaded');
  });

  it('openai: an in-stream error event is thrown from the iteration', async () => {
    const chunk =
      'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n';
    const client = openaiAnswering(
      200,
      { 'content-type': 'text/event-stream' },
      chunk + inStreamErrorFrame(new GenerationError('boom'), 'openai'),
    );
    const stream = await client.chat.completions.create({ model: 'm', messages, stream: true });
    const seen: unknown[] = [];
    const err = await (async () => {
      for await (const c of stream) seen.push(c);
    })().catch((e) => e);
    expect(seen).toHaveLength(1);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.message).toBe('Request failed during generation: boom');
    expect(err.code).toBe('generation');
  });

  it('@huggingface/inference: a TGI-shaped 429 and an in-stream error become provider errors with our message', async () => {
    const overloaded = errorResponse(new OverloadedError(), 'tgi');
    const refusing = new InferenceClient(undefined, {
      fetch: async () => new Response(overloaded.body, { status: overloaded.status, headers: overloaded.headers }),
    }).endpoint('http://127.0.0.1:1');
    await expect(refusing.textGeneration({ inputs: 'x' })).rejects.toThrow('Failed to perform inference: Model is overloaded');

    const frame = inStreamErrorFrame(new GenerationError('boom'), 'openai');
    const failing = new InferenceClient(undefined, {
      fetch: async () => new Response(frame, { headers: { 'content-type': 'text/event-stream' } }),
    }).endpoint('http://127.0.0.1:1');
    const iterate = async () => {
      for await (const _ of failing.textGenerationStream({ inputs: 'x' })) void _;
    };
    await expect(iterate()).rejects.toThrow(/Request failed during generation: boom/);
  });
});
