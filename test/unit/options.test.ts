import { describe, expect, it } from 'vitest';
import { checkEngineOptions, defaultKvCacheBytes, kvBytesPerToken, resolveConfig } from '../../src/engine/config.js';
import { createEngine } from '../../src/engine/engine.js';
import { ModelLoadError } from '../../src/errors.js';
import { createInferenceHandler } from '../../src/http/handler.js';
import type { Engine, EngineOptions } from '../../src/types.js';

const GiB = 1024 ** 3;
/** Llama-3.2-1B's KV shape: 16 layers, 8 KV heads of 64, fp32: 64 KiB a token. */
const LLAMA_3_2_1B = { numLayers: 16, kvHeads: 8, headDim: 64, kvDtype: 'float32' } as const;
const LONG_CONTEXT = { maxPositionEmbeddings: 131072 };

describe('checkEngineOptions', () => {
  it.each<[string, Record<string, unknown>, ErrorConstructor, string]>([
    ['a negative batch size', { maxBatchSize: -1 }, RangeError, 'createEngine: `maxBatchSize` must be a positive integer, got -1'],
    ['a fractional thread count', { threads: 1.5 }, RangeError, 'createEngine: `threads` must be a positive integer, got 1.5'],
    ['a string where a number goes', { maxTotalTokens: '4096' }, TypeError, 'createEngine: `maxTotalTokens` must be a number, got "4096"'],
    ['a total of one token', { maxTotalTokens: 1 }, RangeError, 'createEngine: `maxTotalTokens` must be an integer >= 2, got 1'],
    [
      'an unknown dtype',
      { dtype: 'q3' },
      RangeError,
      'createEngine: Unknown dtype "q3": expected one of fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4, q2, q2f16, q1, q1f16',
    ],
    ['a dtype that is no string', { dtype: 4 }, TypeError, 'createEngine: `dtype` must be a non-empty string, got 4'],
    [
      'an unknown JSON whitespace',
      { jsonWhitespace: 'pretty' },
      RangeError,
      "createEngine: `jsonWhitespace` must be 'compact' or 'any', got \"pretty\"",
    ],
    [
      'a modelFile outside the directory',
      { modelFile: '../other/model.onnx' },
      RangeError,
      'createEngine: `modelFile` must be a path inside the model directory, got ../other/model.onnx',
    ],
    [
      'a modelFile that is no graph',
      { modelFile: 'onnx/model.onnx_data' },
      RangeError,
      'createEngine: `modelFile` must name an .onnx file, got onnx/model.onnx_data',
    ],
    [
      'dtype with modelFile',
      { dtype: 'q4', modelFile: 'm.onnx' },
      TypeError,
      'createEngine: pass `dtype` or `modelFile`, not both: `modelFile` names the file',
    ],
    [
      'two KV budgets',
      { maxKvCacheBytes: GiB, maxBatchTotalTokens: 8192 },
      TypeError,
      'createEngine: pass `maxBatchTotalTokens` or `maxKvCacheBytes`, not both: the second only sets the first',
    ],
    [
      'an input as long as the total',
      { maxInputTokens: 100, maxTotalTokens: 100 },
      RangeError,
      'createEngine: `maxInputTokens` (100) must be less than `maxTotalTokens` (100)',
    ],
    [
      'a batch smaller than a request',
      { maxTotalTokens: 4096, maxBatchTotalTokens: 1000 },
      RangeError,
      'createEngine: `maxBatchTotalTokens` (1000) must hold at least one whole request (4096 tokens)',
    ],
    [
      'a progress callback that is no function',
      { onProgress: 'log' },
      TypeError,
      'createEngine: `onProgress` must be a function, got string',
    ],
  ])('refuses %s with a clear message', (_, options, Kind, message) => {
    expect(() => checkEngineOptions({ model: '/models/m', ...options } as EngineOptions)).toThrow(new Kind(message));
  });

  it('needs a model', () => {
    expect(() => checkEngineOptions({} as EngineOptions)).toThrow(
      new TypeError('createEngine: `model` must be a model directory or a Hub id (org/name)'),
    );
  });

  it('accepts every option at its edge', () => {
    const options: EngineOptions = {
      model: '/models/m',
      dtype: 'q4f16',
      threads: 1,
      maxBatchSize: 1,
      maxBatchPrefillTokens: 1,
      maxKvCacheBytes: 1,
      maxInputTokens: 1,
      maxTotalTokens: 2,
      maxStopSequences: 0,
      maxTopNTokens: 0,
      maxBestOf: 1,
      modelId: 'm',
      jsonWhitespace: 'any',
    };
    expect(checkEngineOptions(options)).toBeUndefined();
  });
});

