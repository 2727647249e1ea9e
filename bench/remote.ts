/**
 * What the router costs (README "Scaling out"), run by `npm run bench` after bench/run.ts, or alone
 * with `tsx bench/remote.ts` (after `npm run build`). Two `streaming-inference serve` processes on the
 * SmolLM2-135M-shaped bench fixture, one thread each (one per core), are driven in the same run:
 *
 * - directly, with a perfect split (the same number of closed-loop clients on each), and
 * - through a third process, `serve --upstream A --upstream B`, with the same total number of clients;
 *
 * in alternating rounds (A B B A ...), so that drift on this shared machine hits both alike. Routing efficiency is the
 * router's aggregate tokens/s over the direct one (goal ≥ 0.95). Then the time the router adds to the
 * first token, on the tiny fixture, whose own first token takes a few milliseconds, so that the
 * router's share is not lost in the bench model's prefill: sequential one-token requests, direct and
 * routed in turn (goal p50 ≤ 2 ms).
 * Writes the figures to bench/results/remote.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureFixtureModel } from '../src/fixture/index.js';
import { post, sseFrames } from '../test/conformance/http-client.js';
import { startServe, startServes, type ServeProcess } from '../test/support/serve-process.js';

const QUICK = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
const NEW_TOKENS = QUICK ? 16 : 48;
const CLIENTS_PER_UPSTREAM = 2;
const REQUESTS_PER_CLIENT = 2;
const ROUNDS = QUICK ? 2 : 6;
const TTFT_PROBES = QUICK ? 10 : 30;
const PROMPT = 'The old lighthouse keeper climbed the spiral stairs every evening, carrying a lantern and a notebook.';

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** One greedy stream: its tokens and the time to its first event. */
async function stream(url: string, maxNewTokens: number): Promise<{ tokens: number; firstTokenMs: number }> {
  const sent = performance.now();
  const res = await post(`${url}/generate_stream`, { inputs: PROMPT, parameters: { max_new_tokens: maxNewTokens, do_sample: false } });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  let tokens = 0;
  let firstTokenMs = 0;
  for await (const frame of sseFrames(res.body!, sent)) {
    if (tokens === 0) firstTokenMs = frame.at;
    tokens += 1;
  }
  return { tokens, firstTokenMs };
}

/** Closed-loop clients, each sending its next request when its last one ended; aggregate tokens per second. */
async function drive(urls: string[]): Promise<number> {
  const started = performance.now();
  const counts = await Promise.all(
    urls.map(async (url) => {
      let tokens = 0;
      for (let i = 0; i < REQUESTS_PER_CLIENT; i++) tokens += (await stream(url, NEW_TOKENS)).tokens;
      return tokens;
    }),
  );
  return counts.reduce((a, b) => a + b) / ((performance.now() - started) / 1000);
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

/** Time to first token, direct (alternating upstreams) and routed, one request at a time. */
async function firstTokens(model: string): Promise<{ direct: number[]; router: number[] }> {
  const { upstreams, router, close } = await fleet(model);
  try {
    const ttft = { direct: [] as number[], router: [] as number[] };
    for (let i = -2; i < TTFT_PROBES; i++) {
      const direct = (await stream(upstreams[(i + 2) % 2].url, 1)).firstTokenMs;
      const routed = (await stream(router.url, 1)).firstTokenMs;
      // The first two of each warm the connections and the model.
      if (i < 0) continue;
      ttft.direct.push(direct);
      ttft.router.push(routed);
    }
    return ttft;
  } finally {
    await close();
  }
}

async function main(): Promise<void> {
  const model = await ensureFixtureModel('bench');
  console.log(
    `Router bench: 2 upstreams (bench fixture, --threads 1 each), ${CLIENTS_PER_UPSTREAM} clients per upstream, ${NEW_TOKENS} new tokens per request`,
  );
  const { upstreams, router, close } = await fleet(model);
  const rates = { direct: [] as number[], router: [] as number[] };
  try {
    const direct = upstreams.flatMap((u) => Array(CLIENTS_PER_UPSTREAM).fill(u.url) as string[]);
    const routed = direct.map(() => router.url);
    // Warm both paths (first forward passes, connection pools) before measuring.
    await drive([...direct.slice(0, 2), ...routed.slice(0, 2)]);

    // A B B A ...: drift within a pair of rounds cancels.
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['direct', 'router'] as const) : (['router', 'direct'] as const);
      for (const path of order) rates[path].push(await drive(path === 'direct' ? direct : routed));
    }
  } finally {
    await close();
  }
  const sum = (values: number[]) => values.reduce((a, b) => a + b);
  const efficiency = sum(rates.router) / sum(rates.direct);
  const ttft = await firstTokens(await ensureFixtureModel('tiny'));
  const addedMs = median(ttft.router) - median(ttft.direct);

  const row = (name: string, values: number[]) => `  ${name.padEnd(8)} ${values.map((v) => v.toFixed(1).padStart(7)).join(' ')}  tok/s`;
  console.log(row('direct', rates.direct));
  console.log(row('router', rates.router));
  console.log(`  routing efficiency ${efficiency.toFixed(3)} (goal >= 0.95)`);
  console.log(
    `  time to first token p50 (tiny fixture): direct ${median(ttft.direct).toFixed(2)} ms, router ${median(ttft.router).toFixed(2)} ms, added ${addedMs.toFixed(2)} ms (goal <= 2)`,
  );
  const results = {
    date: new Date().toISOString(),
    newTokens: NEW_TOKENS,
    clients: 2 * CLIENTS_PER_UPSTREAM,
    tokensPerSecond: rates,
    routingEfficiency: efficiency,
    firstTokenMs: { directP50: median(ttft.direct), routerP50: median(ttft.router), addedP50: addedMs },
  };
  const dir = join(import.meta.dirname, 'results');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'remote.json'), JSON.stringify(results, null, 2) + '\n');
}

main().catch((error: Error) => {
  console.error(error);
  process.exit(1);
});
