/**
 * Hostile input over real HTTP: a few thousand generated requests across every POST route — every
 * field set to every kind of wrong value, broken and oversized bodies, odd content types, wrong
 * methods. Each answer must be a 4xx JSON body in the route family's shape (or, for a request that
 * is valid by accident, a proper 200), never a 5xx and never a hang; the server stays healthy and
 * leaks no permit.
 *
 * Content type: bodies are parsed as JSON whatever the `Content-Type` says (or when it is missing),
 * as TGI clients always send JSON; a body that is not JSON is a 400 whatever its type.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { eventually, frameJson, readSse } from '../conformance/http-client.js';
import { startServer, type RunningServer } from '../conformance/servers.js';
import { TGI_PARAMETERS } from '../support/tgi-parameters.js';

type Family = 'tgi' | 'openai';

interface Case {
  name: string;
  path: string;
  family: Family;
  method?: string;
  body?: string | Buffer | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
  /** The value is of a type the field never takes: only a 4xx will do, never a 2xx. */
  invalid?: boolean;
}

/** Deep enough to overflow any recursive walk of the value on Node's default stack. */
const DEEP = 10_000;
const MARK = '\u0001HOSTILE\u0001';
const THREE_MB = 3_000_000;

/** Raw JSON texts, so that NaN, 1e309 and lone surrogates reach the server byte for byte. */
const BAD_VALUES: Record<string, string> = {
  'a string': '"str"',
  'an empty string': '""',
  'a long string': JSON.stringify('x'.repeat(100_000)),
  true: 'true',
  false: 'false',
  null: 'null',
  zero: '0',
  'negative zero': '-0',
  'a negative number': '-1',
  'a fraction': '1.5',
  'a huge number': '1e308',
  'a huge negative number': '-1e308',
  '1e309 (Infinity once parsed)': '1e309',
  'a huge integer': '1e20',
  'an unsafe integer': '9007199254740993',
  NaN: 'NaN',
  Infinity: 'Infinity',
  '-Infinity': '-Infinity',
  'an empty object': '{}',
  'an empty array': '[]',
  'a mixed array': '[1,"a",null,{}]',
  'a lone surrogate': '"\\ud800"',
  'a low surrogate and NUL': '"a\\udc00\\u0000b"',
  'objects nested 10 000 deep': '{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP),
  'arrays nested 10 000 deep': '['.repeat(DEEP) + ']'.repeat(DEEP),
  'a __proto__ key': '{"__proto__":{"polluted":1}}',
  'a constructor key': '{"constructor":{"prototype":{"polluted":1}}}',
};

/** Whole bodies that are not a request: broken JSON, JSON of the wrong kind, prototype tricks. */
const BAD_BODIES: Record<string, string | Buffer> = {
  empty: '',
  blank: '  \n ',
  'an unclosed object': '{',
  'a missing value': '{"inputs":}',
  'a trailing comma': '{"inputs":"Hi",}',
  'single quotes': "{'inputs':'Hi'}",
  'two documents': '{}{}',
  'a byte-order mark': '\ufeff{"inputs":"Hi"}',
  'form encoding': 'inputs=Hi&parameters=1',
  'bare NaN': 'NaN',
  'bare 1e309': '1e309',
  null: 'null',
  'a string': '"Hi"',
  'a number': '42',
  'an array': '[{"inputs":"Hi"}]',
  'an empty object': '{}',
  'invalid UTF-8': Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
  'invalid UTF-8 in a string': Buffer.concat([
    Buffer.from('{"inputs":"'),
    Buffer.from([0xc3, 0x28, 0xff]),
    Buffer.from('","parameters":{"max_new_tokens":1}}'),
  ]),
  'objects nested 10 000 deep': '{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP),
  'arrays nested 10 000 deep': '['.repeat(DEEP) + ']'.repeat(DEEP),
  'inputs under __proto__': '{"__proto__":{"inputs":"Hi","prompt":"Hi","messages":[{"role":"user","content":"Hi"}]}}',
  'inputs under constructor.prototype': '{"constructor":{"prototype":{"inputs":"Hi","prompt":"Hi"}}}',
};

