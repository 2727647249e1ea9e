/**
 * `npm run bench`: the engine against a bare onnxruntime-node loop, then against node-llama-cpp on the
 * same weights, on the SmolLM2-135M-shaped fixture. Prints tables and the ratios, and writes the
 * figures to bench/results/latest.json. The machines are shared and noisy: compare the ratios of one
 * run, not absolute figures across runs. `BENCH_QUICK=1 npm run bench` (or `tsx bench/run.ts --quick`) is a
 * smoke run: one round, 32 new tokens.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { createEngine } from '../src/engine/engine.js';
import { TRAINING_CORPUS } from '../src/fixture/corpus.js';
import { ensureFixtureGguf } from '../src/fixture/gguf/index.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import { type TextTokenizer, loadTokenizer } from '../src/text/tokenizer.js';
import type { Engine } from '../src/types.js';
import { benchFamilies, printFamilies } from './families.js';
import { floorGreedy, type FloorResult } from './floor.js';
import { benchGrammar, printGrammar } from './grammar.js';
import { fmt, pct, stream } from './measure.js';
import { type PeerRow, comparePeers, llamaCpp, ours, printPeers } from './peer-compare.js';

const QUICK = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? (QUICK ? 32 : 128));
const ROUNDS = QUICK ? 1 : 2;
const PROMPT =
  'The old lighthouse keeper climbed the spiral stairs every evening, carrying a lantern and a notebook in which he wrote down the ships he saw.';

/** Our GroupQueryAttention q4 file with MatMulNBits blocks of `q4BlockSize`, against Q4_0. */
function gqaQ4(label: string, q4BlockSize: 32 | 128, speculativeTokens?: number): PeerRow {
  const model = () => ensureFixtureModel('bench', { attention: 'gqa', weights: 'q4', q4BlockSize });
  return ours(label, model, { dtype: 'q4', speculativeTokens, versus: 'node-llama-cpp Q4_0' });
}

/** The peer table's rows, in the order they run; an `ours` row's ratios are taken against its `versus`. */
const PEER_ROWS: PeerRow[] = [
  ours('ours fp32', () => ensureFixtureModel('bench'), { versus: 'node-llama-cpp F32' }),
  llamaCpp('node-llama-cpp F32', () => ensureFixtureGguf('bench', { type: 'F32' })),
  ours('ours q8 (one row per pass)', () => ensureFixtureModel('bench', { weights: 'q8' }), { dtype: 'q8', versus: 'node-llama-cpp Q8_0' }),
  llamaCpp('node-llama-cpp Q8_0', () => ensureFixtureGguf('bench', { type: 'Q8_0' })),
  ours('ours q4', () => ensureFixtureModel('bench', { weights: 'q4' }), { dtype: 'q4', versus: 'node-llama-cpp Q4_0' }),
  // The fused form onnxruntime-genai exports: GroupQueryAttention, SimplifiedLayerNormalization, MatMulNBits.
  gqaQ4('ours GQA q4', 32),
  // Without prompt-lookup speculation: the fixture's random weights repeat themselves more than a trained
  // model's text does, so these rows are the one-stream speed speculation cannot flatter.
  gqaQ4('ours GQA q4, no speculation', 32, 0),
  // Block 128 instead of the quantizer's default 32: fewer scales to stream per token, a coarser fit.
  gqaQ4('ours GQA q4 block 128', 128),
  gqaQ4('ours GQA q4 block 128, no speculation', 128, 0),
  llamaCpp('node-llama-cpp Q4_0', () => ensureFixtureGguf('bench', { type: 'Q4_0' })),
];

/** `count` tokens of prose: the fixture's corpus, repeated as needed and cut at a token boundary. */
function longPrompt(tokenizer: TextTokenizer, count: number): string {
  let text = TRAINING_CORPUS;
  while (tokenizer.encode(text).length < count) text += `\n${TRAINING_CORPUS}`;
  return tokenizer.decode(tokenizer.encode(text).slice(0, count));
}

async function concurrent(engine: Engine, streams: number) {
  const started = performance.now();
  const results = await Promise.all(Array.from({ length: streams }, () => stream(engine, NEW_TOKENS, PROMPT)));
  const seconds = (performance.now() - started) / 1000;
  const tokens = results.reduce((n, r) => n + r.tokens, 0);
  return {
    streams,
    aggregateTokensPerSecond: tokens / seconds,
    perStreamTokensPerSecond: results.reduce((s, r) => s + r.tokens / (r.totalMs / 1000), 0) / streams,
    ttftP50: pct(
      results.map((r) => r.firstTokenMs),
      50,
    ),
    ttftP95: pct(
      results.map((r) => r.firstTokenMs),
      95,
    ),
    itlP50: pct(
      results.flatMap((r) => r.gaps),
      50,
    ),
    itlP95: pct(
      results.flatMap((r) => r.gaps),
      95,
    ),
  };
}

/** Time to first token of short probes sent one after another while `background` streams run. */
async function probeFirstToken(engine: Engine, background: number, probes: number): Promise<number[]> {
  const running = Array.from({ length: background }, () => stream(engine, NEW_TOKENS * 4, PROMPT));
  if (background > 0) await new Promise((r) => setTimeout(r, 1000));
  const times: number[] = [];
  for (let i = 0; i < probes; i++) times.push((await stream(engine, 4, PROMPT)).firstTokenMs);
  await Promise.all(running);
  return times;
}

