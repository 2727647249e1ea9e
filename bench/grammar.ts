/**
 * Grammar-constrained decoding on the SmolLM2-135M-shaped fixture (49,152-token vocabulary), in one
 * engine:
 * - throughput: 8 rows under 8 different JSON schemas against 8 free rows, in alternating rounds, as
 *   decode tokens per second of the forward passes that carried all 8 rows, masks included: 8 / the
 *   median time of those passes, the best round of each kind counting, since the machine's load
 *   comes and goes by the second (a mask costs 0.02–0.4 ms a row; a pass, tens of milliseconds).
 *   Goal: grammar / free >= 0.97.
 * - the stall of a cold compile: the longest gap between tokens of 4 running free streams while a
 *   request with a large schema never seen before arrives, against the same with a free request
 *   arriving (whose prefill is a gap of its own), alternating.
 *
 * Called by bench/run.ts; `npx tsx bench/grammar.ts` runs it alone (`BENCH_QUICK=1`: 32 new tokens,
 * fewer rounds). Prints figures only: the machine is shared, so compare within one run.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createEngine } from '../src/engine/engine.js';
import { createRng } from '../src/engine/prng.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import { createGrammarEngine, normalizeJsonSchema } from '../src/grammar/index.js';
import type { Engine, ForwardPassRecord } from '../src/types.js';
import { fmt, pct, streamClock, type StreamTimes } from './measure.js';

const ROWS = 8;
const RUNNING = 4;
const TARGET = 0.97;

/**
 * Eight schemas whose outputs cannot be complete within the new tokens (every array is long), so
 * that each row runs them all, as a free row does.
 */
const SCHEMAS: object[] = [
  { type: 'array', items: { type: 'integer' }, minItems: 300 },
  { type: 'array', items: { type: 'string' }, minItems: 300 },
  { type: 'array', items: { enum: ['red', 'green', 'blue', 'cyan'] }, minItems: 300 },
  { type: 'array', items: { type: 'number' }, minItems: 300 },
  { type: 'array', items: { type: 'boolean' }, minItems: 300 },
  {
    type: 'object',
    properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' }, minItems: 300 } },
    required: ['name', 'tags'],
  },
  {
    type: 'array',
    items: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'] },
    minItems: 200,
  },
  {
    type: 'object',
    properties: { id: { type: 'integer' }, days: { type: 'array', items: { type: 'string', format: 'date' }, minItems: 200 } },
    required: ['id', 'days'],
  },
];

/** A large schema (about 50 properties of every kind), made new by `tag` so it is compiled cold. */
function largeSchema(tag: string): object {
  const properties: Record<string, object> = {};
  for (let i = 0; i < 10; i++) {
    properties[`${tag}_name_${i}`] = { type: 'string' };
    properties[`${tag}_count_${i}`] = { type: 'integer', minimum: 0, maximum: 10_000 };
    properties[`${tag}_kind_${i}`] = { enum: Array.from({ length: 20 }, (_, k) => `${tag}-kind-${i}-${k}`) };
    properties[`${tag}_when_${i}`] = { type: 'string', format: 'date-time' };
    properties[`${tag}_items_${i}`] = {
      type: 'array',
      items: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'boolean' } }, required: ['a'] },
      maxItems: 5,
    };
  }
  return { type: 'object', properties, required: Object.keys(properties) };
}

const jsonGrammar = (schema: object) => ({ type: 'json', value: schema });

/** One request's token times, greedy, with or without a grammar. */
async function timed(
  engine: Engine,
  inputs: string,
  maxNewTokens: number,
  grammar?: object,
): Promise<StreamTimes & { arrivals: number[] }> {
  const clock = streamClock();
  const arrivals: number[] = [];
  const parameters = { max_new_tokens: maxNewTokens, do_sample: false, ...(grammar ? { grammar } : {}) };
  for await (const _ of engine.generate({ inputs, parameters })) {
    clock.token();
    arrivals.push(performance.now());
  }
  return { ...clock.times(), arrivals };
}

/** Decode tok/s of the passes that carried every row (their time includes sampling, and so the masks), at their median time. */
async function decodeRate(engine: Engine, prompt: string, newTokens: number, grammars: Array<object | undefined>): Promise<number> {
  const passes: ForwardPassRecord[] = [];
  const stop = engine.onForwardPass((pass) => passes.push(pass));
  try {
    await Promise.all(grammars.map((grammar) => timed(engine, prompt, newTokens, grammar)));
  } finally {
    stop();
  }
  const full = passes.filter((p) => p.method === 'decode' && p.rows === grammars.length).map((p) => p.seconds);
  return grammars.length / pct(full, 50);
}

