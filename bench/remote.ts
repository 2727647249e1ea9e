/**
 * What the router costs (README "Scaling out"), run by `npm run bench` after bench/run.ts, or alone
 * with `tsx bench/remote.ts [--quick]` (after `npm run build`). Two `streaming-inference serve`
 * processes, one thread each (one per core), and a third, `serve --upstream A --upstream B`, in
 * front of them. The same client code drives both paths in turn, so drift on this shared machine
 * hits both alike:
 *
 * - Routing efficiency, on the SmolLM2-135M-shaped bench fixture: the same closed-loop clients
 *   either pinned two per upstream (a perfect split) or all sent to the router, in windows of equal
 *   length in the order A B B A ..., counting the tokens that arrive inside each window once the
 *   clients are running (no start-up, no tail). Efficiency is the routed tokens over the direct ones
 *   (goal ≥ 0.95).
 * - The time the router adds to the first token, on the tiny fixture, whose own first token takes a
 *   few milliseconds, so that the router's share is not lost in a prefill: one-token requests one at
 *   a time, direct and routed alternately (goal: p50 added ≤ 2 ms).
 *
 * Also recorded: the load average, and the share of CPU time the hypervisor took (steal), which
 * say how much else the machine was doing while the figures were taken.
 * Writes the figures to bench/results/remote.json.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ensureFixtureModel } from '../src/fixture/index.js';
import { post, sseFrames } from '../test/conformance/http-client.js';
import { startServe, startServes, type ServeProcess } from '../test/support/serve-process.js';

const QUICK = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
/** Short enough that every window holds a few requests' ends, so routing decisions are part of what it counts. */
const NEW_TOKENS = 16;
const CLIENTS_PER_UPSTREAM = 2;
/** Windows per path, short and many: they alternate A B B A ..., and drift on a shared machine is slower than a window. */
const ROUNDS = QUICK ? 8 : 16;
const WARM_MS = 1000;
const WINDOW_MS = QUICK ? 2500 : 4000;
const TTFT_PROBES = QUICK ? 100 : 300;
const PROMPT = 'The old lighthouse keeper climbed the spiral stairs every evening, carrying a lantern and a notebook.';

type Path = 'direct' | 'router';

const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.floor(q * (values.length - 1))];
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/** One greedy stream read to its end; `onToken` sees each event's arrival (performance.now()). */
async function stream(url: string, maxNewTokens: number, signal?: AbortSignal, onToken?: (at: number) => void): Promise<number> {
  const sent = performance.now();
  const res = await post(
    `${url}/generate_stream`,
    { inputs: PROMPT, parameters: { max_new_tokens: maxNewTokens, do_sample: false } },
    { signal },
  );
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  let first = 0;
  for await (const frame of sseFrames(res.body!, sent)) {
    if (first === 0) first = frame.at;
    onToken?.(sent + frame.at);
  }
  return first;
}

/**
 * Closed-loop clients, one per URL, each sending its next request when its last one ended: the
 * tokens that arrive within one window after a warm-up. The requests still running at its end are
 * cut, which the upstreams see as clients leaving.
 */
async function window(urls: string[]): Promise<number> {
  const stop = new AbortController();
  const from = performance.now() + WARM_MS;
  const to = from + WINDOW_MS;
  let tokens = 0;
  const count = (at: number) => void (at >= from && at < to && (tokens += 1));
  const clients = urls.map(async (url) => {
    while (!stop.signal.aborted) await stream(url, NEW_TOKENS, stop.signal, count).catch(() => 0);
  });
  await new Promise((resolve) => setTimeout(resolve, to - performance.now()));
  stop.abort();
  await Promise.all(clients);
  // Cut requests end upstream within a decode step; let them, before the next window starts.
  await new Promise((resolve) => setTimeout(resolve, 200));
  return tokens;
}

/** Two upstreams of `model` and a router in front of them; closed together. */
async function fleet(model: string): Promise<{ upstreams: ServeProcess[]; router: ServeProcess; close(): Promise<void> }> {
  const upstreams = await startServes(2, ['--model', model, '--threads', '1']);
  const router = await startServe(upstreams.flatMap((u) => ['--upstream', u.url])).catch(async (error: unknown) => {
    await Promise.all(upstreams.map((u) => u.close()));
    throw error;
  });
  return { upstreams, router, close: async () => void (await Promise.all([router, ...upstreams].map((p) => p.close()))) };
}

/** Tokens per window, direct and routed, in alternating order. */
async function throughput(model: string): Promise<Record<Path, number[]>> {
  const { upstreams, router, close } = await fleet(model);
  try {
    const direct = upstreams.flatMap((u) => Array<string>(CLIENTS_PER_UPSTREAM).fill(u.url));
    const urls: Record<Path, string[]> = { direct, router: direct.map(() => router.url) };
    // First forward passes and connection pools, on both paths.
    for (const path of ['direct', 'router'] as const) for (const url of urls[path]) await stream(url, 4);
    const tokens: Record<Path, number[]> = { direct: [], router: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order: Path[] = round % 2 === 0 ? ['direct', 'router'] : ['router', 'direct'];
      for (const path of order) tokens[path].push(await window(urls[path]));
    }
    return tokens;
  } finally {
    await close();
  }
}

