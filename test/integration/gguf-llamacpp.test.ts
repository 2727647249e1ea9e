/**
 * The GGUF writer, proven on llama.cpp itself: node-llama-cpp loads the tiny fixture's GGUF, tokenizes
 * like our tokenizer and, on F32 weights with an F32 KV cache, decodes exactly our engine's greedy
 * tokens. Quantized files drift by design; their teacher-forced agreement is bounded loosely.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ControlledEvaluateInputItem, type Llama, type LlamaModel, LlamaLogLevel, type Token, getLlama } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureGguf } from '../../src/fixture/gguf/index.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { loadTokenizer } from '../../src/text/tokenizer.js';

const PROMPTS = [
  'The river town woke slowly on the first cold morning',
  'Hello world',
  'Numbers: 1, 2, 3 and 3.14!',
  '  spaced   out\ntext',
];
const NEW_TOKENS = 24;

let root: string;
let llama: Llama;
let promptIds: number[][];
let ours: number[][];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'gguf-llamacpp-'));
  const model = await ensureFixtureModel('tiny');
  const tokenizer = await loadTokenizer(model);
  promptIds = PROMPTS.map((p) => tokenizer.encode(p));
  const engine = await createEngine({ model });
  try {
    ours = [];
    for (const inputs of PROMPTS) {
      const ids: number[] = [];
      const generation = engine.generate({ inputs, parameters: { max_new_tokens: NEW_TOKENS, do_sample: false } });
      for await (const event of generation) ids.push(event.token.id);
      ours.push(ids);
    }
  } finally {
    await engine.close();
  }
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(root, { recursive: true, force: true });
});

async function withModel<T>(type: 'F32' | 'Q8_0' | 'Q4_0', use: (model: LlamaModel) => Promise<T>): Promise<T> {
  const model = await llama.loadModel({ modelPath: await ensureFixtureGguf('tiny', { type, dir: root }), gpuLayers: 0 });
  try {
    return await use(model);
  } finally {
    await model.dispose();
  }
}

describe('node-llama-cpp on the GGUF of the tiny fixture', () => {
  it('tokenizes like our tokenizer and decodes our greedy tokens exactly from F32 weights', async () => {
    const generated = await withModel('F32', async (model) => {
      expect(PROMPTS.map((p) => model.tokenize(p))).toEqual(promptIds);
      // llama.cpp's default F16 KV cache rounds keys and values; F32 keeps its arithmetic comparable to ours.
      const context = await model.createContext({
        contextSize: 256,
        threads: 1,
        experimentalKvCacheKeyType: 'F32',
        experimentalKvCacheValueType: 'F32',
      });
      const sequence = context.getSequence();
      const all: number[][] = [];
      for (const [i, ids] of promptIds.entries()) {
        await sequence.clearHistory();
        const out: number[] = [];
        for await (const token of sequence.evaluate(ids as Token[], { temperature: 0 })) {
          out.push(token);
          if (out.length === ours[i].length) break;
        }
        all.push(out);
      }
      await context.dispose();
      return all;
    });
    expect(ours.every((ids) => ids.length === NEW_TOKENS)).toBe(true);
    expect(generated).toEqual(ours);
  });

  it('runs the Q8_0 and Q4_0 files close to our greedy path', async () => {
    const agreement: Record<string, number> = {};
    for (const type of ['Q8_0', 'Q4_0'] as const) {
      agreement[type] = await withModel(type, async (model) => {
        const context = await model.createContext({ contextSize: 256, threads: 1 });
        const sequence = context.getSequence();
        let same = 0;
        let total = 0;
        for (const [i, ids] of promptIds.entries()) {
          // Teacher forcing: feed our tokens and ask for llama.cpp's greedy choice after each one.
          await sequence.clearHistory();
          const input = [...ids, ...ours[i].slice(0, -1)] as Token[];
          const askNext = { generateNext: { token: true, options: { temperature: 0 } } };
          const results = await sequence.controlledEvaluate(
            input.map((token, k): ControlledEvaluateInputItem => (k >= ids.length - 1 ? [token, askNext] : token)),
          );
          ours[i].forEach((token, k) => (same += results[ids.length - 1 + k]?.next.token === token ? 1 : 0));
          total += ours[i].length;
        }
        await context.dispose();
        return same / total;
      });
    }
    // Measured here: Q8_0 0.97, Q4_0 0.57 of 96 positions.
    expect(agreement.Q8_0).toBeGreaterThan(0.85);
    expect(agreement.Q4_0).toBeGreaterThan(0.4);
  });
});