/**
 * The grammar work of one pass of the 8 rows, timed alone in this process on the model's own
 * vocabulary (ms, median over the steps): each row's mask filled and applied and its greedy token
 * accepted, over random logits. A figure that the machine's load hardly moves, to set beside a
 * pass's time.
 */
async function maskMsPerPass(info: Engine['info'], newTokens: number): Promise<number> {
  const tokenizerJson = JSON.parse(await readFile(join(info.modelDir!, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  const grammars = await createGrammarEngine({ tokenizerJson, vocabSize: info.vocabSize, stopTokenIds: info.eosTokenIds });
  const random = createRng(1);
  const logits = new Float32Array(info.vocabSize);
  const perStep = Array<number>(newTokens).fill(0);
  for (const schema of SCHEMAS) {
    const matcher = await grammars.createMatcher({ type: 'json_schema', schema: normalizeJsonSchema(schema, 'schema') });
    for (let step = 0; step < newTokens; step++) {
      for (let i = 0; i < logits.length; i++) logits[i] = random() * 8 - 4;
      let started = performance.now();
      matcher.fillMask();
      matcher.applyMask(logits);
      perStep[step] += performance.now() - started;
      // The choice itself is no grammar work: a free row makes it too.
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      started = performance.now();
      matcher.accept(best);
      perStep[step] += performance.now() - started;
    }
    matcher.release();
  }
  return pct(perStep, 50);
}

/**
 * The longest gap between tokens of `RUNNING` free streams while another request goes from its
 * arrival to its first token (its compile, if any, and its prefill): the gaps that overlap that span.
 */
async function stallWhile(engine: Engine, prompt: string, newTokens: number, arriving?: object): Promise<number> {
  const running = Array.from({ length: RUNNING }, () => timed(engine, prompt, newTokens * 2));
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  // All of them decoding, a few steps past the last prefill.
  for (let i = 0; engine.stats().batchSize < RUNNING && i < 500; i++) await sleep(20);
  await sleep(300);
  const arrivedAt = performance.now();
  const firstAt = arrivedAt + (await timed(engine, prompt, 4, arriving)).firstTokenMs;
  const streams = await Promise.all(running);
  let longest = 0;
  for (const { arrivals } of streams) {
    for (let i = 1; i < arrivals.length; i++) {
      if (arrivals[i] > arrivedAt && arrivals[i - 1] < firstAt) longest = Math.max(longest, arrivals[i] - arrivals[i - 1]);
    }
  }
  return longest;
}

export interface GrammarBenchResult {
  newTokens: number;
  /** Each round's decode tok/s. */
  free: number[];
  grammar: number[];
  /** Best grammar round / best free round. */
  ratio: number;
  /** The median of each pair of rounds' grammar / free. */
  pairedRatio: number;
  /** The grammar work of a pass of 8 rows, timed alone (ms), and the ratio it implies against the best free pass. */
  maskMsPerPass: number;
  impliedRatio: number;
  /** Compiling the eight schemas, once (s). */
  warmCompileSeconds: number;
  /** Time to first token of the engine's first grammar request, which loads xgrammar (ms). */
  firstGrammarTtftMs: number;
  stallFreeArrivalMs: number[];
  stallColdCompileMs: number[];
  coldCompileSeconds: number[];
  /** Median gap between tokens of the 4 streams, for scale (ms). */
  steadyGapMs: number;
}

export async function benchGrammar(prompt: string, newTokens: number, quick: boolean): Promise<GrammarBenchResult> {
  const engine = await createEngine({ model: await ensureFixtureModel('bench') });
  try {
    const rounds = quick ? 3 : 5;
    const grammars = SCHEMAS.map(jsonGrammar);
    await timed(engine, prompt, 4);
    const firstGrammarTtftMs = (await timed(engine, prompt, 2, grammars[0])).firstTokenMs;
    // Every schema compiled before the rounds: they measure decoding, not compiling.
    await Promise.all(grammars.map((grammar) => timed(engine, prompt, 2, grammar)));
    const warmCompileSeconds = engine.stats().grammar?.compileSeconds ?? 0;

    const free: number[] = [];
    const constrained: number[] = [];
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always runs on a warmer machine.
      const order = i % 2 === 0 ? (['free', 'grammar'] as const) : (['grammar', 'free'] as const);
      for (const kind of order) {
        if (kind === 'free') free.push(await decodeRate(engine, prompt, newTokens, Array<undefined>(ROWS).fill(undefined)));
        else constrained.push(await decodeRate(engine, prompt, newTokens, grammars));
      }
    }

    const stallFreeArrivalMs: number[] = [];
    const stallColdCompileMs: number[] = [];
    const coldCompileSeconds: number[] = [];
    for (let i = 0; i < rounds; i++) {
      stallFreeArrivalMs.push(await stallWhile(engine, prompt, newTokens));
      const before = engine.stats().grammar?.compileSeconds ?? 0;
      stallColdCompileMs.push(await stallWhile(engine, prompt, newTokens, jsonGrammar(largeSchema(`r${i}x${Date.now() % 100_000}`))));
      coldCompileSeconds.push((engine.stats().grammar?.compileSeconds ?? 0) - before);
    }
    const mask = await maskMsPerPass(engine.info, newTokens);
    const freePassMs = (ROWS / Math.max(...free)) * 1000;
    const steady = (await Promise.all(Array.from({ length: RUNNING }, () => timed(engine, prompt, newTokens)))).flatMap((s) => s.gaps);
    return {
      newTokens,
      free,
      grammar: constrained,
      ratio: Math.max(...constrained) / Math.max(...free),
      pairedRatio: pct(
        constrained.map((rate, k) => rate / free[k]),
        50,
      ),
      maskMsPerPass: mask,
      impliedRatio: freePassMs / (freePassMs + mask),
      warmCompileSeconds,
      firstGrammarTtftMs,
      stallFreeArrivalMs,
      stallColdCompileMs,
      coldCompileSeconds,
      steadyGapMs: pct(steady, 50),
    };
  } finally {
    await engine.close();
  }
}

export function printGrammar(r: GrammarBenchResult): void {
  const list = (values: number[], digits = 0) => values.map((v) => fmt(v, digits)).join(' / ');
  console.log(`\n| ${ROWS} rows, ${r.newTokens} new tokens each | decode tok/s, best | each round |`);
  console.log('|---|---|---|');
  console.log(`| free | ${fmt(Math.max(...r.free))} | ${list(r.free, 1)} |`);
  console.log(`| ${ROWS} different JSON schemas | ${fmt(Math.max(...r.grammar))} | ${list(r.grammar, 1)} |`);
  console.log(
    `Grammar / free decode throughput: ${fmt(r.ratio, 3)} best to best, ${fmt(r.pairedRatio, 3)} the median pair of rounds ` +
      `(goal >= ${TARGET}: ${Math.min(r.ratio, r.pairedRatio) >= TARGET ? 'met' : 'NOT met'}). The grammar work of a pass, timed alone: ` +
      `${fmt(r.maskMsPerPass, 2)} ms against the best free pass's ${fmt((ROWS / Math.max(...r.free)) * 1000, 1)} ms, ` +
      `a ratio of ${fmt(r.impliedRatio, 3)}. Compiling the ${ROWS} schemas took ${fmt(r.warmCompileSeconds * 1000, 0)} ms in all; ` +
      `the first grammar request's TTFT, loading xgrammar and the vocabulary, ${fmt(r.firstGrammarTtftMs, 0)} ms`,
  );
  const compileMs = r.coldCompileSeconds.map((s) => s * 1000);
  console.log(
    `Longest gap of ${RUNNING} running streams (their steady gap p50 ${fmt(r.steadyGapMs)} ms), each round: ` +
      `a free request arriving ${list(r.stallFreeArrivalMs)} ms; a cold ~50-property schema arriving ${list(r.stallColdCompileMs)} ms, ` +
      `its compile ${list(compileMs)} ms. Medians: ${fmt(pct(r.stallColdCompileMs, 50) - pct(r.stallFreeArrivalMs, 50), 0)} ms more stall ` +
      `for a compile of ${fmt(pct(compileMs, 50), 0)} ms`,
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
  const prompt =
    'The old lighthouse keeper climbed the spiral stairs every evening, carrying a lantern and a notebook in which he wrote down the ships he saw.';
  printGrammar(await benchGrammar(prompt, Number(process.env.BENCH_NEW_TOKENS ?? (quick ? 32 : 128)), quick));
}
