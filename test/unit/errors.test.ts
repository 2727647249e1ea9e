import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  GenerationError,
  InferenceError,
  ModelLoadError,
  OverloadedError,
  TemplateError,
  UnavailableError,
  ValidationError,
  deserializeError,
  logError,
  serializeError,
  type ErrorContext,
} from '../../src/errors.js';
import { createInferenceHandler } from '../../src/http/handler.js';
import { errorResponse, inStreamErrorFrame } from '../../src/protocol/error-body.js';
import type { Engine, Generation, GenerationEvent } from '../../src/types.js';

const CLASSES = [ValidationError, OverloadedError, GenerationError, TemplateError, UnavailableError, ModelLoadError] as const;
const examples = () => [
  new ValidationError('`top_k` must be strictly positive', 'top_k'),
  new OverloadedError(),
  new GenerationError('boom'),
  new TemplateError('no chat template'),
  new UnavailableError('Model is loading'),
  new ModelLoadError('/models/x/config.json not found'),
];

describe('isInstance: one brand per class', () => {
  it('holds for its own class and the base only', () => {
    const errors = examples();
    CLASSES.forEach((cls, i) => {
      errors.forEach((error, j) => expect(cls.isInstance(error), `${cls.name}.isInstance(${error.name})`).toBe(i === j));
      expect(InferenceError.isInstance(errors[i])).toBe(true);
      expect(errors[i]).toBeInstanceOf(cls);
      expect(errors[i].name).toBe(cls.name);
    });
    expect(ValidationError.isInstance(new OverloadedError())).toBe(false);
    expect(InferenceError.isInstance(new InferenceError('incomplete_generation', 'x'))).toBe(true);
  });

  it('holds for a subclass of a class, and for nothing else', () => {
    class StrictValidationError extends ValidationError {}
    expect(ValidationError.isInstance(new StrictValidationError('x'))).toBe(true);
    expect(InferenceError.isInstance(new StrictValidationError('x'))).toBe(true);
    expect(TemplateError.isInstance(new StrictValidationError('x'))).toBe(false);
    for (const value of [new Error('x'), null, undefined, 'ValidationError', { name: 'ValidationError' }]) {
      expect(InferenceError.isInstance(value)).toBe(false);
      expect(ValidationError.isInstance(value)).toBe(false);
    }
  });

  it('recognises the brand of another copy of the package (a global Symbol.for marker)', () => {
    const foreign = Object.assign(new Error('Input validation error: x'), {
      [Symbol.for('streaming-inference.error')]: true,
      [Symbol.for('streaming-inference.error.ValidationError')]: true,
    });
    expect(ValidationError.isInstance(foreign)).toBe(true);
    expect(OverloadedError.isInstance(foreign)).toBe(false);
  });
});

describe('expose', () => {
  it('is true below 500 only', () => {
    for (const error of examples()) expect(error.expose, error.name).toBe(error.status < 500);
    expect(new InferenceError('validation', 'Method PUT is not allowed', { status: 405 }).expose).toBe(true);
    expect(new InferenceError('internal', 'x').expose).toBe(false);
  });
});

describe('serializeError / deserializeError: across the worker boundary', () => {
  /** What postMessage does to a message. */
  const cross = (error: unknown) => deserializeError(structuredClone(serializeError(error)));

  it('keeps the class, message, status, param, stack and cause', () => {
    const onnx = new Error("Non-zero status code returned while running Add node. Name:'/model/fault/Add'");
    const cases = [
      ...examples(),
      new GenerationError('a pass failed', onnx),
      new InferenceError('validation', 'Method PUT', { status: 405 }),
    ];
    for (const original of cases) {
      const copy = cross(original);
      const cls = CLASSES.find((c) => c.isInstance(original)) ?? InferenceError;
      expect(copy).toBeInstanceOf(cls);
      expect(cls.isInstance(copy)).toBe(true);
      expect(copy).toMatchObject({
        name: original.name,
        message: original.message,
        status: original.status,
        errorType: original.errorType,
        param: original.param,
        expose: original.expose,
      });
      expect(copy.stack).toBe(original.stack);
    }
    const withCause = cross(new GenerationError('a pass failed', onnx)) as GenerationError;
    expect(withCause.cause).toBeInstanceOf(Error);
    expect(withCause.cause).toMatchObject({ name: 'Error', message: onnx.message, stack: onnx.stack });
  });

  it('keeps a built-in error a built-in error, and a chain of causes', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'type')");
    const copy = cross(new ModelLoadError('/m/onnx/model.onnx could not be loaded', new RangeError('bad', { cause: bug })));
    expect(ModelLoadError.isInstance(copy)).toBe(true);
    expect(copy.cause).toBeInstanceOf(RangeError);
    expect((copy.cause as Error).cause).toBeInstanceOf(TypeError);
    expect(((copy.cause as Error).cause as Error).message).toBe(bug.message);
    expect(InferenceError.isInstance(cross(bug))).toBe(false);
    expect(cross(bug)).toBeInstanceOf(TypeError);
    const custom = Object.assign(new Error('x'), { name: 'AbortError' });
    expect(cross(custom)).toMatchObject({ name: 'AbortError', message: 'x' });
    expect(cross('a string thrown')).toMatchObject({ name: 'Error', message: 'a string thrown' });
  });

  it('survives a cycle of causes', () => {
    const a = new Error('a');
    (a as { cause?: unknown }).cause = a;
    expect(cross(a).message).toBe('a');
  });
});

