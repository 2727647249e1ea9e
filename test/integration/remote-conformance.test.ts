/**
 * The router keeps the wire: the conformance audits and the golden streams, unchanged, in front of
 * two real `streaming-inference serve` processes (TGI dialect). The audits go through the standalone
 * router (`serve --upstream A --upstream B`, the `streamingInference({ upstreams })` short form), the
 * golden streams through Express over `createRemoteEngine`. The only difference allowed is that
 * forward passes happen upstream, out of the mount's `tgi_batch_*` counters.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createRemoteEngine, type RemoteEngine } from '../../src/remote/index.js';
import { goldenStreamAudits } from '../conformance/golden-audits.js';
import { metricValue } from '../conformance/http-client.js';
import { serverAudits, type ServerAuditOptions } from '../conformance/server-audits.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { startServe, startServes, type ServeProcess } from '../support/serve-process.js';

const AUDIT: ServerAuditOptions = { modelId: 'tiny', bodyLimit: 1024, maxConcurrentRequests: 8, forwardPasses: false };

let upstreams: ServeProcess[];
let router: ServeProcess;
let engine: RemoteEngine;
let server: RunningServer;

beforeAll(async () => {
  upstreams = await startServes(2, ['--model', await ensureFixtureModel('tiny'), '--threads', '1']);
  const flags = ['--body-limit', String(AUDIT.bodyLimit), '--max-concurrent-requests', String(AUDIT.maxConcurrentRequests)];
  router = await startServe([...upstreams.flatMap((u) => ['--upstream', u.url]), ...flags]);
  // One registry for the mount's metrics and the engine's per-upstream ones: one /metrics shows both.
  const registry = new Registry();
  engine = await createRemoteEngine({ upstreams: upstreams.map((u) => u.url), metrics: { registry } });
  server = await startServer(
    { framework: 'express5', mount: 'prefix' },
    { engine, bodyLimit: AUDIT.bodyLimit, maxConcurrentRequests: AUDIT.maxConcurrentRequests, metrics: { registry } },
  );
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
  await router?.close();
  await Promise.all((upstreams ?? []).map((u) => u.close()));
});

describe('conformance through serve --upstream', () => {
  serverAudits(() => router.url, AUDIT);
});

describe('golden streams through Express over createRemoteEngine', () => {
  goldenStreamAudits(() => server.url);
});

describe('the router itself', () => {
  it('shares the work between both upstreams and reports them in the same /metrics', async () => {
    const served = await Promise.all(upstreams.map((u) => metricValue(u.url, 'tgi_request_success')));
    expect(
      served.every((n) => n > 0),
      `requests each upstream served: ${served}`,
    ).toBe(true);
    for (const base of [router.url, server.url]) {
      for (const u of upstreams) {
        expect(await metricValue(base, `streaming_inference_upstream_up{upstream="${u.url}"}`)).toBe(1);
        expect(await metricValue(base, `streaming_inference_upstream_requests_total{upstream="${u.url}",outcome="ok"}`)).toBeGreaterThan(0);
        expect(await metricValue(base, `streaming_inference_upstream_first_token_seconds_count{upstream="${u.url}"}`)).toBeGreaterThan(0);
      }
    }
  });

  it('leaves no request in flight, here or upstream', async () => {
    expect(server.handler.admission.inFlight).toBe(0);
    expect(engine.status().map((u) => u.inFlight)).toEqual([0, 0]);
    for (const u of [...upstreams, router]) expect(await metricValue(u.url, 'streaming_inference_in_flight_requests')).toBe(0);
    for (const u of upstreams) expect(await metricValue(router.url, `streaming_inference_upstream_in_flight{upstream="${u.url}"}`)).toBe(0);
  });

  it('serve refuses model flags beside --upstream', async () => {
    await expect(startServe(['--upstream', upstreams[0].url, '--threads', '2'])).rejects.toThrow(/--threads cannot apply with --upstream/);
  });
});
