import { HubApiError } from '@huggingface/hub';
import { describe, expect, it } from 'vitest';
import { hubFailure } from '../../src/hub/hub-errors.js';

const target = { repo: 'acme/tiny', revision: 'main', endpoint: 'https://huggingface.co' };

/** A HubApiError as `@huggingface/hub`'s createApiError makes it from a JSON body (`error`) or a text one (`message`). */
function apiError(status: number, data: { error?: string; message?: string }): HubApiError {
  const error = new HubApiError('https://huggingface.co/acme/tiny/resolve/main/config.json', status);
  error.message = `${data.error ?? `Api error with status ${status}`}. URL: ${error.url}`;
  error.data = data;
  return error;
}

describe('hubFailure', () => {
  it('reads the Hub message from a text body, where the library leaves only "Api error with status 401"', () => {
    const gated = 'Access to model acme/tiny is restricted. You must have access to it and be authenticated to access it. Please log in.';
    const error = hubFailure(apiError(401, { message: gated }), { ...target, file: 'config.json' });
    expect(error.message).toMatch(
      /^config\.json of acme\/tiny@main: the Hub refused it without a token \(401: Access to model acme\/tiny is restricted\./,
    );
  });

  it('takes a 401 that says the repository is not found, in either wording the Hub has used, for not found', () => {
    for (const said of ['Repository not found', 'Invalid username or password.']) {
      expect(hubFailure(apiError(401, { error: said }), target).message, said).toBe(
        `acme/tiny@main not found at https://huggingface.co (401: ${said}). Check the id; if it is a private repository, ` +
          'set HF_TOKEN to a token with access. No local directory of that name exists either.',
      );
    }
  });
});
