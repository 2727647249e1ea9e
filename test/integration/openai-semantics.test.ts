/**
 * OpenAI's semantics where they differ from TGI's, over real HTTP on the tiny fixture, checked with
 * the real `openai` SDK: a matched stop string is left out of the text (streamed or not, and a
 * stream never sends a part of it), TGI routes keep it; the model's generation_config.json fills the
 * sampling fields an OpenAI request leaves unset (vLLM's `--generation-config auto`), unless the
 * handler says `generationConfig: 'none'`; `chat_template_kwargs` reach the chat template; and
 * `/tokenize` validates `parameters` as `/generate` does.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { post, postForJson } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';

const N = 16;
const MESSAGES = [{ role: 'user' as const, content: 'Write a haiku' }];
const PROMPT = 'The quick brown fox';
const SEEDS = [1, 2, 3, 4, 5];

let tiny: Engine;
/** The tiny fixture with a sampling generation_config.json and a chat template that reads kwargs. */
let tuned: Engine;
let tunedDir: string;
let servers: Record<'tiny' | 'tinyNone' | 'tuned' | 'tunedNone', RunningServer>;

const client = (server: RunningServer) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0 });

/** The pieces a greedy stream sends, without a stop string. */
async function greedyPieces(server: RunningServer, route: 'chat' | 'completions'): Promise<string[]> {
  const pieces: string[] = [];
  if (route === 'chat') {
    const stream = await client(server).chat.completions.create({
      model: 'tiny',
      messages: MESSAGES,
      max_tokens: N,
      temperature: 0,
      stream: true,
    });
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta.content ?? '');
  } else {
    const stream = await client(server).completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: N, temperature: 0, stream: true });
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.text ?? '');
  }
  return pieces.filter((piece) => piece !== '');
}

/**
 * A printable stop string made of the end of one streamed piece and the start of the next, at its
 * first occurrence: the stream has to hold its first half back until the next token.
 */
function spanningStop(pieces: string[]): { stop: string; before: string; full: string } {
  const full = pieces.join('');
  let sent = '';
  for (let i = 0; i + 1 < pieces.length; i++) {
    sent += pieces[i];
    for (const [tail, head] of [
      [2, 2],
      [2, 1],
      [1, 2],
    ]) {
      const stop = pieces[i].slice(-tail) + pieces[i + 1].slice(0, head);
      if (stop.length === tail + head && /^[\x20-\x7e]+$/.test(stop) && full.indexOf(stop) === sent.length - tail) {
        return { stop, before: full.slice(0, sent.length - tail), full };
      }
    }
  }
  throw new Error(`no printable stop string spans two pieces of ${JSON.stringify(pieces)}`);
}

