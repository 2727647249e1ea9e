/**
 * Invariants of the tiny fixture model that hold for any weights, checked with the real
 * onnxruntime-node: the KV cache changes nothing, padding changes nothing, and the variants compute
 * the same function as the default model.
 */
// This file runs onnxruntime in the test process, so it needs what the engine's worker does on Node 24+.
import '../../src/engine/float16-off.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SIZES, WEIGHT_FILES, ensureFixtureModel } from '../../src/fixture/index.js';

const { layers, kvHeads, headDim, vocab } = FIXTURE_SIZES.tiny;
const TOLERANCE = 1e-4;
const PROMPT = [84, 107, 104, 35, 113, 108, 121]; // byte tokens and learned merges
const SHORT = [45, 300, 260, 290]; // shorter, so it is left-padded in a batch with PROMPT

interface Step {
  /** Last-position logits of each row, float32. */
  logits: Float32Array[];
  present: ort.Tensor[];
}

/** One model under test, with the feeds the Optimum layout wants. */
class Model {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly kvType: 'float32' | 'float16',
  ) {}

  static async open(dir: string): Promise<Model> {
    const stamp = JSON.parse(await readFile(join(dir, 'fixture.json'), 'utf8'));
    const file = WEIGHT_FILES[stamp.weights as keyof typeof WEIGHT_FILES];
    return new Model(await ort.InferenceSession.create(join(dir, 'onnx', file)), stamp.weights === 'fp16' ? 'float16' : 'float32');
  }

  /** Runs rows of equal length `ids` over `past` (null: empty) with a 0/1 `mask` per row over past + new. */
  async run(ids: number[][], mask: number[][], past: ort.Tensor[] | null): Promise<Step> {
    const [batch, seq, total] = [ids.length, ids[0].length, mask[0].length];
    const int64 = (rows: number[][], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), dims);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: int64(ids, [batch, seq]),
      attention_mask: int64(mask, [batch, total]),
    };
    if (this.session.inputNames.includes('position_ids')) {
      feeds.position_ids = int64(
        mask.map((row) => positionsOf(row).slice(total - seq)),
        [batch, seq],
      );
    }
    const empty = this.kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0);
    for (let i = 0; i < 2 * layers; i++) {
      feeds[pastName(i)] = past?.[i] ?? new ort.Tensor(this.kvType, empty, [batch, kvHeads, 0, headDim]);
    }
    const out = await this.session.run(feeds);
    const data = out.logits.type === 'float16' ? halfToFloat(out.logits.data as Uint16Array) : (out.logits.data as Float32Array);
    const logits = ids.map((_, b) => data.slice((b * seq + seq - 1) * vocab, (b * seq + seq) * vocab));
    const present = Array.from({ length: 2 * layers }, (_, i) => out[presentName(i)]);
    return { logits, present };
  }
}

/** The i-th cache tensor in the order key 0, value 0, key 1, ... */
const pastName = (i: number) => `past_key_values.${i >> 1}.${i & 1 ? 'value' : 'key'}`;
const presentName = (i: number) => `present.${i >> 1}.${i & 1 ? 'value' : 'key'}`;

/** cumsum(mask) - 1, with padding at 0: what a caller feeds as position_ids. */
function positionsOf(mask: number[]): number[] {
  let seen = 0;
  return mask.map((m) => Math.max((seen += m) - 1, 0));
}

