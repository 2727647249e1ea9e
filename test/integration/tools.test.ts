/**
 * OpenAI tools and structured outputs end to end, through the real `openai` SDK and its helpers
 * (`runTools` + `zodFunction`, `chat.completions.parse` + `zodResponseFormat`, `stream`) against
 * a mounted Express server on the tiny fixture. The fixture's free output is noise, so every call
 * the SDK parses and every zod object it validates proves the constraint; the schemas are bounded
 * (enums, booleans) so that a noise model must finish them within the token budget.
 */
import OpenAI, { UnprocessableEntityError } from 'openai';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import type { ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { post } from '../conformance/http-client.js';
import { serveTinyFixture } from '../support/tiny-server.js';

const WeatherArgs = z.object({ city: z.enum(['Paris', 'Rome', 'Oslo']), unit: z.enum(['c', 'f']) });
const TimeArgs = z.object({ utc: z.boolean() });
const Person = z.object({ name: z.enum(['ann', 'bob']), ok: z.boolean() });

const WEATHER: ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: zodFunction({ name: 'get_weather', parameters: WeatherArgs }).function.parameters,
  },
};
const TIME: ChatCompletionTool = {
  type: 'function',
  function: { name: 'get_time', parameters: zodFunction({ name: 'get_time', parameters: TimeArgs }).function.parameters },
};
const ASK: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Weather in Paris, and the time?' }];
/** Greedy, and room for one call or a small object (a call is about 30 fixture tokens). */
const BASE = { model: 'tiny', temperature: 0, max_tokens: 120 } as const;

const suite = serveTinyFixture('prefix');
const client = () => new OpenAI({ baseURL: `${suite.server.url}/v1`, apiKey: 'x', maxRetries: 0 });

/** Each call's name and arguments, parsed: JSON.parse throws on anything the grammar let through broken. */
function calls(message: OpenAI.ChatCompletionMessage): Array<[string, unknown]> {
  return (message.tool_calls ?? []).map((call) => {
    if (call.type !== 'function') throw new Error(`unexpected ${call.type} tool call`);
    expect(call.id).toMatch(/^call_[A-Za-z0-9]{24}$/);
    return [call.function.name, JSON.parse(call.function.arguments)];
  });
}

function expectValid([name, args]: [string, unknown]): void {
  expect(['get_weather', 'get_time']).toContain(name);
  (name === 'get_weather' ? WeatherArgs : TimeArgs).strict().parse(args);
}

describe('runTools + zodFunction', () => {
  for (const stream of [false, true]) {
    it(`${stream ? 'streamed' : 'whole'}: the runner calls our functions with parsed arguments, then sends the results back`, async () => {
      const seen: Array<[string, unknown]> = [];
      const params = {
        ...BASE,
        messages: ASK,
        tool_choice: 'required' as const,
        // One call per answer: the noise model would not end the free text a parallel answer allows after it.
        parallel_tool_calls: false,
        tools: [
          zodFunction({ name: 'get_weather', parameters: WeatherArgs, function: (args) => (seen.push(['get_weather', args]), '18 C') }),
          zodFunction({ name: 'get_time', parameters: TimeArgs, function: (args) => (seen.push(['get_time', args]), '12:00') }),
        ],
      };
      // `required` calls every round: two rounds show the results going back.
      const options = { maxChatCompletions: 2 };
      const { completions: chat } = client().chat;
      const runner = stream
        ? chat.runTools({ ...params, stream: true, stream_options: { include_usage: true } }, options)
        : chat.runTools(params, options);
      await runner.done();
      const completions = runner.allChatCompletions();
      expect(completions).toHaveLength(2);
      for (const completion of completions) expect(completion.choices[0].finish_reason).toBe('tool_calls');
      expect(seen).toHaveLength(2);
      seen.forEach(expectValid);
      expect(runner.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'tool', 'assistant', 'tool']);
      // The second prompt holds the first round's calls and results, so it is longer.
      const [first, second] = completions.map((c) => c.usage!.prompt_tokens);
      expect(second).toBeGreaterThan(first);
    });
  }
});

