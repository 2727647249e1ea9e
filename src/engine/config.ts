import { ModelLoadError } from '../errors.js';
import type { EngineOptions, ValidationLimits } from '../types.js';
import type { BatchBudget } from './batch-queue.js';
import type { ModelConfig } from './model-dir.js';
import type { ModelSession } from './model-session.js';

/** The KV memory the default `maxBatchTotalTokens` may use. */
const DEFAULT_KV_BYTES = 4 * 1024 ** 3;

export interface ResolvedConfig extends BatchBudget {
  limits: ValidationLimits;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value <= 0) throw new ModelLoadError(`Option ${name} must be a positive integer, got ${value}`);
  return value;
}

/** Turns the user's partial options into every limit and budget once, at load, with TGI's defaults. */
export function resolveConfig(options: EngineOptions, config: ModelConfig, model: ModelSession): ResolvedConfig {
  const maxTotalTokens = positiveInt('maxTotalTokens', options.maxTotalTokens, config.maxPositionEmbeddings);
  const maxInputTokens = positiveInt('maxInputTokens', options.maxInputTokens, maxTotalTokens - 1);
  if (maxInputTokens >= maxTotalTokens) {
    throw new ModelLoadError(`Option maxInputTokens (${maxInputTokens}) must be less than maxTotalTokens (${maxTotalTokens})`);
  }
  const bytesPerToken = model.numLayers * 2 * model.kvHeads * model.headDim * (model.kvDtype === 'float16' ? 2 : 4);
  const maxBatchSize = positiveInt('maxBatchSize', options.maxBatchSize, 32);
  return {
    limits: {
      maxBestOf: positiveInt('maxBestOf', options.maxBestOf, 1),
      maxStopSequences: positiveInt('maxStopSequences', options.maxStopSequences, 4),
      maxTopNTokens: positiveInt('maxTopNTokens', options.maxTopNTokens, 5),
      maxInputTokens,
      maxTotalTokens,
    },
    maxBatchSize,
    maxBatchPrefillTokens: positiveInt('maxBatchPrefillTokens', options.maxBatchPrefillTokens, 512),
    maxBatchTotalTokens: positiveInt(
      'maxBatchTotalTokens',
      options.maxBatchTotalTokens,
      Math.max(maxTotalTokens, Math.floor(DEFAULT_KV_BYTES / bytesPerToken)),
    ),
  };
}
