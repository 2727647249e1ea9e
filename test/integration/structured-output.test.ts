/**
 * Grammar-constrained generation end to end, over real HTTP on the tiny fixture (whose free output
 * is noise, so any text that parses proves the constraint): TGI's `parameters.grammar` on
 * `/generate*` and through `@huggingface/inference`'s `textGeneration`, OpenAI's `response_format`
 * through the real `openai` SDK, streamed and whole, a
 * grammar xgrammar refuses answered 422 before any byte, and constrained rows batched with free
 * ones leaving the free rows' tokens exactly their solo ones.
 */
import { InferenceClient } from '@huggingface/inference';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { post, postForJson, readSse, frameJson } from '../conformance/http-client.js';
import { serveTinyFixture } from '../support/tiny-server.js';

/** Every value bounded, so that a noise model's output must end within max_new_tokens. */
const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string', enum: ['ann', 'bob'] }, ok: { type: 'boolean' } },
  required: ['name', 'ok'],
  additionalProperties: false,
};
const REGEX = '[0-9]{3}-[a-z]{2}';

const suite = serveTinyFixture('prefix');
const client = () => new OpenAI({ baseURL: `${suite.server.url}/v1`, apiKey: 'x', maxRetries: 0 });

/** Whether `text` is JSON valid against SCHEMA. */
function matchesSchema(text: string): boolean {
  const value = JSON.parse(text) as Record<string, unknown>;
  return (
    typeof value === 'object' &&
    value !== null &&
    Object.keys(value).sort().join() === 'name,ok' &&
    ['ann', 'bob'].includes(value.name as string) &&
    typeof value.ok === 'boolean'
  );
}

interface Generated {
  generated_text: string;
  details: {
    finish_reason: string;
    tokens: Array<{ id: number; logprob: number }>;
    top_tokens?: Array<Array<{ text: string; logprob: number }>>;
  };
}

async function generate(inputs: string, parameters: Record<string, unknown>): Promise<Generated> {
  const { json } = await postForJson<Generated>(`${suite.server.url}/generate`, { inputs, parameters: { details: true, ...parameters } });
  return json;
}

describe('TGI parameters.grammar on /generate', () => {
  it.each([1, 2, 3])('regex: the whole text matches, and the row ends with eos (seed %i)', async (seed) => {
    const out = await generate('Hello', { max_new_tokens: 40, do_sample: true, seed, grammar: { type: 'regex', value: REGEX } });
    expect(out.generated_text).toMatch(new RegExp(`^${REGEX}$`));
    expect(out.details.finish_reason).toBe('eos_token');
  });

  it.each([
    ['json (schema as an object)', { type: 'json', value: SCHEMA }],
    ['json (schema as a JSON string)', { type: 'json', value: JSON.stringify(SCHEMA) }],
    ['json_schema', { type: 'json_schema', value: { name: 'person', schema: SCHEMA } }],
  ])('%s: the text is JSON valid against the schema', async (_label, grammar) => {
    const out = await generate('Hello', { max_new_tokens: 60, do_sample: false, grammar });
    expect(matchesSchema(out.generated_text)).toBe(true);
    expect(out.details.finish_reason).toBe('eos_token');
  });

  it('logprobs and top tokens describe the masked distribution', async () => {
    const json = await generate('Hello', {
      max_new_tokens: 40,
      do_sample: false,
      top_n_tokens: 5,
      grammar: { type: 'regex', value: REGEX },
    });
    const { tokens } = json.details;
    const top = json.details.top_tokens!;
    for (const token of tokens) expect(Number.isFinite(token.logprob)).toBe(true);
    // The first token must start the text with a digit: every alternative offered does too.
    expect(top[0].length).toBeGreaterThan(0);
    for (const alternative of top[0]) expect(alternative.text).toMatch(/^[0-9]/);
    // Once the text is complete only eos is allowed: it has all of the masked distribution.
    expect(json.details.finish_reason).toBe('eos_token');
    expect(tokens.at(-1)!.logprob).toBe(0);
    expect(top.at(-1)!.map((t) => t.logprob)).toEqual([0]);
  });

  it('streams the constrained text token by token on /generate_stream', async () => {
    const res = await post(`${suite.server.url}/generate_stream`, {
      inputs: 'Hi',
      parameters: { max_new_tokens: 40, do_sample: true, seed: 7, grammar: { type: 'regex', value: REGEX } },
    });
    expect(res.status).toBe(200);
    const frames = (await readSse(res)).map((frame) =>
      frameJson<{ token: { text: string; special: boolean }; generated_text: string | null }>(frame),
    );
    const last = frames.at(-1)!;
    expect(last.generated_text).toMatch(new RegExp(`^${REGEX}$`));
    expect(
      frames
        .filter((f) => !f.token.special)
        .map((f) => f.token.text)
        .join(''),
    ).toBe(last.generated_text);
  });
});

