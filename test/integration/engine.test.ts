import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { InferenceError } from '../../src/errors.js';
import { DataType } from '../../src/fixture/onnx-proto.js';
import { writeOnnxModel } from '../../src/fixture/write-onnx.js';
import { readFile } from 'node:fs/promises';
import type { Dtype, Engine, EndEvent, GenerateParameters, GenerationEvent } from '../../src/types.js';

let model: string;
let engine: Engine;

async function collect(gen: AsyncIterable<GenerationEvent>): Promise<GenerationEvent[]> {
  const events: GenerationEvent[] = [];
  for await (const event of gen) events.push(event);
  return events;
}

async function run(inputs: string, parameters: GenerateParameters): Promise<EndEvent> {
  const events = await collect(engine.generate({ inputs, parameters }));
  const end = events.at(-1)!;
  expect(end.type).toBe('end');
  return end as EndEvent;
}

beforeAll(async () => {
  model = await ensureFixtureModel('tiny');
  engine = await createEngine({ model });
});

afterAll(async () => {
  await engine?.close();
});

describe('engine.generate', () => {
  it('streams one event per token and ends with the whole result', async () => {
    const events = await collect(engine.generate({ inputs: 'Once upon a time', parameters: { max_new_tokens: 8, details: true } }));
    expect(events).toHaveLength(8);
    expect(events.slice(0, -1).every((e) => e.type === 'token')).toBe(true);
    expect(events.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const end = events.at(-1) as EndEvent;
    expect(end.finishReason).toBe('length');
    expect(end.generatedTokens).toBe(8);
    expect(end.tokens.map((t) => t.id)).toEqual(events.map((e) => e.token.id));
    expect(end.generatedText).toBe(events.map((e) => (e.token.special ? '' : e.token.text)).join(''));
    expect(end.inputLength).toBeGreaterThan(0);
    for (const e of events) expect(e.token.logprob).toBeLessThanOrEqual(0);
  });

  it('streams texts that add up to generated_text, whatever bytes the model picks', async () => {
    // Random weights pick byte tokens that split characters, and eos at any point: the hard cases.
    for (let seed = 0; seed < 30; seed++) {
      const events = await collect(
        engine.generate({ inputs: 'Bytes', parameters: { max_new_tokens: 40, do_sample: true, temperature: 1.5, seed } }),
      );
      const end = events.at(-1) as EndEvent;
      expect(events.map((e) => (e.token.special ? '' : e.token.text)).join('')).toBe(end.generatedText);
    }
  });

  it('gives the same greedy tokens when the caller reads no logprobs, and leaves them out unless details ask', async () => {
    const inputs = 'Once upon a time';
    const parameters = { max_new_tokens: 12, do_sample: false };
    const read = await collect(engine.generate({ inputs, parameters }));
    const unread = await collect(engine.generate({ inputs, parameters }, { tokenLogprobs: false }));
    const detailed = await collect(engine.generate({ inputs, parameters: { ...parameters, details: true } }, { tokenLogprobs: false }));
    expect(unread.map((e) => e.token.id)).toEqual(read.map((e) => e.token.id));
    expect(read.every((e) => Number.isFinite(e.token.logprob))).toBe(true);
    expect(unread.every((e) => Number.isNaN(e.token.logprob))).toBe(true);
    expect(detailed.map((e) => e.token.logprob)).toEqual(read.map((e) => e.token.logprob));
  });

  it('is deterministic when greedy', async () => {
    const a = await run('The quick brown fox', { max_new_tokens: 12, do_sample: false });
    const b = await run('The quick brown fox', { max_new_tokens: 12, do_sample: false });
    expect(b.generatedText).toBe(a.generatedText);
  });

  it('gives the same sample for the same seed and another for another seed', async () => {
    const params = { max_new_tokens: 16, do_sample: true, temperature: 1.5, details: true };
    const a = await run('Hello', { ...params, seed: 7 });
    const b = await run('Hello', { ...params, seed: 7 });
    const c = await run('Hello', { ...params, seed: 8 });
    expect(a.seed).toBe(7);
    expect(b.tokens.map((t) => t.id)).toEqual(a.tokens.map((t) => t.id));
    expect(c.tokens.map((t) => t.id)).not.toEqual(a.tokens.map((t) => t.id));
  });

  it('assigns and reports a seed when none is given', async () => {
    const end = await run('Hello', { max_new_tokens: 2, do_sample: true });
    expect(Number.isInteger(end.seed)).toBe(true);
  });

  it('reports prefill logprobs and top tokens when asked', async () => {
    const end = await run('abc def', { max_new_tokens: 3, details: true, decoder_input_details: true, top_n_tokens: 3 });
    expect(end.prefill.length).toBe(end.inputLength);
    expect(end.prefill[0].logprob).toBeNull();
    expect(end.prefill.slice(1).every((t) => typeof t.logprob === 'number' && t.logprob <= 0)).toBe(true);
    expect(end.topTokensPerStep).toHaveLength(3);
    for (const [i, top] of end.topTokensPerStep.entries()) {
      expect(top).toHaveLength(3);
      // Greedy: the chosen token is the most likely one.
      expect(top[0].id).toBe(end.tokens[i].id);
    }
  });

  it('stops at a stop sequence matched across tokens', async () => {
    const free = await run('Tell me', { max_new_tokens: 20, do_sample: false });
    const stop = free.generatedText.slice(3, 6);
    expect(stop.length).toBe(3);
    const stopped = await run('Tell me', { max_new_tokens: 20, do_sample: false, stop: [stop] });
    expect(stopped.finishReason).toBe('stop_sequence');
    expect(stopped.generatedText.includes(stop)).toBe(true);
    expect(stopped.generatedText.length).toBeLessThan(free.generatedText.length + 1);
  });

  it('renders chat messages through the template', async () => {
    const prompt = await engine.applyChatTemplate([{ role: 'user', content: 'Hi' }]);
    expect(prompt).toBe(
      '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
    const events = await collect(engine.chat({ messages: [{ role: 'user', content: 'Hi' }], parameters: { max_new_tokens: 4 } }));
    expect(events.at(-1)!.type).toBe('end');
  });

  it('rejects invalid parameters with a typed validation error before any token', async () => {
    const gen = engine.generate({ inputs: 'x', parameters: { temperature: 0 } });
    const error = await gen.accepted.catch((e: unknown) => e);
    expect(InferenceError.isInstance(error)).toBe(true);
    expect((error as InferenceError).errorType).toBe('validation');
    expect((error as InferenceError).message).toBe('Input validation error: `temperature` must be strictly positive');
    await expect(collect(gen)).rejects.toThrow('strictly positive');
  });

  it('rejects a prompt over the token budget', async () => {
    const gen = engine.generate({ inputs: 'word '.repeat(3000), parameters: { max_new_tokens: 10 } });
    await expect(gen.accepted).rejects.toMatchObject({ errorType: 'validation' });
  });

  it('rejects a chat whose rendered prompt is over the token budget', async () => {
    const gen = engine.chat({ messages: [{ role: 'user', content: 'word '.repeat(3000) }], parameters: { max_new_tokens: 10 } });
    await expect(gen.accepted).rejects.toMatchObject({ errorType: 'validation', message: expect.stringMatching(/must be <= 2048/) });
  });

  it('stops an aborted generation within one step and serves the next request', async () => {
    const controller = new AbortController();
    const gen = engine.generate({ inputs: 'Abort me', parameters: { max_new_tokens: 500 } }, { signal: controller.signal });
    let seen = 0;
    await expect(
      (async () => {
        for await (const _ of gen) {
          seen += 1;
          if (seen === 3) controller.abort();
        }
      })(),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toBe(3);
    // The worker drops the row at the next step boundary.
    await expect.poll(() => engine.stats().batchSize, { timeout: 2000 }).toBe(0);
    const next = await run('Next', { max_new_tokens: 2 });
    expect(next.generatedTokens).toBe(2);
  });

  it('cancels when the consumer stops iterating', async () => {
    for await (const _ of engine.generate({ inputs: 'Break', parameters: { max_new_tokens: 500 } })) break;
    await expect.poll(() => engine.stats().batchSize, { timeout: 2000 }).toBe(0);
  });

  it('keeps the host event loop turning during a long generation', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const started = performance.now();
    await run('Long', { max_new_tokens: 200 });
    const elapsed = performance.now() - started;
    clearInterval(timer);
    // Loose bound: a blocked loop would give ~0 ticks; a free one about elapsed / 10.
    expect(ticks).toBeGreaterThan((elapsed / 10) * 0.3);
  });

  it('tokenizes with character offsets', async () => {
    const tokens = await engine.tokenize('Hello world');
    expect(tokens.map((t) => t.text).join('')).toBe('Hello world');
    for (const t of tokens) expect('Hello world'.slice(t.start, t.stop)).toBe(t.text);
  });
});

describe('model variants', () => {
  async function greedy(dir: string, dtype?: Dtype): Promise<{ ids: number[]; kvDtype: string | undefined }> {
    const variant = await createEngine({ model: dir, dtype });
    try {
      const events = await collect(variant.generate({ inputs: 'Variant check', parameters: { max_new_tokens: 6, do_sample: false } }));
      return { ids: events.map((e) => e.token.id), kvDtype: variant.info.kvDtype };
    } finally {
      await variant.close();
    }
  }

  it('serves models without position_ids and with external weights like the default', async () => {
    const reference = await greedy(model);
    expect((await greedy(await ensureFixtureModel('tiny', { positions: 'mask' }))).ids).toEqual(reference.ids);
    expect((await greedy(await ensureFixtureModel('tiny', { externalData: true }))).ids).toEqual(reference.ids);
  });

  it('reads a float16 KV cache from the graph and picks model_fp16.onnx for dtype fp16', async () => {
    const fp16 = await greedy(await ensureFixtureModel('tiny', { weights: 'fp16' }), 'fp16');
    expect(fp16.kvDtype).toBe('float16');
    expect(fp16.ids).toHaveLength(6);
  });
});

describe('bad model directories', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'si-bad-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names a missing config.json', async () => {
    await expect(createEngine({ model: dir })).rejects.toThrow(/config\.json/);
  });

  it('lists what is there when the ONNX file is missing', async () => {
    const copy = join(dir, 'no-onnx');
    await cp(model, copy, { recursive: true });
    await rm(join(copy, 'onnx', 'model.onnx'));
    // Two other dtypes: with one, the loader would take it as the folder's only choice.
    await writeFile(join(copy, 'onnx', 'model_q4.onnx'), '');
    await writeFile(join(copy, 'onnx', 'model_fp16.onnx'), '');
    await expect(createEngine({ model: copy })).rejects.toThrow(/model\.onnx not found.*onnx\/model_fp16\.onnx.*onnx\/model_q4\.onnx/);
  });

  it('names a file that is not ONNX', async () => {
    const copy = join(dir, 'not-onnx');
    await cp(model, copy, { recursive: true });
    await writeFile(join(copy, 'onnx', 'model.onnx'), '{"this is": "json"}');
    await expect(createEngine({ model: copy })).rejects.toThrow(/model\.onnx is not an ONNX model/);
  });

  /** logits = Unsqueeze(Cast(input_ids)), a valid graph, declaring `extraInputs` (float, unused) beside input_ids. */
  async function graphWithInputs(name: string, extraInputs: string[]): Promise<string> {
    const copy = join(dir, name);
    await cp(model, copy, { recursive: true });
    await writeOnnxModel(
      {
        irVersion: 8,
        opsetVersion: 17,
        producerName: 'test',
        graph: {
          name,
          nodes: [
            { opType: 'Cast', inputs: ['input_ids'], outputs: ['ids_f'], name: 'cast', attributes: { to: DataType.FLOAT } },
            { opType: 'Unsqueeze', inputs: ['ids_f', 'axes'], outputs: ['logits'], name: 'unsqueeze' },
          ],
          initializers: [{ name: 'axes', dataType: DataType.INT64, dims: [1], data: new Uint8Array(new BigInt64Array([2n]).buffer) }],
          inputs: [
            { name: 'input_ids', dataType: DataType.INT64, dims: ['batch_size', 'sequence_length'] },
            ...extraInputs.map((input) => ({ name: input, dataType: DataType.FLOAT, dims: ['batch_size', 2, 'past_sequence_length', 16] })),
          ],
          outputs: [{ name: 'logits', dataType: DataType.FLOAT, dims: ['batch_size', 'sequence_length', 1] }],
        },
      },
      { dir: join(copy, 'onnx'), fileName: 'model.onnx', externalData: false },
    );
    return copy;
  }

  it('refuses a graph without KV-cache inputs, naming the file and its family', async () => {
    await expect(createEngine({ model: await graphWithInputs('no-past', []) })).rejects.toThrow(
      /onnx\/model\.onnx \(plain-ops graph without position_ids\) has no past_key_values\.N\.key\/value inputs: export it with a KV cache/,
    );
  });

  it('refuses a cache under other names, saying which names it feeds', async () => {
    await expect(createEngine({ model: await graphWithInputs('renamed-past', ['past_key_0', 'past_value_0']) })).rejects.toThrow(
      /\(plain-ops graph without position_ids\) names its cache inputs past_key_0, past_value_0: this engine feeds past_key_values\.N\.key\/value/,
    );
  });

  it('refuses an input it cannot feed, naming it and what it feeds', async () => {
    const copy = await graphWithInputs('unknown-input', ['past_key_values.0.key', 'past_key_values.0.value', 'token_type_ids']);
    await expect(createEngine({ model: copy })).rejects.toThrow(
      /\(plain-ops graph without position_ids\) has inputs this engine cannot feed: token_type_ids \(it feeds input_ids, attention_mask/,
    );
  });

  it('refuses an encoder-decoder model', async () => {
    const copy = join(dir, 'seq2seq');
    await cp(model, copy, { recursive: true });
    const config = JSON.parse(await readFile(join(copy, 'config.json'), 'utf8'));
    await writeFile(join(copy, 'config.json'), JSON.stringify({ ...config, is_encoder_decoder: true }));
    await expect(createEngine({ model: copy })).rejects.toThrow(/encoder-decoder/);
  });

  it('picks the file a dtype names', async () => {
    const copy = join(dir, 'dtype');
    await mkdir(copy, { recursive: true });
    await cp(model, copy, { recursive: true });
    await expect(createEngine({ model: copy, dtype: 'q4' })).rejects.toThrow(/model_q4\.onnx not found/);
    // A JavaScript caller can pass any string.
    await expect(createEngine({ model: copy, dtype: 'nope' as Dtype })).rejects.toThrow(/Unknown dtype "nope"/);
  });
});