async function main(): Promise<void> {
  console.log('Preparing the bench fixture (SmolLM2-135M shape; built once into .fixtures/bench) ...');
  const model = await ensureFixtureModel('bench');
  const tokenizer = await loadTokenizer(model);
  const promptIds = tokenizer.encode(PROMPT);
  console.log(`Prompt: ${promptIds.length} tokens; ${NEW_TOKENS} new tokens per request, greedy.`);

  // Floor and engine alternate, twice (once with --quick), and each figure is the better of its runs: the machine is
  // shared, so back-to-back pairs keep slow drifts in its load out of the ratios.
  const session = await ort.InferenceSession.create(join(model, 'onnx', 'model.onnx'), { graphOptimizationLevel: 'all' });
  const engine = await createEngine({ model });
  await floorGreedy(session, promptIds, 1, 4);
  await stream(engine, 4, PROMPT);
  const floor: Record<number, FloorResult> = {};
  const best: Record<number, Awaited<ReturnType<typeof concurrent>>> = {};
  let loopDelayP99 = NaN;
  for (let round = 0; round < ROUNDS; round++) {
    for (const streams of [1, 4, 8]) {
      if (streams !== 4) {
        const f = await floorGreedy(session, promptIds, streams, NEW_TOKENS);
        if (!floor[streams] || f.tokensPerSecond > floor[streams].tokensPerSecond) floor[streams] = f;
      }
      const delay = monitorEventLoopDelay({ resolution: 1 });
      delay.enable();
      const r = await concurrent(engine, streams);
      delay.disable();
      if (streams === 8) loopDelayP99 = Math.max(Number.isNaN(loopDelayP99) ? 0 : loopDelayP99, delay.percentile(99) / 1e6);
      if (!best[streams] || r.aggregateTokensPerSecond > best[streams].aggregateTokensPerSecond) best[streams] = r;
    }
  }
  await session.release();
  const runs = [best[1], best[4], best[8]];
  const idle = await probeFirstToken(engine, 0, 5);
  const loaded = await probeFirstToken(engine, 7, 6);
  await engine.close();

  const at = (n: number) => runs.find((r) => r.streams === n)!;
  const ratios = {
    engine1OverFloor1: at(1).aggregateTokensPerSecond / floor[1].tokensPerSecond,
    engine8OverFloor8: at(8).aggregateTokensPerSecond / floor[8].tokensPerSecond,
    engine8OverEngine1: at(8).aggregateTokensPerSecond / at(1).aggregateTokensPerSecond,
    ttftLoadedP95OverIdle: pct(loaded, 95) / pct(idle, 50),
  };

  console.log('\n| run | aggregate tok/s | per-stream tok/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) |');
  console.log('|---|---|---|---|---|');
  for (const b of [1, 8]) {
    console.log(
      `| floor, batch ${b} | ${fmt(floor[b].tokensPerSecond)} | ${fmt(floor[b].tokensPerSecond / b)} | ${fmt(floor[b].firstTokenMs, 0)} | - |`,
    );
  }
  for (const r of runs) {
    console.log(
      `| engine, ${r.streams} concurrent | ${fmt(r.aggregateTokensPerSecond)} | ${fmt(r.perStreamTokensPerSecond)} | ${fmt(r.ttftP50, 0)} / ${fmt(r.ttftP95, 0)} | ${fmt(r.itlP50)} / ${fmt(r.itlP95)} |`,
    );
  }
  console.log(`\nEvent-loop delay p99 during 8 streams: ${fmt(loopDelayP99, 2)} ms (target <= 10)`);
  console.log(`TTFT idle p50 ${fmt(pct(idle, 50), 0)} ms; with 7 streams running p95 ${fmt(pct(loaded, 95), 0)} ms`);
  console.log(
    '\nRatios (targets): engine@1/floor@1 %s (>= 0.95), engine@8/floor@8 %s (>= 0.9), engine@8/engine@1 %s, TTFT loaded p95/idle %s (<= 3)',
    fmt(ratios.engine1OverFloor1, 2),
    fmt(ratios.engine8OverFloor8, 2),
    fmt(ratios.engine8OverEngine1, 2),
    fmt(ratios.ttftLoadedP95OverIdle, 2),
  );

  console.log('\nPreparing the peer comparison (GGUF files built once into .fixtures/gguf) ...');
  const peerSettings = {
    prompt: PROMPT,
    prefillPrompt: longPrompt(tokenizer, 512),
    newTokens: NEW_TOKENS,
    streams: 8,
    threads: [1, 2],
    rounds: ROUNDS,
  };
  const peers = await comparePeers(PEER_ROWS, peerSettings);
  printPeers(peers, peerSettings);

  console.log('\nEach export family and weight format against the bare loop on the same file ...');
  const families = await benchFamilies(PROMPT, promptIds, NEW_TOKENS);
  printFamilies(families);

  console.log('\nGrammar-constrained rows against free rows, and the stall of a cold grammar compile ...');
  const grammar = await benchGrammar(PROMPT, NEW_TOKENS, QUICK);
  printGrammar(grammar);

  const out = join(import.meta.dirname ?? 'bench', 'results');
  await mkdir(out, { recursive: true });
  const figures = {
    date: new Date().toISOString(),
    promptTokens: promptIds.length,
    newTokens: NEW_TOKENS,
    floor,
    engine: runs,
    loopDelayP99,
    ttftIdle: idle,
    ttftLoaded: loaded,
    ratios,
    families,
    peers,
    grammar,
  };
  await writeFile(join(out, 'latest.json'), JSON.stringify(figures, null, 2));
  console.log(`\nFigures written to ${join(out, 'latest.json')}`);
}

await main();
