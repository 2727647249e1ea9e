/**
 * `npm run soak`: thousands of mixed requests against an in-process server on the tiny fixture —
 * every route, streamed and whole, some invalid, some aborted at random — with bounded concurrency.
 * Prints memory at intervals (RSS, the main thread's heap, the engine worker's heap plus KV
 * buffers) and a summary: answers by status, latency percentiles, memory at start, end and peak.
 * Exits 1 on a 5xx, a hung request, or a permit or batch row left behind.
 *
 *   npm run soak -- --requests 2000 --concurrency 32 --limit 32 --abort-rate 0.15 --invalid-rate 0.1 --seed 1
 *   (or SOAK_REQUESTS=…; --model DIR for another model)
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { createEngine } from '../src/engine/engine.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import { createInferenceHandler } from '../src/http/handler.js';
import type { Engine } from '../src/types.js';
import { mulberry32 } from '../src/fixture/random.js';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: process.env.SOAK_REQUESTS ?? '2000' },
    concurrency: { type: 'string', default: process.env.SOAK_CONCURRENCY ?? '32' },
    limit: { type: 'string', default: process.env.SOAK_LIMIT ?? '32' },
    'abort-rate': { type: 'string', default: process.env.SOAK_ABORT_RATE ?? '0.15' },
    'invalid-rate': { type: 'string', default: process.env.SOAK_INVALID_RATE ?? '0.1' },
    seed: { type: 'string', default: process.env.SOAK_SEED ?? '1' },
    'interval-ms': { type: 'string', default: '2000' },
    model: { type: 'string' },
  },
});
const REQUESTS = Number(args.requests);
const CONCURRENCY = Number(args.concurrency);

const random = mulberry32(Number(args.seed));
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
/** Mostly short generations, a few long ones. */
const tokens = () => Math.max(1, Math.round(2 ** (random() * 8)));

interface Plan {
  kind: string;
  method: 'GET' | 'POST';
  path: string;
  body?: string;
  /** Abort after this many ms, or never. */
  abortAfterMs: number | null;
}

/** Over the 2 MB body limit: one string, shared by every request that sends it. */
const OVERSIZED = JSON.stringify({ inputs: 'x'.repeat(2_100_000) });
const PROMPTS = ['Hello', 'Once upon a time', 'The weather today', 'Écrire un poème', '日本語のテキスト', 'a'.repeat(300)];

const VALID: Array<() => Omit<Plan, 'abortAfterMs'>> = [
  () => ({
    kind: 'generate',
    method: 'POST',
    path: '/generate',
    body: JSON.stringify({ inputs: pick(PROMPTS), parameters: { max_new_tokens: tokens(), details: random() < 0.3 } }),
  }),
  () => ({
    kind: 'generate_stream',
    method: 'POST',
    path: '/generate_stream',
    body: JSON.stringify({ inputs: pick(PROMPTS), parameters: { max_new_tokens: tokens(), top_n_tokens: random() < 0.2 ? 3 : undefined } }),
  }),
  () => ({
    kind: 'compat',
    method: 'POST',
    path: '/',
    body: JSON.stringify({ inputs: pick(PROMPTS), stream: random() < 0.5, parameters: { max_new_tokens: tokens() } }),
  }),
  () => ({
    kind: 'chat',
    method: 'POST',
    path: '/v1/chat/completions',
    body: JSON.stringify({ messages: [{ role: 'user', content: pick(PROMPTS) }], max_tokens: tokens(), stream: random() < 0.7 }),
  }),
  () => ({
    kind: 'completions',
    method: 'POST',
    path: '/v1/completions',
    body: JSON.stringify({ prompt: pick(PROMPTS), max_tokens: tokens(), stream: random() < 0.7 }),
  }),
  () => ({ kind: 'tokenize', method: 'POST', path: '/tokenize', body: JSON.stringify({ inputs: pick(PROMPTS) }) }),
  () => ({ kind: 'get', method: 'GET', path: pick(['/health', '/info', '/metrics', '/v1/models']) }),
];

const INVALID: Array<() => Omit<Plan, 'abortAfterMs'>> = [
  () => ({ kind: 'invalid', method: 'POST', path: '/generate', body: '{"inputs":' }),
  () => ({ kind: 'invalid', method: 'POST', path: '/generate_stream', body: JSON.stringify({ inputs: 'x', parameters: { top_p: 2 } }) }),
  () => ({
    kind: 'invalid',
    method: 'POST',
    path: '/generate',
    body: JSON.stringify({ inputs: 'x', parameters: { stop: ['a', 'b', 'c', 'd', 'e'] } }),
  }),
  () => ({ kind: 'invalid', method: 'POST', path: '/v1/chat/completions', body: JSON.stringify({ messages: [], max_tokens: 5 }) }),
  () => ({ kind: 'invalid', method: 'POST', path: '/v1/completions', body: JSON.stringify({ prompt: 'x', n: 3 }) }),
  () => ({ kind: 'invalid', method: 'GET', path: '/generate' }),
  () => ({ kind: 'invalid', method: 'POST', path: '/generate', body: OVERSIZED }),
];

function plan(): Plan {
  const make = random() < Number(args['invalid-rate']) ? pick(INVALID) : pick(VALID);
  return { ...make(), abortAfterMs: random() < Number(args['abort-rate']) ? Math.floor(random() * 300) : null };
}

interface Outcome {
  kind: string;
  status: string;
  ms: number;
}

