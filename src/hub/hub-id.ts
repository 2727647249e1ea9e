/** A model on the Hugging Face Hub: `org/name`, pinned to a branch, tag or commit with `@revision`. */
export interface HubModelId {
  repo: string;
  revision: string;
}

// The Hub's repository names: letters, digits, `-`, `_` and `.`, one `/` between owner and name.
const HUB_ID = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@([^\s@]+))?$/;
const COMMIT = /^[0-9a-f]{40}$/;

/** `org/name` or `org/name@revision` (default `main`); null for anything else, such as `./dir` or `/abs/dir`. */
export function parseHubId(model: string): HubModelId | null {
  const match = HUB_ID.exec(model);
  if (!match || match[1].includes('..') || match[1].includes('--')) return null;
  return { repo: match[1], revision: match[2] ?? 'main' };
}

export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision);
}
