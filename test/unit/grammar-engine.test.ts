/**
 * The grammar engine on the real `@mlc-ai/web-xgrammar` WASM and the tiny fixture's vocabulary:
 * each trap of structured-output.md §3.1 has a test here, and constrained decodes driven by random
 * logits prove that whatever comes out matches its grammar and ends with the stop token.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createGrammarEngine, type GrammarEngine, type GrammarSpec } from '../../src/grammar/index.js';
import { GrammarRowMatcher } from '../../src/grammar/matcher.js';
import { createXgrammarRuntime } from '../../src/grammar/xgrammar-binding.js';
import { createTokenizer, loadTokenizer, type TextTokenizer } from '../../src/text/tokenizer.js';
import { SENTENCE_PIECE_CONFIG, sentencePieceTokenizerJson } from '../fixtures/text/tokenizers.js';
import { constrainedDecode } from './grammar-decode.js';

const VOCAB = 512;
const EOS = 2;
let tokenizerJson: Record<string, unknown>;
let tokenizer: TextTokenizer;
let engine: GrammarEngine;

beforeAll(async () => {
  const dir = await ensureFixtureModel('tiny');
  tokenizerJson = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  tokenizer = await loadTokenizer(dir);
  engine = await createGrammarEngine({ tokenizerJson, vocabSize: VOCAB, stopTokenIds: [EOS] });
});

/** Generated text of a decode that must have ended on eos. */
async function generate(spec: GrammarSpec, seed: number, on: GrammarEngine = engine, decoder: TextTokenizer = tokenizer): Promise<string> {
  const matcher = await on.createMatcher(spec);
  try {
    const { ids, ended } = constrainedDecode(matcher, { seed, vocabSize: on.vocabSize, stopTokenIds: [EOS] });
    expect(ended).toBe(true);
    return decoder.decode(ids);
  } finally {
    matcher.release();
  }
}

const SEEDS = [1, 2, 3, 4, 5, 6];

describe('loading', () => {
  it('a plain import of @mlc-ai/web-xgrammar fails in Node (hence the CommonJS loader)', () => {
    const script = "import('@mlc-ai/web-xgrammar').then(() => console.log('loaded'), (e) => console.log(e.message))";
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), encoding: 'utf8' });
    expect(out).toContain('require is not defined in ES module scope');
  });

  it('the loader makes independent WASM instances', async () => {
    const [a, b] = await Promise.all([createXgrammarRuntime(), createXgrammarRuntime()]);
    expect(a.wasm).not.toBe(b.wasm);
    expect(a.wasm.HEAP8.buffer).not.toBe(b.wasm.HEAP8.buffer);
    expect(() => a.wasm.Grammar.FromEBNF('root ::= (', 'root')).toThrow(/Aborted/);
    expect(a.takeError()).toMatch(/EBNF parser error/);
    b.wasm.Grammar.FromEBNF('root ::= "x"', 'root').delete();
    expect(b.takeError()).toBeNull();
  });
});

describe('special tokens', () => {
  const schema: GrammarSpec = { type: 'json_schema', schema: { type: 'object', properties: { s: { type: 'string' } }, required: ['s'] } };
  const insideString = () => tokenizer.encode('{"s": "', { addSpecialTokens: false });

  it('are never allowed inside a JSON string: they are blanked in the grammar vocabulary', async () => {
    const matcher = await engine.createMatcher(schema);
    for (const id of insideString()) expect(matcher.accept(id)).toBe(true);
    matcher.fillMask();
    expect([0, 1, 2].map((id) => matcher.allows(id))).toEqual([false, false, false]);
    expect(matcher.allows(tokenizer.encode('a', { addSpecialTokens: false })[0])).toBe(true);
    matcher.release();
  });

  it('(the trap) would be allowed there if passed to xgrammar with their text', async () => {
    const { wasm } = await createXgrammarRuntime();
    const vocab = Array<string>(VOCAB).fill('');
    for (const [token, id] of Object.entries((tokenizerJson.model as { vocab: Record<string, number> }).vocab)) vocab[id] = token;
    const tokens = wasm.vecStringFromJSArray(vocab);
    const stops = wasm.vecIntFromJSArray([EOS]);
    const info = new wasm.TokenizerInfo(tokens, 'BYTE_LEVEL', VOCAB, stops, false);
    const compiler = new wasm.GrammarCompiler(info, 1, false);
    const ebnf = wasm._JSONSchemaToEBNF(
      JSON.stringify(schema.type === 'json_schema' && schema.schema),
      false,
      undefined,
      { first: ', ', second: ': ' },
      true,
      undefined,
      wasm.JSONFormat.kJSON,
    );
    const grammar = wasm.Grammar.FromEBNF(ebnf, 'root');
    const matcher = new GrammarRowMatcher(
      wasm,
      new wasm.GrammarMatcher(compiler.CompileGrammar(grammar), undefined, false, -1),
      VOCAB,
      () => {},
    );
    for (const id of insideString()) expect(matcher.accept(id)).toBe(true);
    matcher.fillMask();
    expect([0, 1].map((id) => matcher.allows(id))).toEqual([true, true]);
  });

  it('keeps a special token that the tool-call format writes', async () => {
    const json = {
      ...tokenizerJson,
      added_tokens: [...(tokenizerJson.added_tokens as object[]), { id: VOCAB, content: '<tool_call>', special: true }],
    };
    const withTag = await createGrammarEngine({
      tokenizerJson: json,
      vocabSize: VOCAB + 1,
      stopTokenIds: [EOS],
      formatTexts: ['<tool_call>'],
    });
    const matcher = await withTag.createMatcher({
      type: 'structural_tag',
      triggers: ['<tool_call>'],
      tags: [{ begin: '<tool_call>\n{"name": "f", "arguments": ', schema: { type: 'object' }, end: '}\n</tool_call>' }],
      atLeastOne: true,
      stopAfterFirst: true,
    });
    matcher.fillMask();
    expect(matcher.allows(VOCAB)).toBe(true);
    expect(matcher.accept(VOCAB)).toBe(true);
    matcher.release();
  });
});