async function send(url: string, p: Plan): Promise<Outcome> {
  const controller = new AbortController();
  const timeout = setTimeout(() => controller.abort(new Error('hung')), 60_000);
  const abort = p.abortAfterMs === null ? null : setTimeout(() => controller.abort(), p.abortAfterMs);
  const started = performance.now();
  try {
    const res = await fetch(url + p.path, {
      method: p.method,
      body: p.body,
      headers: { 'content-type': 'application/json' },
      signal: controller.signal,
    });
    await res.arrayBuffer();
    return { kind: p.kind, status: String(res.status), ms: performance.now() - started };
  } catch (error) {
    const hung = controller.signal.reason instanceof Error && controller.signal.reason.message === 'hung';
    return {
      kind: p.kind,
      status: hung ? 'hung' : controller.signal.aborted ? 'aborted' : `error ${(error as Error).message}`,
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(timeout);
    if (abort) clearTimeout(abort);
  }
}

/**
 * The worker's memory that survives a collection: each 2,000-token prefill allocates megabytes, so
 * the worker collects every few of them, and the least of a dozen readings is its live memory.
 */
async function liveWorkerMemory(engine: Engine): Promise<number> {
  let least = Infinity;
  for (let i = 0; i < 12; i++) {
    for await (const _ of engine.generate({ inputs: 'a' + ' a'.repeat(2000), parameters: { max_new_tokens: 1 } }));
    least = Math.min(least, engine.stats().workerMemoryBytes);
  }
  return least;
}

const MB = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

async function main(): Promise<void> {
  const engine = await createEngine({ model: args.model ?? (await ensureFixtureModel('tiny')) });
  const handler = createInferenceHandler({ engine, maxConcurrentRequests: Number(args.limit) });
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (handler.matches(path)) void handler.handle(req, res, path);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const memory = () => ({ rss: process.memoryUsage().rss, heap: process.memoryUsage().heapUsed, worker: engine.stats().workerMemoryBytes });
  const liveAtStart = await liveWorkerMemory(engine);
  const start = memory();
  const peak = { ...start };
  const outcomes: Outcome[] = [];
  const began = performance.now();
  console.log(
    `soak: ${REQUESTS} requests, ${CONCURRENCY} at a time, maxConcurrentRequests ${args.limit}, seed ${args.seed}, model ${engine.info.modelId}`,
  );
  console.log('   s   done   req/s   RSS MB  heap MB  worker MB  in flight');
  const report = () => {
    const m = memory();
    peak.rss = Math.max(peak.rss, m.rss);
    peak.heap = Math.max(peak.heap, m.heap);
    peak.worker = Math.max(peak.worker, m.worker);
    const s = (performance.now() - began) / 1000;
    console.log(
      `${s.toFixed(0).padStart(4)} ${String(outcomes.length).padStart(6)} ${(outcomes.length / s).toFixed(1).padStart(7)} ${MB(m.rss).padStart(8)} ${MB(m.heap).padStart(8)} ${MB(m.worker).padStart(10)} ${String(handler.admission.inFlight).padStart(10)}`,
    );
  };
  const ticker = setInterval(report, Number(args['interval-ms']));

  // Planned one at a time, in order, so the seed replays the same sequence.
  let planned = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (planned < REQUESTS) {
        planned += 1;
        outcomes.push(await send(url, plan()));
      }
    }),
  );
  clearInterval(ticker);
  report();
  // Aborted streams leave the batch at the next step boundary.
  const settled = Date.now() + 5000;
  while ((handler.admission.inFlight > 0 || engine.stats().batchSize > 0) && Date.now() < settled)
    await new Promise((r) => setTimeout(r, 50));
  const end = memory();

  const byStatus = new Map<string, number>();
  for (const o of outcomes) byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
  console.log('\nanswers by status:', Object.fromEntries([...byStatus].sort()));
  console.log('latency of completed requests (ms):');
  for (const kind of [...new Set(outcomes.map((o) => o.kind))].sort()) {
    const ms = outcomes.filter((o) => o.kind === kind && /^\d/.test(o.status)).map((o) => o.ms);
    console.log(
      `  ${kind.padEnd(16)} n=${String(ms.length).padStart(5)}  p50 ${percentile(ms, 50).toFixed(1).padStart(7)}  p95 ${percentile(ms, 95).toFixed(1).padStart(7)}`,
    );
  }
  console.log('memory (MB)       start      end     peak');
  for (const key of ['rss', 'heap', 'worker'] as const) {
    console.log(`  ${key.padEnd(12)} ${MB(start[key]).padStart(8)} ${MB(end[key]).padStart(8)} ${MB(peak[key]).padStart(8)}`);
  }
  console.log(`  worker, live ${MB(liveAtStart).padStart(8)} ${MB(await liveWorkerMemory(engine)).padStart(8)}`);
  const stats = engine.stats();
  console.log(
    `after: in flight ${handler.admission.inFlight}, batch ${stats.batchSize}, queue ${stats.queueSize}, ${((performance.now() - began) / 1000).toFixed(1)} s`,
  );

  const bad = outcomes.filter((o) => o.status.startsWith('5') || o.status === 'hung' || o.status.startsWith('error'));
  const leaked = handler.admission.inFlight !== 0 || stats.batchSize !== 0 || stats.queueSize !== 0;
  server.close();
  await engine.close();
  if (bad.length > 0 || leaked) {
    console.error(`FAILED: ${bad.length} bad answers${leaked ? ', and capacity left behind' : ''}`);
    process.exitCode = 1;
  }
}

main().catch((error: Error) => {
  console.error(error);
  process.exitCode = 1;
});
