/**
 * The fixture graph computes Hugging Face's Llama: its logits match a direct transcription of
 * `LlamaForCausalLM.forward` (rotate_half RoPE, repeat_kv, causal softmax, SwiGLU, tied head) run in
 * float64 on the same weights. The invariant tests cannot catch a wrong convention; this can.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { FIXTURE_SIZES, ensureFixtureModel } from '../../src/fixture/index.js';
import { buildLlamaGraph } from '../../src/fixture/llama-graph.js';
import { RMS_NORM_EPS, ROPE_THETA } from '../../src/fixture/sizes.js';

const shape = FIXTURE_SIZES.tiny;
const { hidden, heads, kvHeads, headDim, intermediate, vocab, layers } = shape;

/** The weights exactly as written to the file, by initializer name. */
function fixtureWeights(): Map<string, Float32Array> {
  const hyper = { ropeTheta: ROPE_THETA, rmsNormEps: RMS_NORM_EPS };
  const graph = buildLlamaGraph({ shape, seed: 42, ...hyper, positions: 'ids' });
  const weights = new Map<string, Float32Array>();
  for (const { name, data } of graph.initializers) {
    const bytes = data instanceof Uint8Array ? data : data.produce();
    if (name.startsWith('model.')) weights.set(name, new Float32Array(bytes.slice().buffer));
  }
  return weights;
}

type Vec = number[];
const matvec = (x: Vec, w: Float32Array, outDim: number): Vec =>
  Array.from({ length: outDim }, (_, o) => x.reduce((sum, xi, i) => sum + xi * w[i * outDim + o], 0));
const rmsNorm = (x: Vec, w: Float32Array): Vec => {
  const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + RMS_NORM_EPS);
  return x.map((v, i) => (v / rms) * w[i]);
};
const silu = (v: number) => v / (1 + Math.exp(-v));

/** HF's apply_rotary_pos_emb: x·cos + rotate_half(x)·sin, with emb = cat(freqs, freqs). */
function rope(x: Vec, position: number): Vec {
  const half = headDim / 2;
  const rotated = [...x.slice(half).map((v) => -v), ...x.slice(0, half)];
  return x.map((v, i) => {
    const angle = position / ROPE_THETA ** ((2 * (i % half)) / headDim);
    return v * Math.cos(angle) + rotated[i] * Math.sin(angle);
  });
}

const headsOf = (x: Vec, n: number): Vec[] => Array.from({ length: n }, (_, h) => x.slice(h * headDim, (h + 1) * headDim));

function attention(xs: Vec[], w: Map<string, Float32Array>, p: string): Vec[] {
  const project = (x: Vec, name: string, n: number) => headsOf(matvec(x, w.get(`${p}.${name}.weight`)!, n * headDim), n);
  const q = xs.map((x, t) => project(x, 'q_proj', heads).map((h) => rope(h, t)));
  const k = xs.map((x, t) => project(x, 'k_proj', kvHeads).map((h) => rope(h, t)));
  const v = xs.map((x) => project(x, 'v_proj', kvHeads));
  const group = heads / kvHeads;
  return xs.map((_, t) => {
    const out: number[] = [];
    for (let h = 0; h < heads; h++) {
      const kv = Math.floor(h / group); // repeat_kv: query head h reads kv head h // group
      const dot = (a: Vec, b: Vec) => a.reduce((s, ad, d) => s + ad * b[d], 0);
      const scores = k.slice(0, t + 1).map((ks) => dot(ks[kv], q[t][h]) / Math.sqrt(headDim));
      const max = Math.max(...scores);
      const exps = scores.map((s) => Math.exp(s - max));
      const sum = exps.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) out.push(exps.reduce((acc, e, s) => acc + (e / sum) * v[s][kv][d], 0));
    }
    return matvec(out, w.get(`${p}.o_proj.weight`)!, hidden);
  });
}

function referenceLogits(ids: number[], w: Map<string, Float32Array>): Vec[] {
  const embedding = w.get('model.embed_tokens.weight')!;
  let h: Vec[] = ids.map((id) => Array.from(embedding.subarray(id * hidden, (id + 1) * hidden)));
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    const attn = attention(
      h.map((x) => rmsNorm(x, w.get(`${p}.input_layernorm.weight`)!)),
      w,
      `${p}.self_attn`,
    );
    h = h.map((x, t) => x.map((v, d) => v + attn[t][d]));
    h = h.map((x) => {
      const n = rmsNorm(x, w.get(`${p}.post_attention_layernorm.weight`)!);
      const gate = matvec(n, w.get(`${p}.mlp.gate_proj.weight`)!, intermediate);
      const up = matvec(n, w.get(`${p}.mlp.up_proj.weight`)!, intermediate);
      const down = matvec(
        gate.map((g, j) => silu(g) * up[j]),
        w.get(`${p}.mlp.down_proj.weight`)!,
        hidden,
      );
      return x.map((v, d) => v + down[d]);
    });
  }
  return h.map((x) => {
    const n = rmsNorm(x, w.get('model.norm.weight')!);
    return Array.from({ length: vocab }, (_, t) => n.reduce((s, nd, d) => s + nd * embedding[t * hidden + d], 0));
  });
}

describe('fixture Llama graph', () => {
  it('matches a float64 transcription of Hugging Face’s LlamaForCausalLM on the same weights', async () => {
    const ids = [84, 107, 300, 35, 113, 470, 121, 2];
    const session = await ort.InferenceSession.create(join(await ensureFixtureModel('tiny'), 'onnx', 'model.onnx'));
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]),
    };
    for (let i = 0; i < layers; i++) {
      for (const kind of ['key', 'value']) {
        const empty = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
        feeds[`past_key_values.${i}.${kind}`] = empty;
      }
    }
    const logits = (await session.run(feeds)).logits.data as Float32Array;
    const expected = referenceLogits(ids, fixtureWeights());
    let maxDiff = 0;
    expected.forEach((row, t) => {
      row.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - logits[t * vocab + j]))));
    });
    expect(maxDiff).toBeLessThan(1e-3);
  });
});