describe('constrained greedy decoding over random logits', () => {
  const EVENT = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    type: 'object',
    properties: {
      title: { type: 'string', maxLength: 40 },
      kind: { enum: ['meeting', 'call', 'trip'] },
      attendees: {
        type: 'array',
        maxItems: 3,
        items: {
          type: 'object',
          properties: { name: { type: 'string' }, age: { type: 'integer', minimum: 0, maximum: 120 } },
          required: ['name', 'age'],
          additionalProperties: false,
        },
      },
      location: {
        anyOf: [
          { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
          { type: 'null' },
        ],
      },
      day: { type: 'string', format: 'date' },
      confirmed: { type: 'boolean' },
    },
    required: ['title', 'kind', 'attendees', 'location', 'day', 'confirmed'],
    additionalProperties: false,
  };

  it.each(SEEDS)('json_schema (seed %i): valid against the schema, compact', async (seed) => {
    const text = await generate({ type: 'json_schema', schema: EVENT }, seed);
    expect(text).not.toMatch(/\n/);
    const value = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(value)).toEqual(EVENT.required);
    expect(typeof value.title).toBe('string');
    expect(EVENT.properties.kind.enum).toContain(value.kind);
    const attendees = value.attendees as Array<{ name: unknown; age: number }>;
    expect(attendees.length).toBeLessThanOrEqual(3);
    for (const a of attendees) {
      expect(Object.keys(a)).toEqual(['name', 'age']);
      expect(typeof a.name).toBe('string');
      expect(Number.isInteger(a.age) && a.age >= 0 && a.age <= 120).toBe(true);
    }
    if (value.location !== null) expect(typeof (value.location as { city: unknown }).city).toBe('string');
    expect(value.day).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(typeof value.confirmed).toBe('boolean');
  });

  it.each(SEEDS)('json_object (seed %i): a JSON object', async (seed) => {
    const value = JSON.parse(await generate({ type: 'json_schema', schema: { type: 'object' } }, seed)) as unknown;
    expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
  });

  it.each(SEEDS)('regex (seed %i): matched in full', async (seed) => {
    const pattern = '(?:[A-Z][a-z]{1,8} ){1,3}\\d{1,3}-\\d{2}(?:\\.\\d+)?';
    expect(await generate({ type: 'regex', pattern }, seed)).toMatch(new RegExp(`^(?:${pattern})$`));
  });

  it.each(SEEDS)('choice (seed %i): one of the strings as they are', async (seed) => {
    const choices = ['positive', 'negative', 'say "hi"', 'multi\nline', 'héllo'];
    expect(choices).toContain(await generate({ type: 'choice', choices }, seed));
  });

  it.each(SEEDS)('EBNF grammar (seed %i)', async (seed) => {
    const grammar = 'root ::= "(" num (" + " num)* ")"\nnum ::= [1-9] [0-9]*';
    expect(await generate({ type: 'grammar', grammar }, seed)).toMatch(/^\([1-9][0-9]*(?: \+ [1-9][0-9]*)*\)$/);
  });

  it("allows whitespace between JSON tokens only with whitespace 'any'", async () => {
    const spec: GrammarSpec = { type: 'json_schema', schema: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] } };
    const loose = await createGrammarEngine({ tokenizerJson, vocabSize: VOCAB, stopTokenIds: [EOS], whitespace: 'any' });
    const texts = { compact: [] as string[], any: [] as string[] };
    for (const seed of SEEDS) {
      texts.compact.push(await generate(spec, seed));
      texts.any.push(await generate(spec, seed, loose));
    }
    for (const text of [...texts.compact, ...texts.any]) expect(Object.keys(JSON.parse(text) as object)).toEqual(['a']);
    expect(texts.compact.every((text) => /^\{"a": -?\d+\}$/.test(text))).toBe(true);
    expect(texts.any.some((text) => /\s/.test(text))).toBe(true);
  });

  it('a string under maxLength may hold escapes: the bound is dropped, not enforced (xgrammar#800)', async () => {
    const matcher = await engine.createMatcher({ type: 'json_schema', schema: { type: 'string', maxLength: 200 } });
    for (const id of tokenizer.encode('"say \\"hi\\"\\nbye"', { addSpecialTokens: false })) expect(matcher.accept(id)).toBe(true);
    expect(matcher.accept(EOS)).toBe(true);
    expect(matcher.isTerminated()).toBe(true);
    matcher.release();
  });

  it('(the trap) with maxLength passed to xgrammar the same escapes are refused', async () => {
    const { wasm } = await createXgrammarRuntime();
    const info = new wasm.TokenizerInfo(wasm.vecStringFromJSArray(Array(VOCAB).fill('a')), 'RAW', VOCAB, undefined, false);
    const compiler = new wasm.GrammarCompiler(info, 1, false);
    const compile = (schema: object) => {
      const ebnf = wasm._JSONSchemaToEBNF(
        JSON.stringify(schema),
        false,
        undefined,
        { first: ', ', second: ': ' },
        true,
        undefined,
        wasm.JSONFormat.kJSON,
      );
      return new wasm.GrammarMatcher(compiler.CompileGrammar(wasm.Grammar.FromEBNF(ebnf, 'root')), undefined, false, -1);
    };
    expect(compile({ type: 'string', maxLength: 5 }).AcceptString('"a\\nb"', false)).toBe(false);
    expect(compile({ type: 'string' }).AcceptString('"a\\nb"', false)).toBe(true);
  });

  it('non-negative integer bounds hold exactly (xgrammar 0.1.27 lets maximum 120 through to 129; the range is split)', async () => {
    const accepts = async (schema: { [key: string]: unknown }, value: number) => {
      const matcher = await engine.createMatcher({ type: 'json_schema', schema });
      try {
        return tokenizer.encode(String(value), { addSpecialTokens: false }).every((id) => matcher.accept(id)) && matcher.accept(EOS);
      } finally {
        matcher.release();
      }
    };
    const ranges: Array<[{ [key: string]: unknown }, number, number]> = [
      [{ type: 'integer', minimum: 0, maximum: 120 }, 0, 120],
      [{ type: 'integer', minimum: 102, maximum: 149 }, 102, 149],
      [{ type: 'integer', minimum: 7, maximum: 1234 }, 7, 1234],
      [{ type: 'integer', exclusiveMinimum: 12, exclusiveMaximum: 307 }, 13, 306],
      [{ type: 'integer', minimum: 101.5, maximum: 150.5 }, 102, 150],
      // Below zero only the upper bound is exact (see integerRange in src/grammar/preflight.ts).
      [{ type: 'integer', minimum: -99, maximum: 563 }, -99, 563],
    ];
    for (const [schema, min, max] of ranges) {
      const wrong: number[] = [];
      for (let value = min - 25; value <= max + 25; value++)
        if ((await accepts(schema, value)) !== (value >= min && value <= max)) wrong.push(value);
      expect(wrong, JSON.stringify(schema)).toEqual([]);
    }
  });

  it('an empty language is refused instead of leaving a row with no allowed token', async () => {
    await expect(engine.createMatcher({ type: 'grammar', grammar: 'root ::= root "x"' })).rejects.toThrow(/matches no text/);
    expect(engine.stats().liveMatchers).toBe(0);
  });
});

