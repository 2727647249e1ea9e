import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { GenerationError, ModelLoadError, type ErrorContext } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine, GenerateParameters } from '../../src/types.js';
import { startServer } from '../conformance/servers.js';
import { faultModelOptions } from '../support/fault-model.js';

/** The tiny model, built so that any forward pass over exactly 24 positions fails inside ONNX Runtime. */
const FAIL_AT = 24;
let engine: Engine;
/** What the engine under test reported to its onError. */
const reports: Array<{ error: unknown; context: ErrorContext }> = [];
const collect = (into: Array<{ error: unknown; context: ErrorContext }>) => (error: unknown, context: ErrorContext) =>
  void into.push({ error, context });

/** The worker thread, for fault injection only: nothing outside the engine can reach it. */
const workerOf = (target: Engine) =>
  (target as unknown as { worker: { terminate(): Promise<number>; postMessage(m: unknown): void } }).worker;

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
  engine = await createEngine({ ...(await faultModelOptions(FAIL_AT)), onError: collect(reports) });
});

beforeEach(() => {
  reports.length = 0;
});

afterAll(async () => {
  await engine?.close();
});

describe('engine faults', () => {
  it('fails the batch whose decode step fails, then serves the next request', async () => {
    const prompt = await promptOfLength(10);
    // Two rows in one batch: the pass at total length 24 fails both, after their first tokens streamed.
    const results = await Promise.allSettled([
      generate(engine, prompt, { max_new_tokens: 30 }),
      generate(engine, prompt, { max_new_tokens: 30 }),
    ]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({ errorType: 'generation', status: 424 });
    }
    expect(engine.stats().healthy).toBe(false);
    expect(await generate(engine, prompt, { max_new_tokens: 5 })).toBe(5);
    expect(engine.stats().healthy).toBe(true);
    expect(engine.stats().batchSize).toBe(0);
  });

  it('reports the failed pass once to onError, and gives its requests a message without ONNX Runtime internals', async () => {
    const prompt = await promptOfLength(10);
    const results = await Promise.allSettled([
      generate(engine, prompt, { max_new_tokens: 30 }),
      generate(engine, prompt, { max_new_tokens: 30 }),
    ]);
    const errors = results.map((result) => (result as PromiseRejectedResult).reason as GenerationError);
    for (const error of errors) {
      expect(GenerationError.isInstance(error)).toBe(true);
      expect(error.message).toBe('Request failed during generation: a forward pass failed');
    }
    expect(reports).toHaveLength(1);
    expect(reports[0].context).toEqual({ route: null, phase: 'generation' });
    // The detail crossed the worker boundary as the cause, class and all: ours, around ONNX Runtime's.
    const detail = reports[0].error as GenerationError;
    expect(GenerationError.isInstance(detail)).toBe(true);
    expect(errors[0].cause).toBe(detail);
    expect(detail.cause).toBeInstanceOf(Error);
    expect((detail.cause as Error).message).toMatch(/node/i);
    expect(errors[0].message).not.toMatch(/node/i);
  });

  it('fails a request whose prefill fails, and reports health through a probe', async () => {
    const prompt = await promptOfLength(FAIL_AT);
    const generation = engine.generate({ inputs: prompt, parameters: { max_new_tokens: 3 } });
    await expect(generation.accepted).resolves.toEqual({ inputLength: FAIL_AT });
    await expect(generate(engine, prompt, { max_new_tokens: 3 })).rejects.toMatchObject({ errorType: 'generation' });
    await expect(
      (async () => {
        for await (const _ of generation);
      })(),
    ).rejects.toMatchObject({ errorType: 'generation' });
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
      await workerOf(local).terminate();
      await expect(generate(local, 'During the restart', { max_new_tokens: 3 })).rejects.toMatchObject({ errorType: 'unavailable' });
      await expect
        .poll(async () => generate(local, 'After the restart', { max_new_tokens: 3 }).catch((e: Error) => e.message), {
          timeout: 20_000,
          interval: 100,
        })
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

describe('unexpected errors and permanent failures', () => {
  it('reports an uncaught exception in the worker once, then serves from a new worker', async () => {
    const seen: Array<{ error: unknown; context: ErrorContext }> = [];
    const local = await createEngine({ model: await ensureFixtureModel('tiny'), onError: collect(seen) });
    try {
      // A message the worker cannot read throws outside every guard: the thread dies of it.
      workerOf(local).postMessage(null);
      await expect
        .poll(async () => generate(local, 'After the crash', { max_new_tokens: 3 }).catch((e: Error) => e.message), {
          timeout: 20_000,
          interval: 100,
        })
        .toBe(3);
      expect(seen).toHaveLength(1);
      expect(seen[0].context).toEqual({ route: null, phase: 'worker' });
      expect((seen[0].error as Error).message).toMatch(/null/);
    } finally {
      await local.close();
    }
  });

  it('a model that fails to load: 500 on every route but /metrics, no path in any body, onError once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'si-unloadable-'));
    await writeFile(join(dir, 'config.json'), '{"model_type": "llama"}');
    const seen: Array<{ error: unknown; context: ErrorContext }> = [];
    const server = await startServer({ framework: 'express5', mount: 'root' }, { model: dir, onError: collect(seen) });
    try {
      const loadError = await server.handler.ready().catch((error: unknown) => error);
      expect(ModelLoadError.isInstance(loadError)).toBe(true);
      await expectPermanentFailure(server.url, dir);
      expect(seen).toEqual([{ error: loadError, context: { route: null, phase: 'load' } }]);
      // The detail is for the host's log.
      expect((loadError as Error).message).toContain(dir);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a worker that cannot be restarted: after a few attempts, 500 on every route but /metrics, and one report', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'si-vanishing-'));
    await cp(await ensureFixtureModel('tiny'), dir, { recursive: true });
    const seen: Array<{ error: unknown; context: ErrorContext }> = [];
    const server = await startServer({ framework: 'express5', mount: 'root' }, { model: dir, onError: collect(seen) });
    try {
      const local = await server.handler.ready();
      expect(await generate(local, 'Before', { max_new_tokens: 2 })).toBe(2);
      // The model directory goes away, then the worker dies: no restart can load it again.
      await rm(join(dir, 'config.json'));
      await workerOf(local).terminate();
      await expect.poll(() => seen.map((s) => s.context.phase), { timeout: 20_000, interval: 50 }).toEqual(['worker', 'restart']);
      const failure = seen[1].error as ModelLoadError;
      expect(ModelLoadError.isInstance(failure)).toBe(true);
      expect(failure.message).toMatch(/could not be restarted \(3 attempts\)/);
      expect(ModelLoadError.isInstance(failure.cause)).toBe(true);

      await expectPermanentFailure(server.url, dir);
      await expect(generate(local, 'After', { max_new_tokens: 2 })).rejects.toBe(failure);
      expect(await local.health()).toBe(false);
      expect(seen).toHaveLength(2);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** Every route but /metrics answers 500 `model_load` in its family's shape, with no trace of the model directory. */
async function expectPermanentFailure(url: string, dir: string): Promise<void> {
  const tgi = { error: 'Model failed to load', error_type: 'model_load' };
  const openai = { error: { message: 'Model failed to load', type: 'server_error', param: null, code: 'model_load' } };
  const generateBody = { inputs: 'Hi', parameters: { max_new_tokens: 2 } };
  const requests: Array<[string, unknown, object]> = [
    ['/', generateBody, tgi],
    ['/generate', generateBody, tgi],
    ['/generate_stream', generateBody, tgi],
    ['/tokenize', { inputs: 'Hi' }, tgi],
    ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], stream: true }, openai],
    ['/v1/completions', { prompt: 'Hi' }, openai],
    ['/health', undefined, tgi],
    ['/info', undefined, tgi],
    ['/v1/models', undefined, openai],
  ];
  for (const [path, body, expected] of requests) {
    const res =
      body === undefined
        ? await fetch(url + path)
        : await fetch(url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    expect([path, res.status, res.headers.get('retry-after')]).toEqual([path, 500, null]);
    expect(text).not.toContain(dir);
    expect(JSON.parse(text)).toEqual(expected);
  }
  expect((await fetch(`${url}/metrics`)).status).toBe(200);
}
