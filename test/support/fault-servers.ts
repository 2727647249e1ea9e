/**
 * Upstreams that fail on demand, for the faults a real server cannot be made to show at will: one
 * that accepts connections and never answers, a port nobody listens on, and a small TGI-wire server
 * whose generation routes follow a script (503, 429, an `overloaded` event, tokens then an error
 * event, tokens then a cut connection, no answer at all). Each is a real server on 127.0.0.1.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface FaultServer {
  url: string;
  /** Generation requests it received. */
  readonly hits: number;
  close(): Promise<void>;
}

/** Accepts every connection and never writes a byte. */
export async function startBlackhole(): Promise<FaultServer> {
  const sockets = new Set<Socket>();
  let hits = 0;
  const server = createNetServer((socket) => {
    hits += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  const url = await listen(server);
  return {
    url,
    get hits() {
      return hits;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A URL whose port was free a moment ago: connections are refused. */
export async function refusedUrl(): Promise<string> {
  const server = createNetServer();
  const url = await listen(server);
  await new Promise((resolve) => server.close(resolve));
  return url;
}

/** What the scripted server does with a generation request. */
export type Script =
  | { kind: 'status'; status: 429 | 500 | 503; retryAfter?: number }
  /** 200, then TGI's in-band overloaded event as the first event. */
  | { kind: 'overloaded-event' }
  /** 200, `tokens` token events, then an error event. */
  | { kind: 'error-after'; tokens: number }
  /** 200, `tokens` token events, then the connection is destroyed. */
  | { kind: 'cut-after'; tokens: number }
  /** Reads the request and never answers, not even headers (health and /info still answer). */
  | { kind: 'hang' };

/** `/info` of the tiny fixture as our server reports it; the limits the router discovers. */
export interface ScriptedInfo {
  model_id: string;
  max_input_tokens: number;
  max_total_tokens: number;
  max_concurrent_requests: number;
}

const SSE = { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' };

/** A TGI-wire upstream that answers `/info` and `/health` truly and its generation routes by `script`. */
export async function startScripted(info: ScriptedInfo, script: Script): Promise<FaultServer & { script: Script }> {
  let hits = 0;
  const state = { script };
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/health') return void res.writeHead(200).end();
    if (path === '/info') return void json(res, 200, info);
    if (path === '/generate_stream' || path === '/v1/chat/completions' || path === '/generate') {
      hits += 1;
      return void drain(req).then(() => play(state.script, res));
    }
    json(res, 404, { error: 'not found', error_type: 'not_found' });
  });
  const url = await listen(server);
  return {
    url,
    get hits() {
      return hits;
    },
    get script() {
      return state.script;
    },
    set script(next: Script) {
      state.script = next;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function play(script: Script, res: ServerResponse): void {
  switch (script.kind) {
    case 'status': {
      const headers: Record<string, string> = script.retryAfter ? { 'Retry-After': String(script.retryAfter) } : {};
      const error_type = script.status === 500 ? 'generation' : 'overloaded';
      return void json(res, script.status, { error: script.status === 500 ? 'boom' : 'Model is overloaded', error_type }, headers);
    }
    case 'overloaded-event':
      res.writeHead(200, SSE);
      return void res.end(`data:${JSON.stringify({ error: 'Model is overloaded', error_type: 'overloaded' })}\n\n`);
    case 'error-after':
    case 'cut-after': {
      res.writeHead(200, SSE);
      for (let i = 1; i <= script.tokens; i++) res.write(`data:${JSON.stringify(tokenEvent(i))}\n\n`);
      if (script.kind === 'cut-after') return void setTimeout(() => res.destroy(), 20);
      return void res.end(
        `data:${JSON.stringify({ error: 'Request failed during generation: scripted failure', error_type: 'generation' })}\n\n`,
      );
    }
    case 'hang':
      // The socket stays open until the client gives up or the server closes.
      return;
  }
}

function tokenEvent(index: number) {
  return { index, token: { id: 100 + index, text: ` t${index}`, logprob: -1, special: false }, generated_text: null, details: null };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers }).end(JSON.stringify(body));
}

function drain(req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    req.resume();
    req.on('end', resolve);
  });
}

async function listen(server: Server | ReturnType<typeof createNetServer>): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