/** Output constraints both OpenAI routes read (structured-output.ts). */
const OPENAI_CONSTRAINTS = [
  'response_format',
  'response_format.type',
  'response_format.json_schema',
  'response_format.json_schema.name',
  'response_format.json_schema.strict',
  'structured_outputs',
  'structured_outputs.json_object',
  'structured_outputs.regex',
  'structured_outputs.grammar',
  'structured_outputs.choice',
  'guided_regex',
  'guided_grammar',
  'guided_choice',
];

/** What a nested field needs around it to be read at all (a `json_schema` format, a tool). */
const CONTEXT: Array<[prefix: string, set: (body: Record<string, unknown>) => void]> = [
  // `stream_options` is only read with `stream: true`.
  ['stream_options.', (body) => (body.stream = true)],
  [
    'response_format.json_schema',
    (body) => (body.response_format = { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } }),
  ],
  ['tools.0.', (body) => (body.tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }])],
  ['grammar.', (body) => (body.grammar = { type: 'regex', value: 'a+' })],
];

const OPENAI_SHARED = [
  'model',
  'n',
  'presence_penalty',
  'logit_bias',
  'temperature',
  'top_p',
  'do_sample',
  'top_k',
  'typical_p',
  'max_completion_tokens',
  'max_tokens',
  'stop',
  'stop.0',
  'seed',
  'frequency_penalty',
  'repetition_penalty',
  'truncate',
  'watermark',
  'stream',
  'stream_options',
  'stream_options.include_usage',
];

type Kind = 'object' | 'array' | 'boolean' | 'integer' | 'number' | 'string' | 'string-or-object' | 'never';

/**
 * The one JSON type of each field with one (by its path below the route's body; unlisted fields take
 * several). `number` takes integers too; `never` is a field refused whatever its value. `null` is
 * "unset" everywhere, so it is always allowed.
 */
const KINDS: Record<string, Kind> = {
  inputs: 'string',
  parameters: 'object',
  stream: 'boolean',
  'parameters.stop.0': 'string',
  'parameters.best_of': 'integer',
  'parameters.temperature': 'number',
  'parameters.repetition_penalty': 'number',
  'parameters.frequency_penalty': 'number',
  'parameters.top_k': 'integer',
  'parameters.top_p': 'number',
  'parameters.typical_p': 'number',
  'parameters.do_sample': 'boolean',
  'parameters.max_new_tokens': 'integer',
  'parameters.return_full_text': 'boolean',
  'parameters.truncate': 'integer',
  'parameters.watermark': 'boolean',
  'parameters.details': 'boolean',
  'parameters.decoder_input_details': 'boolean',
  'parameters.seed': 'integer',
  'parameters.top_n_tokens': 'integer',
  'parameters.grammar': 'object',
  'parameters.adapter_id': 'string',
  model: 'string',
  n: 'integer',
  presence_penalty: 'number',
  logit_bias: 'object',
  temperature: 'number',
  top_p: 'number',
  do_sample: 'boolean',
  top_k: 'integer',
  typical_p: 'number',
  max_completion_tokens: 'integer',
  max_tokens: 'integer',
  'stop.0': 'string',
  seed: 'integer',
  frequency_penalty: 'number',
  repetition_penalty: 'number',
  truncate: 'integer',
  watermark: 'boolean',
  stream_options: 'object',
  'stream_options.include_usage': 'boolean',
  messages: 'array',
  'messages.0': 'object',
  'messages.0.role': 'string',
  'messages.0.name': 'string',
  'messages.0.tool_call_id': 'string',
  'messages.0.tool_calls': 'array',
  tools: 'array',
  'tools.0': 'object',
  response_format: 'object',
  'response_format.type': 'string',
  tool_choice: 'string-or-object',
  parallel_tool_calls: 'boolean',
  tool_prompt: 'string',
  'tools.0.type': 'string',
  'tools.0.function': 'object',
  'tools.0.function.name': 'string',
  'tools.0.function.description': 'string',
  'tools.0.function.parameters': 'object',
  'response_format.json_schema': 'object',
  'response_format.json_schema.name': 'string',
  'response_format.json_schema.strict': 'boolean',
  structured_outputs: 'object',
  'structured_outputs.json_object': 'boolean',
  'structured_outputs.regex': 'string',
  'structured_outputs.grammar': 'string',
  'structured_outputs.choice': 'array',
  guided_regex: 'string',
  guided_grammar: 'string',
  guided_choice: 'array',
  grammar: 'object',
  'grammar.value': 'string-or-object',
  chat_template_kwargs: 'object',
  'chat_template_kwargs.messages': 'never',
  'chat_template_kwargs.add_generation_prompt': 'never',
  suffix: 'never',
  echo: 'boolean',
  return_full_text: 'boolean',
  best_of: 'integer',
};
/** Fields whose JSON type differs by route. */
const ROUTE_KINDS: Record<string, Record<string, Kind>> = {
  '/v1/chat/completions': { logprobs: 'boolean', top_logprobs: 'integer' },
  '/v1/completions': { logprobs: 'integer', top_logprobs: 'never' },
};

