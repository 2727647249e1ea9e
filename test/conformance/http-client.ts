/**
 * Small HTTP helpers for the integration tests: JSON posts and a Server-Sent-Events reader that
 * keeps every frame's exact bytes (framing is part of what we test) and when it arrived.
 */

/** POST a JSON value, or a raw string sent as-is (for malformed bodies). */
export function post(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    ...init,
    headers: { 'content-type': 'application/json', ...init.headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** POST and parse the JSON answer, failing loudly on another status. */
export async function postForJson<T = any>(url: string, body: unknown, status = 200): Promise<{ json: T; res: Response }> {
  const res = await post(url, body);
  const text = await res.text();
  if (res.status !== status) throw new Error(`${url}: expected ${status}, got ${res.status}: ${text}`);
  return { json: JSON.parse(text) as T, res };
}

/** GET and parse the JSON answer, failing loudly on another status. */
export async function getJson<T = any>(url: string, status = 200): Promise<T> {
  const res = await fetch(url);
  const text = await res.text();
  if (res.status !== status) throw new Error(`${url}: expected ${status}, got ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

export interface SseFrame {
  /** The frame's exact text, including the blank line that ends it. */
  raw: string;
  /** Milliseconds since the request was sent (or since reading began). */
  at: number;
}

/**
 * Reads an event stream frame by frame as bytes arrive. Frames end with a blank line (`\n\n`);
 * bytes after the last one are returned as `rest` so a test can see a truncated frame.
 */
export async function* sseFrames(body: ReadableStream<Uint8Array>, since = performance.now()): AsyncGenerator<SseFrame, string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      yield { raw: buffer.slice(0, end + 2), at: performance.now() - since };
      buffer = buffer.slice(end + 2);
    }
  }
  return buffer + decoder.decode();
}

/** Every frame of a finished stream; fails if bytes follow the last frame. */
export async function readSse(res: Response): Promise<string[]> {
  const frames: string[] = [];
  const iterator = sseFrames(res.body!);
  let step = await iterator.next();
  while (!step.done) {
    frames.push(step.value.raw);
    step = await iterator.next();
  }
  if (step.value !== '') throw new Error(`stream ended inside a frame: ${JSON.stringify(step.value)}`);
  return frames;
}

/** The JSON of a `data:` frame, with TGI's `data:` or OpenAI's `data: `. */
export function frameJson<T = any>(frame: string): T {
  const match = /^data: ?(.*)\n\n$/s.exec(frame);
  if (!match) throw new Error(`not a single data frame: ${JSON.stringify(frame)}`);
  return JSON.parse(match[1]) as T;
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns its last answer. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 2000, stepMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
}

/** The value of one Prometheus series (name with its labels, e.g. `tgi_request_failure{err="dropped"}`) at `baseUrl/metrics`; 0 when absent. */
export async function metricValue(baseUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const found = text.split('\n').find((line) => line.startsWith(series + ' '));
  return found ? Number(found.split(' ').at(-1)) : 0;
}
