/**
 * `npx tsx bench/speculation.ts`: one greedy stream's decode speed with prompt-lookup speculation
 * (the default 4 proposed tokens) against the same engine options with it off, on the
 * SmolLM2-135M-shaped fixture, Optimum (`left`) and GroupQueryAttention (`right`) exports.
 *
 * - input-grounded: the prompt holds text the model's own greedy decoding produced earlier, then the
 *   start of it again, so the continuation repeats the prompt (what a rewrite or an extension of a
 *   given text does with a real model; the fixture's weights are random, so its own text stands in).
 * - free text: a prompt from the fixture's corpus, continued freely; proposals are made only where an
 *   n-gram recurs, and mostly fail.
 * - sampled text: the same prompt, sampled hot (seeded): proposals, where an n-gram recurs at all,
 *   almost never survive the draw — the case where speculation only costs.
 *
 * Prints decode tok/s (first token excluded) of each, their ratio (targets: >= 1.5 and >= 0.97),
 * the proposals accepted, and whether the tokens agree. Rounds alternate; the better of them counts.
 * `BENCH_FAMILIES=left` or `right` picks one.
 */
import { createEngine } from '../src/engine/engine.js';
import { TRAINING_CORPUS } from '../src/fixture/corpus.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import type { Engine, GenerateParameters, GenerationEvent } from '../src/types.js';
import { fmt } from './measure.js';

const ROUNDS = 3;
const NEW_TOKENS = 128;

const FAMILIES = [
  { key: 'left', label: 'Optimum fp32 (left layout)', fixture: {} },
  { key: 'right', label: 'GroupQueryAttention fp32 (right layout)', fixture: { attention: 'gqa' as const } },
];

interface Result {
  ids: number[];
  text: string;
  tokPerS: number;
}

const GREEDY: GenerateParameters = { do_sample: false };
const HOT: GenerateParameters = { do_sample: true, temperature: 1.5, seed: 7 };

async function generate(engine: Engine, inputs: string, sampling = GREEDY): Promise<Result> {
  const ids: number[] = [];
  let text = '';
  let first = 0;
  let last = 0;
  for await (const event of engine.generate({
    inputs,
    parameters: { max_new_tokens: NEW_TOKENS, ...sampling },
  }) as AsyncIterable<GenerationEvent>) {
    last = performance.now();
    if (ids.length === 0) first = last;
    ids.push(event.token.id);
    if (event.type === 'end') text = event.generatedText;
  }
  return { ids, text, tokPerS: ((ids.length - 1) * 1000) / (last - first) };
}

async function benchFamily(family: (typeof FAMILIES)[number]): Promise<void> {
  const model = await ensureFixtureModel('bench', family.fixture);
  // No prefix cache: every round's prompt is computed alike in both engines.
  const spec = await createEngine({ model, prefixCacheBytes: 0 });
  const plain = await createEngine({ model, prefixCacheBytes: 0, speculativeTokens: 0 });
  try {
    const free = TRAINING_CORPUS.slice(0, 200);
    const earlier = await generate(plain, free);
    const grounded = `${free}${earlier.text}\n\n${free}`;
    console.log(`\n${family.label}`);
    for (const [name, prompt, target, sampling] of [
      ['input-grounded', grounded, 1.5, GREEDY],
      ['free text', free, 0.97, GREEDY],
      ['sampled text', free, 0.97, HOT],
    ] as const) {
      let best = { spec: 0, plain: 0 };
      let same = true;
      const before = spec.stats();
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate which engine goes first, so neither always runs on a warmer machine.
        const [a, b] =
          round % 2 === 0
            ? [await generate(spec, prompt, sampling), await generate(plain, prompt, sampling)]
            : [null, await generate(plain, prompt, sampling)];
        const s = a ?? (await generate(spec, prompt, sampling));
        same &&= s.ids.join() === b.ids.join();
        best = { spec: Math.max(best.spec, s.tokPerS), plain: Math.max(best.plain, b.tokPerS) };
      }
      const after = spec.stats();
      const proposed = (after.speculativeProposedTokens ?? 0) - (before.speculativeProposedTokens ?? 0);
      const accepted = (after.speculativeAcceptedTokens ?? 0) - (before.speculativeAcceptedTokens ?? 0);
      const ratio = best.spec / best.plain;
      console.log(
        `  ${name.padEnd(15)} speculation ${fmt(best.spec)} tok/s, off ${fmt(best.plain)} tok/s: ${fmt(ratio, 2)}x (target >= ${target}: ${ratio >= target ? 'met' : 'NOT met'}); ` +
          `accepted ${accepted}/${proposed} proposed; tokens ${same ? 'identical' : 'DIFFER'}`,
      );
    }
  } finally {
    await Promise.all([spec.close(), plain.close()]);
  }
}

const picked = process.env.BENCH_FAMILIES?.split(',');
for (const family of FAMILIES) if (!picked || picked.includes(family.key)) await benchFamily(family);
