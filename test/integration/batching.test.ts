import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine, EngineOptions, GenerateParameters, GenerationEvent } from '../../src/types.js';

type FixtureVariant = NonNullable<Parameters<typeof ensureFixtureModel>[1]>;

/**
 * Every export family and weight format the engine meets, as the real exporters write them (see
 * src/fixture): each must give every request exactly its solo tokens while others join and leave.
 */
interface Variant {
  name: string;
  fixture: FixtureVariant;
  options?: Partial<EngineOptions>;
  layout: string;
  /**
   * How far a token's logprob may move with the shape of the pass (rows, chunk) while the tokens
   * stay the same: kernels pick other blockings for other shapes, which only rounding sees in fp32
   * but 4-bit, fp16 and dynamically quantized int8 arithmetic does.
   */
  logprobs: number;
  /**
   * False where a joined row's arithmetic differs from its solo run by more than the order of the
   * sums: a column-position graph in fp16 rotates a row that joins at column c by angles c + i
   * computed and rounded in fp16, not by i, so a sampled token near a boundary of the CDF can flip
   * (greedy tokens still match). Real fp16 exports converted node by node round the same way.
   */
  seededExact?: false;
}

const VARIANTS: Variant[] = [
  { name: 'Optimum, position_ids, fp32', fixture: {}, layout: 'left', logprobs: 1e-4 },
  { name: 'positions from the mask', fixture: { positions: 'mask' }, layout: 'left', logprobs: 1e-4 },
  { name: 'positions from the column (optimum gemma)', fixture: { positions: 'column' }, layout: 'anchored', logprobs: 1e-4 },
  { name: 'GroupQueryAttention (onnxruntime-genai)', fixture: { attention: 'gqa' }, layout: 'right', logprobs: 1e-4 },
  {
    name: 'GroupQueryAttention, q4 MatMulNBits',
    fixture: { attention: 'gqa', weights: 'q4' },
    options: { dtype: 'q4' },
    layout: 'right',
    logprobs: 1e-1,
  },
  { name: 'Optimum, q4 MatMulNBits', fixture: { weights: 'q4' }, options: { dtype: 'q4' }, layout: 'left', logprobs: 1e-1 },
  // One row per pass (see rowCoupling); a chunked prefill still sees other activation scales.
  { name: 'Optimum, q8 dynamic quantization', fixture: { weights: 'q8' }, options: { dtype: 'q8' }, layout: 'left', logprobs: 5e-1 },
  { name: 'Optimum, fp16 weights and I/O', fixture: { weights: 'fp16' }, options: { dtype: 'fp16' }, layout: 'left', logprobs: 2e-2 },
  {
    name: 'GroupQueryAttention, fp16 weights and I/O',
    fixture: { attention: 'gqa', weights: 'fp16' },
    options: { dtype: 'fp16' },
    layout: 'right',
    logprobs: 2e-2,
  },
  {
    name: 'positions from the mask, q4',
    fixture: { positions: 'mask', weights: 'q4' },
    options: { dtype: 'q4' },
    layout: 'left',
    logprobs: 1e-1,
  },
  {
    name: 'positions from the mask, q8',
    fixture: { positions: 'mask', weights: 'q8' },
    options: { dtype: 'q8' },
    layout: 'left',
    logprobs: 5e-1,
  },
  {
    name: 'positions from the mask, fp16',
    fixture: { positions: 'mask', weights: 'fp16' },
    options: { dtype: 'fp16' },
    layout: 'left',
    logprobs: 2e-2,
  },
  {
    name: 'positions from the column, q4',
    fixture: { positions: 'column', weights: 'q4' },
    options: { dtype: 'q4' },
    layout: 'anchored',
    logprobs: 1e-1,
  },
  {
    name: 'positions from the column, q8',
    fixture: { positions: 'column', weights: 'q8' },
    options: { dtype: 'q8' },
    layout: 'anchored',
    logprobs: 5e-1,
  },
  {
    name: 'positions from the column, fp16',
    fixture: { positions: 'column', weights: 'fp16' },
    options: { dtype: 'fp16' },
    layout: 'anchored',
    logprobs: 2e-2,
    seededExact: false,
  },
  {
    name: 'GroupQueryAttention, q8',
    fixture: { attention: 'gqa', weights: 'q8' },
    options: { dtype: 'q8' },
    layout: 'right',
    logprobs: 5e-1,
  },
  // The builder's graph for models whose rotary it cannot fuse: the op takes rotated keys, positions come as position_ids.
  { name: 'GroupQueryAttention, position_ids', fixture: { attention: 'gqa', positions: 'ids' }, layout: 'right', logprobs: 1e-4 },
  // transformers.js' num_logits_to_keep input: 1 while sampling, 0 (every position) for prompt logprobs.
  { name: 'Optimum, num_logits_to_keep', fixture: { logitsToKeep: true }, layout: 'left', logprobs: 1e-4 },
];

