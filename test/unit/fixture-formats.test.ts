/**
 * Every export family × weight format the fixture writes, run on the real onnxruntime-node, one
 * row at a time: the GroupQueryAttention graph computes what the plain graph of the same seed
 * computes; in every variant the KV cache changes nothing (up to what the format allows); and the
 * quantized and float16 files stay close to their float32 model.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildFixtureGraph, resolveFixtureOptions } from '../../src/fixture/build-model.js';
import { FIXTURE_SIZES, type FixtureOptions, WEIGHT_FILES, type WeightFormat, ensureFixtureModel } from '../../src/fixture/index.js';

const { layers, kvHeads, headDim, vocab, maxPositions } = FIXTURE_SIZES.tiny;
const PROMPT = [84, 107, 104, 35, 113, 108, 121];
/** 32 tokens for one teacher-forced pass: byte tokens, learned merges and synthetic ones. */
const TEXT = [...PROMPT, 45, 300, 260, 290, 17, 99, 200, 401, 77, 12, 250, 3, 88, 140, 33, 490, 61, 5, 320, 111, 222, 333, 444, 55, 66];
const STEPS = 5;

function halfToFloat(h: number): number {
  const exponent = (h >> 10) & 0x1f;
  const magnitude = exponent === 0 ? (h & 0x3ff) * 2 ** -24 : (1 + (h & 0x3ff) / 1024) * 2 ** (exponent - 15);
  return h & 0x8000 ? -magnitude : magnitude;
}

const cacheName = (prefix: string, i: number) => `${prefix}.${i >> 1}.${i & 1 ? 'value' : 'key'}`;

/** One fixture file in onnxruntime, fed as transformers.js and onnxruntime-genai feed one row. */
class Model {
  private constructor(
    readonly session: ort.InferenceSession,
    private readonly half: boolean,
  ) {}

  static async open(variant: Omit<FixtureOptions, 'out' | 'size'>): Promise<Model> {
    const dir = await ensureFixtureModel('tiny', variant);
    const stamp = JSON.parse(await readFile(join(dir, 'fixture.json'), 'utf8'));
    const file = join(dir, 'onnx', WEIGHT_FILES[stamp.weights as WeightFormat]);
    return new Model(await ort.InferenceSession.create(file), stamp.weights === 'fp16');
  }

  /** `ids` after `past` (null: none); the logits of every new position, float32, and the present. */
  async run(ids: number[], past: ort.Tensor[] | null): Promise<{ logits: Float32Array[]; present: ort.Tensor[] }> {
    const total = (past?.[0].dims[2] ?? 0) + ids.length;
    const int64 = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
    const feeds: Record<string, ort.Tensor> = { input_ids: int64(ids), attention_mask: int64(new Array(total).fill(1)) };
    if (this.session.inputNames.includes('position_ids')) feeds.position_ids = int64(ids.map((_, i) => total - ids.length + i));
    const dims = [1, kvHeads, 0, headDim];
    const empty = this.half ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
    for (let i = 0; i < 2 * layers; i++) feeds[cacheName('past_key_values', i)] = past?.[i] ?? empty;
    const out = await this.session.run(feeds);
    const data = this.half ? Float32Array.from(out.logits.data as Uint16Array, halfToFloat) : (out.logits.data as Float32Array);
    const logits = ids.map((_, t) => data.slice(t * vocab, (t + 1) * vocab));
    return { logits, present: Array.from({ length: 2 * layers }, (_, i) => out[cacheName('present', i)]) };
  }

