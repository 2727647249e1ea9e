import { join, posix } from 'node:path';
import { listFiles, modelInfo } from '@huggingface/hub';
import { ModelLoadError } from '../errors.js';
import { MODEL_CONFIG_FILES, type ModelConfigFiles, type ModelFileOptions, planModelFiles } from '../engine/model-dir.js';
import { readJsonObject } from '../json-file.js';
import type { DownloadProgress } from '../types.js';
import { RepoCache } from './cache-layout.js';
import { type RemoteFile, cacheFile } from './download.js';
import { type HubModelId, formatHubId, isCommitHash } from './hub-id.js';
import { type HubTarget, hubFailure, isNetworkError, networkCause } from './hub-errors.js';
import { ProgressMeter } from './progress.js';
import { type HubSettings, hubSettings } from './settings.js';

export interface ResolveOptions extends ModelFileOptions {
  onProgress?: (progress: DownloadProgress) => void;
  /** Defaults from the environment (`hubSettings()`). */
  settings?: Partial<HubSettings>;
}

export interface ResolvedHubModel {
  /** The snapshot directory in the cache (its `subfolder`, if the id names one), to load from. */
  dir: string;
  repo: string;
  revision: string;
  commit: string;
  subfolder?: string;
}

/**
 * Puts the files a model needs for `dtype` into the Hugging Face cache and returns its snapshot
 * directory: the small JSON and tokenizer files first, then the ONNX file(s) the loader's own plan
 * picks from the repository's listing. Files already cached are not requested again; without
 * network (HF_HUB_OFFLINE=1, or the Hub unreachable) the cached snapshot is used as it is. With a
 * `subfolder` all of this happens inside that folder of the repository, and the directory is its
 * folder in the snapshot.
 *
 * @example
 * const { dir } = await resolveHubModel({ repo: 'onnx-community/Qwen2.5-0.5B-Instruct', revision: 'main' }, { dtype: 'q4' });
 */
export async function resolveHubModel(id: HubModelId, options: ResolveOptions = {}): Promise<ResolvedHubModel> {
  const settings = hubSettings(options.settings);
  const cache = new RepoCache(settings.cacheDir, id.repo);
  const target: HubTarget = { ...id, endpoint: settings.endpoint, withToken: settings.token !== undefined };
  if (settings.offline) return fromCache(id, cache, options, 'HF_HUB_OFFLINE=1');
  let commit: string;
  try {
    commit = (await modelInfo({ ...credentials(settings), name: id.repo, revision: id.revision, additionalFields: ['sha'] })).sha!;
  } catch (error) {
    if (!isNetworkError(error)) throw hubFailure(error, target);
    // As huggingface_hub does: without network, what the cache has will do.
    return fromCache(id, cache, options, `${id.repo}@${id.revision}: cannot reach ${settings.endpoint} (${networkCause(error)})`);
  }
  if (id.revision !== commit) await cache.writeRef(id.revision, commit);
  const listing = await listRepo(id, commit, settings, target);
  // The model's files by their path in its folder (the repository's root unless the id names one).
  const files = modelFiles(id, listing);
  const meter = new ProgressMeter(id.repo, options.onProgress);
  const ensure = async (paths: string[]) => {
    const missing: RemoteFile[] = [];
    for (const path of paths) {
      const file = files.get(path)!;
      if (!(await cache.has(commit, file.path, file.size))) missing.push(file);
    }
    for (const file of missing) if (!(await cache.hasBlob(file.oid, file.size))) meter.expect(file.size);
    for (const file of missing) {
      // A file-system failure outside the transfer (the snapshot's folder or link) names the file too.
      await cacheFile(file, { cache, commit, settings, target, meter }).catch((error: unknown) => {
        throw hubFailure(error, { ...target, file: file.path });
      });
    }
  };
  // The configs the plan reads first, then the rest in one go, so the progress counts up once.
  await ensure(PLAN_CONFIG_FILES.filter((path) => files.has(path)));
  const dir = modelDir(cache, commit, id);
  const plan = planModelFiles([...files.keys()], await readConfigs(dir), options, where(id));
  const small = MODEL_CONFIG_FILES.filter((path) => files.has(path) && !PLAN_CONFIG_FILES.includes(path));
  await ensure([...small, plan.onnx, ...plan.externalData]);
  meter.finish();
  return resolved(id, dir, commit);
}

function resolved(id: HubModelId, dir: string, commit: string): ResolvedHubModel {
  return { dir, repo: id.repo, revision: id.revision, commit, ...(id.subfolder ? { subfolder: id.subfolder } : {}) };
}