/** The JSON type of a raw value, or null for text that is not JSON (a 400 anyway). */
function kindOf(raw: string): Exclude<Kind, 'never' | 'string-or-object'> | 'null' | 'non-finite' | null {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isSafeInteger(value) ? 'integer' : Number.isFinite(value) ? 'number' : 'non-finite';
  return typeof value as 'object' | 'boolean' | 'string';
}

function isInvalid(path: string, field: string, raw: string): boolean {
  const expected = ROUTE_KINDS[path]?.[field] ?? KINDS[field];
  const actual = kindOf(raw);
  if (expected === undefined || actual === null || actual === 'null') return false;
  if (expected === 'never') return true;
  if (expected === 'string-or-object') return actual !== 'string' && actual !== 'object';
  return !(actual === expected || (expected === 'number' && actual === 'integer'));
}

interface Route {
  path: string;
  family: Family;
  /** A valid body; `long` is one whose prompt leaves 4 tokens of budget. */
  base(long: boolean): Record<string, unknown>;
  fields: string[];
  /** Fields whose bad value can lift the token limit (`null` means "fill the budget"): they get the long prompt. */
  unbounded: string[];
}

let engine: Engine;
let server: RunningServer;
/** A TGI prompt of 2044 tokens and a chat message whose templated prompt is as long: max_total_tokens is 2048. */
let longText: string;
let longChat: string;

const ROUTES: Route[] = [
  ...['/', '/generate', '/generate_stream'].map((path): Route => ({
    path,
    family: 'tgi',
    base: (long) => ({ inputs: long ? longText : 'Hi', parameters: { max_new_tokens: 1 } }),
    fields: ['inputs', 'parameters', 'stream', 'parameters.stop.0', ...TGI_PARAMETERS.map((p) => `parameters.${p}`)],
    unbounded: ['parameters', 'parameters.max_new_tokens'],
  })),
  {
    path: '/tokenize',
    family: 'tgi',
    base: () => ({ inputs: 'Hi', parameters: { max_new_tokens: 1 } }),
    fields: ['inputs', 'parameters', 'parameters.stop.0', ...TGI_PARAMETERS.map((p) => `parameters.${p}`)],
    unbounded: [],
  },
  {
    path: '/v1/chat/completions',
    family: 'openai',
    base: (long) => ({ messages: [{ role: 'user', content: long ? longChat : 'Hi' }], max_tokens: 1 }),
    fields: [
      'messages',
      'messages.0',
      'messages.0.role',
      'messages.0.content',
      'messages.0.name',
      'tools',
      'tools.0',
      'tools.0.type',
      'tools.0.function',
      'tools.0.function.name',
      'tools.0.function.description',
      'tools.0.function.parameters',
      'tool_choice',
      'parallel_tool_calls',
      'tool_prompt',
      ...OPENAI_CONSTRAINTS,
      'logprobs',
      'top_logprobs',
      'messages.0.tool_call_id',
      'messages.0.tool_calls',
      'chat_template_kwargs',
      'chat_template_kwargs.messages',
      'chat_template_kwargs.add_generation_prompt',
      'chat_template_kwargs.enable_thinking',
      ...OPENAI_SHARED,
    ],
    unbounded: ['max_tokens'],
  },
  {
    path: '/v1/completions',
    family: 'openai',
    base: (long) => ({ prompt: long ? longText : 'Hi', max_tokens: 1 }),
    fields: [
      'prompt',
      'suffix',
      'logprobs',
      'top_logprobs',
      'best_of',
      'echo',
      'return_full_text',
      'grammar',
      'grammar.value',
      ...OPENAI_CONSTRAINTS,
      ...OPENAI_SHARED,
    ],
    unbounded: ['max_tokens'],
  },
];