describe('a SentencePiece byte-fallback vocabulary', () => {
  const json = sentencePieceTokenizerJson();
  const spTokenizer = createTokenizer(json, SENTENCE_PIECE_CONFIG);
  const vocabSize = spTokenizer.vocabSize;
  let sp: GrammarEngine;
  beforeAll(async () => {
    sp = await createGrammarEngine({ tokenizerJson: json, vocabSize, stopTokenIds: [EOS] });
  });

  it.each(SEEDS)('JSON with spaces and byte tokens (seed %i) decodes to valid JSON', async (seed) => {
    const schema = {
      type: 'object',
      properties: { words: { type: 'array', items: { type: 'string' }, maxItems: 4 }, n: { type: 'integer' } },
      required: ['words', 'n'],
    };
    const value = JSON.parse(await generate({ type: 'json_schema', schema }, seed, sp, spTokenizer)) as { words: unknown[]; n: number };
    expect(value.words.every((w) => typeof w === 'string')).toBe(true);
    expect(Number.isInteger(value.n)).toBe(true);
  });

  it.each(SEEDS)('a regex that needs "▁" as a space and <0x0A> as a newline (seed %i)', async (seed) => {
    expect(await generate({ type: 'regex', pattern: '[a-z]+ [a-z]+\\n\\d{2}' }, seed, sp, spTokenizer)).toMatch(/^[a-z]+ [a-z]+\n\d{2}$/);
  });

  it('(the trap) read as a raw vocabulary, "▁" is no space and <0x0A> no newline', async () => {
    const { wasm } = await createXgrammarRuntime();
    const vocab = Array<string>(vocabSize).fill('');
    for (const [token, id] of Object.entries((json.model as { vocab: Record<string, number> }).vocab)) if (id > 2) vocab[id] = token;
    const info = new wasm.TokenizerInfo(wasm.vecStringFromJSArray(vocab), 'RAW', vocabSize, wasm.vecIntFromJSArray([EOS]), false);
    const compiler = new wasm.GrammarCompiler(info, 1, false);
    const matcher = new GrammarRowMatcher(
      wasm,
      new wasm.GrammarMatcher(compiler.CompileGrammar(wasm.Grammar.FromEBNF('root ::= " " | "\\n"', 'root')), undefined, false, -1),
      vocabSize,
      () => {},
    );
    matcher.fillMask();
    const space = (json.model as { vocab: Record<string, number> }).vocab['▁'];
    expect(matcher.allows(space)).toBe(false);
    expect(matcher.allows(3 + 0x0a)).toBe(false);
    const right = await sp.createMatcher({ type: 'grammar', grammar: 'root ::= " " | "\\n"' });
    right.fillMask();
    expect(right.allows(space)).toBe(true);
    expect(right.allows(3 + 0x0a)).toBe(true);
    right.release();
  });
});

