/**
 * Graphs with transformers.js' `num_logits_to_keep` input (src/fixture's `logitsToKeep`): the engine
 * feeds 1 where only the last position is sampled and 0 where every position's logits are read
 * (prompt logprobs), and gives the tokens and logprobs of the same model without the input.
 */
// This file runs onnxruntime in the test process, so it needs what the engine's worker does on Node 24+.
import '../../src/engine/float16-off.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { openModelDir } from '../../src/engine/model-dir.js';
import { ModelSession } from '../../src/engine/model-session.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine, GenerationEvent } from '../../src/types.js';

const PROMPTS = ['Once upon a time there was', 'Hi', 'A longer prompt with a few more tokens than the others'];

/** Every prompt at once: greedy tokens with their logprobs, and the prompt's logprobs. */
async function run(engine: Engine) {
  return Promise.all(
    PROMPTS.map(async (inputs) => {
      let end: Extract<GenerationEvent, { type: 'end' }> | undefined;
      const ids: number[] = [];
      const logprobs: number[] = [];
      const parameters = { max_new_tokens: 8, do_sample: false, details: true, decoder_input_details: true };
      for await (const event of engine.generate({ inputs, parameters })) {
        ids.push(event.token.id);
        logprobs.push(event.token.logprob);
        if (event.type === 'end') end = event;
      }
      return { ids, logprobs, prefill: end!.prefill.map((token) => token.logprob ?? 0) };
    }),
  );
}

describe('num_logits_to_keep', () => {
  let session: ModelSession;
  beforeAll(async () => {
    const { onnxFile, config, graph } = await openModelDir(await ensureFixtureModel('tiny', { logitsToKeep: true }));
    session = await ModelSession.load(onnxFile, config, new Set(Object.keys(graph.opTypes)));
  });
  afterAll(async () => {
    await session?.release();
  });

  it('is fed to the graph: 1 returns the last position only, 0 every position', async () => {
    const pass = {
      batch: 1,
      seqLen: 5,
      inputIds: BigInt64Array.of(84n, 107n, 104n, 35n, 113n),
      attentionMask: BigInt64Array.of(1n, 1n, 1n, 1n, 1n),
      positionIds: BigInt64Array.of(0n, 1n, 2n, 3n, 4n),
    };
    const all = await session.forward({ ...pass, past: session.emptyPast(1), logitsToKeep: 0 });
    const last = await session.forward({ ...pass, past: session.emptyPast(1), logitsToKeep: 1 });
    expect([all.logits.columns, last.logits.columns]).toEqual([5, 1]);
    const [a, b] = [all.logits.at(0, 4), last.logits.at(0, 0)];
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeLessThan(1e-5);
  });

  it('gives batched requests the tokens and prompt logprobs of the same model without the input', async () => {
    const withInput = await createEngine({ model: await ensureFixtureModel('tiny', { logitsToKeep: true }) });
    const without = await createEngine({ model: await ensureFixtureModel('tiny') });
    try {
      expect(withInput.info.graph?.inputs).toContain('num_logits_to_keep');
      const [got, want] = [await run(withInput), await run(without)];
      for (const [i, row] of got.entries()) {
        expect(row.ids).toEqual(want[i].ids);
        expect(row.prefill).toHaveLength(want[i].prefill.length);
        row.prefill.forEach((logprob, j) => expect(logprob).toBeCloseTo(want[i].prefill[j], 4));
        row.logprobs.forEach((logprob, j) => expect(logprob).toBeCloseTo(want[i].logprobs[j], 4));
      }
    } finally {
      await withInput.close();
      await without.close();
    }
  });
});