/** Sets a dotted path (`messages.0.role`), creating objects and arrays on the way. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node: any = target;
  keys.slice(0, -1).forEach((key, i) => {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = /^\d+$/.test(keys[i + 1]) ? [] : {};
    node = node[key];
  });
  node[keys.at(-1)!] = value;
}

function fieldCases(): Case[] {
  return ROUTES.flatMap((route) =>
    route.fields.flatMap((field) =>
      Object.entries(BAD_VALUES).map(([label, raw]) => {
        const body = structuredClone(route.base(route.unbounded.includes(field)));
        for (const [prefix, set] of CONTEXT) if (field.startsWith(prefix)) set(body);
        setPath(body, field, MARK);
        const text = JSON.stringify(body).replace(JSON.stringify(MARK), raw);
        const invalid = isInvalid(route.path, field, raw);
        return { name: `${route.path} ${field} = ${label}`, path: route.path, family: route.family, body: text, invalid };
      }),
    ),
  );
}

/**
 * Values of the right type but out of range, on fields that a greedy OpenAI request drops (the tiny
 * model's generation_config.json says `do_sample: false`): sampling would refuse them, so must greedy.
 */
function rangeCases(): Case[] {
  const values: Record<string, unknown[]> = { typical_p: [0, -1, 1.5, 5], top_k: [0, -1, 2 ** 31] };
  return ['/v1/chat/completions', '/v1/completions'].flatMap((path) => {
    const route = ROUTES.find((r) => r.path === path)!;
    return Object.entries(values).flatMap(([field, list]) =>
      list.flatMap((value) =>
        [{}, { temperature: 0 }, { top_p: 0 }].map((greedy) => ({
          name: `${path} ${field} = ${value} ${JSON.stringify(greedy)}`,
          path,
          family: 'openai' as const,
          body: JSON.stringify({ ...route.base(false), ...greedy, [field]: value }),
          invalid: true,
        })),
      ),
    );
  });
}

function bodyCases(): Case[] {
  return ROUTES.flatMap((route) => [
    ...Object.entries(BAD_BODIES).map(([label, body]) => ({
      name: `${route.path} body: ${label}`,
      path: route.path,
      family: route.family,
      body,
    })),
    {
      name: `${route.path} JSON body of 3 MB`,
      path: route.path,
      family: route.family,
      body: JSON.stringify({ ...route.base(false), pad: 'x'.repeat(THREE_MB) }),
    },
    { name: `${route.path} garbage body of 3 MB`, path: route.path, family: route.family, body: Buffer.alloc(THREE_MB, 0xff) },
    {
      name: `${route.path} chunked body of 3 MB (no Content-Length)`,
      path: route.path,
      family: route.family,
      body: chunked(THREE_MB),
    },
  ]);
}

/** The same valid body under every content type, or none: all parsed as JSON. */
function contentTypeCases(): Case[] {
  const types = [
    undefined,
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/json; charset=latin1',
    'image/png',
  ];
  return ROUTES.flatMap((route) =>
    types.map((type) => ({
      name: `${route.path} with content type ${type ?? '(none)'}`,
      path: route.path,
      family: route.family,
      // A Buffer body: fetch adds no content type of its own.
      body: Buffer.from(JSON.stringify(route.base(false))),
      headers: type ? { 'content-type': type } : undefined,
    })),
  );
}

function methodCases(): Case[] {
  const post = ROUTES.flatMap((route) =>
    ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'].map((method) => ({
      name: `${method} ${route.path}`,
      path: route.path,
      family: route.family,
      method,
    })),
  );
  const get = (['/info', '/health', '/metrics', '/v1/models'] as const).map((path) => ({
    name: `POST ${path}`,
    path,
    family: (path === '/v1/models' ? 'openai' : 'tgi') as Family,
    method: 'POST',
    body: '{}',
  }));
  return [...post, ...get];
}