let engine: Engine;
let maxBatchSeen = 0;

interface Job {
  inputs: string;
  parameters: GenerateParameters;
  /** Start once the first job has produced this many tokens: rows join at different steps. */
  startAfter: number;
}

/** Runs a generation and records token ids and logprobs; `onToken` lets a test act mid-stream. */
async function tokens(
  inputs: string,
  parameters: GenerateParameters,
  onToken?: (count: number) => void,
  signal?: AbortSignal,
): Promise<{ ids: number[]; logprobs: number[] }> {
  const ids: number[] = [];
  const logprobs: number[] = [];
  for await (const event of engine.generate({ inputs, parameters }, { signal }) as AsyncIterable<GenerationEvent>) {
    ids.push(event.token.id);
    logprobs.push(event.token.logprob);
    maxBatchSeen = Math.max(maxBatchSeen, engine.stats().batchSize);
    onToken?.(ids.length);
  }
  return { ids, logprobs };
}

/** Starts every job when the leader reaches its `startAfter` token count; resolves with all results. */
async function staggered(jobs: Job[]) {
  const starts = jobs.map(() => {
    let go!: () => void;
    const started = new Promise<void>((resolve) => (go = resolve));
    return { started, go };
  });
  const results = jobs.map(async (job, i) => {
    await starts[i].started;
    return tokens(job.inputs, job.parameters);
  });
  starts[0].go();
  const leader = tokens(jobs[0].inputs, jobs[0].parameters, (count) => {
    jobs.forEach((job, i) => i > 0 && count === job.startAfter && starts[i].go());
  });
  return [await leader, ...(await Promise.all(results.slice(1)))];
}

const JOBS: Job[] = [
  { inputs: 'Once upon a time there was', parameters: { max_new_tokens: 40 }, startAfter: 0 },
  { inputs: 'Hi', parameters: { max_new_tokens: 12 }, startAfter: 3 },
  { inputs: 'A much longer prompt that has quite a few more tokens than the others do', parameters: { max_new_tokens: 25 }, startAfter: 3 },
  { inputs: 'Short one', parameters: { max_new_tokens: 5 }, startAfter: 10 },
  { inputs: 'Late joiner', parameters: { max_new_tokens: 20 }, startAfter: 20 },
];

const LONG = Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ');

async function endOf(target: Engine, inputs: string, parameters: GenerateParameters) {
  let last: GenerationEvent | null = null;
  for await (const event of target.generate({ inputs, parameters })) last = event;
  return last as Extract<GenerationEvent, { type: 'end' }>;
}