describe('response bodies', () => {
  it('never carry the message of a 500: a path or an ONNX node name goes to the log, not the client', () => {
    const load = new ModelLoadError('/srv/models/x/onnx/model.onnx could not be loaded by ONNX Runtime');
    expect(JSON.parse(errorResponse(load, 'tgi').body)).toEqual({ error: 'Model failed to load', error_type: 'model_load' });
    expect(JSON.parse(errorResponse(load, 'openai').body).error.message).toBe('Model failed to load');
    expect(inStreamErrorFrame(new InferenceError('incomplete_generation', 'shut down in /srv/x'), 'tgi')).toBe(
      'data:{"error":"Incomplete generation: the engine shut down","error_type":"incomplete_generation"}\n\n',
    );
    expect(errorResponse(new InferenceError('internal', "node '/model/Add'"), 'tgi').body).toBe(
      '{"error":"Internal server error","error_type":"internal"}',
    );
  });

  it('carry the message below 500, and the 503 sentences that say what to wait for', () => {
    expect(JSON.parse(errorResponse(new ValidationError('`n` must be 1', 'n'), 'tgi').body).error).toBe(
      'Input validation error: `n` must be 1',
    );
    expect(JSON.parse(errorResponse(new UnavailableError('Model is loading'), 'tgi').body).error).toBe('Model is loading');
  });
});

describe('logError, the default onError', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('writes one line with the phase, the route and the chain of causes', () => {
    const lines: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((line: string) => void lines.push(line));
    const onnx = new Error("Non-zero status code returned while running Add node.\nName:'/model/fault/Add'");
    logError(new GenerationError('a forward pass failed', onnx), { route: null, phase: 'generation' });
    logError(new TypeError('x is undefined'), { route: '/generate', phase: 'request' });
    logError(new GenerationError('out of memory', new Error('out of memory')), { route: null, phase: 'generation' });
    expect(lines).toEqual([
      "streaming-inference generation: GenerationError: Request failed during generation: a forward pass failed <- caused by Error: Non-zero status code returned while running Add node. Name:'/model/fault/Add'",
      'streaming-inference request /generate: TypeError: x is undefined',
      'streaming-inference generation: GenerationError: Request failed during generation: out of memory',
    ]);
  });
});

/**
 * An engine whose generations fail with an error that is not ours, as a bug in an engine or in a
 * route would: before any event, or after the first one. Only `generate` is used by these routes.
 */
function brokenEngine(afterFirstToken: boolean): Engine {
  const token = { id: 1, text: 'a', logprob: -1, special: false };
  const generation = (): Generation => ({
    accepted: Promise.resolve({ inputLength: 1 }),
    async *[Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
      if (afterFirstToken) yield { type: 'token', index: 1, token };
      throw new TypeError("Cannot read properties of undefined (reading '/srv/secret')");
    },
  });
  const unused = () => {
    throw new Error('not used by this test');
  };
  return {
    info: { limits: { maxStopSequences: 4, maxTopNTokens: 5 } } as Engine['info'],
    generate: generation,
    chat: generation,
    applyChatTemplate: unused,
    tokenize: unused,
    stats: () => ({ queueSize: 0, batchSize: 0, batchReservedTokens: 0, healthy: true, workerMemoryBytes: 0 }),
    onForwardPass: () => () => {},
    health: async () => true,
    close: async () => {},
  };
}

describe('a route failing with an error that is not ours', () => {
  let server: Server | null = null;
  afterEach(async () => {
    await new Promise((resolve) => server?.close(resolve));
    server = null;
  });

  async function serve(engine: Engine, reports: Array<[unknown, ErrorContext]>): Promise<string> {
    const handler = createInferenceHandler({ engine, metrics: false, onError: (error, context) => reports.push([error, context]) });
    server = createServer((req, res) => void handler.handle(req, res, req.url!));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  const post = (url: string, body: unknown) =>
    fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

  it('answers a generic 500 and reports the error once, with its route', async () => {
    const reports: Array<[unknown, ErrorContext]> = [];
    const url = await serve(brokenEngine(false), reports);
    const res = await post(`${url}/generate`, { inputs: 'Hi', parameters: { max_new_tokens: 2 } });
    expect(res.status).toBe(500);
    expect(await res.text()).toBe('{"error":"Internal server error","error_type":"internal"}');
    expect(reports).toHaveLength(1);
    expect(reports[0][0]).toBeInstanceOf(TypeError);
    expect(reports[0][1]).toEqual({ route: '/generate', phase: 'request' });
  });

  it('ends a stream with a generic error event and reports the error once', async () => {
    const reports: Array<[unknown, ErrorContext]> = [];
    const url = await serve(brokenEngine(true), reports);
    const res = await post(`${url}/v1/completions`, { prompt: 'Hi', max_tokens: 2, stream: true });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('data: {"error":{"message":"Internal server error","type":"server_error","param":null,"code":"internal"}}');
    expect(text).not.toContain('secret');
    expect(reports.map(([, context]) => context)).toEqual([{ route: '/v1/completions', phase: 'request' }]);
  });
});