describe('tool_choice', () => {
  it('required, not parallel: exactly one valid call, content null, finish_reason tool_calls', async () => {
    const completion = await client().chat.completions.create({
      ...BASE,
      messages: ASK,
      tools: [WEATHER, TIME],
      tool_choice: 'required',
      parallel_tool_calls: false,
    });
    const [choice] = completion.choices;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const made = calls(choice.message);
    expect(made).toHaveLength(1);
    expectValid(made[0]);
  });

  it('named: only that function is called', async () => {
    const completion = await client().chat.completions.create({
      ...BASE,
      messages: ASK,
      tools: [WEATHER, TIME],
      tool_choice: { type: 'function', function: { name: 'get_time' } },
      parallel_tool_calls: false,
    });
    const made = calls(completion.choices[0].message);
    expect(made).toHaveLength(1);
    expect(made[0][0]).toBe('get_time');
    TimeArgs.strict().parse(made[0][1]);
  });

  it('none: the tools stay out of the prompt and the answer is free text', async () => {
    const request = { ...BASE, max_tokens: 8, messages: ASK };
    const withNone = await client().chat.completions.create({ ...request, tools: [WEATHER, TIME], tool_choice: 'none' });
    const without = await client().chat.completions.create(request);
    expect(withNone.choices[0].message.tool_calls).toBeUndefined();
    expect(withNone.choices[0].message.content).toBe(without.choices[0].message.content);
    expect(withNone.usage!.prompt_tokens).toBe(without.usage!.prompt_tokens);
    expect(withNone.choices[0].finish_reason).toBe('length');
  });

  it('auto: the tools are in the prompt; the noise model answers in text, read as content', async () => {
    const request = { ...BASE, max_tokens: 8, messages: ASK };
    const auto = await client().chat.completions.create({ ...request, tools: [WEATHER, TIME] });
    const without = await client().chat.completions.create(request);
    expect(auto.usage!.prompt_tokens).toBeGreaterThan(without.usage!.prompt_tokens);
    expect(auto.choices[0].message.tool_calls).toBeUndefined();
    expect(typeof auto.choices[0].message.content).toBe('string');
  });

  it('streamed, required: index, id, type and name first, then argument fragments that make valid JSON', async () => {
    const stream = await client().chat.completions.create({
      ...BASE,
      stream: true,
      messages: ASK,
      tools: [WEATHER, TIME],
      tool_choice: 'required',
      parallel_tool_calls: false,
    });
    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      const [choice] = chunk.choices;
      deltas.push(...(choice?.delta.tool_calls ?? []));
      content += choice?.delta.content ?? '';
      finish = choice?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(content).toBe('');
    const [head, ...rest] = deltas;
    expect(head).toMatchObject({ index: 0, id: expect.stringMatching(/^call_/), type: 'function', function: { arguments: '' } });
    for (const delta of rest) expect(delta).toEqual({ index: 0, function: { arguments: expect.any(String) } });
    expectValid([head.function!.name!, JSON.parse(rest.map((d) => d.function!.arguments).join(''))]);
  });
});

describe('a conversation with tool results', () => {
  it('assistant tool_calls and tool messages are accepted and rendered; the next answer may call again', async () => {
    const messages: ChatCompletionMessageParam[] = [
      ...ASK,
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "c"}' } },
          { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"utc": true}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_a', content: '18 C' },
      { role: 'tool', tool_call_id: 'call_b', content: '12:00' },
    ];
    const text = await client().chat.completions.create({ ...BASE, max_tokens: 4, messages, tools: [WEATHER, TIME] });
    expect(text.choices[0].message.role).toBe('assistant');
    // The calls and results went into the prompt (as <tool_call> and <tool_response> text for this template).
    const bare = await client().chat.completions.create({ ...BASE, max_tokens: 4, messages: ASK, tools: [WEATHER, TIME] });
    expect(text.usage!.prompt_tokens).toBeGreaterThan(bare.usage!.prompt_tokens + 20);
    const again = await client().chat.completions.create({
      ...BASE,
      messages,
      tools: [WEATHER, TIME],
      tool_choice: 'required',
      parallel_tool_calls: false,
    });
    calls(again.choices[0].message).forEach(expectValid);
    expect(again.choices[0].finish_reason).toBe('tool_calls');
  });
});

describe('structured outputs through the SDK helpers', () => {
  it('chat.completions.parse + zodResponseFormat: message.parsed is the validated object', async () => {
    const completion = await client().chat.completions.parse({
      ...BASE,
      messages: ASK,
      response_format: zodResponseFormat(Person, 'person'),
    });
    const { parsed } = completion.choices[0].message;
    expect(Person.strict().parse(parsed)).toEqual(parsed);
    expect(completion.choices[0].finish_reason).toBe('stop');
  });

  it('chat.completions.stream + zodResponseFormat: the final message is parsed too', async () => {
    const stream = client().chat.completions.stream({
      ...BASE,
      temperature: 0.9,
      seed: 5,
      messages: ASK,
      response_format: zodResponseFormat(Person, 'person'),
    });
    let deltas = 0;
    stream.on('content.delta', () => deltas++);
    const final = await stream.finalChatCompletion();
    expect(deltas).toBeGreaterThan(1);
    Person.strict().parse(final.choices[0].message.parsed);
  });

  it('json_object: the content is a JSON object', async () => {
    const completion = await client().chat.completions.create({
      ...BASE,
      max_tokens: 200,
      messages: ASK,
      response_format: { type: 'json_object' },
    });
    const { content } = completion.choices[0].message;
    const value: unknown = JSON.parse(content!);
    expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
  });
});

describe('what cannot be honoured is a 422 before any byte', () => {
  it('response_format together with tools', async () => {
    const error = await client()
      .chat.completions.create({ ...BASE, messages: ASK, tools: [WEATHER], response_format: { type: 'json_object' }, stream: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnprocessableEntityError);
    expect((error as UnprocessableEntityError).param).toBe('tools');
  });

  it('a named tool that is not in tools; the server serves the next request', async () => {
    const res = await post(`${suite.server.url}/v1/chat/completions`, {
      ...BASE,
      messages: ASK,
      tools: [WEATHER],
      tool_choice: { type: 'function', function: { name: 'get_time' } },
    });
    expect(res.status).toBe(422);
    const body = (await res.json()) as { error: { param: string; message: string } };
    expect(body.error.param).toBe('tool_choice.function.name');
    expect(body.error.message).toContain('"get_time"');
    const next = await client().chat.completions.create({
      ...BASE,
      messages: ASK,
      tools: [WEATHER],
      tool_choice: 'required',
      parallel_tool_calls: false,
    });
    expect(next.choices[0].finish_reason).toBe('tool_calls');
  });
});