/** Time to first token, one request at a time, direct (alternating upstreams) and routed in turn. */
async function firstTokens(model: string): Promise<Record<Path, number[]>> {
  const { upstreams, router, close } = await fleet(model);
  try {
    const ttft: Record<Path, number[]> = { direct: [], router: [] };
    for (let i = -10; i < TTFT_PROBES; i++) {
      const directly = () => stream(upstreams[(i + 10) % 2].url, 1);
      const routing = () => stream(router.url, 1);
      // Which goes first alternates too, so that neither always follows the other's request.
      let direct: number;
      let routed: number;
      if (i % 2 === 0) {
        direct = await directly();
        routed = await routing();
      } else {
        routed = await routing();
        direct = await directly();
      }
      // The first ten of each warm the connections and the model.
      if (i < 0) continue;
      ttft.direct.push(direct);
      ttft.router.push(routed);
    }
    return ttft;
  } finally {
    await close();
  }
}

/** Jiffies the whole machine spent, and those the hypervisor took (steal), from /proc/stat; null elsewhere. */
async function cpuTimes(): Promise<{ total: number; steal: number } | null> {
  const line = (await readFile('/proc/stat', 'utf8').catch(() => '')).split('\n')[0];
  if (!line.startsWith('cpu ')) return null;
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  return { total: sum(fields.slice(0, 8)), steal: fields[7] ?? 0 };
}

async function main(): Promise<void> {
  const cpuBefore = await cpuTimes();
  const loadBefore = loadavg();
  console.log(
    `Router bench: 2 upstreams (--threads 1 each), ${CLIENTS_PER_UPSTREAM} clients per upstream, ${NEW_TOKENS} new tokens per request, ` +
      `${ROUNDS} windows of ${WINDOW_MS / 1000} s per path; load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const tokens = await throughput(await ensureFixtureModel('bench'));
  const rates = (path: Path) => tokens[path].map((n) => n / (WINDOW_MS / 1000));
  const efficiency = sum(tokens.router) / sum(tokens.direct);
  // Each round's routed window over its direct one, run back to back: the median shrugs off a round
  // that another process's burst hit on one side only, and the range shows how far single rounds stray.
  const rounds = tokens.router.map((n, i) => n / tokens.direct[i]);
  const ttft = await firstTokens(await ensureFixtureModel('tiny'));
  const cpuAfter = await cpuTimes();
  const loadAfter = loadavg();
  const steal = cpuBefore && cpuAfter ? (cpuAfter.steal - cpuBefore.steal) / (cpuAfter.total - cpuBefore.total) : null;

  const row = (name: string, values: number[]) => `  ${name.padEnd(8)} ${values.map((v) => v.toFixed(1).padStart(6)).join(' ')}  tok/s`;
  console.log(row('direct', rates('direct')));
  console.log(row('router', rates('router')));
  console.log(
    `  routing efficiency ${efficiency.toFixed(3)} over all windows (goal >= 0.95); median of rounds ${quantile(rounds, 0.5).toFixed(3)}, ` +
      `rounds ${Math.min(...rounds).toFixed(3)}–${Math.max(...rounds).toFixed(3)}`,
  );
  const stats = (values: number[]) => ({ p50: quantile(values, 0.5), p90: quantile(values, 0.9) });
  const direct = stats(ttft.direct);
  const routed = stats(ttft.router);
  const added = { p50: routed.p50 - direct.p50, p90: routed.p90 - direct.p90 };
  console.log(
    `  time to first token, tiny fixture, ${TTFT_PROBES} each: direct p50 ${direct.p50.toFixed(2)} p90 ${direct.p90.toFixed(2)} ms, ` +
      `router p50 ${routed.p50.toFixed(2)} p90 ${routed.p90.toFixed(2)} ms; added p50 ${added.p50.toFixed(2)} ms (goal <= 2), p90 ${added.p90.toFixed(2)} ms`,
  );
  console.log(
    `  machine: load average ${loadAfter.map((l) => l.toFixed(2)).join(' ')} at the end` +
      (steal === null ? '' : `, ${(100 * steal).toFixed(0)} % of CPU time stolen by the hypervisor during the run`),
  );
  const results = {
    date: new Date().toISOString(),
    quick: QUICK,
    newTokens: NEW_TOKENS,
    clients: 2 * CLIENTS_PER_UPSTREAM,
    windowSeconds: WINDOW_MS / 1000,
    tokensPerSecond: { direct: rates('direct'), router: rates('router') },
    routingEfficiency: efficiency,
    roundRatios: rounds,
    firstTokenMs: { probes: TTFT_PROBES, direct, router: routed, added },
    machine: { loadAverageBefore: loadBefore, loadAverageAfter: loadAfter, stealShare: steal },
  };
  const dir = join(import.meta.dirname, 'results');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'remote.json'), JSON.stringify(results, null, 2) + '\n');
}

main().catch((error: Error) => {
  console.error(error);
  process.exit(1);
});
