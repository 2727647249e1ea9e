/**
 * GroupQueryAttention writing new keys into a pre-allocated cache (its shared past/present buffer)
 * against the same graph concatenating the cache into fresh `present.*` tensors every step, on the
 * real onnxruntime: the same logits at every step, through joins, finished rows and re-allocations.
 */
import '../../src/engine/float16-off.js';
import { describe, expect, it } from 'vitest';
import { KvBatch } from '../../src/engine/kv-batch.js';
import { openModelDir } from '../../src/engine/model-dir.js';
import { type ForwardOutputs, ModelSession } from '../../src/engine/model-session.js';
import { promptMatrix } from '../../src/engine/prefill.js';
import { WEIGHT_FILES, ensureFixtureModel, type FixtureOptions } from '../../src/fixture/index.js';

const VARIANTS: Array<{ name: string; fixture: Partial<FixtureOptions> }> = [
  { name: 'fp32', fixture: { attention: 'gqa' } },
  { name: 'fp16', fixture: { attention: 'gqa', weights: 'fp16' } },
  { name: 'q4', fixture: { attention: 'gqa', weights: 'q4' } },
  { name: 'q4 block 128', fixture: { attention: 'gqa', weights: 'q4', q4BlockSize: 128 } },
];

async function load(fixture: Partial<FixtureOptions>): Promise<ModelSession> {
  const dir = await ensureFixtureModel('tiny', fixture);
  const { config, onnxFile, graph } = await openModelDir(dir, { modelFile: `onnx/${WEIGHT_FILES[fixture.weights ?? 'fp32']}` });
  return ModelSession.load(onnxFile, config, new Set(Object.keys(graph.opTypes)), 1);
}

/** Rows `ids` prefilled together, right-padded, as the engine prefills them. */
async function prefill(model: ModelSession, ids: number[], prompts: number[][]): Promise<{ batch: KvBatch; out: ForwardOutputs }> {
  const m = promptMatrix(prompts, 'right');
  const out = await model.forward({ ...m, past: model.emptyPast(m.batch) });
  const lengths = prompts.map((p) => p.length);
  return {
    batch: KvBatch.fromPrefill(
      'right',
      ids,
      ids.map(() => 0),
      lengths,
      out.present,
    ),
    out,
  };
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

const tolerance = (model: ModelSession) => (model.kvDtype === 'float16' ? 2e-2 : 1e-4);

describe.each(VARIANTS)('GroupQueryAttention in place: $name', ({ fixture }) => {
  it('gives the logits of the copying path at every step, through a join, a finished row and re-allocations', async () => {
    const model = await load(fixture);
    expect(model.attention).toMatchObject({ layout: 'right', inPlace: true });
    const context = 160;
    const prompts = [
      [5, 9, 13],
      [7, 8, 9, 10, 11, 12],
    ];
    const copying = (await prefill(model, [0, 1], prompts)).batch;
    const first = await prefill(model, [0, 1], prompts);
    const inPlace = first.batch;
    let last = prompts.map((p, r) => argmax(first.out.logits.at(r, p.length - 1)));
    let live: Array<number | null> = [...last];
    const widths = new Set<number>();
    for (let step = 0; step < 100; step++) {
      if (step === 10) {
        // Row 0 finishes: it rides along as a dead row until the join below copies it out.
        live = [null, live[1]];
      }
      if (step === 20) {
        const join = [[3, 4], [6]];
        const a = await prefill(model, [2, 3], join);
        const b = await prefill(model, [2, 3], join);
        copying.merge(new Set([1]), a.batch);
        inPlace.merge(new Set([1]), b.batch);
        live = [live[1], ...join.map((p, r) => argmax(a.out.logits.at(r, p.length - 1)))];
      }
      inPlace.reserve(1, context);
      widths.add(inPlace.width);
      const a = await model.forward(copying.decodeInputs(live));
      const b = await model.forward(inPlace.decodeInputs(live));
      copying.advance(a.present);
      inPlace.advance(b.present);
      last = live.map((token, r) => (token === null ? -1 : argmax(a.logits.at(r, 0))));
      live.forEach((token, r) => {
        if (token === null) return;
        const diff = maxDiff(a.logits.at(r, 0), b.logits.at(r, 0));
        expect(diff, `step ${step} row ${r}`).toBeLessThanOrEqual(tolerance(model));
      });
      live = live.map((token, r) => (token === null ? null : last[r]));
    }
    // Rows reached 100+ tokens: the buffer was re-allocated while the rows decoded, and never past the context.
    expect(widths.size).toBeGreaterThan(1);
    expect(Math.max(...widths)).toBeLessThanOrEqual(context);
    await model.release();
  });

  it('verifies proposed tokens in place and keeps only the accepted ones', async () => {
    const model = await load(fixture);
    const prompt = [[5, 9, 13, 17]];
    const copying = (await prefill(model, [0], prompt)).batch;
    const inPlace = (await prefill(model, [0], prompt)).batch;
    const proposal = [21, 22, 23, 24];
    inPlace.reserve(1 + proposal.length, 160);
    const a = await model.forward(copying.verifyInputs([30, ...proposal]));
    const b = await model.forward(inPlace.verifyInputs([30, ...proposal]));
    for (let j = 0; j <= proposal.length; j++) expect(maxDiff(a.logits.at(0, j), b.logits.at(0, j))).toBeLessThanOrEqual(tolerance(model));
    // Two kept: the cache is the one two decode steps would have left; the next step agrees.
    copying.advanceBy(a.present, 2);
    inPlace.advanceBy(b.present, 2);
    inPlace.reserve(1, 160);
    const c = await model.forward(copying.decodeInputs([40]));
    const d = await model.forward(inPlace.decodeInputs([40]));
    expect(maxDiff(c.logits.at(0, 0), d.logits.at(0, 0))).toBeLessThanOrEqual(tolerance(model));
    await model.release();
  });
});