beforeAll(async () => {
  const dir = await ensureFixtureModel('tiny');
  tiny = await createEngine({ model: dir });
  tunedDir = await mkdtemp(join(tmpdir(), 'si-generation-config-'));
  await cp(dir, tunedDir, { recursive: true });
  const generation = JSON.parse(await readFile(join(dir, 'generation_config.json'), 'utf8'));
  // top_k 1 makes "sampling" deterministic: what the defaults give is then the greedy answer.
  await writeFile(join(tunedDir, 'generation_config.json'), JSON.stringify({ ...generation, do_sample: true, temperature: 0.7, top_k: 1 }));
  const tokenizerConfig = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
  tokenizerConfig.chat_template +=
    '{% if enable_thinking %}<think>\n{% endif %}{% if documents %}{% for doc in documents %}{{ doc.text }}\n{% endfor %}{% endif %}';
  await writeFile(join(tunedDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  tuned = await createEngine({ model: tunedDir, modelId: 'tuned' });
  const start = (engine: Engine, generationConfig: 'auto' | 'none') =>
    startServer({ framework: 'express5', mount: 'prefix' }, { engine, generationConfig });
  servers = {
    tiny: await start(tiny, 'auto'),
    tinyNone: await start(tiny, 'none'),
    tuned: await start(tuned, 'auto'),
    tunedNone: await start(tuned, 'none'),
  };
});

afterAll(async () => {
  await Promise.all(Object.values(servers ?? {}).map((server) => server.close()));
  await tiny?.close();
  await tuned?.close();
  if (tunedDir) await rm(tunedDir, { recursive: true, force: true });
});

describe('stop strings on the OpenAI routes (openai SDK)', () => {
  it('chat: the whole content ends before the stop string, finish_reason stop', async () => {
    const { stop, before } = spanningStop(await greedyPieces(servers.tiny, 'chat'));
    const completion = await client(servers.tiny).chat.completions.create({
      model: 'tiny',
      messages: MESSAGES,
      max_tokens: N,
      temperature: 0,
      stop,
    });
    expect(completion.choices[0].message.content).toBe(before);
    expect(completion.choices[0].finish_reason).toBe('stop');
  });

  it('chat stream: the deltas add up to the same content and never hold a part of the stop string', async () => {
    const { stop, before } = spanningStop(await greedyPieces(servers.tiny, 'chat'));
    const stream = await client(servers.tiny).chat.completions.create({
      model: 'tiny',
      messages: MESSAGES,
      max_tokens: N,
      temperature: 0,
      stop: [stop],
      stream: true,
    });
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? '';
      // Append-only: what was sent is a prefix of the answer, so nothing sent is cut later.
      expect(before.startsWith(content)).toBe(true);
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(content).toBe(before);
    expect(finish).toBe('stop');
  });

  it('chat stream: text held back for a stop string that never completes is sent in the end', async () => {
    const { stop, full } = spanningStop(await greedyPieces(servers.tiny, 'chat'));
    const stream = await client(servers.tiny).chat.completions.create({
      model: 'tiny',
      messages: MESSAGES,
      max_tokens: N,
      temperature: 0,
      stop: [stop.slice(0, 3) + '\u0007'],
      stream: true,
    });
    let content = '';
    for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? '';
    expect(content).toBe(full);
  });

  it('completions, whole and streamed: the text ends before the stop string', async () => {
    const { stop, before } = spanningStop(await greedyPieces(servers.tiny, 'completions'));
    const completion = await client(servers.tiny).completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
      stop,
    });
    expect(completion.choices[0]).toMatchObject({ text: before, finish_reason: 'stop' });
    const stream = await client(servers.tiny).completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
      stop,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      expect(before.startsWith(text)).toBe(true);
    }
    expect(text).toBe(before);
  });

  it('TGI routes keep the stop string, as TGI does', async () => {
    const { stop, before } = spanningStop(await greedyPieces(servers.tiny, 'completions'));
    const { json } = await postForJson(`${servers.tiny.url}/generate`, {
      inputs: PROMPT,
      parameters: { max_new_tokens: N, do_sample: false, stop: [stop], details: true },
    });
    expect(json.generated_text.startsWith(before + stop)).toBe(true);
    expect(json.details.finish_reason).toBe('stop_sequence');
  });
});