describe('options are checked at the call, before any model loads', () => {
  it('createEngine rejects a bad option, not the model load in the worker', async () => {
    // The directory does not exist: an error about it would mean a load was tried.
    await expect(createEngine({ model: '/no/such/model', maxBatchSize: -1 })).rejects.toThrow(
      new RangeError('createEngine: `maxBatchSize` must be a positive integer, got -1'),
    );
  });

  it('streamingInference throws at once, naming itself', () => {
    expect(() => createInferenceHandler({ model: '/no/such/model', maxBatchSize: -1 })).toThrow(
      new RangeError('streamingInference: `maxBatchSize` must be a positive integer, got -1'),
    );
    expect(() => createInferenceHandler({ model: '/no/such/model', keepAliveMs: 0 })).toThrow(
      new RangeError('streamingInference: `keepAliveMs` must be a positive integer, got 0'),
    );
    expect(() => createInferenceHandler({ model: '/no/such/model', stallTimeoutMs: Number.NaN })).toThrow(RangeError);
  });

  it('refuses engine options beside a shared engine, which keeps its own, at compile time too', () => {
    // Never used: the options are refused before the handler touches the engine.
    const engine = {} as Engine;
    expect(() =>
      // @ts-expect-error a shared engine keeps the options it was created with
      createInferenceHandler({ engine, maxBatchSize: 8, dtype: 'q4' }),
    ).toThrow(new TypeError('streamingInference: maxBatchSize, dtype cannot apply to a shared `engine`: pass them to its createEngine'));
    // @ts-expect-error either a shared engine or a model
    expect(() => createInferenceHandler({ maxConcurrentRequests: 8 })).toThrow(TypeError);
  });
});

describe('resolveConfig', () => {
  it('caps the default total at 4096 for a 131,072-token model and sizes the batch from 4 GiB', () => {
    const resolved = resolveConfig({ model: 'm' }, LONG_CONTEXT, LLAMA_3_2_1B, 24 * GiB);
    expect(kvBytesPerToken(LLAMA_3_2_1B)).toBe(64 * 1024);
    expect(resolved.limits).toMatchObject({ maxTotalTokens: 4096, maxInputTokens: 4095 });
    expect(resolved.maxBatchTotalTokens).toBe(65536);
    // One request reserves at most 256 MiB, the whole batch at most the 4 GiB budget.
    expect(resolved.limits.maxTotalTokens * kvBytesPerToken(LLAMA_3_2_1B)).toBe(256 * 1024 ** 2);
    expect(resolved.maxBatchTotalTokens * kvBytesPerToken(LLAMA_3_2_1B)).toBeLessThanOrEqual(4 * GiB);
  });

  it('takes a quarter of a small machine, and a request never exceeds what the budget holds', () => {
    expect(defaultKvCacheBytes(2 * GiB)).toBe(GiB / 2);
    const resolved = resolveConfig({ model: 'm' }, LONG_CONTEXT, LLAMA_3_2_1B, 512 * 1024 ** 2);
    expect(resolved.maxBatchTotalTokens).toBe(2048);
    expect(resolved.limits.maxTotalTokens).toBe(2048);
  });

  it('refuses an asked-for 131,072-token request (8 GiB of KV) beyond the default budget', () => {
    expect(() => resolveConfig({ model: 'm', maxTotalTokens: 131072 }, LONG_CONTEXT, LLAMA_3_2_1B, 24 * GiB)).toThrow(
      new ModelLoadError(
        "Option maxTotalTokens (131072) is more than the batch's KV budget: maxKvCacheBytes (4.00 GiB, the default) holds 65536 tokens of 64.0 KiB. Lower it or raise the budget",
      ),
    );
    // With memory given for it, the host's choice stands.
    const whole = resolveConfig({ model: 'm', maxTotalTokens: 131072, maxKvCacheBytes: 8 * GiB }, LONG_CONTEXT, LLAMA_3_2_1B);
    expect(whole.limits.maxTotalTokens).toBe(131072);
  });

  it('keeps a shorter context and raises the default total for an explicit maxInputTokens', () => {
    expect(resolveConfig({ model: 'm' }, { maxPositionEmbeddings: 2048 }, LLAMA_3_2_1B, 24 * GiB).limits.maxTotalTokens).toBe(2048);
    const long = resolveConfig({ model: 'm', maxInputTokens: 8000 }, LONG_CONTEXT, LLAMA_3_2_1B, 24 * GiB);
    expect(long.limits).toMatchObject({ maxInputTokens: 8000, maxTotalTokens: 8001 });
  });

  it('lowers the default total to an explicit batch budget, and counts float16 caches at two bytes', () => {
    const resolved = resolveConfig({ model: 'm', maxBatchTotalTokens: 1000 }, LONG_CONTEXT, { ...LLAMA_3_2_1B, kvDtype: 'float16' });
    expect(resolved).toMatchObject({ maxBatchTotalTokens: 1000, limits: { maxTotalTokens: 1000 } });
    expect(kvBytesPerToken({ ...LLAMA_3_2_1B, kvDtype: 'float16' })).toBe(32 * 1024);
  });

  it('keeps TGI router defaults for the rest', () => {
    const resolved = resolveConfig({ model: 'm' }, LONG_CONTEXT, LLAMA_3_2_1B, 24 * GiB);
    expect(resolved).toMatchObject({
      maxBatchSize: 32,
      maxBatchPrefillTokens: 512,
      limits: { maxBestOf: 1, maxStopSequences: 4, maxTopNTokens: 5 },
    });
  });
});
