import { HubApiError } from '@huggingface/hub';
import { ModelLoadError } from '../errors.js';

/** What a failure was about, for a message that names the repository and the file. */
export interface HubTarget {
  repo: string;
  revision: string;
  endpoint: string;
  file?: string;
  /** A token went with the requests (HF_TOKEN or the saved one). */
  withToken?: boolean;
}

/** A refused connection, a DNS failure, a reset mid-body: worth a retry, or a fall back to the cache. */
export function isNetworkError(error: unknown): boolean {
  return error instanceof TypeError && (error.message === 'fetch failed' || error.message === 'terminated');
}

/** `ECONNREFUSED`, `ENOTFOUND`, ...: what undici's "fetch failed" hides in its cause. */
export function networkCause(error: unknown): string {
  const cause = (error as Error & { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
}

/**
 * What the Hub said: `{"error": ...}` from the API, plain text from a resolve URL (which
 * `@huggingface/hub` keeps as `data.message`, leaving the message a bare "Api error with status 401").
 */
function hubMessage(error: HubApiError): string {
  const data = error.data as { error?: unknown; message?: unknown } | undefined;
  for (const said of [data?.error, data?.message]) if (typeof said === 'string' && said.trim() !== '') return said.trim();
  return error.message.split('. URL: ')[0];
}

/** Turns a failed Hub call into a ModelLoadError that says what to do about it. */
export function hubFailure(error: unknown, target: HubTarget): ModelLoadError {
  if (error instanceof ModelLoadError) return error;
  const { repo, revision, endpoint, file } = target;
  const what = file ? `${file} of ${repo}@${revision}` : `${repo}@${revision}`;
  if (error instanceof HubApiError) {
    const detail = hubMessage(error);
    // The Hub answers 401 to a token it does not know, and, without a token, to a repository that
    // does not exist as to a private one (it does not say which: "Repository not found", or
    // "Invalid username or password." from older resolve URLs); only a gated one says it is gated.
    if (error.statusCode === 401 && /invalid credentials/i.test(detail)) {
      return new ModelLoadError(
        `${what}: the Hub refused the token (401: ${detail}). Check HF_TOKEN, or the token \`huggingface-cli login\` saved ` +
          '(HF_TOKEN_PATH, else HF_HOME/token); unset both for a public repository.',
        error,
      );
    }
    if (error.statusCode === 401 && /repository not found|invalid username or password/i.test(detail)) {
      return new ModelLoadError(
        `${what} not found at ${endpoint} (401: ${detail}). Check the id; if it is a private repository, set HF_TOKEN ` +
          'to a token with access.' +
          (file ? '' : ' No local directory of that name exists either.'),
        error,
      );
    }
    switch (error.statusCode) {
      case 401:
        return new ModelLoadError(
          `${what}: the Hub refused it without a token (401: ${detail}). The repository is gated or private: ` +
            `set HF_TOKEN to a token with access (for a gated model, accept its conditions at ${endpoint}/${repo} first).`,
          error,
        );
      case 403:
        return new ModelLoadError(
          `${what}: the token has no access (403: ${detail}). Accept the model's conditions at ${endpoint}/${repo}, ` +
            `or use a token with read access to it.`,
          error,
        );
      case 404:
        return new ModelLoadError(
          `${what} not found at ${endpoint} (404: ${detail}). Check the id and revision` +
            (target.withToken ? '; a private repository needs a token with access to it.' : '; a private repository needs HF_TOKEN.') +
            (file ? '' : ' No local directory of that name exists either.'),
          error,
        );
    }
    return new ModelLoadError(`${what}: the Hub answered ${error.statusCode} (${detail})`, error);
  }
  if (isNetworkError(error)) {
    return new ModelLoadError(
      `${what}: cannot reach ${endpoint} (${networkCause(error)}). ` + 'Set HF_HUB_OFFLINE=1 to load from the Hugging Face cache only.',
      error,
    );
  }
  return new ModelLoadError(`${what}: ${(error as Error)?.message ?? String(error)}`, error);
}
