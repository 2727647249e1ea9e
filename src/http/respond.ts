import type { ServerResponse } from 'node:http';
import type { ErrorResponse } from '../protocol/error-body.js';

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function sendError(res: ServerResponse, error: ErrorResponse): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(error.status, { ...error.headers, 'Content-Length': Buffer.byteLength(error.body) });
  res.end(error.body);
}
