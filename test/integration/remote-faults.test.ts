/**
 * Failures in front of real upstream processes: a `streaming-inference serve` killed (SIGKILL) or
 * frozen (SIGSTOP) mid-run, clients that leave, hostile bodies, and the faults scripted servers show
 * on demand (503, 429, an overloaded event, a 500, no answer at all, an error or a cut after the
 * first tokens). Requests not yet streaming never get lost; streams already committed to a dead
 * upstream end with one error event; every counter returns to zero.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createRemoteEngine, type RemoteEngine, type RemoteEngineOptions } from '../../src/remote/index.js';
import { eventually, frameJson, getJson, metricValue, post, postForJson, readSse, sseFrames } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { refusedUrl, startBlackhole, startScripted, type Script, type ScriptedInfo } from '../support/fault-servers.js';
import { startServes, type ServeProcess } from '../support/serve-process.js';

const PROBE_MS = 500;
const CHAT = { messages: [{ role: 'user', content: 'Tell me a story' }], temperature: 0 };
const greedy = (maxNewTokens: number) => ({ inputs: 'Once upon a time', parameters: { max_new_tokens: maxNewTokens, do_sample: false } });

let upstreams: ServeProcess[];
let info: ScriptedInfo;

beforeAll(async () => {
  upstreams = await startServes(3, ['--model', await ensureFixtureModel('tiny'), '--threads', '1']);
  info = await getJson(`${upstreams[0].url}/info`);
});

afterAll(async () => {
  await Promise.all((upstreams ?? []).map((u) => u.close()));
});

interface Router {
  engine: RemoteEngine;
  server: RunningServer;
  url: string;
  close(): Promise<void>;
}

async function startRouter(urls: string[], options: Partial<RemoteEngineOptions> = {}): Promise<Router> {
  const registry = new Registry();
  const engine = await createRemoteEngine({
    upstreams: urls,
    probeIntervalMs: PROBE_MS,
    loadIntervalMs: 100,
    metrics: { registry },
    ...options,
  });
  // Ready when every real upstream is: on a busy machine a first probe may be late, and is retried.
  const real = new Set(upstreams.map((u) => u.url));
  await eventually(() => engine.status().every((u) => u.up || !real.has(u.url)), 5000);
  const server = await startServer({ framework: 'express5', mount: 'root' }, { engine, metrics: { registry } });
  return { engine, server, url: server.url, close: async () => (await server.close(), await engine.close()) };
}

const upstreamInFlight = (list: ServeProcess[]) =>
  Promise.all(list.map((u) => metricValue(u.url, 'streaming_inference_in_flight_requests')));

/** Nothing in flight at the mount, in the router, and in every live upstream by its own count. */
async function expectIdle(router: Router, live: ServeProcess[] = upstreams): Promise<void> {
  const idle = async () =>
    router.server.handler.admission.inFlight === 0 &&
    router.engine.status().every((u) => u.inFlight === 0) &&
    (await upstreamInFlight(live)).every((n) => n === 0);
  expect(await eventually(idle, 1000), JSON.stringify(router.engine.status())).toBe(true);
}

/** A /generate_stream read to its end: the status, the events' JSON, and `started` at the first event. */
function stream(url: string, maxNewTokens: number) {
  let first!: () => void;
  const started = new Promise<void>((resolve) => (first = resolve));
  const done = post(`${url}/generate_stream`, greedy(maxNewTokens)).then(async (res) => {
    const events: any[] = [];
    if (res.status === 200) {
      for await (const frame of sseFrames(res.body!)) {
        events.push(frameJson(frame.raw));
        first();
      }
    }
    first();
    return { status: res.status, events };
  });
  return { started, done };
}

