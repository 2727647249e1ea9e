import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine, GenerateParameters } from '../../src/types.js';

/** The tiny model, built so that any forward pass over exactly 24 positions fails inside ONNX Runtime. */
const FAIL_AT = 24;
let engine: Engine;

async function generate(target: Engine, inputs: string, parameters: GenerateParameters): Promise<number> {
  let tokens = 0;
  for await (const _ of target.generate({ inputs, parameters: { do_sample: false, ...parameters } })) tokens += 1;
  return tokens;
}

async function promptOfLength(length: number): Promise<string> {
  let text = '';
  while ((await engine.tokenize(text + 'x')).length <= length) text += 'x';
  // Byte-level BPE merges runs of x; grow with spaced words until the count is exact.
  while ((await engine.tokenize(text)).length < length) text += ' q';
  expect((await engine.tokenize(text)).length).toBe(length);
  return text;
}

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny', { failAtLength: FAIL_AT }) });
});

afterAll(async () => {
  await engine?.close();
});

describe('engine faults', () => {
  it('fails the batch whose decode step fails, then serves the next request', async () => {
    const prompt = await promptOfLength(10);
    // Two rows in one batch: the pass at total length 24 fails both, after their first tokens streamed.
    const results = await Promise.allSettled([generate(engine, prompt, { max_new_tokens: 30 }), generate(engine, prompt, { max_new_tokens: 30 })]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({ errorType: 'generation', status: 424 });
    }
    expect(engine.stats().healthy).toBe(false);
    expect(await generate(engine, prompt, { max_new_tokens: 5 })).toBe(5);
    expect(engine.stats().healthy).toBe(true);
    expect(engine.stats().batchSize).toBe(0);
  });

  it('fails a request whose prefill fails, and reports health through a probe', async () => {
    const prompt = await promptOfLength(FAIL_AT);
    const generation = engine.generate({ inputs: prompt, parameters: { max_new_tokens: 3 } });
    await expect(generation.accepted).resolves.toEqual({ inputLength: FAIL_AT });
    await expect(generate(engine, prompt, { max_new_tokens: 3 })).rejects.toMatchObject({ errorType: 'generation' });
    await expect((async () => { for await (const _ of generation); })()).rejects.toMatchObject({ errorType: 'generation' });
    // The last pass failed; the probe runs a one-token generation, which succeeds.
    expect(engine.stats().healthy).toBe(false);
    expect(await engine.health()).toBe(true);
  });

});

describe('worker failure', () => {
  it('replaces a worker that dies: the engine restarts it and serves again', async () => {
    const local = await createEngine({ model: await ensureFixtureModel('tiny') });
    try {
      expect(await generate(local, 'Before', { max_new_tokens: 3 })).toBe(3);
      // Stands in for the worker thread dying (the only way in from outside). Terminating a thread
      // in the middle of ONNX Runtime's native run() can take the process down, so it is done idle.
      await (local as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      await expect(generate(local, 'During the restart', { max_new_tokens: 3 })).rejects.toMatchObject({ errorType: 'unavailable' });
      await expect
        .poll(async () => generate(local, 'After the restart', { max_new_tokens: 3 }).catch((e: Error) => e.message), { timeout: 20_000, interval: 100 })
        .toBe(3);
      expect(await local.health()).toBe(true);
    } finally {
      await local.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('lets running generations finish within the drain timeout, refuses new ones, ends the rest', async () => {
    const local = await createEngine({ model: await ensureFixtureModel('tiny') });
    const short = generate(local, 'Short', { max_new_tokens: 5 });
    // Settled into a value at once: it fails at the drain timeout, before the assertion below awaits it.
    const long = generate(local, 'Keep going', { max_new_tokens: 2000 }).catch((error: unknown) => error);
    await new Promise((r) => setTimeout(r, 20));
    const closing = local.close({ drainTimeoutMs: 300 });
    await expect(generate(local, 'Late', { max_new_tokens: 2 })).rejects.toMatchObject({ errorType: 'unavailable', status: 503 });
    expect(await short).toBe(5);
    expect(await long).toMatchObject({ errorType: 'incomplete_generation' });
    await closing;
    expect(await local.health()).toBe(false);
  });
});