  /** Greedy decoding with the cache: the last-position logits of the prompt and of each step. */
  async cachedGreedy(prompt: number[], steps: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
    const ids = [...prompt];
    let step = await this.run(prompt, null);
    const logits = [step.logits.at(-1)!];
    for (let s = 0; s < steps; s++) {
      ids.push(argmax(logits.at(-1)!));
      step = await this.run([ids.at(-1)!], step.present);
      logits.push(step.logits[0]);
    }
    return { ids, logits };
  }
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Whether `token` is among the `k` highest of `values`. */
const inTopK = (values: Float32Array, token: number, k: number) => values.filter((v) => v > values[token]).length < k;

describe('GroupQueryAttention fixture', () => {
  it('has the graph onnxruntime-genai writes for the CPU: fused rotary, mask-derived lengths, no position_ids', async () => {
    const { session } = await Model.open({ attention: 'gqa' });
    const past = Array.from({ length: 2 * layers }, (_, i) => cacheName('past_key_values', i));
    expect(session.inputNames).toEqual(['input_ids', 'attention_mask', ...past]);
    expect(session.outputNames).toEqual(['logits', ...past.map((n) => n.replace('past_key_values', 'present'))]);

    const graph = buildFixtureGraph(resolveFixtureOptions({ out: '', attention: 'gqa' }));
    const ops = (type: string) => graph.nodes.filter((n) => n.opType === type);
    expect(ops('SimplifiedLayerNormalization')).toHaveLength(1);
    expect(ops('SkipSimplifiedLayerNormalization').map((n) => n.domain)).toEqual(new Array(2 * layers).fill('com.microsoft'));
    const attention = ops('GroupQueryAttention');
    expect(attention).toHaveLength(layers);
    const { heads } = FIXTURE_SIZES.tiny;
    for (const [i, node] of attention.entries()) {
      expect(node.domain).toBe('com.microsoft');
      expect(node.attributes).toMatchObject({
        num_heads: heads,
        kv_num_heads: kvHeads,
        do_rotary: 1,
        rotary_interleaved: 0,
        local_window_size: -1,
        scale: { float: 1 / Math.sqrt(headDim) },
      });
      expect(node.inputs.slice(1, 5)).toEqual(['', '', `past_key_values.${i}.key`, `past_key_values.${i}.value`]);
      expect(node.inputs.slice(7)).toEqual(['cos_cache', 'sin_cache']);
      expect(node.outputs.slice(1)).toEqual([`present.${i}.key`, `present.${i}.value`]);
    }
    const [seqlensK, totalLength] = attention[0].inputs.slice(5, 7).map((out) => graph.nodes.find((n) => n.outputs.includes(out))!);
    expect([seqlensK.opType, seqlensK.attributes]).toEqual(['Cast', { to: 6 }]); // int32
    expect([totalLength.opType, totalLength.attributes]).toEqual(['Cast', { to: 6 }]);
    const cos = graph.initializers.find((t) => t.name === 'cos_cache')!;
    expect(cos.dims).toEqual([maxPositions, headDim / 2]);
  });

  it.each([
    { layout: 'fused rotary', variant: { attention: 'gqa' as const } },
    { layout: 'RotaryEmbedding from position_ids', variant: { attention: 'gqa' as const, positions: 'ids' as const } },
  ])('$layout: computes what the plain graph of the same seed computes, prefill and decode steps', async ({ variant }) => {
    const plain = await (await Model.open({})).cachedGreedy(PROMPT, STEPS);
    const gqa = await (await Model.open(variant)).cachedGreedy(PROMPT, STEPS);
    expect(gqa.ids).toEqual(plain.ids);
    for (let s = 0; s <= STEPS; s++) expect(maxAbsDiff(gqa.logits[s], plain.logits[s]), `step ${s}`).toBeLessThan(1e-4);
  });

  it('with position_ids, has the graph genai writes when it cannot fuse the rotary: RotaryEmbedding on Q and K, do_rotary 0', async () => {
    const { session } = await Model.open({ attention: 'gqa', positions: 'ids' });
    expect(session.inputNames.slice(0, 3)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    const graph = buildFixtureGraph(resolveFixtureOptions({ out: '', attention: 'gqa', positions: 'ids' }));
    const rotary = graph.nodes.filter((n) => n.opType === 'RotaryEmbedding');
    expect(rotary).toHaveLength(2 * layers);
    for (const node of rotary)
      expect([node.domain, node.inputs.slice(1)]).toEqual(['com.microsoft', ['position_ids', 'cos_cache', 'sin_cache']]);
    const attention = graph.nodes.filter((n) => n.opType === 'GroupQueryAttention');
    for (const node of attention) {
      expect(node.attributes).toMatchObject({ do_rotary: 0 });
      expect(node.inputs).toHaveLength(7);
    }
  });
});

const FAMILIES: Array<{ family: string; variant: Omit<FixtureOptions, 'out' | 'size'> }> = [
  { family: 'plain, position_ids', variant: { positions: 'ids' } },
  { family: 'plain, positions from the mask', variant: { positions: 'mask' } },
  { family: 'plain, positions from the column', variant: { positions: 'column' } },
  { family: 'GroupQueryAttention', variant: { attention: 'gqa' } },
  { family: 'GroupQueryAttention, rotary from position_ids', variant: { attention: 'gqa', positions: 'ids' } },
];

/**
 * How far a cached step may be from recomputing the whole sequence. q8's DynamicQuantizeLinear
 * takes one scale over the whole activation tensor, so a one-token step quantizes its activations
 * differently from a pass over the whole sequence (and a row in a batch differently from alone):
 * the logits move by up to about 0.6 on this model.
 */
const CACHE_TOLERANCE: Record<WeightFormat, number> = { fp32: 1e-4, fp16: 1e-2, q4: 1e-4, q8: 1 };

describe.each(FAMILIES)('$family', ({ variant }) => {
  let reference: Float32Array[];
  beforeAll(async () => {
    reference = (await (await Model.open(variant)).run(TEXT, null)).logits;
  });

  const formats = Object.keys(WEIGHT_FILES) as WeightFormat[];
  it.each(formats)('%s: gives the same logits with the KV cache as recomputing the sequence', async (weights) => {
    const model = await Model.open({ ...variant, weights });
    const { ids, logits } = await model.cachedGreedy(PROMPT, STEPS);
    for (let s = 0; s <= STEPS; s++) {
      const full = await model.run(ids.slice(0, PROMPT.length + s), null);
      expect(maxAbsDiff(logits[s], full.logits.at(-1)!), `step ${s}`).toBeLessThanOrEqual(CACHE_TOLERANCE[weights]);
    }
  });

  // Measured on this model over the 32 positions (max |Δlogit|, argmax agreement): fp16 0.03, 32;
  // q8 about 1, 29-31; q4 about 6.3, 15-18, with the float argmax in q4's top 5 at 29 or more.
  // Uniform random weights have top-1/top-2 gaps of about 1 logit, which 4-bit noise of that size
  // often swaps; a trained model's are wider.
  it.each([
    { weights: 'fp16' as const, drift: 0.1, agree: 32, inTop5: 32 },
    { weights: 'q8' as const, drift: 2, agree: 26, inTop5: 32 },
    { weights: 'q4' as const, drift: 10, agree: 12, inTop5: 27 },
  ])('$weights: stays close to the float32 model', async ({ weights, drift, agree, inTop5 }) => {
    const { logits } = await (await Model.open({ ...variant, weights })).run(TEXT, null);
    const best = reference.map(argmax);
    expect(Math.max(...logits.map((row, t) => maxAbsDiff(row, reference[t])))).toBeLessThanOrEqual(drift);
    expect(logits.filter((row, t) => argmax(row) === best[t]).length).toBeGreaterThanOrEqual(agree);
    expect(logits.filter((row, t) => inTopK(row, best[t], 5)).length).toBeGreaterThanOrEqual(inTop5);
  });
});