describe('an upstream killed mid-run (SIGKILL)', () => {
  let router: Router;
  afterAll(async () => {
    await router?.close();
  });

  it('loses no request that was not streaming yet; the ones streaming from it end with one error event', async () => {
    router = await startRouter(upstreams.map((u) => u.url));
    const N = 300;
    const running = Array.from({ length: 12 }, () => stream(router.url, N));
    await Promise.all(running.map((s) => s.started));
    const victim = router.engine.status()[1];
    expect(victim.streaming).toBeGreaterThan(0);
    upstreams[1].signal('SIGKILL');
    // Sent after the kill: whichever upstream they are tried on first, they must complete.
    const late = Array.from({ length: 6 }, () => stream(router.url, 20));

    const results = await Promise.all(running.map((s) => s.done));
    const cut = results.filter((r) => r.events.at(-1)?.error !== undefined);
    expect(cut).toHaveLength(victim.streaming);
    for (const r of cut) {
      expect(r.status).toBe(200);
      expect(r.events.at(-1)).toEqual({
        error: 'Request failed during generation: the upstream server closed the connection',
        error_type: 'generation',
      });
      expect(r.events.slice(0, -1).every((e) => e.error === undefined && e.generated_text === null)).toBe(true);
    }
    for (const r of results.filter((r) => !cut.includes(r)))
      expect(r.events.map((e) => e.index)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    for (const r of await Promise.all(late.map((s) => s.done))) {
      expect(r.status).toBe(200);
      expect(r.events).toHaveLength(20);
      expect(typeof r.events.at(-1).generated_text).toBe('string');
    }
    expect(router.engine.status()[1].up).toBe(false);
    await expectIdle(router, [upstreams[0], upstreams[2]]);
  });

  it('takes the upstream back once it answers again, and sends it traffic', async () => {
    await upstreams[1].restart();
    expect(await eventually(() => router.engine.status()[1].up, 8 * PROBE_MS + 1000)).toBe(true);
    const before = await metricValue(upstreams[1].url, 'tgi_request_success');
    await Promise.all(Array.from({ length: 9 }, () => stream(router.url, 8).done));
    expect(await metricValue(upstreams[1].url, 'tgi_request_success')).toBeGreaterThan(before);
    await expectIdle(router);
  });
});

describe('a frozen upstream (SIGSTOP)', () => {
  let router: Router;
  afterAll(async () => {
    upstreams[2].signal('SIGCONT');
    await router?.close();
  });

  it('is routed around within the probe interval; requests sent to it move on; it rejoins after SIGCONT', async () => {
    router = await startRouter(upstreams.map((u) => u.url));
    upstreams[2].signal('SIGSTOP');
    const stopped = performance.now();
    const requests = Array.from({ length: 6 }, () => stream(router.url, 20));
    // The next probe finds it (at most one interval away) and gives up after one more.
    expect(await eventually(() => !router.engine.status()[2].up, 2 * PROBE_MS + 500)).toBe(true);
    const detectedMs = performance.now() - stopped;
    for (const r of await Promise.all(requests.map((s) => s.done))) {
      expect(r.status).toBe(200);
      expect(r.events).toHaveLength(20);
    }
    expect(detectedMs).toBeLessThan(2 * PROBE_MS + 500);
    upstreams[2].signal('SIGCONT');
    expect(await eventually(() => router.engine.status()[2].up, 8 * PROBE_MS + 1000)).toBe(true);
    await expectIdle(router);
  });
});

describe('clients that leave', () => {
  let router: Router;
  afterAll(async () => {
    await router?.close();
  });

  it('bring every upstream back to zero in flight within a second, streamed and non-streamed', async () => {
    router = await startRouter(upstreams.map((u) => u.url));
    // Long enough to be running when the clients leave; the chat template's prompt leaves less room.
    const long = 2000;
    const chatLong = 1500;
    const requests: Array<[string, object]> = [
      ['/generate_stream', greedy(long)],
      ['/v1/chat/completions', { ...CHAT, max_tokens: chatLong, stream: true }],
      ['/v1/completions', { prompt: 'Once', max_tokens: long, temperature: 0, stream: true }],
      ['/generate', greedy(long)],
      ['/v1/chat/completions', { ...CHAT, max_tokens: chatLong }],
      ['/v1/completions', { prompt: 'Once', max_tokens: long, temperature: 0 }],
    ];
    const controllers = requests.map(() => new AbortController());
    const pending = requests.map(([path, body], i) =>
      post(router.url + path, body, { signal: controllers[i].signal })
        .then((res) => res.text())
        .catch(() => 'aborted'),
    );
    const all = async () => (await upstreamInFlight(upstreams)).reduce((a, b) => a + b) === requests.length;
    expect(await eventually(all, 5000)).toBe(true);
    controllers.forEach((c) => c.abort());
    // Every upstream's own count, polled until the second is over.
    const none = async () => (await upstreamInFlight(upstreams)).every((n) => n === 0);
    expect(await eventually(none, 1000, 5)).toBe(true);
    expect(await Promise.all(pending)).toEqual(requests.map(() => 'aborted'));
    await expectIdle(router);
    const cancelled = await Promise.all(
      upstreams.map((u) => metricValue(router.url, `streaming_inference_upstream_requests_total{upstream="${u.url}",outcome="cancelled"}`)),
    );
    expect(cancelled.reduce((a, b) => a + b)).toBe(requests.length);
    expect(await metricValue(router.url, 'tgi_request_failure{err="dropped"}')).toBe(requests.length);
  });
});

describe('hostile bodies', () => {
  let router: Router;
  afterAll(async () => {
    await router?.close();
  });

  it('are answered 4xx by the router and never reach an upstream', async () => {
    router = await startRouter(upstreams.map((u) => u.url));
    const count = async () => (await Promise.all(upstreams.map((u) => metricValue(u.url, 'tgi_request_count')))).reduce((a, b) => a + b);
    const before = await count();
    const bodies = hostileBodies();
    const statuses = new Map<number, number>();
    const accepted: string[] = [];
    // Eight at a time, as several clients would.
    for (let i = 0; i < bodies.length; i += 8) {
      await Promise.all(
        bodies.slice(i, i + 8).map(async ([path, body]) => {
          const res = await post(router.url + path, body);
          await res.text();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status < 400) accepted.push(`${path} ${body.slice(0, 120)}`);
        }),
      );
    }
    expect(accepted).toEqual([]);
    expect(
      [...statuses.keys()].every((s) => s >= 400 && s < 500),
      JSON.stringify([...statuses]),
    ).toBe(true);
    expect(await count()).toBe(before);
    expect(await metricValue(router.url, 'tgi_request_failure{err="validation"}')).toBeGreaterThan(0);
    await expectIdle(router);
  });
});

