import { HubApiError } from '@huggingface/hub';
import { ModelLoadError } from '../errors.js';

/** What a failure was about, for a message that names the repository and the file. */
export interface HubTarget {
  repo: string;
  revision: string;
  endpoint: string;
  file?: string;
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

/** Turns a failed Hub call into a ModelLoadError that says what to do about it. */
export function hubFailure(error: unknown, target: HubTarget): ModelLoadError {
  if (error instanceof ModelLoadError) return error;
  const { repo, revision, endpoint, file } = target;
  const what = file ? `${file} of ${repo}@${revision}` : `${repo}@${revision}`;
  if (error instanceof HubApiError) {
    const detail = error.message.split('. URL: ')[0];
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
          `${what} not found at ${endpoint} (404: ${detail}). Check the id and revision; a private repository needs HF_TOKEN.` +
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
