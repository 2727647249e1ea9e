/**
 * What the conformance audits share: the options a server was started with, the greedy requests
 * the routes are compared on, and checks of the two error shapes.
 */
import { expect } from 'vitest';

export interface ServerAuditOptions {
  /** `model_id` the server reports. */
  modelId: string;
  /** The `bodyLimit` the server was started with (keep it small, e.g. 1024). */
  bodyLimit: number;
  /** The `maxConcurrentRequests` the server was started with. */
  maxConcurrentRequests: number;
  /** The engine reports its forward passes (`tgi_batch_*`); a remote engine's happen upstream. Default true. */
  forwardPasses?: boolean;
}

/** Greedy, short requests: every route answers the same tokens for them. */
export const PROMPT = 'Once upon a time';
export const N = 5;
export const GREEDY = { max_new_tokens: N, do_sample: false };
export const CHAT = { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: N, temperature: 0 };
export const TGI_TOKEN_KEYS = ['id', 'text', 'logprob', 'special'];

/** Headers every event stream must carry ("Our decisions" §5, design.md "HTTP"). */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

export function expectSseHeaders(res: Response): void {
  expect(res.status).toBe(200);
  for (const [name, value] of Object.entries(SSE_HEADERS)) expect(res.headers.get(name), name).toBe(value);
}

/** TGI's `{error, error_type}`, with nothing else in it. */
export function expectTgiError(json: unknown, errorType: string, message?: string): void {
  expect(Object.keys(json as object)).toEqual(['error', 'error_type']);
  expect(json).toMatchObject({ error_type: errorType, ...(message ? { error: message } : {}) });
  expect(typeof (json as { error: unknown }).error).toBe('string');
}

/** OpenAI's `{error: {message, type, param, code}}`; `code` carries TGI's error_type. */
export function expectOpenAIError(json: unknown, type: string, code: string, param: string | null = null): void {
  expect(Object.keys(json as object)).toEqual(['error']);
  const error = (json as { error: Record<string, unknown> }).error;
  expect(Object.keys(error)).toEqual(['message', 'type', 'param', 'code']);
  expect(error).toMatchObject({ type, param, code });
  expect(typeof error.message).toBe('string');
}

/** The JSON body of an error answer, after checking its status and content type. */
export async function errorOf(res: Response, status: number): Promise<any> {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return res.json();
}

/** What each group of audits gets: the route URL builder, the options, and the reference answer. */
export interface AuditContext {
  url(path: string): string;
  opts: ServerAuditOptions;
  /** `/generate` of the greedy request with details: what every other greedy route is compared with. */
  reference(): Promise<any>;
}
