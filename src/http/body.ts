import type { IncomingMessage } from 'node:http';
import { InferenceError } from '../errors.js';

/** A request whose body a host's parser (express.json(), koa-bodyparser) may already have read. */
export type BodyCarrier = IncomingMessage & { body?: unknown };

/** The body is not JSON: 400 in the route family's shape (axum answers text/plain here; clients parse JSON). */
function malformed(detail: string): InferenceError {
  return new InferenceError('invalid_request', `Failed to parse the request body as JSON: ${detail}`);
}

function tooLarge(limit: number): InferenceError {
  return new InferenceError('validation', `Input validation error: the request body exceeds ${limit} bytes`, { status: 413 });
}

function parsedByHost(req: BodyCarrier): boolean {
  // express.json() leaves `{}` when the content type was not JSON and it did not read the stream.
  return (
    req.body !== undefined && !(req.readable && typeof req.body === 'object' && req.body !== null && Object.keys(req.body).length === 0)
  );
}

/**
 * The JSON body: the host's parsed `req.body` when there is one, else read here up to `limit` bytes.
 * Rejects with a 400 or 413 `InferenceError`, and never hangs on a broken upload.
 */
export async function readJsonBody(req: BodyCarrier, limit: number): Promise<unknown> {
  if (parsedByHost(req)) {
    if (typeof req.body !== 'string' && !Buffer.isBuffer(req.body)) return checkDepth(req.body);
    return parse(String(req.body));
  }
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.resume();
        reject(tooLarge(limit));
      } else {
        chunks.push(chunk);
      }
    };
    const onEnd = () => (cleanup(), resolve());
    const onError = (error: Error) => (cleanup(), reject(malformed(error.message)));
    const onAborted = () => (cleanup(), reject(malformed('the request was aborted')));
    const cleanup = () => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('aborted', onAborted);
    };
    req.on('data', onData).on('end', onEnd).on('error', onError).on('aborted', onAborted);
  });
  return parse(Buffer.concat(chunks).toString('utf8'));
}

function parse(text: string): unknown {
  if (text.trim() === '') throw malformed('the request body is empty');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw malformed((error as Error).message);
  }
  return checkDepth(value);
}

/** serde_json's limit, which TGI inherits: deeper values overflow recursive code (structured clone, templates). */
const MAX_DEPTH = 128;

/** `value`, unless arrays and objects nest deeper than MAX_DEPTH; walked without recursion. */
function checkDepth(value: unknown): unknown {
  const stack: Array<[unknown, number]> = [[value, 1]];
  for (let entry = stack.pop(); entry !== undefined; entry = stack.pop()) {
    const [node, depth] = entry;
    if (typeof node !== 'object' || node === null) continue;
    if (depth > MAX_DEPTH) throw malformed(`recursion limit exceeded: nested deeper than ${MAX_DEPTH}`);
    for (const child of Object.values(node)) stack.push([child, depth + 1]);
  }
  return value;
}