describe.each(VARIANTS)('continuous batching: $name', ({ fixture, options, layout, logprobs: tolerance, seededExact }) => {
  let model: string;
  beforeAll(async () => {
    model = await ensureFixtureModel('tiny', fixture);
    engine = await createEngine({ model, ...options });
  });

  afterAll(async () => {
    await engine?.close();
  });

  it('detects the family and picks its cache layout', () => {
    expect(engine.info.attention?.layout).toBe(layout);
    // GroupQueryAttention decodes into its cache in place (checked against the copying path at load).
    expect(engine.info.attention?.inPlace).toBe(layout === 'right');
  });

  it('gives every greedy request the tokens it gets alone, while others join and leave', async () => {
    // Trailing rows (job 0) start first; the job list is also run with job 0 last-started by the staggering itself.
    const alone: Array<{ ids: number[]; logprobs: number[] }> = [];
    for (const job of JOBS) alone.push(await tokens(job.inputs, { ...job.parameters, do_sample: false }));
    maxBatchSeen = 0;
    const together = await staggered(JOBS.map((j) => ({ ...j, parameters: { ...j.parameters, do_sample: false } })));
    // Graphs whose rows change each other (dynamic int8 quantization) run one row per pass.
    expect(maxBatchSeen).toBeGreaterThanOrEqual(Math.min(3, engine.info.maxBatchSize));
    together.forEach((result, i) => {
      expect(result.ids).toEqual(alone[i].ids);
      result.logprobs.forEach((lp, k) => expect(Math.abs(lp - alone[i].logprobs[k])).toBeLessThanOrEqual(tolerance));
    });
  });

  if (seededExact !== false)
    it('gives every seeded sample the tokens it gets alone', async () => {
      const jobs = JOBS.map((j, i) => ({
        ...j,
        parameters: { ...j.parameters, do_sample: true, temperature: 1.3, top_k: 50, seed: 100 + i },
      }));
      const alone: Array<{ ids: number[]; logprobs: number[] }> = [];
      for (const job of jobs) alone.push(await tokens(job.inputs, job.parameters));
      const together = await staggered(jobs);
      together.forEach((result, i) => expect(result.ids).toEqual(alone[i].ids));
    });

  it('leaves the other rows unchanged when one is cancelled mid-batch', async () => {
    const params = { max_new_tokens: 30, do_sample: false };
    const aloneA = await tokens('First stream', params);
    const aloneB = await tokens('Second stream, longer prompt', params);
    const controller = new AbortController();
    const cancelled = tokens('Cancelled stream', params, (n) => n === 5 && controller.abort(), controller.signal).catch((e) => e);
    const [a, b] = await Promise.all([tokens('First stream', params), tokens('Second stream, longer prompt', params)]);
    expect((await cancelled).name).toBe('AbortError');
    expect(a.ids).toEqual(aloneA.ids);
    expect(b.ids).toEqual(aloneB.ids);
    await expect.poll(() => engine.stats().batchSize, { timeout: 2000 }).toBe(0);
  });

  it('gives the same tokens and prompt logprobs as a one-pass prefill', async () => {
    const chunked = await createEngine({ model, ...options, maxBatchPrefillTokens: 16 });
    try {
      const params = { max_new_tokens: 10, do_sample: false, details: true, decoder_input_details: true };
      const [a, b] = [await endOf(engine, LONG, params), await endOf(chunked, LONG, params)];
      expect(a.inputLength).toBeGreaterThan(64);
      expect(b.tokens.map((t) => t.id)).toEqual(a.tokens.map((t) => t.id));
      expect(b.prefill.map((t) => t.id)).toEqual(a.prefill.map((t) => t.id));
      b.prefill.forEach((t, j) => {
        if (j === 0) expect(t.logprob).toBeNull();
        else expect(Math.abs(t.logprob! - a.prefill[j].logprob!)).toBeLessThanOrEqual(tolerance);
      });
    } finally {
      await chunked.close();
    }
  });
});