/** Bodies our own validation refuses, over every generation route: broken JSON, wrong types, values out of range. */
function hostileBodies(): Array<[string, string]> {
  const broken = ['', '{', '{"inputs":}', 'null', '[]', '"Hi"', '{}', '{"__proto__":{"inputs":"Hi"}}', '['.repeat(5000) + ']'.repeat(5000)];
  const types = ['"x"', 'true', '[]', '{}', '1e309'];
  const count = [...types, '-1', '0', '1.5'];
  // Per field, values that field never takes.
  const tgi: Record<string, string[]> = {
    temperature: [...types, '-1', '0'],
    repetition_penalty: [...types, '-1', '0'],
    frequency_penalty: [...types, '3', '-3'],
    top_k: count,
    top_p: [...types, '-1', '0', '1.5'],
    typical_p: [...types, '-1', '0', '1.5'],
    max_new_tokens: count,
    truncate: count,
    seed: [...types, '-1', '1.5', '9007199254740993'],
    top_n_tokens: [...types, '-1', '99'],
    best_of: [...types, '2', '-1'],
    do_sample: ['"x"', '1', '[]'],
    details: ['"x"', '1', '{}'],
    watermark: ['true', '"x"'],
    grammar: ['{}', '"x"'],
    stop: ['"x"', '[1]', 'true'],
  };
  const openai: Record<string, string[]> = {
    temperature: ['"x"', '-1', '3', 'true'],
    top_p: ['"x"', '-1', '1.5'],
    max_tokens: ['"x"', '0', '-1', '1.5'],
    n: ['2', '0', '"x"'],
    stop: ['1', '[1]', 'true'],
    seed: ['"x"', '-1', '1.5'],
    logit_bias: ['{"1":5}', '"x"'],
    frequency_penalty: ['3', '-3', '"x"'],
    presence_penalty: ['3', '-3', '"x"'],
    stream_options: ['{"include_usage":true}', '"x"'],
  };
  const chatOnly: Record<string, string[]> = {
    response_format: ['{"type":"nope"}', '"x"'],
    tool_choice: ['"required"', '{"type":"function"}'],
    logprobs: ['"x"'],
    top_logprobs: ['3', '99'],
  };
  const bodies: Array<[string, string]> = [];
  for (const path of ['/generate', '/generate_stream', '/', '/v1/completions', '/v1/chat/completions'])
    for (const body of broken) bodies.push([path, body]);
  for (const path of ['/generate', '/generate_stream', '/']) {
    for (const [field, values] of Object.entries(tgi))
      for (const raw of values) bodies.push([path, `{"inputs":"Hi","parameters":{"max_new_tokens":2,"${field}":${raw}}}`]);
    bodies.push(
      [path, '{"inputs":"","parameters":{"max_new_tokens":2}}'],
      [path, '{"inputs":"Hi","parameters":{"stop":["a","b","c","d","e"]}}'],
    );
  }
  const chat = (extra: string) =>
    ['/v1/chat/completions', `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,${extra}}`] as [string, string];
  for (const [field, values] of Object.entries(openai)) {
    for (const raw of values)
      bodies.push(['/v1/completions', `{"prompt":"Hi","max_tokens":2,"${field}":${raw}}`], chat(`"${field}":${raw}`));
  }
  for (const [field, values] of Object.entries(chatOnly)) for (const raw of values) bodies.push(chat(`"${field}":${raw}`));
  bodies.push(
    ['/v1/chat/completions', '{"messages":[]}'],
    ['/v1/chat/completions', '{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}'],
  );
  bodies.push(['/v1/completions', '{"prompt":"Hi","suffix":"x"}'], ['/v1/completions', '{"prompt":["a","b"]}']);
  bodies.push(['/generate', JSON.stringify({ inputs: 'x'.repeat(3_000_000) })]);
  return bodies;
}