function chunked(size: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= size) return controller.close();
      controller.enqueue(chunk);
      sent += chunk.length;
    },
  });
}

interface Outcome {
  status: number;
  contentType: string | null;
  allow: string | null;
  text: string;
}

/** The answer; a hang (20 s) or a broken connection is status 0, which no check accepts. */
async function send(c: Case): Promise<Outcome> {
  try {
    const res = await fetch(server.url + c.path, {
      method: c.method ?? 'POST',
      headers: c.body === undefined || Buffer.isBuffer(c.body) ? c.headers : { 'content-type': 'application/json', ...c.headers },
      body: c.body as RequestInit['body'],
      ...(c.body instanceof ReadableStream ? { duplex: 'half' } : {}),
      signal: AbortSignal.timeout(20_000),
    } as RequestInit);
    return { status: res.status, contentType: res.headers.get('content-type'), allow: res.headers.get('allow'), text: await res.text() };
  } catch (error) {
    return { status: 0, contentType: null, allow: null, text: String((error as Error).cause ?? error) };
  }
}

/** Runs `task` over `items`, at most `limit` at a time. */
async function pool<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const runner = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  };
  await Promise.all(Array.from({ length: limit }, runner));
  return results;
}

function expectErrorShape(family: Family, json: any): void {
  if (family === 'tgi') {
    expect(Object.keys(json).sort()).toEqual(['error', 'error_type']);
    expect(typeof json.error).toBe('string');
    expect(typeof json.error_type).toBe('string');
  } else {
    expect(Object.keys(json)).toEqual(['error']);
    expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(typeof json.error.message).toBe('string');
    expect(typeof json.error.type).toBe('string');
  }
}

/** A 200 to a request that was valid by accident must still be a whole, proper answer. */
function expectSuccess(c: Case, o: Outcome): void {
  if (o.contentType?.startsWith('text/event-stream')) {
    const frames = o.text
      .split('\n\n')
      .filter(Boolean)
      .map((f) => f + '\n\n');
    if (c.family === 'tgi') {
      expect(frames.every((f) => !('error' in frameJson(f)))).toBe(true);
      expect(typeof frameJson(frames.at(-1)!).generated_text).toBe('string');
    } else {
      expect(frames.at(-1)).toBe('data: [DONE]\n\n');
      expect(frames.slice(0, -1).every((f) => !('error' in frameJson(f)))).toBe(true);
    }
    return;
  }
  expect(o.contentType).toBe('application/json');
  const json = JSON.parse(o.text);
  if (c.path === '/tokenize') expect(Array.isArray(json)).toBe(true);
  else if (c.path === '/') expect(typeof json[0].generated_text).toBe('string');
  else if (c.family === 'tgi') expect(typeof json.generated_text).toBe('string');
  else expect(json.choices).toHaveLength(1);
}

function check(c: Case, o: Outcome): void {
  expect(o.status).toBeLessThan(500);
  if (c.invalid) expect(o.status, 'a value of a type the field never takes').not.toBe(200);
  if (o.status === 200) return expectSuccess(c, o);
  expect([400, 405, 413, 422]).toContain(o.status);
  if (c.method === 'HEAD') return; // no body by definition
  expect(o.contentType).toBe('application/json');
  expectErrorShape(c.family, JSON.parse(o.text));
}

async function promptOfLength(tokens: number, chat: boolean): Promise<string> {
  const length = async (text: string) =>
    (await engine.tokenize(chat ? await engine.applyChatTemplate([{ role: 'user', content: text }], { addGenerationPrompt: true }) : text))
      .length;
  // ' a' is one token of the fixture's BPE, so each repetition adds exactly one.
  let repeats = tokens - (await length('a'));
  while ((await length('a' + ' a'.repeat(repeats))) > tokens) repeats -= 1;
  const text = 'a' + ' a'.repeat(repeats);
  expect(await length(text)).toBe(tokens);
  return text;
}

beforeAll(async () => {
  engine = await createEngine({ model: await ensureFixtureModel('tiny') });
  server = await startServer({ framework: 'express5', mount: 'root' }, { engine, maxConcurrentRequests: 64 });
  longText = await promptOfLength(2044, false);
  longChat = await promptOfLength(2044, true);
});

afterAll(async () => {
  await server?.close();
  await engine?.close();
});