describe('more stop strings on the OpenAI routes (openai SDK)', () => {
  interface Answer {
    text: string;
    finish: string | null;
    usage: OpenAI.CompletionUsage | null | undefined;
  }

  /** One greedy answer, whole or streamed with the usage chunk; a stream checks every chunk is a prefix of `expected`. */
  async function answer(route: 'chat' | 'completions', stop: string | string[], stream: boolean, expected?: string): Promise<Answer> {
    const openai = client(servers.tiny);
    const common = { model: 'tiny', max_tokens: N, temperature: 0, stop };
    if (!stream) {
      if (route === 'chat') {
        const c = await openai.chat.completions.create({ ...common, messages: MESSAGES });
        return { text: c.choices[0].message.content ?? '', finish: c.choices[0].finish_reason, usage: c.usage };
      }
      const c = await openai.completions.create({ ...common, prompt: PROMPT });
      return { text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage };
    }
    const streamed: Answer = { text: '', finish: null, usage: null };
    const add = (piece: string | null | undefined, finish: string | null | undefined, usage: OpenAI.CompletionUsage | null | undefined) => {
      streamed.text += piece ?? '';
      if (expected !== undefined) expect(expected.startsWith(streamed.text)).toBe(true);
      streamed.finish = finish ?? streamed.finish;
      streamed.usage = usage ?? streamed.usage;
    };
    const options = { stream: true as const, stream_options: { include_usage: true } };
    if (route === 'chat') {
      for await (const chunk of await openai.chat.completions.create({ ...common, ...options, messages: MESSAGES })) {
        add(chunk.choices[0]?.delta.content, chunk.choices[0]?.finish_reason, chunk.usage);
      }
    } else {
      for await (const chunk of await openai.completions.create({ ...common, ...options, prompt: PROMPT })) {
        add(chunk.choices[0]?.text, chunk.choices[0]?.finish_reason, chunk.usage);
      }
    }
    return streamed;
  }

  for (const route of ['chat', 'completions'] as const) {
    it(`${route}: a stop string at the very first token leaves nothing, stream and whole, one token counted`, async () => {
      const [first] = await greedyPieces(servers.tiny, route);
      for (const stop of [first, first.slice(0, 1)]) {
        const whole = await answer(route, stop, false);
        const streamed = await answer(route, [stop], true, '');
        expect([whole.text, whole.finish, streamed.text, streamed.finish]).toEqual(['', 'stop', '', 'stop']);
        expect(streamed.usage).toEqual(whole.usage);
        expect(whole.usage?.completion_tokens).toBe(1);
      }
    });

    it(`${route}: of several stop strings the first to occur cuts the text, wherever it is in the list`, async () => {
      const pieces = await greedyPieces(servers.tiny, route);
      const { stop, before, full } = spanningStop(pieces);
      // A later one: a piece of the text that first occurs after the spanning stop string has ended.
      const later = pieces.find((piece) => full.indexOf(piece) >= before.length + stop.length);
      if (later === undefined) throw new Error(`no piece of ${JSON.stringify(pieces)} occurs first after ${JSON.stringify(stop)}`);
      for (const stops of [
        ['\u0007', stop, later],
        [later, stop],
      ]) {
        const whole = await answer(route, stops, false);
        const streamed = await answer(route, stops, true, before);
        expect([whole.text, whole.finish, streamed.text, streamed.finish]).toEqual([before, 'stop', before, 'stop']);
        expect(streamed.usage).toEqual(whole.usage);
        expect(whole.usage?.total_tokens).toBe(whole.usage!.prompt_tokens + whole.usage!.completion_tokens);
      }
    });
  }
});

describe("the model's generation_config.json on the OpenAI routes", () => {
  async function chatContents(server: RunningServer, extra: Record<string, unknown> = {}): Promise<string[]> {
    return Promise.all(
      SEEDS.map(async (seed) => {
        const { json } = await postForJson(`${server.url}/v1/chat/completions`, { messages: MESSAGES, max_tokens: 8, seed, ...extra });
        return json.choices[0].message.content as string;
      }),
    );
  }

  it('fills the sampling fields a request leaves unset (top_k 1 here: every seed gives the greedy answer)', async () => {
    const [greedy] = await chatContents(servers.tuned, { temperature: 0 });
    expect(await chatContents(servers.tuned)).toEqual(SEEDS.map(() => greedy));
  });

  it("with generationConfig: 'none', OpenAI's own defaults apply (temperature 1, no top_k)", async () => {
    const [greedy] = await chatContents(servers.tunedNone, { temperature: 0 });
    expect((await chatContents(servers.tunedNone)).some((content) => content !== greedy)).toBe(true);
  });

  it('a field the request sets wins over the config', async () => {
    const [greedy] = await chatContents(servers.tuned, { temperature: 0 });
    expect((await chatContents(servers.tuned, { top_k: 50, temperature: 1 })).some((content) => content !== greedy)).toBe(true);
  });

  it('do_sample: false in the config keeps a request that sets no sampling field greedy', async () => {
    const [greedy] = await chatContents(servers.tiny, { temperature: 0 });
    expect(await chatContents(servers.tiny)).toEqual(SEEDS.map(() => greedy));
    expect((await chatContents(servers.tinyNone)).some((content) => content !== greedy)).toBe(true);
  });

  it('TGI routes keep TGI semantics: the config does not change a sampled /generate', async () => {
    const { json: greedy } = await postForJson(`${servers.tuned.url}/generate`, {
      inputs: PROMPT,
      parameters: { max_new_tokens: 8, do_sample: false },
    });
    const sampled = await Promise.all(
      SEEDS.map(
        async (seed) =>
          (await postForJson(`${servers.tuned.url}/generate`, { inputs: PROMPT, parameters: { max_new_tokens: 8, do_sample: true, seed } }))
            .json.generated_text,
      ),
    );
    expect(sampled.some((text) => text !== greedy.generated_text)).toBe(true);
  });
});

