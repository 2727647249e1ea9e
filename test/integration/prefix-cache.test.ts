/**
 * The prefix cache on real fixture models: a request whose prompt starts with a cached prefix gets
 * exactly the tokens it gets without the cache, alone or while others join and leave, in the `left`
 * and `right` layouts; a cancelled prefill leaves nothing behind; the cache stays within its budget.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { kvBytesPerToken } from '../../src/engine/config.js';
import { FIXTURE_SIZES, ensureFixtureModel } from '../../src/fixture/index.js';
import { createMetrics } from '../../src/http/metrics.js';
import type { Engine, GenerateParameters, GenerationEvent } from '../../src/types.js';

type FixtureVariant = NonNullable<Parameters<typeof ensureFixtureModel>[1]>;

const SYSTEM = `You are a careful assistant. ${Array.from({ length: 50 }, (_, i) => `rule${i} applies`).join(', ')}.`;
const GREEDY = { max_new_tokens: 12, do_sample: false, details: true } satisfies GenerateParameters;

interface Run {
  ids: number[];
  logprobs: number[];
  text: string;
}

async function run(engine: Engine, inputs: string, parameters: GenerateParameters = GREEDY, signal?: AbortSignal): Promise<Run> {
  const ids: number[] = [];
  const logprobs: number[] = [];
  let text = '';
  for await (const event of engine.generate({ inputs, parameters }, { signal }) as AsyncIterable<GenerationEvent>) {
    ids.push(event.token.id);
    logprobs.push(event.token.logprob);
    if (event.type === 'end') text = event.generatedText;
  }
  return { ids, logprobs, text };
}

function expectSame(actual: Run, expected: Run): void {
  expect(actual.ids).toEqual(expected.ids);
  actual.logprobs.forEach((lp, k) => expect(Math.abs(lp - expected.logprobs[k])).toBeLessThanOrEqual(1e-4));
}

const turn1 = `${SYSTEM}\nUser: What is rule 7?\nAssistant:`;
const turn2 = (answer: string) => `${turn1}${answer}\nUser: And rule 8, in a few words?\nAssistant:`;

describe.each([
  { name: 'left layout (position_ids)', fixture: {} as FixtureVariant, layout: 'left' },
  { name: 'right layout (GroupQueryAttention)', fixture: { attention: 'gqa' } as FixtureVariant, layout: 'right' },
])('prefix cache, $name', ({ fixture, layout }) => {
  let cached: Engine;
  let plain: Engine;
  beforeAll(async () => {
    const model = await ensureFixtureModel('tiny', fixture);
    // Small chunks: a hit's own prefill runs in several chunks behind its cached prefix.
    [cached, plain] = await Promise.all([
      createEngine({ model, maxBatchPrefillTokens: 48 }),
      createEngine({ model, maxBatchPrefillTokens: 48, prefixCacheBytes: 0 }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([cached?.close(), plain?.close()]);
  });

  it("reuses a chat's earlier turn and gives the tokens computed without the cache", async () => {
    expect(cached.info.attention?.layout).toBe(layout);
    expect(cached.info.prefixCacheBytes).toBeGreaterThan(0);
    expect(plain.info.prefixCacheBytes).toBe(0);
    const first = await run(plain, turn1);
    expectSame(await run(cached, turn1), first);
    const before = cached.stats();
    const second = turn2(first.text);
    expectSame(await run(cached, second), await run(plain, second));
    const after = cached.stats();
    expect(after.prefixCacheHits! - before.prefixCacheHits!).toBe(1);
    // All of turn 1's whole blocks but, at most, the one its last token closes.
    const length = (await cached.tokenize(turn1)).length;
    expect(after.prefixCacheTokens! - before.prefixCacheTokens!).toBeGreaterThanOrEqual(Math.floor(length / 16) * 16 - 16);
    expect(plain.stats().prefixCacheHits).toBeUndefined();
  });

  it('gives the same tokens while other requests join and leave, some of them hits too', async () => {
    const others = ['Hi', `${SYSTEM}\nUser: Rule 3?\nAssistant:`, 'A short prompt that joins late', `${SYSTEM}\nUser: Rule 9?\nAssistant:`];
    const params = (i: number) => ({ ...GREEDY, max_new_tokens: 4 + 7 * i });
    const main = turn2(' Rule 7 says that the rules apply.');
    const alone = await run(plain, main, { ...GREEDY, max_new_tokens: 30 });
    const othersAlone: Run[] = [];
    for (const [i, inputs] of others.entries()) othersAlone.push(await run(plain, inputs, params(i)));
    const hits = cached.stats().prefixCacheHits!;

    let go!: () => void;
    const joined = new Promise<void>((resolve) => (go = resolve));
    const together = others.map(async (inputs, i) => {
      await joined;
      // Staggered: each joins a batch in a different state.
      await new Promise((resolve) => setTimeout(resolve, 15 * i));
      return run(cached, inputs, params(i));
    });
    const leader = (async () => {
      const ids: number[] = [];
      const logprobs: number[] = [];
      for await (const event of cached.generate({ inputs: main, parameters: { ...GREEDY, max_new_tokens: 30 } })) {
        ids.push(event.token.id);
        logprobs.push(event.token.logprob);
        if (ids.length === 2) go();
      }
      return { ids, logprobs, text: '' };
    })();
    expectSame(await leader, alone);
    (await Promise.all(together)).forEach((result, i) => expectSame(result, othersAlone[i]));
    // The main prompt and both system-prompt questions start with cached blocks.
    expect(cached.stats().prefixCacheHits! - hits).toBeGreaterThanOrEqual(3);
  });

  it('gives requests that arrive together with a shared system prompt their own tokens', async () => {
    const questions = [5, 6, 11, 12].map((n) => `${SYSTEM}\nUser: Tell me rule ${n} twice.\nAssistant:`);
    const expected: Run[] = [];
    for (const q of questions) expected.push(await run(plain, q));
    const results = await Promise.all(questions.map((q) => run(cached, q)));
    results.forEach((result, i) => expectSame(result, expected[i]));
  });

  it('never reuses a prefix for a request that asks for its prompt logprobs', async () => {
    const hits = cached.stats().prefixCacheHits;
    const params = { ...GREEDY, decoder_input_details: true };
    let end: Extract<GenerationEvent, { type: 'end' }> | null = null;
    for await (const event of cached.generate({ inputs: turn1, parameters: params })) if (event.type === 'end') end = event;
    expect(cached.stats().prefixCacheHits).toBe(hits);
    expect(end!.prefill.slice(1).every((t) => typeof t.logprob === 'number')).toBe(true);
  });
});

describe('prefix cache limits', () => {
  let model: string;
  beforeAll(async () => {
    model = await ensureFixtureModel('tiny');
  });

  it('keeps nothing of a prefill cancelled in the middle of its chunks', async () => {
    const engine = await createEngine({ model, maxBatchPrefillTokens: 8 });
    try {
      const prompt = `${SYSTEM} ${SYSTEM}`;
      const controller = new AbortController();
      let prefills = 0;
      const stop = engine.onForwardPass((pass) => {
        if (pass.method === 'prefill' && ++prefills === 2) controller.abort();
      });
      await expect(run(engine, prompt, GREEDY, controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
      stop();
      // More than 30 chunks of 8 tokens: it was cancelled after its second.
      expect((await engine.tokenize(prompt)).length).toBeGreaterThan(240);
      const again = await run(engine, prompt);
      expect(engine.stats().prefixCacheHits).toBe(0);
      expect(engine.stats().prefixCacheBytes).toBeGreaterThan(0);
      // The completed prompt was kept: the next request with it computes only its last block.
      expectSame(await run(engine, prompt), again);
      expect(engine.stats().prefixCacheHits).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('stays within its budget, evicting the least recently used prompts, and reports on /metrics', async () => {
    const { layers, kvHeads, headDim } = FIXTURE_SIZES.tiny;
    const perToken = kvBytesPerToken({ numLayers: layers, kvHeads, headDim, kvDtype: 'float32' });
    // Room for ten 16-token blocks: less than two of the prompts below.
    const budget = 10 * 16 * perToken;
    const engine = await createEngine({ model, prefixCacheBytes: budget });
    const plain = await createEngine({ model, prefixCacheBytes: 0 });
    try {
      const prompts = [1, 2, 3].map((n) => `Prompt number ${n}: ${Array.from({ length: 40 }, (_, i) => `item${n * 100 + i}`).join(' ')}`);
      for (const prompt of prompts) {
        expectSame(await run(engine, prompt), await run(plain, prompt));
        const bytes = engine.stats().prefixCacheBytes!;
        expect(bytes).toBeGreaterThan(0);
        expect(bytes).toBeLessThanOrEqual(budget);
      }
      // The last prompt is cached, the first was evicted for it.
      expectSame(await run(engine, prompts[2]), await run(plain, prompts[2]));
      expect(engine.stats().prefixCacheHits).toBe(1);
      expectSame(await run(engine, prompts[0]), await run(plain, prompts[0]));
      expect(engine.stats().prefixCacheHits).toBe(1);

      const metrics = createMetrics();
      metrics.observe({ engine: () => engine, admission: () => null });
      const text = await metrics.render();
      expect(text).toMatch(/^streaming_inference_prefix_cache_hits_total 1$/m);
      const tokens = engine.stats().prefixCacheTokens!;
      expect(tokens).toBeGreaterThanOrEqual(16);
      expect(text).toContain(`streaming_inference_prefix_cache_tokens_total ${tokens}\n`);
      expect(text).toContain(`streaming_inference_prefix_cache_bytes ${engine.stats().prefixCacheBytes}\n`);
    } finally {
      await Promise.all([engine.close(), plain.close()]);
    }
  });
});