describe('screening bad grammars', () => {
  function badGrammar(i: number): GrammarSpec {
    switch (i % 10) {
      case 0:
        return { type: 'regex', pattern: `(${i}` };
      case 1:
        return { type: 'regex', pattern: `(?=${i})x` };
      case 2:
        return { type: 'grammar', grammar: `root ::= (${i}` };
      case 3:
        return { type: 'grammar', grammar: `root ::= rule${i}` };
      case 4:
        return { type: 'json_schema', schema: { type: `widget${i}` } };
      case 5:
        return { type: 'json_schema', schema: { type: 'integer', minimum: i + 10, maximum: i } };
      case 6:
        return { type: 'json_schema', schema: { $ref: `#/$defs/missing${i}` } };
      case 7:
        return { type: 'json_schema', schema: { enum: Array.from({ length: 5000 }, (_, k) => k + i) } };
      case 8:
        return { type: 'regex', pattern: `a{${100000 + i}}` };
      default:
        return { type: 'json_schema', schema: { type: 'object', description: 'x'.repeat(10_000_000 + i) } };
    }
  }

  it('200 bad grammars are each refused with a 422, and valid grammars work afterwards', async () => {
    const before = engine.stats();
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const started = performance.now();
      const error = await engine.createMatcher(badGrammar(i)).then(
        () => null,
        (e: unknown) => e,
      );
      times.push(performance.now() - started);
      expect(ValidationError.isInstance(error), `grammar ${i}`).toBe(true);
      expect((error as ValidationError).status).toBe(422);
    }
    const after = engine.stats();
    // Half of them needed xgrammar to refuse them; the serving instance compiled none of them.
    expect(after.rejected - before.rejected).toBe(120);
    expect(after.compiles).toBe(before.compiles);
    // With its stack pointer put back after each abort, one screening instance takes them all (its successor waits, warm).
    expect(after.screenInstances - before.screenInstances).toBeLessThanOrEqual(1);
    times.sort((a, b) => a - b);
    console.log(`200 bad grammars: p50 ${times[100].toFixed(1)} ms, p95 ${times[190].toFixed(1)} ms, max ${times[199].toFixed(1)} ms`);
    expect(times[199]).toBeLessThan(5000);

    expect(await generate({ type: 'regex', pattern: '\\d{4}-\\d{2}-\\d{2}T' }, 9)).toMatch(/^\d{4}-\d{2}-\d{2}T$/);
    const value = JSON.parse(
      await generate({ type: 'json_schema', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } }, 9),
    );
    expect(typeof value.ok).toBe('boolean');
  });

  it("names xgrammar's reason and the request field", async () => {
    const error = await engine.createMatcher({ type: 'regex', pattern: 'a(b' }, 'structured_outputs.regex').catch((e: unknown) => e);
    expect((error as ValidationError).message).toBe(
      'Input validation error: grammar is not valid: Regex parsing error at position 4: The parenthesis is not closed.',
    );
    expect((error as ValidationError).param).toBe('structured_outputs.regex');
  });
});

