/**
 * The remote engine's one HTTP client: node:http (or https) through a keep-alive agent per upstream.
 * Every generation's first token crosses it, and on loopback `fetch` took about a millisecond more
 * per request than this (a bare relay in front of one `serve`, 200 requests: 4.1 ms against 3.1 ms
 * to the first token at the median, 2.6 ms direct), spent in its WHATWG streams and request objects.
 *
 * A body goes out with its headers in one write. An idle connection the upstream has just closed
 * fails the next request on it before any answer; that request is sent again once on a new
 * connection, so a keep-alive race never passes for an unreachable upstream.
 */
import http from 'node:http';
import https from 'node:https';

export interface UpstreamResponse {
  readonly status: number;
  readonly ok: boolean;
  /** A response header, by its lower-case name. */
  header(name: string): string | undefined;
  /** The body as it arrives; destroying the request (its signal) ends it with an error. */
  readonly body: AsyncIterable<Buffer>;
  text(): Promise<string>;
  json(): Promise<unknown>;
}

export interface UpstreamRequest {
  method?: 'GET' | 'POST';
  /** Sent as JSON. */
  json?: unknown;
  accept?: string;
  /** Aborting it closes the connection, which is how an upstream learns that its client left. */
  signal?: AbortSignal;
}

/** Errors of a reused connection that the upstream closed while it sat idle. */
const STALE = new Set(['ECONNRESET', 'EPIPE']);

export class UpstreamHttp {
  private readonly agent: http.Agent;
  private readonly send: typeof http.request;
  /** Where requests go, parsed once rather than on every request. */
  private readonly target: { protocol: string; hostname: string; port: string; base: string };

  constructor(
    /** The base URL, without a trailing slash; paths are appended to it. */
    url: string,
    /** Sent with every request (API keys). */
    private readonly headers: Record<string, string>,
  ) {
    const { protocol, hostname, port, pathname } = new URL(url);
    // An IPv6 literal is bracketed in a URL, not in a host name.
    this.target = { protocol, hostname: hostname.replace(/^\[(.*)\]$/, '$1'), port, base: pathname.replace(/\/$/, '') };
    const tls = protocol === 'https:';
    this.agent = tls ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    this.send = tls ? https.request : http.request;
  }

  async request(path: string, options: UpstreamRequest = {}): Promise<UpstreamResponse> {
    const body = options.json === undefined ? null : Buffer.from(JSON.stringify(options.json));
    try {
      return await this.once(path, options, body);
    } catch (error) {
      if (!(error as StaleError).stale || options.signal?.aborted) throw error;
      return this.once(path, options, body);
    }
  }

  /** Closes the idle connections. */
  close(): void {
    this.agent.destroy();
  }

  private once(path: string, options: UpstreamRequest, body: Buffer | null): Promise<UpstreamResponse> {
    const headers: Record<string, string | number> = { ...this.headers };
    if (options.accept) headers.accept = options.accept;
    if (body) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = body.length;
    }
    return new Promise((resolve, reject) => {
      const { protocol, hostname, port, base } = this.target;
      const req = this.send(
        {
          protocol,
          hostname,
          port,
          path: base + path,
          method: options.method ?? (body ? 'POST' : 'GET'),
          headers,
          agent: this.agent,
          signal: options.signal,
        },
        (res) => resolve(wrap(res)),
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (req.reusedSocket && STALE.has(error.code ?? '')) (error as StaleError).stale = true;
        reject(error);
      });
      req.end(body ?? undefined);
    });
  }
}

interface StaleError extends Error {
  stale?: boolean;
}

function wrap(res: http.IncomingMessage): UpstreamResponse {
  const status = res.statusCode ?? 0;
  const text = async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };
  return {
    status,
    ok: status >= 200 && status < 300,
    header: (name) => {
      const value = res.headers[name];
      return Array.isArray(value) ? value.join(', ') : value;
    },
    body: res,
    text,
    json: async () => JSON.parse(await text()) as unknown,
  };
}
