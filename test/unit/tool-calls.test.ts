import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChatCompletionStream } from 'openai/lib/ChatCompletionStream';
import { beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createGrammarEngine, type GrammarEngine } from '../../src/grammar/index.js';
import {
  ToolCallParser,
  newToolCallId,
  parseToolCalls,
  readToolPlan,
  toolCallsFinishReason,
  type ChatDelta,
  type ToolPlan,
} from '../../src/protocol/tool-calls.js';
import { ChatTemplate } from '../../src/text/chat-template.js';
import { loadTokenizer, type TextTokenizer } from '../../src/text/tokenizer.js';
import { DEFAULT_TOOL_PROMPT, TOOL_CALL_FORMAT_TEXTS, templateKnowsTools, templateMessages } from '../../src/text/tool-messages.js';
import type { ChatMessage } from '../../src/types.js';
import { constrainedDecode } from './grammar-decode.js';

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 40 }, unit: { enum: ['c', 'f'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};
const TIME = { type: 'function', function: { name: 'get_time' } };

function refusal(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(ValidationError.isInstance(error)).toBe(true);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

/** Deterministic ids for exact expectations. */
function ids() {
  let n = 0;
  return () => `call_${String(++n).padStart(24, '0')}`;
}

describe('readToolPlan', () => {
  it('auto (the default): free text, and any call that starts is constrained', () => {
    const plan = readToolPlan({ tools: [WEATHER, TIME] })!;
    expect(plan).toMatchObject({ choice: 'auto', parallel: true, tools: [WEATHER, TIME] });
    expect(plan.functions.map((f) => f.name)).toEqual(['get_weather', 'get_time']);
    expect(plan.grammar).toEqual({
      type: 'structural_tag',
      triggers: ['<tool_call>'],
      tags: [
        {
          begin: '<tool_call>\n{"name": "get_weather", "arguments": ',
          // maxLength dropped, keywords sorted, as for any schema.
          schema: {
            additionalProperties: false,
            properties: { city: { type: 'string' }, unit: { enum: ['c', 'f'] } },
            required: ['city', 'unit'],
            type: 'object',
          },
          end: '}\n</tool_call>',
        },
        // No `parameters`: a function without arguments, `{}`.
        {
          begin: '<tool_call>\n{"name": "get_time", "arguments": ',
          schema: { additionalProperties: false, properties: {}, type: 'object' },
          end: '}\n</tool_call>',
        },
      ],
      atLeastOne: false,
      stopAfterFirst: false,
    });
  });

  it('required, named and parallel_tool_calls: false', () => {
    expect(readToolPlan({ tools: [WEATHER], tool_choice: 'required' })!.grammar).toMatchObject({ atLeastOne: true, stopAfterFirst: false });
    const named = readToolPlan({
      tools: [WEATHER, TIME],
      tool_choice: { type: 'function', function: { name: 'get_time' } },
      parallel_tool_calls: false,
    })!;
    expect(named.choice).toEqual({ name: 'get_time' });
    expect(named.grammar).toMatchObject({ atLeastOne: true, stopAfterFirst: true });
    expect(named.grammar.type === 'structural_tag' && named.grammar.tags.map((t) => t.begin)).toEqual([
      '<tool_call>\n{"name": "get_time", "arguments": ',
    ]);
  });

  it('none, or no tools: nothing to do (tools stay out of the prompt)', () => {
    expect(readToolPlan({ tools: [WEATHER], tool_choice: 'none' })).toBeUndefined();
    expect(readToolPlan({})).toBeUndefined();
    expect(readToolPlan({ tools: [], tool_choice: 'auto' })).toBeUndefined();
  });

  it("keeps TGI's tool_prompt", () => {
    expect(readToolPlan({ tools: [WEATHER], tool_prompt: 'Use a tool.' })!.prompt).toBe('Use a tool.');
  });

  it('refuses what it cannot honour, naming the field', () => {
    expect(refusal(() => readToolPlan({ tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'nope' } } })).param).toBe(
      'tool_choice.function.name',
    );
    expect(refusal(() => readToolPlan({ tools: [WEATHER], tool_choice: { type: 'allowed_tools', allowed_tools: {} } })).param).toBe(
      'tool_choice',
    );
    expect(refusal(() => readToolPlan({ tool_choice: 'required' })).param).toBe('tool_choice');
    expect(refusal(() => readToolPlan({ tools: [{ type: 'custom', custom: { name: 'x' } }] })).param).toBe('tools[0].type');
    expect(refusal(() => readToolPlan({ tools: [{ type: 'function', function: { name: 'has space' } }] })).param).toBe(
      'tools[0].function.name',
    );
    expect(refusal(() => readToolPlan({ tools: [WEATHER, WEATHER] })).message).toContain('two tools are named "get_weather"');
    expect(refusal(() => readToolPlan({ tools: [{ type: 'function', function: { name: 'f', parameters: 'x' } }] })).param).toBe(
      'tools[0].function.parameters',
    );
    const keyword = refusal(() =>
      readToolPlan({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', minProperties: 1 } } }] }),
    );
    expect(keyword.message).toContain('`minProperties`');
    expect(keyword.param).toBe('tools[0].function.parameters');
    const many = Array.from({ length: 65 }, (_, i) => ({ type: 'function', function: { name: `f${i}` } }));
    expect(refusal(() => readToolPlan({ tools: many })).message).toContain('at most 64');
    expect(refusal(() => readToolPlan({ tools: {} })).param).toBe('tools');
    expect(refusal(() => readToolPlan({ tools: [WEATHER], parallel_tool_calls: 'yes' })).param).toBe('parallel_tool_calls');
  });

  it('refuses tools together with another output constraint, as TGI does', () => {
    const error = refusal(() => readToolPlan({ tools: [WEATHER] }, { type: 'json_schema', schema: { type: 'object' } }));
    expect(error.message).toContain('cannot be combined');
    expect(readToolPlan({ tools: [WEATHER], tool_choice: 'none' }, { type: 'regex', pattern: 'x' })).toBeUndefined();
  });
});

const CALLS =
  'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris {\\"old\\"} [x]", "unit": "c"}}\n</tool_call>\n' +
  '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';

/** Feeds `text` in pieces of `size` characters and collects the deltas. */
function stream(text: string, size: number): { deltas: ChatDelta[]; parser: ToolCallParser } {
  const parser = new ToolCallParser({ newId: ids() });
  const deltas: ChatDelta[] = [];
  for (let i = 0; i < text.length; i += size) deltas.push(...parser.push(text.slice(i, i + size)));
  deltas.push(...parser.finish());
  return { deltas, parser };
}

function accumulate(deltas: readonly ChatDelta[]) {
  let content = '';
  const calls: Array<{ id?: string; type?: string; name?: string; arguments: string }> = [];
  for (const delta of deltas) {
    if ('content' in delta) content += delta.content;
    else {
      const [call] = delta.tool_calls;
      calls[call.index] ??= { arguments: '' };
      const into = calls[call.index];
      if (call.id) Object.assign(into, { id: call.id, type: call.type, name: call.function.name });
      into.arguments += call.function.arguments;
    }
  }
  return { content, calls };
}

describe('ToolCallParser', () => {
  it('splits text and two calls; the tags never reach content', () => {
    const { content, toolCalls } = parseToolCalls(CALLS, { newId: ids() });
    expect(content).toBe('Let me check.');
    expect(toolCalls).toEqual([
      {
        id: 'call_000000000000000000000001',
        type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris {\\"old\\"} [x]", "unit": "c"}' },
      },
      { id: 'call_000000000000000000000002', type: 'function', function: { name: 'get_time', arguments: '{}' } },
    ]);
  });

  it.each([1, 2, 3, 5, 7, 13, 1000])('streams the same result whatever the token boundaries (pieces of %i)', (size) => {
    const { deltas, parser } = stream(CALLS, size);
    expect(accumulate(deltas)).toEqual({
      content: 'Let me check.',
      calls: [
        {
          id: 'call_000000000000000000000001',
          type: 'function',
          name: 'get_weather',
          arguments: '{"city": "Paris {\\"old\\"} [x]", "unit": "c"}',
        },
        { id: 'call_000000000000000000000002', type: 'function', name: 'get_time', arguments: '{}' },
      ],
    });
    expect(deltas.some((d) => 'content' in d && /[<>]/.test(d.content))).toBe(false);
    expect(parser.toolCalls).toHaveLength(2);
  });

  it('streams each call as the openai SDK expects: index, id, type and name first, then argument fragments', () => {
    const parser = new ToolCallParser({ newId: ids() });
    expect(parser.push('<tool_')).toEqual([]);
    expect(parser.push('call>\n{"name": "get_time", ')).toEqual([]);
    expect(parser.push('"arguments": {')).toEqual([
      { tool_calls: [{ index: 0, id: 'call_000000000000000000000001', type: 'function', function: { name: 'get_time', arguments: '' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '{' } }] },
    ]);
    expect(parser.push('}}\n</tool')).toEqual([{ tool_calls: [{ index: 0, function: { arguments: '}' } }] }]);
    expect(parser.push('_call>')).toEqual([]);
    expect(parser.finish()).toEqual([]);
  });

  it('holds back a partial tag until it completes or diverges', () => {
    const parser = new ToolCallParser();
    expect(parser.push('Use a <tool')).toEqual([{ content: 'Use a' }]);
    expect(parser.push('box>.')).toEqual([{ content: ' <toolbox>.' }]);
    expect(parser.push(' <tool_ca')).toEqual([]);
    expect(parser.finish()).toEqual([{ content: ' <tool_ca' }]);
    expect(parser.content).toBe('Use a <toolbox>. <tool_ca');
  });

  it('plain text is unchanged, trailing whitespace included', () => {
    expect(parseToolCalls('Hello\n world \n')).toEqual({ content: 'Hello\n world \n', toolCalls: [] });
  });

  it('content is null when there is only whitespace around the calls; text after a call is content', () => {
    expect(parseToolCalls('\n <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n\n').content).toBeNull();
    expect(parseToolCalls('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\nDone.').content).toBe('\nDone.');
  });

  it('a call cut off by max_tokens: announced calls keep their partial arguments; an unnamed one is text', () => {
    const cut = parseToolCalls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa');
    expect(cut.toolCalls.map((c) => c.function)).toEqual([{ name: 'get_weather', arguments: '{"city": "Pa' }]);
    expect(cut.content).toBeNull();
    expect(parseToolCalls('Hi <tool_call>\n{"na')).toEqual({ content: 'Hi <tool_call>\n{"na', toolCalls: [] });
  });

  it('text that only looks like a call (unconstrained output) stays content', () => {
    expect(parseToolCalls('<tool_call> no json here').content).toBe('<tool_call> no json here');
    expect(parseToolCalls('<tool_call>\n{"name": "f", "arguments": [1]}').toolCalls).toEqual([]);
  });

  it('accepts any JSON whitespace in the head, and escaped names', () => {
    const { toolCalls } = parseToolCalls('<tool_call>{ "name" :"get\\u005ftime","arguments":{"a":1}}</tool_call>');
    expect(toolCalls.map((c) => c.function)).toEqual([{ name: 'get_time', arguments: '{"a":1}' }]);
  });

  it('ids look like OpenAI ids', () => {
    expect(newToolCallId()).toMatch(/^call_[A-Za-z0-9]{24}$/);
    expect(newToolCallId()).not.toBe(newToolCallId());
  });

  it('finish_reason: tool_calls after calls; length stays length', () => {
    expect(toolCallsFinishReason('stop', 2)).toBe('tool_calls');
    expect(toolCallsFinishReason('stop', 0)).toBe('stop');
    expect(toolCallsFinishReason('length', 1)).toBe('length');
  });

  it("passes the openai SDK's own stream accumulator, which throws on a missing type, name or arguments", async () => {
    const { deltas } = stream(CALLS, 3);
    const chunk = (delta: object, finish: string | null) => ({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 0,
      model: 'm',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    });
    const lines = [
      chunk({ role: 'assistant', content: '' }, null),
      ...deltas.map((d) => chunk(d, null)),
      chunk({}, toolCallsFinishReason('stop', 2)),
    ];
    const body = new ReadableStream({
      start(controller) {
        for (const line of lines) controller.enqueue(new TextEncoder().encode(`${JSON.stringify(line)}\n`));
        controller.close();
      },
    });
    const runner = ChatCompletionStream.fromReadableStream(body);
    const done: string[] = [];
    runner.on('tool_calls.function.arguments.done', (event) => done.push(event.name));
    const completion = await runner.finalChatCompletion();
    const [choice] = completion.choices;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBe('Let me check.');
    expect(
      choice.message.tool_calls?.map((c) => c.type === 'function' && [c.id, c.function.name, JSON.parse(c.function.arguments)]),
    ).toEqual([
      ['call_000000000000000000000001', 'get_weather', { city: 'Paris {"old"} [x]', unit: 'c' }],
      ['call_000000000000000000000002', 'get_time', {}],
    ]);
    expect(done).toEqual(['get_weather', 'get_time']);
  });
});

describe('tool grammars on the fixture vocabulary, parsed back', () => {
  let engine: GrammarEngine;
  let tokenizer: TextTokenizer;
  beforeAll(async () => {
    const dir = await ensureFixtureModel('tiny');
    tokenizer = await loadTokenizer(dir);
    const tokenizerJson = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    engine = await createGrammarEngine({ tokenizerJson, vocabSize: 512, stopTokenIds: [2], formatTexts: TOOL_CALL_FORMAT_TEXTS });
  });

  async function run(plan: ToolPlan, seed: number) {
    const matcher = await engine.createMatcher(plan.grammar, 'tools');
    const { ids: generated, ended } = constrainedDecode(matcher, { seed, vocabSize: 512, stopTokenIds: [2] });
    matcher.release();
    expect(ended).toBe(true);
    // Streamed token by token through the parser, as the route will.
    const parser = new ToolCallParser();
    const deltas: ChatDelta[] = [];
    for (let i = 0; i < generated.length; i++) {
      const before = tokenizer.decode(generated.slice(0, i));
      deltas.push(...parser.push(tokenizer.decode(generated.slice(0, i + 1)).slice(before.length)));
    }
    deltas.push(...parser.finish());
    return { parser, text: tokenizer.decode(generated), streamed: accumulate(deltas) };
  }

  it.each([1, 2, 3, 4])('required, not parallel (seed %i): exactly one call with schema-valid arguments, no content', async (seed) => {
    const plan = readToolPlan({ tools: [WEATHER, TIME], tool_choice: 'required', parallel_tool_calls: false })!;
    const { parser, streamed } = await run(plan, seed);
    expect(parser.content).toBeNull();
    expect(parser.toolCalls).toHaveLength(1);
    const [call] = parser.toolCalls;
    const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
    if (call.function.name === 'get_weather') {
      expect(Object.keys(args)).toEqual(['city', 'unit']);
      expect(['c', 'f']).toContain(args.unit);
    } else {
      expect(call.function.name).toBe('get_time');
      expect(args).toEqual({});
    }
    expect(streamed.calls.map((c) => c.arguments)).toEqual([call.function.arguments]);
  });

  it.each([1, 2, 3])('named (seed %i): the named tool only', async (seed) => {
    const plan = readToolPlan({ tools: [WEATHER, TIME], tool_choice: { type: 'function', function: { name: 'get_weather' } } })!;
    const { parser } = await run(plan, seed);
    expect(parser.toolCalls.length).toBeGreaterThanOrEqual(1);
    for (const call of parser.toolCalls) {
      expect(call.function.name).toBe('get_weather');
      expect(JSON.parse(call.function.arguments)).toHaveProperty('unit');
    }
  });

  it.each([1, 2, 3, 4, 5, 6])('auto (seed %i): any call that starts is complete and valid', async (seed) => {
    const plan = readToolPlan({ tools: [WEATHER] })!;
    const { parser, text, streamed } = await run(plan, seed);
    for (const call of parser.toolCalls) expect(JSON.parse(call.function.arguments)).toHaveProperty('city');
    expect(streamed.content).toBe(parser.content ?? '');
    expect(parser.toolCalls.length).toBe(text.split('<tool_call>').length - 1);
  });
});

describe('templateMessages', () => {
  const conversation: ChatMessage[] = [
    { role: 'user', content: 'Weather in Paris and the time?' },
    {
      role: 'assistant',
      content: null,
      tool_calls: [
        { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "c"}' } },
        { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: 'not json' } },
      ],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '18 C' },
    { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '12:00' }] },
  ];

  it('parses assistant arguments to objects for templates that render tools (a string that does not parse stays)', () => {
    const out = templateMessages(conversation, { generic: false });
    expect(out[1].tool_calls).toEqual([
      { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris', unit: 'c' } } },
      { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: 'not json' } },
    ]);
    expect(out[2]).toEqual(conversation[2]);
    expect(conversation[1].tool_calls?.[0]).toMatchObject({ function: { arguments: '{"city": "Paris", "unit": "c"}' } });
  });

  it('writes calls and results in the tags for templates that know no tools, with the tools in a system prompt', () => {
    const out = templateMessages(conversation, { generic: true, tools: [WEATHER, TIME] });
    expect(out.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user']);
    expect(out[0].content).toContain(DEFAULT_TOOL_PROMPT);
    expect(out[0].content).toContain(
      '{"type":"function","function":{"name":"get_weather","description":"Weather in a city","parameters":{',
    );
    expect(out[2]).toEqual({
      role: 'assistant',
      content:
        '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": not json}\n</tool_call>',
    });
    expect(out[3]).toEqual({ role: 'user', content: '<tool_response>\n18 C\n</tool_response>\n<tool_response>\n12:00\n</tool_response>' });
  });

  it('adds to an existing system message; TGI tool_prompt replaces the lead; no tools, no prompt', () => {
    const out = templateMessages(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Time?' },
      ],
      { generic: true, tools: [TIME], prompt: 'Call functions when useful.' },
    );
    expect(out).toHaveLength(2);
    expect(out[0].content).toMatch(/^Be brief\.\n\nCall functions when useful\.\nThe functions are listed/);
    expect(templateMessages(conversation, { generic: true, tools: [] }).map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  });

  it("ChatTemplate.render: the fixture's template, which knows no tools, gets the generic prompt and the tags", () => {
    const config = JSON.parse(readFileSync('.fixtures/tiny/tokenizer_config.json', 'utf8')) as Record<string, unknown>;
    expect(templateKnowsTools(config.chat_template as string)).toBe(false);
    const template = ChatTemplate.fromConfig(config)!;
    const prompt = template.render({ messages: conversation, tools: [WEATHER] });
    expect(prompt).toContain(`<|im_start|>system\n${DEFAULT_TOOL_PROMPT}`);
    expect(prompt).toContain(
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}\n</tool_call>',
    );
    expect(prompt).toContain('<|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n<tool_response>\n12:00\n</tool_response>');
    expect(prompt.endsWith('<|im_start|>assistant\n')).toBe(true);
    // TGI's tool_prompt leads; without tools (tool_choice none) the history is still written in tags.
    expect(template.render({ messages: conversation, tools: [WEATHER], toolPrompt: 'Use a tool.' })).toContain('system\nUse a tool.\n');
    const history = template.render({ messages: conversation });
    expect(history).not.toContain('<tools>');
    expect(history).toContain('<|im_start|>user\n<tool_response>\n18 C');
  });

  it('ChatTemplate.render: a template that knows tools gets them as they are, and arguments as objects', () => {
    const source =
      '{% if tools %}{{ "TOOLS " + tools[0].function.name + "\\n" }}{% endif %}{% for m in messages %}{{ m.role }}: ' +
      '{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }} {{ c.function.arguments | tojson }};{% endfor %}' +
      '{% else %}{{ m.content }}{% endif %}{{ "\\n" }}{% endfor %}';
    const prompt = ChatTemplate.fromConfig({ chat_template: source })!.render({ messages: conversation.slice(0, 3), tools: [TIME] });
    expect(prompt).toBe(
      'TOOLS get_time\nuser: Weather in Paris and the time?\n' +
        'assistant: get_weather {"city": "Paris", "unit": "c"};get_time "not json";\ntool: 18 C\n',
    );
  });
});
