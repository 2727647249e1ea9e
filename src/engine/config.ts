/**
 * Engine options in two steps: `checkEngineOptions` on the caller's thread, at the call, before any
 * model loads (types, ranges, options that contradict each other); `resolveConfig` in the worker once
 * the model is known, for the defaults that depend on it.
 */
import { totalmem } from 'node:os';
import { isAbsolute } from 'node:path';
import { ModelLoadError } from '../errors.js';
import type { EngineOptions, ValidationLimits } from '../types.js';
import type { BatchBudget } from './batch-queue.js';
import { DTYPES, type ModelConfig, isDtype } from './model-dir.js';

const GiB = 1024 ** 3;

/**
 * Default `maxTotalTokens` cap, TGI's (launcher: "set its default to 4096 ... to save VRAM by refusing
 * large prompts in order to allow more users"), where vLLM takes the model's whole context. On a CPU
 * the cap matters more: a 131,072-token request would hold 8 GiB of fp32 KV for Llama-3.2-1B and its
 * prompt alone would take minutes to prefill while every other stream waits between chunks.
 */
export const DEFAULT_MAX_TOTAL_TOKENS = 4096;

/**
 * Default KV memory: a quarter of the machine's memory, at most 4 GiB. A quarter leaves room for
 * the weights, ONNX Runtime's arena and the moment a batch change holds old and new caches at once.
 * Past 4 GiB more KV makes every stream slower, not the server faster: each decode step reads the
 * whole batch's cache, and at the 20-40 GB/s of a server's memory 4 GiB is already 0.1-0.2 s a step.
 */
export function defaultKvCacheBytes(machineBytes = totalmem()): number {
  return Math.min(4 * GiB, Math.floor(machineBytes / 4));
}

/** What the KV budget needs to know of the loaded graph (ModelSession has these). */
export interface KvShape {
  numLayers: number;
  kvHeads: number;
  headDim: number;
  kvDtype: 'float32' | 'float16';
}

/** Bytes of key and value cache one token takes over all layers. */
export function kvBytesPerToken(shape: KvShape): number {
  return shape.numLayers * 2 * shape.kvHeads * shape.headDim * (shape.kvDtype === 'float16' ? 2 : 4);
}

export interface ResolvedConfig extends BatchBudget {
  limits: ValidationLimits;
  prefixCacheBytes: number;
  speculativeTokens: number;
}

/**
 * Share of the batch's KV memory that the prefix cache may hold besides it by default: enough for
 * a few hundred chats' system prompts and earlier turns without doubling the engine's memory.
 */
const PREFIX_CACHE_SHARE = 1 / 4;

/** Proposed tokens per speculative pass (bench/speculation.ts). */
const DEFAULT_SPECULATIVE_TOKENS = 4;

type Caller = 'createEngine' | 'streamingInference';

function optionError(caller: Caller, message: string, Kind: typeof TypeError | typeof RangeError = TypeError): Error {
  return new Kind(`${caller}: ${message}`);
}

/**
 * An optional integer option at or above `min`: a TypeError when it is not a number, a RangeError
 * when it is out of range.
 */
export function checkIntegerOption(caller: Caller, name: string, value: unknown, min: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number') throw optionError(caller, `\`${name}\` must be a number, got ${JSON.stringify(value) ?? typeof value}`);
  if (!Number.isSafeInteger(value) || value < min) {
    const rule = min === 1 ? 'a positive integer' : `an integer >= ${min}`;
    throw optionError(caller, `\`${name}\` must be ${rule}, got ${value}`, RangeError);
  }
}

function checkString(caller: Caller, name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'string' || value === '')) {
    throw optionError(caller, `\`${name}\` must be a non-empty string, got ${JSON.stringify(value) ?? typeof value}`);
  }
}

/** Every option of `EngineOptions`; the Record makes the compiler ask for a new one here. */
const ENGINE_OPTIONS: Record<keyof EngineOptions, true> = {
  model: true,
  dtype: true,
  modelFile: true,
  allowBatchVariance: true,
  threads: true,
  maxBatchSize: true,
  maxBatchPrefillTokens: true,
  maxBatchTotalTokens: true,
  maxKvCacheBytes: true,
  prefixCacheBytes: true,
  speculativeTokens: true,
  jsonWhitespace: true,
  maxInputTokens: true,
  maxTotalTokens: true,
  maxStopSequences: true,
  maxTopNTokens: true,
  maxBestOf: true,
  modelId: true,
  onProgress: true,
  onError: true,
};

