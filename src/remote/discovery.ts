/**
 * What an upstream tells about itself before it gets traffic: its model, its validation limits and
 * how many requests it takes at once. TGI and our server say it all in `/info`; an OpenAI server
 * names its model in `/v1/models` (vLLM adds `max_model_len`), and llama.cpp's `/props` adds its
 * slots and their context.
 */
import type { ValidationLimits } from '../types.js';
import type { Dialect } from './options.js';

export interface Discovery {
  modelId: string;
  limits: Partial<ValidationLimits>;
  /** Requests it serves at once, when it says. */
  capacity: number | null;
  maxBatchSize: number | null;
  maxBatchTotalTokens: number | null;
}

export type GetJson = (path: string) => Promise<unknown>;

/** @throws when the upstream does not answer (yet), e.g. while it loads its model. */
export async function discover(dialect: Dialect, get: GetJson): Promise<Discovery> {
  return dialect === 'tgi' ? discoverTgi(get) : discoverOpenAI(get);
}

async function discoverTgi(get: GetJson): Promise<Discovery> {
  const info = (await get('/info')) as Record<string, unknown>;
  if (typeof info?.model_id !== 'string') throw new Error('/info has no model_id');
  const limits: Partial<ValidationLimits> = {};
  const copy = (key: keyof ValidationLimits, field: string) => {
    if (isCount(info[field])) limits[key] = info[field];
  };
  copy('maxInputTokens', 'max_input_tokens');
  copy('maxTotalTokens', 'max_total_tokens');
  copy('maxStopSequences', 'max_stop_sequences');
  copy('maxTopNTokens', 'max_top_n_tokens');
  return {
    modelId: info.model_id,
    limits,
    capacity: isCount(info.max_concurrent_requests) ? info.max_concurrent_requests : null,
    maxBatchSize: isCount(info.max_batch_size) ? info.max_batch_size : null,
    maxBatchTotalTokens: isCount(info.max_batch_total_tokens) ? info.max_batch_total_tokens : null,
  };
}

async function discoverOpenAI(get: GetJson): Promise<Discovery> {
  const models = (await get('/v1/models')) as { data?: Array<{ id?: unknown; max_model_len?: unknown }> };
  const first = models?.data?.[0];
  if (typeof first?.id !== 'string') throw new Error('/v1/models lists no model');
  const limits: Partial<ValidationLimits> = {};
  if (isCount(first.max_model_len)) limits.maxTotalTokens = first.max_model_len;
  let capacity: number | null = null;
  // llama.cpp only; other servers answer 404, which leaves the defaults.
  const props = (await get('/props').catch(() => null)) as {
    total_slots?: unknown;
    default_generation_settings?: { n_ctx?: unknown };
  } | null;
  if (props) {
    if (isCount(props.total_slots)) capacity = props.total_slots;
    if (isCount(props.default_generation_settings?.n_ctx)) limits.maxTotalTokens = props.default_generation_settings.n_ctx;
  }
  if (limits.maxTotalTokens !== undefined) limits.maxInputTokens = limits.maxTotalTokens - 1;
  return { modelId: first.id, limits, capacity, maxBatchSize: capacity, maxBatchTotalTokens: null };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}
