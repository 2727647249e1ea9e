/**
 * The protocol conformance suite every server variant must pass, in the manner of graphql-http's
 * `serverAudits`: one function that registers the same cases against any base URL. It covers every
 * route, status and body shape of protocol.md ("Our decisions", §1, §3) over real HTTP, with
 * greedy requests so that routes can be checked against each other.
 */
import { GREEDY, PROMPT, type AuditContext, type ServerAuditOptions } from './audit-kit.js';
import { errorAudits } from './error-audits.js';
import { postForJson } from './http-client.js';
import { openaiAudits } from './openai-audits.js';
import { tgiAudits } from './tgi-audits.js';

export type { ServerAuditOptions } from './audit-kit.js';

/**
 * Registers the audits as vitest cases; `getBaseUrl` is read when each case runs, so servers may
 * start in `beforeAll`.
 *
 * @example
 * describe('express5 under /llm', () => {
 *   let server: RunningServer;
 *   beforeAll(async () => { server = await startServer(variant, { engine, bodyLimit: 1024 }); });
 *   serverAudits(() => server.url, { modelId: 'tiny', bodyLimit: 1024, maxConcurrentRequests: 128 });
 * });
 */
export function serverAudits(getBaseUrl: () => string, opts: ServerAuditOptions): void {
  const url = (path: string) => getBaseUrl() + path;
  const context: AuditContext = {
    url,
    opts,
    reference: async () => (await postForJson(url('/generate'), { inputs: PROMPT, parameters: { ...GREEDY, details: true } })).json,
  };
  tgiAudits(context);
  openaiAudits(context);
  errorAudits(context);
}