export const ENGINE_OPTION_NAMES: ReadonlySet<string> = new Set(Object.keys(ENGINE_OPTIONS));

/** The integer options of `EngineOptions` with their least allowed value. */
const INTEGER_OPTIONS = {
  threads: 1,
  maxBatchSize: 1,
  maxBatchPrefillTokens: 1,
  maxBatchTotalTokens: 1,
  maxKvCacheBytes: 1,
  // 0 turns the prefix cache off.
  prefixCacheBytes: 0,
  // 0 turns speculation off.
  speculativeTokens: 0,
  maxInputTokens: 1,
  // A request needs one prompt token and one new one.
  maxTotalTokens: 2,
  // 0 refuses the feature, as TGI's launcher allows.
  maxStopSequences: 0,
  maxTopNTokens: 0,
  maxBestOf: 1,
} satisfies Partial<Record<keyof EngineOptions, number>>;

/**
 * Checks every engine option where it is given, synchronously, so a bad one fails the call that
 * passed it (`createEngine`, `streamingInference`) instead of a model load in the worker.
 *
 * @example
 * checkEngineOptions({ model: './m', maxBatchSize: -1 }); // RangeError: createEngine: `maxBatchSize` must be a positive integer, got -1
 */
export function checkEngineOptions(options: EngineOptions, caller: Caller = 'createEngine'): void {
  if (typeof options !== 'object' || options === null) throw optionError(caller, 'options must be an object with `model`');
  if (typeof options.model !== 'string' || options.model === '') {
    throw optionError(caller, '`model` must be a model directory or a Hub id (org/name)');
  }
  for (const name of ['onProgress', 'onError'] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== 'function')
      throw optionError(caller, `\`${name}\` must be a function, got ${typeof value}`);
  }
  for (const [name, min] of Object.entries(INTEGER_OPTIONS)) checkIntegerOption(caller, name, options[name as keyof EngineOptions], min);
  checkString(caller, 'modelId', options.modelId);
  if (options.allowBatchVariance !== undefined && typeof options.allowBatchVariance !== 'boolean') {
    throw optionError(
      caller,
      `\`allowBatchVariance\` must be a boolean, got ${JSON.stringify(options.allowBatchVariance) ?? typeof options.allowBatchVariance}`,
    );
  }
  if (options.jsonWhitespace !== undefined && options.jsonWhitespace !== 'compact' && options.jsonWhitespace !== 'any') {
    throw optionError(caller, `\`jsonWhitespace\` must be 'compact' or 'any', got ${JSON.stringify(options.jsonWhitespace)}`, RangeError);
  }
  checkString(caller, 'dtype', options.dtype);
  if (options.dtype !== undefined && !isDtype(options.dtype)) {
    throw optionError(caller, `Unknown dtype "${options.dtype}": expected one of ${DTYPES.join(', ')}`, RangeError);
  }
  checkString(caller, 'modelFile', options.modelFile);
  if (options.modelFile !== undefined) {
    const file = options.modelFile.replaceAll('\\', '/');
    if (isAbsolute(file) || file.split('/').includes('..')) {
      throw optionError(caller, `\`modelFile\` must be a path inside the model directory, got ${options.modelFile}`, RangeError);
    }
    if (!file.endsWith('.onnx')) throw optionError(caller, `\`modelFile\` must name an .onnx file, got ${options.modelFile}`, RangeError);
    if (options.dtype !== undefined) throw optionError(caller, 'pass `dtype` or `modelFile`, not both: `modelFile` names the file');
  }
  if (options.maxKvCacheBytes !== undefined && options.maxBatchTotalTokens !== undefined) {
    throw optionError(caller, 'pass `maxBatchTotalTokens` or `maxKvCacheBytes`, not both: the second only sets the first');
  }
  const { maxInputTokens, maxTotalTokens, maxBatchTotalTokens } = options;
  if (maxInputTokens !== undefined && maxTotalTokens !== undefined && maxInputTokens >= maxTotalTokens) {
    throw optionError(
      caller,
      `\`maxInputTokens\` (${maxInputTokens}) must be less than \`maxTotalTokens\` (${maxTotalTokens})`,
      RangeError,
    );
  }
  const longest = maxTotalTokens ?? (maxInputTokens === undefined ? undefined : maxInputTokens + 1);
  if (longest !== undefined && maxBatchTotalTokens !== undefined && longest > maxBatchTotalTokens) {
    throw optionError(
      caller,
      `\`maxBatchTotalTokens\` (${maxBatchTotalTokens}) must hold at least one whole request (${longest} tokens)`,
      RangeError,
    );
  }
}

