/**
 * A model on the Hugging Face Hub: `org/name`, pinned to a branch, tag or commit with `@revision`,
 * and `org/name/folder` for a repository that keeps its models in folders, one per variant, as
 * microsoft's `*-onnx` repositories do (`microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4`).
 */
export interface HubModelId {
  repo: string;
  revision: string;
  /** The folder of the repository that holds the model, `/`-separated; absent for the repository's root. */
  subfolder?: string;
}

// The Hub's repository names: letters, digits, `-`, `_` and `.`, one `/` between owner and name;
// then, optionally, a folder inside it.
const HUB_ID = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)((?:\/[^\s/@\\]+)*)(?:@([^\s@]+))?$/;
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * `org/name`, `org/name/folder` or either with `@revision` (default `main`); null for anything
 * else, such as `./dir` or `/abs/dir`.
 */
export function parseHubId(model: string): HubModelId | null {
  const match = HUB_ID.exec(model);
  if (!match || match[1].includes('..') || match[1].includes('--')) return null;
  const folders = match[2].split('/').slice(1);
  if (folders.some((folder) => folder === '.' || folder === '..')) return null;
  const id: HubModelId = { repo: match[1], revision: match[3] ?? 'main' };
  if (folders.length > 0) id.subfolder = folders.join('/');
  return id;
}

/** The id as a user writes it: `org/name[/folder][@revision]`, the revision left out when it is `main`. */
export function formatHubId(id: HubModelId): string {
  return `${id.repo}${id.subfolder ? `/${id.subfolder}` : ''}${id.revision === 'main' ? '' : `@${id.revision}`}`;
}

export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision);
}