describe('faults scripted on demand', () => {
  let router: Router | null = null;
  const scripted: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    if (router) await expectIdle(router, [upstreams[0]]);
    await router?.close();
    router = null;
    await Promise.all(scripted.splice(0).map((s) => s.close()));
  });

  /** A router over a scripted upstream and a real one; ties go to the first listed, so the fault is tried first. */
  async function faultThenReal(script: Script, options: Partial<RemoteEngineOptions> = {}) {
    const fault = await startScripted(info, script);
    scripted.push(fault);
    router = await startRouter([fault.url, upstreams[0].url], { random: () => 0, ...options });
    return fault;
  }

  const cases: Array<[string, Script]> = [
    ['503 with Retry-After', { kind: 'status', status: 503, retryAfter: 2 }],
    ['429', { kind: 'status', status: 429 }],
    ['an overloaded event before any token', { kind: 'overloaded-event' }],
    ['a 500', { kind: 'status', status: 500 }],
  ];
  for (const [name, script] of cases) {
    it(`${name}: the request completes on the other upstream`, async () => {
      const fault = await faultThenReal(script);
      const { json } = await postForJson(`${router!.url}/generate`, greedy(4));
      expect(typeof json.generated_text).toBe('string');
      expect(fault.hits).toBe(1);
      const reason = script.kind === 'status' && script.status === 500 ? 'error' : 'overloaded';
      expect(
        await metricValue(router!.url, `streaming_inference_upstream_failovers_total{upstream="${fault.url}",reason="${reason}"}`),
      ).toBe(1);
    });
  }

  it('an overloaded upstream sits out its Retry-After: the next requests go elsewhere at once', async () => {
    const fault = await faultThenReal({ kind: 'status', status: 503, retryAfter: 2 });
    for (let i = 0; i < 3; i++) expect((await post(`${router!.url}/generate`, greedy(2))).status).toBe(200);
    expect(fault.hits).toBe(1);
  });

  it('no answer at all: after headersTimeoutMs the request moves on and the upstream leaves the picks', async () => {
    const fault = await faultThenReal({ kind: 'hang' }, { headersTimeoutMs: 300 });
    const started = performance.now();
    const res = await post(`${router!.url}/generate_stream`, greedy(4));
    expect(res.status).toBe(200);
    expect(await readSse(res)).toHaveLength(4);
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(fault.hits).toBe(1);
    expect(router!.engine.status()[0].up).toBe(false);
  });

  it('an upstream that never answered at startup and a refused port stay out; the others serve', async () => {
    const blackhole = await startBlackhole();
    scripted.push(blackhole);
    router = await startRouter([blackhole.url, await refusedUrl(), upstreams[0].url]);
    expect(router.engine.status().map((u) => u.up)).toEqual([false, false, true]);
    expect((await post(`${router.url}/generate`, greedy(2))).status).toBe(200);
    expect(await metricValue(router.url, `streaming_inference_upstream_up{upstream="${blackhole.url}"}`)).toBe(0);
  });

  it("all upstreams busy: 429 overloaded with Retry-After, in each route family's shape, never 503", async () => {
    const fault = await startScripted(info, { kind: 'status', status: 503 });
    scripted.push(fault);
    router = await startRouter([fault.url]);
    const tgi = await post(`${router.url}/generate_stream`, greedy(2));
    expect(tgi.status).toBe(429);
    expect(tgi.headers.get('retry-after')).toBe('1');
    expect(await tgi.json()).toEqual({ error: 'Model is overloaded', error_type: 'overloaded' });
    const openai = await post(`${router.url}/v1/chat/completions`, { ...CHAT, max_tokens: 2 });
    expect(openai.status).toBe(429);
    expect(((await openai.json()) as any).error).toMatchObject({ type: 'rate_limit_error', code: 'overloaded' });
    router.engine.status().forEach((u) => expect(u.inFlight).toBe(0));
  });

  it("all upstreams unreachable: 502 upstream_unavailable in each route family's shape", async () => {
    const fault = await startScripted(info, { kind: 'hang' });
    scripted.push(fault);
    router = await startRouter([fault.url], { headersTimeoutMs: 200 });
    const tgi = await post(`${router.url}/generate`, greedy(2));
    expect(tgi.status).toBe(502);
    expect(await tgi.json()).toEqual({ error: 'No upstream server is reachable', error_type: 'upstream_unavailable' });
    // The upstream is down now: the next request is refused without trying it.
    const openai = await post(`${router.url}/v1/completions`, { prompt: 'Hi', max_tokens: 2 });
    expect(openai.status).toBe(502);
    expect(await openai.json()).toEqual({
      error: { message: 'No upstream server is reachable', type: 'server_error', param: null, code: 'upstream_unavailable' },
    });
    expect(fault.hits).toBe(1);
  });

  it('an error event after the first tokens: the stream ends with one error event, a whole answer is a 424', async () => {
    const fault = await startScripted(info, { kind: 'error-after', tokens: 3 });
    scripted.push(fault);
    router = await startRouter([fault.url]);
    const frames = await readSse(await post(`${router.url}/generate_stream`, greedy(10)));
    expect(frames).toHaveLength(4);
    expect(frameJson(frames[3])).toEqual({ error: 'Request failed during generation: scripted failure', error_type: 'generation' });
    const whole = await post(`${router.url}/generate`, greedy(10));
    expect(whole.status).toBe(424);
    expect(fault.hits).toBe(2);
  });

  it('a connection cut after the first tokens: the stream ends with one error event, OpenAI-shaped on OpenAI routes', async () => {
    const fault = await startScripted(info, { kind: 'cut-after', tokens: 3 });
    scripted.push(fault);
    router = await startRouter([fault.url]);
    const frames = await readSse(await post(`${router.url}/v1/completions`, { prompt: 'Hi', max_tokens: 10, stream: true }));
    expect(frames.at(-1)).toBe('data: [DONE]\n\n');
    expect(frameJson(frames.at(-2)!)).toEqual({
      error: {
        message: 'Request failed during generation: the upstream server closed the connection',
        type: 'server_error',
        param: null,
        code: 'generation',
      },
    });
    expect(
      frames
        .slice(0, -2)
        .map((f) => frameJson(f).choices[0].text)
        .join(''),
    ).toBe(' t1 t2 t3');
  });
});
