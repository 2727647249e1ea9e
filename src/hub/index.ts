/**
 * Models by Hugging Face Hub id: `org/name[/folder][@revision]` becomes a snapshot directory in the
 * standard Hugging Face cache, downloaded as needed.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { EngineOptions } from '../types.js';
import { formatHubId, parseHubId } from './hub-id.js';
import { type ResolveOptions, resolveHubModel } from './resolve.js';

export { formatHubId, parseHubId, type HubModelId } from './hub-id.js';
export { describeProgress, progressPrinter } from './progress.js';
export { resolveHubModel, type ResolveOptions, type ResolvedHubModel } from './resolve.js';
export { hubSettings, type HubSettings } from './settings.js';

/**
 * Where to load `model` from: an existing directory as it is; otherwise a Hub id, downloaded into
 * (or found in) the cache, named by its id (with its folder, if it names one: each folder is another
 * model). Anything else is returned as a path, for the loader to report as missing.
 *
 * @example
 * const { dir, modelId } = await resolveModelSource('onnx-community/Qwen2.5-0.5B-Instruct', { dtype: 'q4' });
 */
export async function resolveModelSource(model: string, options: ResolveOptions = {}): Promise<{ dir: string; modelId?: string }> {
  const id = (await stat(model).then(
    (s) => s.isDirectory(),
    () => false,
  ))
    ? null
    : parseHubId(model);
  if (!id) return { dir: resolve(model) };
  const { dir } = await resolveHubModel(id, options);
  return { dir, modelId: formatHubId({ ...id, revision: 'main' }) };
}

type ModelOptions = Pick<EngineOptions, 'model' | 'dtype' | 'modelFile' | 'modelId' | 'onProgress'>;

/** The options a worker loads from: `model` a local directory, and no `onProgress` (a function cannot cross to it). */
export async function resolveEngineModel<T extends ModelOptions>(options: T): Promise<Omit<T, 'onProgress'>> {
  const { onProgress, ...rest } = options;
  const { dir, modelId } = await resolveModelSource(options.model, { dtype: options.dtype, modelFile: options.modelFile, onProgress });
  return { ...rest, model: dir, modelId: options.modelId ?? modelId };
}