function formatBytes(bytes: number): string {
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(2)} GiB`;
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/**
 * Every limit and budget, once, at load, from options already checked by `checkEngineOptions` and the
 * model. The batch's KV budget comes from memory, so no default lets one request, or the batch,
 * reserve more KV than `maxKvCacheBytes`; `maxTotalTokens` is never above the batch budget.
 */
export function resolveConfig(
  options: EngineOptions,
  config: Pick<ModelConfig, 'maxPositionEmbeddings'>,
  model: KvShape,
  machineBytes = totalmem(),
): ResolvedConfig {
  const bytesPerToken = kvBytesPerToken(model);
  const kvBytes = options.maxKvCacheBytes ?? defaultKvCacheBytes(machineBytes);
  const maxBatchTotalTokens = options.maxBatchTotalTokens ?? Math.floor(kvBytes / bytesPerToken);
  const budget =
    options.maxBatchTotalTokens === undefined
      ? `maxKvCacheBytes (${formatBytes(kvBytes)}${options.maxKvCacheBytes === undefined ? ', the default' : ''}) holds ${maxBatchTotalTokens} tokens of ${formatBytes(bytesPerToken)}`
      : `maxBatchTotalTokens is ${maxBatchTotalTokens}`;
  if (maxBatchTotalTokens < 2) throw new ModelLoadError(`The KV budget is too small for one request: ${budget}`);

  const fromContext = Math.min(config.maxPositionEmbeddings, DEFAULT_MAX_TOTAL_TOKENS, maxBatchTotalTokens);
  // An explicit maxInputTokens raises the default total to fit it; the budget check below still applies.
  const maxTotalTokens =
    options.maxTotalTokens ?? Math.max(fromContext, options.maxInputTokens === undefined ? 2 : options.maxInputTokens + 1);
  if (maxTotalTokens > maxBatchTotalTokens) {
    throw new ModelLoadError(
      `Option maxTotalTokens (${maxTotalTokens}${options.maxTotalTokens === undefined ? ', from maxInputTokens' : ''}) ` +
        `is more than the batch's KV budget: ${budget}. Lower it or raise the budget`,
    );
  }
  const maxInputTokens = options.maxInputTokens ?? maxTotalTokens - 1;
  if (maxInputTokens >= maxTotalTokens) {
    throw new ModelLoadError(`Option maxInputTokens (${maxInputTokens}) must be less than maxTotalTokens (${maxTotalTokens})`);
  }
  return {
    limits: {
      // TGI's router defaults.
      maxBestOf: options.maxBestOf ?? 1,
      maxStopSequences: options.maxStopSequences ?? 4,
      maxTopNTokens: options.maxTopNTokens ?? 5,
      maxInputTokens,
      maxTotalTokens,
    },
    // README: aggregate throughput still grows at 32 streams while each keeps about 8 tokens per second.
    maxBatchSize: options.maxBatchSize ?? 32,
    // A longer prompt is prefilled in chunks of this size, with a decode step for the running streams between two.
    maxBatchPrefillTokens: options.maxBatchPrefillTokens ?? 512,
    maxBatchTotalTokens,
    prefixCacheBytes: options.prefixCacheBytes ?? Math.floor(maxBatchTotalTokens * bytesPerToken * PREFIX_CACHE_SHARE),
    speculativeTokens: options.speculativeTokens ?? DEFAULT_SPECULATIVE_TOKENS,
  };
}