describe("TGI's POST / keeps TGI's defaults", () => {
  it('without parameters it samples (TGI fills in do_sample: true) and returns the prompt with the text', async () => {
    const { json: greedy } = await postForJson(`${servers.tiny.url}/`, {
      inputs: PROMPT,
      parameters: { max_new_tokens: 8, do_sample: false },
    });
    expect(greedy[0].generated_text.startsWith(PROMPT)).toBe(true);
    const texts = await Promise.all(
      [1, 2].map(async () => (await postForJson(`${servers.tiny.url}/`, { inputs: PROMPT })).json[0].generated_text as string),
    );
    expect(texts.every((text) => text.startsWith(PROMPT))).toBe(true);
    expect(texts.some((text) => !text.startsWith(greedy[0].generated_text))).toBe(true);
  });
});

describe('chat_template_kwargs', () => {
  const promptTokens = async (kwargs?: Record<string, unknown>) => {
    const body = { messages: MESSAGES, max_tokens: 1, ...(kwargs ? { chat_template_kwargs: kwargs } : {}) };
    return (await postForJson(`${servers.tuned.url}/v1/chat/completions`, body)).json.usage.prompt_tokens as number;
  };

  it('reach the chat template: enable_thinking and documents change the prompt', async () => {
    const plain = await promptTokens();
    expect(await promptTokens({ enable_thinking: false })).toBe(plain);
    expect(await promptTokens({ enable_thinking: true })).toBeGreaterThan(plain);
    expect(await promptTokens({ documents: [{ title: 'a', text: 'the quick brown fox jumps' }] })).toBeGreaterThan(plain);
  });

  it.each([['messages'], ['add_generation_prompt'], ['tools'], ['bos_token'], ['eos_token']])(
    'refuses %s, which the server sets itself, with a 422 in OpenAI shape',
    async (key) => {
      const res = await post(`${servers.tuned.url}/v1/chat/completions`, { messages: MESSAGES, chat_template_kwargs: { [key]: [] } });
      expect(res.status).toBe(422);
      expect(((await res.json()) as { error: unknown }).error).toMatchObject({
        type: 'invalid_request_error',
        param: `chat_template_kwargs.${key}`,
      });
    },
  );

  it('refuses a value that is not an object', async () => {
    const res = await post(`${servers.tuned.url}/v1/chat/completions`, { messages: MESSAGES, chat_template_kwargs: 'enable_thinking' });
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe('chat_template_kwargs');
  });
});

describe('/tokenize validates parameters as /generate does', () => {
  it.each([
    ['a string', 'x'],
    ['an array', [1]],
    ['a negative temperature', { temperature: -1 }],
    ['a wrong type', { max_new_tokens: 'many' }],
    ['top_n_tokens over the limit', { top_n_tokens: 1000 }],
    ['a grammar of an unknown type', { grammar: { type: 'xml', value: {} } }],
  ])('422 for parameters that are %s', async (_label, parameters) => {
    const res = await post(`${servers.tiny.url}/tokenize`, { inputs: 'Hello world', parameters });
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('validation');
  });

  it('tokenizes with valid parameters; truncate keeps the last tokens with their offsets', async () => {
    const { json: all } = await postForJson(`${servers.tiny.url}/tokenize`, {
      inputs: 'Hello big world',
      parameters: { max_new_tokens: 1 },
    });
    expect(all.length).toBeGreaterThan(2);
    const { json: last } = await postForJson(`${servers.tiny.url}/tokenize`, { inputs: 'Hello big world', parameters: { truncate: 2 } });
    expect(last).toEqual(all.slice(-2));
  });
});