describe('hostile input', () => {
  it('answers thousands of malformed requests with 4xx JSON in the route family shape, never a 5xx or a hang', async () => {
    const cases = [...fieldCases(), ...rangeCases(), ...bodyCases(), ...contentTypeCases(), ...methodCases()];
    expect(cases.length).toBeGreaterThan(1000);
    const outcomes = await pool(cases, 16, send);
    const failures: string[] = [];
    cases.forEach((c, i) => {
      try {
        check(c, outcomes[i]);
      } catch (error) {
        failures.push(`${c.name}: ${(error as Error).message.split('\n')[0]} — ${outcomes[i].text.slice(0, 200)}`);
      }
    });
    expect(failures).toEqual([]);

    // What the cases say the server decided, spot-checked.
    const outcome = (name: string) => outcomes[cases.findIndex((c) => c.name === name)];
    expect(outcome('/generate JSON body of 3 MB').status).toBe(413);
    expect(outcome('/v1/completions chunked body of 3 MB (no Content-Length)').status).toBe(413);
    expect(outcome('/generate body: bare NaN').status).toBe(400);
    expect(JSON.parse(outcome('/generate body: bare NaN').text).error_type).toBe('invalid_request');
    expect(outcome('/generate with content type text/plain').status).toBe(200);
    expect(outcome('/v1/chat/completions with content type (none)').status).toBe(200);
    expect(outcome('/generate parameters.top_k = 1e309 (Infinity once parsed)').status).toBe(422);
    expect(outcome('DELETE /v1/chat/completions')).toMatchObject({ status: 405, allow: 'POST' });
    expect(JSON.parse(outcome('DELETE /v1/chat/completions').text).error.type).toBe('invalid_request_error');
    expect(outcome('POST /metrics')).toMatchObject({ status: 405, allow: 'GET' });
    // Found answered 200 before: /tokenize took any parameters, /v1/completions ignored top_logprobs.
    expect(cases.filter((c) => c.invalid).length).toBeGreaterThan(1000);
    expect(outcome('/tokenize parameters = a string').status).toBe(422);
    expect(outcome('/tokenize parameters.temperature = a string').status).toBe(422);
    expect(outcome('/v1/completions top_logprobs = zero').status).toBe(422);
    expect(outcome('/v1/completions logprobs = true').status).toBe(422);
    expect(outcome('/v1/chat/completions chat_template_kwargs = a string').status).toBe(422);
    expect(outcome('/v1/chat/completions chat_template_kwargs.messages = an empty array').status).toBe(422);
    // Found answered 200 later: flags read without a type check, ranges skipped when greedy dropped the field.
    expect(outcome('/v1/chat/completions structured_outputs.json_object = a string').status).toBe(422);
    expect(outcome('/v1/completions response_format.json_schema.strict = zero').status).toBe(422);
    expect(outcome('/v1/chat/completions typical_p = 5 {}').status).toBe(422);
    expect(outcome('/v1/completions top_k = 0 {"temperature":0}').status).toBe(422);
    // Some 3,000 requests, a few hundred of them valid by accident and generating: a busy machine needs the time.
  }, 240_000);

  it('survives uploads that stop half way', async () => {
    await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) =>
          new Promise<void>((resolve) => {
            const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
              socket.write(
                `POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs":"Hi`,
              );
              setTimeout(() => socket.destroy(), 5 + i);
            });
            socket.on('close', () => resolve());
            socket.on('error', () => {});
          }),
      ),
    );
  });

  it('is healthy afterwards: /health is 200, a normal request works, nothing is in flight, nothing was polluted', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const res = await fetch(`${server.url}/generate_stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 5, do_sample: false } }),
    });
    const frames = await readSse(res);
    expect(frames).toHaveLength(5);
    expect(typeof frameJson(frames[4]).generated_text).toBe('string');
    expect(
      await eventually(
        async () => ((await (await fetch(`${server.url}/info`)).json()) as { in_flight_requests: number }).in_flight_requests === 0,
      ),
    ).toBe(true);
    expect(server.handler.admission.inFlight).toBe(0);
    expect(await eventually(() => engine.stats().batchSize === 0 && engine.stats().queueSize === 0)).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