describe('chunked prefill', () => {
  it('keeps the running streams going while a long prompt is prefilled, and drops it when cancelled', async () => {
    // No prefix cache: the second long prompt would reuse the first one's keys and skip its chunks.
    const chunked = await createEngine({ model: await ensureFixtureModel('tiny'), maxBatchPrefillTokens: 8, prefixCacheBytes: 0 });
    try {
      const longPrompt = `${LONG} ${LONG} ${LONG}`;
      let streamed = 0;
      let duringPrefill = -1;
      const controller = new AbortController();
      let submit = () => {};
      const submitted = new Promise<void>((resolve) => (submit = resolve));
      const long = (async () => {
        await submitted;
        const startedAt = streamed;
        for await (const _ of chunked.generate(
          { inputs: longPrompt, parameters: { max_new_tokens: 2, do_sample: false } },
          { signal: controller.signal },
        )) {
          if (duringPrefill < 0) duringPrefill = streamed - startedAt;
        }
      })();
      for await (const _ of chunked.generate({ inputs: 'Keep going', parameters: { max_new_tokens: 400, do_sample: false } })) {
        streamed += 1;
        if (streamed === 5) submit();
      }
      await long;
      // Over 20 chunks of 8 tokens: without chunking the stream would get no token meanwhile.
      expect(duringPrefill).toBeGreaterThanOrEqual(10);

      // Cancelled in the middle of its chunks, the long prompt leaves no row behind.
      const cancelled = chunked.generate({ inputs: longPrompt, parameters: { max_new_tokens: 50 } }, { signal: controller.signal });
      await cancelled.accepted;
      // Nothing else runs: the first pass reported is its first chunk, and many more would follow.
      const unsubscribe = chunked.onForwardPass(() => {
        unsubscribe();
        controller.abort();
      });
      await expect(
        (async () => {
          for await (const _ of cancelled);
        })(),
      ).rejects.toMatchObject({ name: 'AbortError' });
      expect(await endOf(chunked, 'After', { max_new_tokens: 3, do_sample: false })).toMatchObject({ generatedTokens: 3 });
      await expect.poll(() => chunked.stats().batchSize, { timeout: 2000 }).toBe(0);
      expect(chunked.stats().queueSize).toBe(0);
    } finally {
      await chunked.close();
    }
  });
});

// One variant per cache layout: each treats a finished row at the end of the position table its own way.
const ONE_PER_LAYOUT = ['left', 'anchored', 'right'].map((layout) => VARIANTS.find((v) => v.layout === layout)!);

describe.each(ONE_PER_LAYOUT)('rows at the end of the context: $name', ({ fixture, options }) => {
  beforeAll(async () => {
    engine = await createEngine({ model: await ensureFixtureModel('tiny', fixture), ...options });
  });

  afterAll(async () => {
    await engine?.close();
  });

  it('lets a row finish at the position limit while others go on', async () => {
    // Without max_new_tokens each request fills the context (2048 on tiny); the 4-token prompt ends
    // first and stays in the cache for a few steps as a finished row, which must not move past the
    // last position (regression: its position reached 2048 and failed the whole batch).
    const results = await Promise.all(['x', 'x', 'x', 'xxxx'].map((inputs) => tokens(inputs, { do_sample: false })));
    const lengths = results.map((r) => r.ids.length);
    expect(lengths.slice(0, 3).every((n) => n === lengths[0])).toBe(true);
    expect(lengths[3]).toBeLessThan(lengths[0]);
  });
});

describe('graphs whose rows change each other', () => {
  it('run one row per pass by default, and batch when the host accepts the variance', async () => {
    const model = await ensureFixtureModel('tiny', { weights: 'q8' });
    const exact = await createEngine({ model, dtype: 'q8' });
    const batched = await createEngine({ model, dtype: 'q8', allowBatchVariance: true });
    try {
      expect(exact.info.attention?.rowCoupling).toMatch(/DynamicQuantizeLinear/);
      expect(exact.info.maxBatchSize).toBe(1);
      expect(batched.info.maxBatchSize).toBeGreaterThan(1);
    } finally {
      await Promise.all([exact.close(), batched.close()]);
    }
  });
});