describe('compile cache and WASM memory', () => {
  const schema = (i: number): GrammarSpec => ({
    type: 'json_schema',
    schema: {
      type: 'object',
      properties: { [`key${i}`]: { enum: Array.from({ length: 200 }, (_, k) => `value-${i}-${k}`) } },
      required: [`key${i}`],
    },
  });

  it('holds at most cacheSize compiled grammars, frees the evicted ones, and WASM memory stops growing', async () => {
    const compiled: number[] = [];
    const small = await createGrammarEngine({
      tokenizerJson,
      vocabSize: VOCAB,
      stopTokenIds: [EOS],
      cacheSize: 4,
      onCompile: (s) => compiled.push(s),
    });
    const memory: number[] = [];
    for (let i = 0; i < 60; i++) {
      (await small.createMatcher(schema(i))).release();
      if (i === 19 || i === 59) memory.push(small.stats().wasmBytes);
    }
    const stats = small.stats();
    expect(stats).toMatchObject({ cached: 4, evictions: 56, compiles: 60, cacheHits: 0, liveMatchers: 0 });
    expect(compiled).toHaveLength(60);
    expect(stats.compileSeconds).toBeCloseTo(
      compiled.reduce((a, b) => a + b, 0),
      6,
    );
    console.log(`WASM memory after 20 / 60 distinct grammars (cache 4): ${memory.map((m) => (m / 2 ** 20).toFixed(1)).join(' / ')} MiB`);
    expect(memory[1]).toBe(memory[0]);

    (await small.createMatcher(schema(59))).release();
    expect(small.stats()).toMatchObject({ cacheHits: 1, compiles: 60 });
  });

  it('a grammar evicted while in use keeps working until its last matcher is released', async () => {
    const one = await createGrammarEngine({ tokenizerJson, vocabSize: VOCAB, stopTokenIds: [EOS], cacheSize: 1 });
    const held = await one.createMatcher({ type: 'regex', pattern: '[ab]{3}' });
    (await one.createMatcher({ type: 'regex', pattern: '[cd]{3}' })).release();
    expect(one.stats().cached).toBe(1);
    const { ids, ended } = constrainedDecode(held, { seed: 3, vocabSize: VOCAB, stopTokenIds: [EOS] });
    expect(ended).toBe(true);
    expect(tokenizer.decode(ids)).toMatch(/^[ab]{3}$/);
    held.release();
    held.release();
    expect(one.stats()).toMatchObject({ cached: 1, liveMatchers: 0 });
  });

  it('the same new grammar requested at once is compiled once', async () => {
    const before = engine.stats().compiles;
    const matchers = await Promise.all(Array.from({ length: 4 }, () => engine.createMatcher({ type: 'regex', pattern: '[xyz]+!' })));
    expect(engine.stats().compiles - before).toBe(1);
    for (const matcher of matchers) matcher.release();
  });

  it('1,000 matchers cancelled mid-generation leave no live matcher and no memory growth', async () => {
    const spec: GrammarSpec = {
      type: 'json_schema',
      schema: { type: 'object', properties: { a: { type: 'array', items: { type: 'integer' } } }, required: ['a'] },
    };
    const round = async (seed: number) => {
      const matchers = [];
      for (let i = 0; i < 1000; i++) {
        const matcher = await engine.createMatcher(spec);
        constrainedDecode(matcher, { seed: seed + i, vocabSize: VOCAB, stopTokenIds: [EOS], maxSteps: 1 + (i % 7) });
        matchers.push(matcher);
      }
      expect(engine.stats().liveMatchers).toBe(1000);
      // Rows end in any order.
      for (let i = 0; i < 1000; i++) matchers[(i * 337) % 1000].release();
      expect(engine.stats().liveMatchers).toBe(0);
      return engine.stats().wasmBytes;
    };
    const first = await round(0);
    expect(await round(5000)).toBe(first);
  });
});
