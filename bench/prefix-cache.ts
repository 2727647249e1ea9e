/**
 * `npx tsx bench/prefix-cache.ts`: the second turn of a chat whose first turn (about 1,000 prompt
 * tokens) the prefix cache holds, against the same turn computed cold by an engine without the
 * cache, on the SmolLM2-135M-shaped fixture, Optimum (`left`) and GroupQueryAttention (`right`)
 * exports. Prints the time to first token of each, their ratio (the target is at most 0.2) and
 * whether the greedy tokens agree. Each round starts a new chat, so no round reuses another's
 * prefix; the better of the rounds counts. `BENCH_FAMILIES=left` or `right` picks one.
 */
import { createEngine } from '../src/engine/engine.js';
import { TRAINING_CORPUS } from '../src/fixture/corpus.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import type { Engine, GenerationEvent } from '../src/types.js';
import { fmt } from './measure.js';

const ROUNDS = 3;
const HISTORY_TOKENS = 1000;
const ANSWER_TOKENS = 24;

const FAMILIES = [
  { key: 'left', label: 'Optimum fp32 (left layout)', fixture: {} },
  { key: 'right', label: 'GroupQueryAttention fp32 (right layout)', fixture: { attention: 'gqa' as const } },
];

interface Turn {
  ids: number[];
  text: string;
  firstTokenMs: number;
}

async function turn(engine: Engine, inputs: string, maxNewTokens: number): Promise<Turn> {
  const started = performance.now();
  let firstTokenMs = 0;
  const ids: number[] = [];
  let text = '';
  for await (const event of engine.generate({
    inputs,
    parameters: { max_new_tokens: maxNewTokens, do_sample: false },
  }) as AsyncIterable<GenerationEvent>) {
    if (ids.length === 0) firstTokenMs = performance.now() - started;
    ids.push(event.token.id);
    if (event.type === 'end') text = event.generatedText;
  }
  return { ids, text, firstTokenMs };
}

/** A first turn of about `HISTORY_TOKENS` tokens, different in each round from its first token on. */
async function firstTurn(engine: Engine, round: number): Promise<string> {
  let history = `Session ${round}. System: answer from these notes.\n`;
  while ((await engine.tokenize(history)).length < HISTORY_TOKENS) history += TRAINING_CORPUS;
  const tokens = await engine.tokenize(history);
  return `${history.slice(0, tokens[HISTORY_TOKENS - 1].stop)}\nUser: What do the notes say about the harbour?\nAssistant:`;
}

async function benchFamily(family: (typeof FAMILIES)[number]): Promise<void> {
  const model = await ensureFixtureModel('bench', family.fixture);
  const cached = await createEngine({ model });
  const cold = await createEngine({ model, prefixCacheBytes: 0 });
  try {
    const warm: number[] = [];
    const colds: number[] = [];
    let same = true;
    let promptTokens = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const first = await firstTurn(cached, round);
      const answer = await turn(cached, first, ANSWER_TOKENS);
      const second = `${first}${answer.text}\nUser: And about the lighthouse, in one sentence?\nAssistant:`;
      promptTokens = (await cached.tokenize(second)).length;
      // Alternating which engine goes first, so neither always runs on a warmer machine.
      const [a, b] =
        round % 2 === 0
          ? [await turn(cached, second, ANSWER_TOKENS), await turn(cold, second, ANSWER_TOKENS)]
          : (([y, x]) => [x, y])([await turn(cold, second, ANSWER_TOKENS), await turn(cached, second, ANSWER_TOKENS)]);
      warm.push(a.firstTokenMs);
      colds.push(b.firstTokenMs);
      same &&= a.ids.join() === b.ids.join();
    }
    const stats = cached.stats();
    const best = Math.min(...warm);
    const coldBest = Math.min(...colds);
    console.log(`\n${family.label}: second turn of ${promptTokens} prompt tokens, ${ROUNDS} rounds`);
    console.log(`  cold TTFT ${fmt(coldBest)} ms, cached TTFT ${fmt(best)} ms, ratio ${fmt(best / coldBest, 3)} (target <= 0.2)`);
    console.log(`  per round cold ${colds.map((ms) => fmt(ms)).join(' / ')} ms, cached ${warm.map((ms) => fmt(ms)).join(' / ')} ms`);
    console.log(
      `  prefix cache: ${stats.prefixCacheHits} hits, ${stats.prefixCacheTokens} tokens reused, ${fmt((stats.prefixCacheBytes ?? 0) / 1024 ** 2)} MiB held`,
    );
    console.log(`  greedy tokens with and without the cache: ${same ? 'identical' : 'DIFFERENT'}`);
  } finally {
    await Promise.all([cached.close(), cold.close()]);
  }
}

const wanted = process.env.BENCH_FAMILIES?.split(',');
for (const family of FAMILIES) if (!wanted || wanted.includes(family.key)) await benchFamily(family);