function halfToFloat(halves: Uint16Array): Float32Array {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) {
    const h = halves[i];
    const exponent = (h >> 10) & 0x1f;
    const magnitude = exponent === 0 ? (h & 0x3ff) * 2 ** -24 : (1 + (h & 0x3ff) / 1024) * 2 ** (exponent - 15);
    out[i] = h & 0x8000 ? -magnitude : magnitude;
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

const ones = (n: number) => new Array<number>(n).fill(1);

/** Greedy decoding of one sequence with the cache: the last-position logits of the prompt and of each step. */
async function cachedGreedy(model: Model, prompt: number[], steps: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const ids = [...prompt];
  let step = await model.run([prompt], [ones(prompt.length)], null);
  const logits = [step.logits[0]];
  for (let s = 0; s < steps; s++) {
    ids.push(argmax(step.logits[0]));
    step = await model.run([[ids.at(-1)!]], [ones(ids.length)], step.present);
    logits.push(step.logits[0]);
  }
  return { ids, logits };
}

/** Prefill of two left-padded prompts, then `steps` decode steps feeding each row its solo greedy tokens. */
async function paddedBatch(model: Model, prompts: number[][], next: number[][], steps: number): Promise<Float32Array[][]> {
  const width = Math.max(...prompts.map((p) => p.length));
  const mask = prompts.map((p) => [...new Array<number>(width - p.length).fill(0), ...ones(p.length)]);
  const padded = prompts.map((p) => [...new Array<number>(width - p.length).fill(0), ...p]);
  let step = await model.run(padded, mask, null);
  const perStep = [step.logits];
  for (let s = 0; s < steps; s++) {
    mask.forEach((row) => row.push(1));
    step = await model.run(
      next.map((tokens) => [tokens[s]]),
      mask,
      step.present,
    );
    perStep.push(step.logits);
  }
  return perStep;
}

let dir: string;
let model: Model;
beforeAll(async () => {
  dir = await ensureFixtureModel('tiny');
  model = await Model.open(dir);
});

describe('tiny fixture model', () => {
  it('gives the same logits with the KV cache as recomputing the whole sequence', async () => {
    const { ids, logits } = await cachedGreedy(model, PROMPT, 5);
    for (let s = 0; s <= 5; s++) {
      const sequence = ids.slice(0, PROMPT.length + s);
      const full = await model.run([sequence], [ones(sequence.length)], null);
      expect(maxAbsDiff(logits[s], full.logits[0]), `step ${s}`).toBeLessThanOrEqual(TOLERANCE);
    }
  });

  it('gives a row of a left-padded batch the logits of the same sequence alone', async () => {
    const prompts = [PROMPT, SHORT];
    const solo = await Promise.all(prompts.map((p) => cachedGreedy(model, p, 3)));
    const next = solo.map((run, row) => run.ids.slice(prompts[row].length));
    const batched = await paddedBatch(model, prompts, next, 3);
    for (let s = 0; s <= 3; s++) {
      for (let row = 0; row < 2; row++) {
        expect(maxAbsDiff(batched[s][row], solo[row].logits[s]), `step ${s} row ${row}`).toBeLessThanOrEqual(TOLERANCE);
      }
    }
  });

  it('has logits that tell prompts apart: spread out, distinct greedy continuations', async () => {
    const a = await cachedGreedy(model, PROMPT, 8);
    const b = await cachedGreedy(model, SHORT, 8);
    expect(a.ids.slice(PROMPT.length)).not.toEqual(b.ids.slice(SHORT.length));
    const sorted = [...a.logits[0]].sort((x, y) => y - x);
    expect(sorted[0] - sorted[1]).toBeGreaterThan(1e-3);
    expect(sorted[0] - sorted[sorted.length - 1]).toBeGreaterThan(5);
  });
});

describe.each([
  { variant: { weights: 'fp16' as const }, tolerance: 5e-2 },
  { variant: { positions: 'mask' as const }, tolerance: TOLERANCE },
  { variant: { positions: 'column' as const }, tolerance: TOLERANCE },
  { variant: { externalData: true }, tolerance: TOLERANCE },
])('tiny fixture variant $variant', ({ variant, tolerance }) => {
  it('computes what the default model computes, padded batch and cache included', async () => {
    const other = await Model.open(await ensureFixtureModel('tiny', variant));
    const prompts = [PROMPT, SHORT];
    const next = [
      [5, 6, 7],
      [8, 9, 10],
    ];
    const expected = await paddedBatch(model, prompts, next, 3);
    const actual = await paddedBatch(other, prompts, next, 3);
    for (let s = 0; s <= 3; s++) {
      for (let row = 0; row < 2; row++) {
        expect(maxAbsDiff(actual[s][row], expected[s][row]), `step ${s} row ${row}`).toBeLessThanOrEqual(tolerance);
      }
    }
  });
});
