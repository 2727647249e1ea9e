/**
 * Prompt-lookup speculation on real fixture models: a request gets exactly the tokens (and, within
 * rounding, the logprobs) it gets without speculation, in the `left` and `right` layouts, whether the
 * row ends inside an accepted run (max_new_tokens, a stop string), samples with a seed, or a second
 * request joins while it speculates. The fixture's greedy output repeats itself, so proposals are
 * both accepted and rejected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine, GenerateParameters, GenerationEvent } from '../../src/types.js';

type FixtureVariant = NonNullable<Parameters<typeof ensureFixtureModel>[1]>;

interface Run {
  ids: number[];
  logprobs: number[];
  text: string;
  finishReason: string;
}

async function run(engine: Engine, inputs: string, parameters: GenerateParameters, onToken?: (count: number) => void): Promise<Run> {
  const out: Run = { ids: [], logprobs: [], text: '', finishReason: '' };
  for await (const event of engine.generate({ inputs, parameters }) as AsyncIterable<GenerationEvent>) {
    out.ids.push(event.token.id);
    out.logprobs.push(event.token.logprob);
    onToken?.(out.ids.length);
    if (event.type === 'end') {
      out.text = event.generatedText;
      out.finishReason = event.finishReason;
    }
  }
  return out;
}

function expectSame(actual: Run, expected: Run): void {
  expect(actual.ids).toEqual(expected.ids);
  expect(actual.text).toBe(expected.text);
  expect(actual.finishReason).toBe(expected.finishReason);
  actual.logprobs.forEach((lp, k) => expect(Math.abs(lp - expected.logprobs[k])).toBeLessThanOrEqual(1e-4));
}

const PROMPT = 'The harbour was quiet that morning, and the boats';
const GREEDY = { max_new_tokens: 48, do_sample: false } satisfies GenerateParameters;

describe.each([
  { name: 'left layout (position_ids)', fixture: {} as FixtureVariant },
  { name: 'right layout (GroupQueryAttention)', fixture: { attention: 'gqa' } as FixtureVariant },
])('speculation, $name', ({ fixture }) => {
  let spec: Engine;
  let plain: Engine;
  let reference: Run;
  beforeAll(async () => {
    const model = await ensureFixtureModel('tiny', fixture);
    [spec, plain] = await Promise.all([
      createEngine({ model, speculativeTokens: 4, prefixCacheBytes: 0 }),
      createEngine({ model, speculativeTokens: 0, prefixCacheBytes: 0 }),
    ]);
    reference = await run(plain, PROMPT, GREEDY);
  });
  afterAll(async () => {
    await Promise.all([spec?.close(), plain?.close()]);
  });

  it('gives the greedy tokens of plain decoding, and accepts proposals on text that repeats', async () => {
    const before = spec.stats();
    expectSame(await run(spec, PROMPT, GREEDY), reference);
    // Fed back its own output, the model repeats it: most proposals hold.
    const grounded = `${PROMPT}${reference.text}\n${PROMPT}`;
    expectSame(await run(spec, grounded, GREEDY), await run(plain, grounded, GREEDY));
    const after = spec.stats();
    const proposed = after.speculativeProposedTokens! - (before.speculativeProposedTokens ?? 0);
    const accepted = after.speculativeAcceptedTokens! - (before.speculativeAcceptedTokens ?? 0);
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(proposed);
    expect(plain.stats().speculativeProposedTokens).toBeUndefined();
  });

  it('ends at max_new_tokens wherever that falls in an accepted run', async () => {
    for (let n = 1; n <= 24; n++) {
      const parameters = { ...GREEDY, max_new_tokens: n };
      expectSame(await run(spec, PROMPT, parameters), await run(plain, PROMPT, parameters));
    }
  });

  it('ends at a stop string inside an accepted run, dropping the rest of the run', async () => {
    // Stops taken from the reference's later text, where the output repeats and proposals hold.
    const pieces = [8, 14, 20, 30].map((i) => reference.text.slice(i, i + 3)).filter((stop) => stop.trim() !== '');
    expect(pieces.length).toBeGreaterThan(0);
    for (const stop of pieces) {
      const parameters = { ...GREEDY, stop: [stop] };
      const expected = await run(plain, PROMPT, parameters);
      expect(expected.finishReason).toBe('stop_sequence');
      expectSame(await run(spec, PROMPT, parameters), expected);
    }
  });

  it('gives a seeded sampled request its tokens without speculation', async () => {
    const parameters = { max_new_tokens: 40, do_sample: true, temperature: 0.5, seed: 7 };
    const grounded = `${PROMPT}${reference.text}\n${PROMPT}`;
    expectSame(await run(spec, grounded, parameters), await run(plain, grounded, parameters));
  });

  it('goes back to plain steps when a second request joins mid-speculation, and both keep their tokens', async () => {
    const other = 'Lanterns swung over the quay';
    const expectedOther = await run(plain, other, { ...GREEDY, max_new_tokens: 20 });
    let joined: Promise<Run> | null = null;
    const leader = await run(spec, PROMPT, GREEDY, (count) => {
      if (count >= 12 && !joined) joined = run(spec, other, { ...GREEDY, max_new_tokens: 20 });
    });
    expectSame(leader, reference);
    expectSame(await joined!, expectedOther);
  });
});