/** `org/name@revision`, and the folder: how errors name where a file was looked for. */
function where(id: HubModelId): string {
  return `${id.repo}@${id.revision}${id.subfolder ? `/${id.subfolder}` : ''}`;
}

/** Paths of the repository inside the id's folder, relative to it (all of them, without a folder). */
function inFolder(id: HubModelId, paths: Iterable<string>): Array<{ path: string; inside: string }> {
  const prefix = id.subfolder ? `${id.subfolder}/` : '';
  return [...paths].filter((path) => path.startsWith(prefix)).map((path) => ({ path, inside: path.slice(prefix.length) }));
}

function modelDir(cache: RepoCache, commit: string, id: HubModelId): string {
  return id.subfolder ? cache.snapshotPath(commit, id.subfolder) : cache.snapshotDir(commit);
}

/**
 * The files of the model's folder, by their path inside it. A folder without config.json or
 * genai_config.json is no model; the error then lists the repository's folders that are, since
 * repositories such as microsoft/Phi-3.5-mini-instruct-onnx keep one per variant and none at the root.
 */
function modelFiles(id: HubModelId, listing: Map<string, RemoteFile>): Map<string, RemoteFile> {
  const files = new Map(inFolder(id, listing.keys()).map(({ path, inside }) => [inside, listing.get(path)!]));
  if (PLAN_CONFIG_FILES.some((path) => files.has(path))) return files;
  const folders = [...listing.keys()]
    .filter((path) => PLAN_CONFIG_FILES.includes(posix.basename(path)) && path.includes('/'))
    .map((path) => posix.dirname(path));
  const models = [...new Set(folders)].sort();
  const what = id.subfolder
    ? files.size === 0
      ? `${id.repo}@${id.revision} has no folder ${id.subfolder}`
      : `${where(id)} has neither config.json nor genai_config.json`
    : `${id.repo}@${id.revision} has neither config.json nor genai_config.json at its root`;
  if (models.length === 0) throw new ModelLoadError(`${what}: it holds no model in the Hugging Face layout`);
  const example = formatHubId({ ...id, subfolder: models[0] });
  throw new ModelLoadError(`${what}. Its models are in the folders ${models.join(', ')}: name one after the id, as in ${example}`);
}

function credentials(settings: HubSettings) {
  return { hubUrl: settings.endpoint, accessToken: settings.token };
}

async function listRepo(id: HubModelId, commit: string, settings: HubSettings, target: HubTarget): Promise<Map<string, RemoteFile>> {
  const files = new Map<string, RemoteFile>();
  try {
    for await (const entry of listFiles({
      ...credentials(settings),
      repo: { type: 'model', name: id.repo },
      revision: commit,
      recursive: true,
    })) {
      if (entry.type !== 'file') continue;
      const lfs = entry.lfs ?? null;
      files.set(entry.path, { path: entry.path, size: entry.size, oid: lfs ? lfs.oid : entry.oid!, lfs: lfs !== null });
    }
  } catch (error) {
    throw hubFailure(error, target);
  }
  return files;
}

/** The configs the plan reads, by their field in ModelConfigFiles. */
const PLAN_CONFIGS = { config: 'config.json', genai: 'genai_config.json' } as const;
const PLAN_CONFIG_FILES: readonly string[] = Object.values(PLAN_CONFIGS);

async function readConfigs(dir: string): Promise<ModelConfigFiles> {
  return { config: await readJsonObject(join(dir, PLAN_CONFIGS.config)), genai: await readJsonObject(join(dir, PLAN_CONFIGS.genai)) };
}

/** The cached snapshot as it is; the plan says which dtypes it has when the one asked for is not there. */
async function fromCache(id: HubModelId, cache: RepoCache, options: ResolveOptions, reason: string): Promise<ResolvedHubModel> {
  const commit = isCommitHash(id.revision) ? id.revision : await cache.readRef(id.revision);
  const cached = inFolder(id, commit ? await cache.snapshotFiles(commit) : []).map(({ inside }) => inside);
  if (!commit || cached.length === 0) {
    throw new ModelLoadError(
      `${reason}, and ${where(id)} is not in the Hugging Face cache ${cache.cacheDir}. ` +
        `Fetch it with network first: streaming-inference download ${formatHubId(id)}${options.dtype ? ` --dtype ${options.dtype}` : ''}`,
    );
  }
  const dir = modelDir(cache, commit, id);
  try {
    planModelFiles(cached, await readConfigs(dir), options, dir);
  } catch (error) {
    throw new ModelLoadError(`${reason}, and the cached snapshot of ${where(id)} does not have it: ${(error as Error).message}`, error);
  }
  return resolved(id, dir, commit);
}
