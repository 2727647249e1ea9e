/**
 * The engine on each export family and weight format, against the bare onnxruntime loop on the same
 * file in the same run (alternating, better of two rounds): what batching costs per family. Called
 * by bench/run.ts; `BENCH_FAMILIES=gqa,gqa-q4` picks some.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createEngine } from '../src/engine/engine.js';
import { ensureFixtureModel } from '../src/fixture/index.js';
import type { Engine, EngineOptions } from '../src/types.js';
import { floorGreedy } from './floor.js';

type FixtureVariant = NonNullable<Parameters<typeof ensureFixtureModel>[1]>;

interface Family {
  key: string;
  label: string;
  fixture: FixtureVariant;
  file: string;
  options?: Partial<EngineOptions>;
}

export const FAMILIES: Family[] = [
  { key: 'gqa', label: 'GroupQueryAttention fp32 (right layout)', fixture: { attention: 'gqa' }, file: 'model.onnx' },
  {
    key: 'gqa-q4',
    label: 'GroupQueryAttention q4',
    fixture: { attention: 'gqa', weights: 'q4' },
    file: 'model_q4.onnx',
    options: { dtype: 'q4' },
  },
  { key: 'q4', label: 'Optimum q4 (MatMulNBits)', fixture: { weights: 'q4' }, file: 'model_q4.onnx', options: { dtype: 'q4' } },
  {
    key: 'q8',
    label: 'Optimum q8 (one row per pass, exact)',
    fixture: { weights: 'q8' },
    file: 'model_quantized.onnx',
    options: { dtype: 'q8' },
  },
  {
    key: 'q8-batched',
    label: 'Optimum q8, allowBatchVariance',
    fixture: { weights: 'q8' },
    file: 'model_quantized.onnx',
    options: { dtype: 'q8', allowBatchVariance: true },
  },
];

export interface FamilyResult {
  key: string;
  label: string;
  floor1: number;
  floor8: number;
  engine1: number;
  engine8: number;
}

async function aggregate(engine: Engine, prompt: string, streams: number, newTokens: number): Promise<number> {
  const started = performance.now();
  let tokens = 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const generation = engine.generate({ inputs: prompt, parameters: { max_new_tokens: newTokens, do_sample: false } });
      for await (const _ of generation) tokens += 1;
    }),
  );
  return tokens / ((performance.now() - started) / 1000);
}

export async function benchFamilies(prompt: string, promptIds: number[], newTokens: number): Promise<FamilyResult[]> {
  const wanted = process.env.BENCH_FAMILIES?.split(',');
  const results: FamilyResult[] = [];
  for (const family of FAMILIES.filter((f) => !wanted || wanted.includes(f.key))) {
    const model = await ensureFixtureModel('bench', family.fixture);
    const session = await ort.InferenceSession.create(join(model, 'onnx', family.file), { graphOptimizationLevel: 'all' });
    const engine = await createEngine({ model, ...family.options });
    await floorGreedy(session, promptIds, 1, 4);
    await aggregate(engine, prompt, 1, 4);
    const r: FamilyResult = { key: family.key, label: family.label, floor1: 0, floor8: 0, engine1: 0, engine8: 0 };
    for (let round = 0; round < 2; round++) {
      for (const streams of [1, 8] as const) {
        const floor = (await floorGreedy(session, promptIds, streams, newTokens)).tokensPerSecond;
        const ours = await aggregate(engine, prompt, streams, newTokens);
        if (streams === 1) {
          r.floor1 = Math.max(r.floor1, floor);
          r.engine1 = Math.max(r.engine1, ours);
        } else {
          r.floor8 = Math.max(r.floor8, floor);
          r.engine8 = Math.max(r.engine8, ours);
        }
      }
    }
    await engine.close();
    await session.release();
    results.push(r);
    console.log(`  ${family.label}: done`);
  }
  return results;
}

export function printFamilies(results: FamilyResult[]): void {
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');
  console.log('\n| family / weights | floor@1 | engine@1 | floor@8 | engine@8 | engine@8 / floor@8 |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results) {
    console.log(`| ${r.label} | ${f(r.floor1)} | ${f(r.engine1)} | ${f(r.floor8)} | ${f(r.engine8)} | ${f(r.engine8 / r.floor8, 2)} |`);
  }
  const gqa = results.find((r) => r.key === 'gqa');
  if (gqa) console.log(`GroupQueryAttention batching cost: engine@8/floor@8 = ${f(gqa.engine8 / gqa.floor8, 2)} (target >= 0.90)`);
}