describe('@huggingface/inference textGeneration with parameters.grammar', () => {
  /** What the client posted, to show the grammar went in its own request rather than being dropped. */
  const sent: unknown[] = [];
  const hf = () =>
    new InferenceClient(undefined, {
      endpointUrl: suite.server.url,
      fetch: (input, init) => {
        sent.push(JSON.parse(String(init?.body)));
        return fetch(input, init);
      },
    });

  it('json: the text is JSON valid against the schema', async () => {
    sent.length = 0;
    const grammar = { type: 'json' as const, value: SCHEMA };
    const out = await hf().textGeneration({
      model: 'tiny',
      inputs: 'Hello',
      parameters: { max_new_tokens: 60, do_sample: false, grammar },
    });
    expect(matchesSchema(out.generated_text)).toBe(true);
    expect(sent).toEqual([expect.objectContaining({ grammar })]);
  });

  it.each([1, 2])('regex: the whole text matches (seed %i)', async (seed) => {
    const out = await hf().textGeneration({
      model: 'tiny',
      inputs: 'Hello',
      parameters: { max_new_tokens: 40, do_sample: true, seed, grammar: { type: 'regex', value: REGEX } },
    });
    expect(out.generated_text).toMatch(new RegExp(`^${REGEX}$`));
  });
});

describe('OpenAI response_format through the openai SDK', () => {
  const responseFormat = { type: 'json_schema' as const, json_schema: { name: 'person', schema: SCHEMA } };
  const messages = [{ role: 'user' as const, content: 'Who?' }];

  it('whole: the content is JSON valid against the schema', async () => {
    const completion = await client().chat.completions.create({
      model: 'tiny',
      messages,
      max_tokens: 60,
      temperature: 0,
      response_format: responseFormat,
    });
    expect(matchesSchema(completion.choices[0].message.content!)).toBe(true);
    expect(completion.choices[0].finish_reason).toBe('stop');
  });

  it('streamed: the content deltas make JSON valid against the schema', async () => {
    const stream = await client().chat.completions.create({
      model: 'tiny',
      messages,
      max_tokens: 60,
      temperature: 0.9,
      seed: 3,
      response_format: responseFormat,
      stream: true,
    });
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(matchesSchema(content)).toBe(true);
    expect(finish).toBe('stop');
  });

  it.each([
    ["TGI's top-level grammar", { grammar: { type: 'regex', value: REGEX } }, new RegExp(`^${REGEX}$`)],
    ["vLLM's structured_outputs.choice", { structured_outputs: { choice: ['yes', 'no'] } }, /^(yes|no)$/],
  ])('/v1/completions takes %s', async (_label, constraint, pattern) => {
    const completion = await client().completions.create({
      model: 'tiny',
      prompt: 'Once',
      max_tokens: 40,
      temperature: 0,
      ...constraint,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(completion.choices[0].text).toMatch(pattern);
    expect(completion.choices[0].finish_reason).toBe('stop');
  });
});

describe('a grammar xgrammar refuses', () => {
  it('is a 422 before any byte of a stream, and the next request is served', async () => {
    const res = await post(`${suite.server.url}/generate_stream`, {
      inputs: 'Hi',
      parameters: { max_new_tokens: 8, grammar: { type: 'regex', value: '([a-z]' } },
    });
    expect(res.status).toBe(422);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('validation');

    const bad = await post(`${suite.server.url}/v1/completions`, {
      prompt: 'Hi',
      max_tokens: 4,
      stream: true,
      structured_outputs: { grammar: 'root ::= (' },
    });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe('grammar');

    const out = await generate('Hi', { max_new_tokens: 40, do_sample: false, grammar: { type: 'regex', value: REGEX } });
    expect(out.generated_text).toMatch(new RegExp(`^${REGEX}$`));
  });
});

describe('grammar rows batched with free rows', () => {
  it('leave every free row byte-identical to its solo greedy run', async () => {
    const prompts = ['The quick brown fox', 'Once upon a time', 'Hello world', 'In the beginning'];
    const free = { max_new_tokens: 24, do_sample: false };
    const solo: Generated[] = [];
    for (const inputs of prompts) solo.push(await generate(inputs, free));

    const constrained = prompts.map((inputs, i) =>
      generate(inputs, {
        max_new_tokens: 60,
        do_sample: true,
        seed: i + 1,
        grammar: i % 2 ? { type: 'regex', value: REGEX } : { type: 'json', value: SCHEMA },
      }),
    );
    const together = prompts.map((inputs) => generate(inputs, free));
    let widest = 0;
    const stop = suite.engine.onForwardPass((pass) => (widest = Math.max(widest, pass.rows)));
    const [grammarRows, freeRows] = await Promise.all([Promise.all(constrained), Promise.all(together)]).finally(stop);
    // Constrained and free rows shared passes.
    expect(widest).toBeGreaterThan(4);

    expect(freeRows.map((r) => r.generated_text)).toEqual(solo.map((r) => r.generated_text));
    expect(freeRows.map((r) => r.details.tokens.map((t) => t.id))).toEqual(solo.map((r) => r.details.tokens.map((t) => t.id)));
    grammarRows.forEach((row, i) => {
      if (i % 2) expect(row.generated_text).toMatch(new RegExp(`^${REGEX}$`));
      else expect(matchesSchema(row.generated_text)).toBe(true);
    });
    expect(suite.engine.stats().batchSize).toBe(0);
  });
});
