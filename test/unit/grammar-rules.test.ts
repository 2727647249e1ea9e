import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ModelLoadError, ValidationError } from '../../src/errors.js';
import { CompiledGrammarCache } from '../../src/grammar/compiled-cache.js';
import { normalizeJsonSchema, preflightGrammar, sourceProblem } from '../../src/grammar/preflight.js';
import { GRAMMAR_LIMITS, grammarKey } from '../../src/grammar/spec.js';
import { grammarVocabulary } from '../../src/grammar/vocabulary.js';
import { sentencePieceTokenizerJson } from '../fixtures/text/tokenizers.js';

function refusal(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(ValidationError.isInstance(error)).toBe(true);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

describe('normalizeJsonSchema', () => {
  it('drops minLength/maxLength (not enforced: they cost seconds and break escapes) and annotations', () => {
    const schema = {
      $schema: 'http://json-schema.org/draft-07/schema#',
      title: 'Event',
      description: 'd',
      type: 'object',
      properties: { notes: { type: 'string', maxLength: 200, minLength: 1, description: 'x', default: '', examples: ['a'] } },
      required: ['notes'],
      additionalProperties: false,
    };
    expect(normalizeJsonSchema(schema, 'schema')).toEqual({
      additionalProperties: false,
      properties: { notes: { type: 'string' } },
      required: ['notes'],
      type: 'object',
    });
  });

  it('keeps property order (the order the grammar emits) and sorts keywords (so equal schemas give equal keys)', () => {
    const a = normalizeJsonSchema({ type: 'object', properties: { z: { type: 'integer' }, a: { type: 'string' } } }, 's');
    const b = normalizeJsonSchema({ properties: { z: { type: 'integer' }, a: { type: 'string' } }, type: 'object' }, 's');
    expect(Object.keys((a as { properties: object }).properties)).toEqual(['z', 'a']);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(grammarKey({ type: 'json_schema', schema: a })).toBe(grammarKey({ type: 'json_schema', schema: b }));
  });

  it('treats a property named like a keyword as a property', () => {
    const out = normalizeJsonSchema(
      { type: 'object', properties: { description: { type: 'string' }, title: { type: 'integer', title: 'T' } } },
      's',
    );
    expect(out).toEqual({ properties: { description: { type: 'string' }, title: { type: 'integer' } }, type: 'object' });
  });

  it.each([
    'multipleOf',
    'minProperties',
    'maxProperties',
    'propertyNames',
    'patternProperties',
    'contains',
    'minContains',
    'maxContains',
    'dependentSchemas',
  ])('refuses %s, naming it and where it is', (keyword) => {
    const error = refusal(() =>
      normalizeJsonSchema({ type: 'object', properties: { a: { [keyword]: 2 } } }, 'response_format.json_schema.schema'),
    );
    expect(error.message).toContain(`\`${keyword}\``);
    expect(error.message).toContain('#/properties/a');
    expect(error.param).toBe('response_format.json_schema.schema');
    expect(error.status).toBe(422);
  });

  it('refuses uniqueItems: true but lets the no-op uniqueItems: false through', () => {
    expect(refusal(() => normalizeJsonSchema({ type: 'array', uniqueItems: true }, 's')).message).toContain('`uniqueItems`');
    expect(normalizeJsonSchema({ type: 'array', uniqueItems: false }, 's')).toEqual({ type: 'array' });
  });

  it('accepts the formats xgrammar implements and refuses others by name', () => {
    expect(normalizeJsonSchema({ type: 'string', format: 'date-time' }, 's')).toEqual({ format: 'date-time', type: 'string' });
    expect(refusal(() => normalizeJsonSchema({ type: 'string', format: 'credit-card' }, 's')).message).toContain('"credit-card"');
  });

  it('resolves $ref only inside the document', () => {
    const schema = { $defs: { node: { type: 'object', properties: { next: { $ref: '#/$defs/node' } } } }, $ref: '#/$defs/node' };
    expect(normalizeJsonSchema(schema, 's')).toEqual(schema);
    expect(normalizeJsonSchema({ properties: { a: { $ref: '#' } } }, 's')).toEqual({ properties: { a: { $ref: '#' } } });
    expect(refusal(() => normalizeJsonSchema({ $ref: 'https://example.com/s.json' }, 's')).message).toContain('inside this schema');
    expect(refusal(() => normalizeJsonSchema({ $ref: '#/$defs/missing' }, 's')).message).toContain('points to nothing');
    expect(refusal(() => normalizeJsonSchema({ enum: [1, 2], $ref: '#/enum' }, 's')).message).toContain('does not point to a schema');
  });

  it('caps size, enum members, nesting and array bounds', () => {
    const big = { type: 'object', description: 'x'.repeat(GRAMMAR_LIMITS.maxSourceLength) };
    expect(refusal(() => normalizeJsonSchema(big, 's')).message).toContain('characters of JSON');
    const members = Array.from({ length: GRAMMAR_LIMITS.maxEnumMembers + 1 }, (_, i) => `v${i}`);
    expect(refusal(() => normalizeJsonSchema({ enum: members }, 's')).message).toContain('`enum` has 1025 members');
    let deep: object = { type: 'integer' };
    for (let i = 0; i < 40; i++) deep = { type: 'array', items: deep };
    expect(refusal(() => normalizeJsonSchema(deep, 's')).message).toContain('nested deeper');
    expect(refusal(() => normalizeJsonSchema({ type: 'array', minItems: 5000 }, 's')).message).toContain('`minItems` is 5000');
    // A lower maxItems keeps every output valid against the schema as given.
    expect(normalizeJsonSchema({ type: 'array', maxItems: 5000 }, 's')).toEqual({ maxItems: 1000, type: 'array' });
  });

  it('refuses what is not a schema', () => {
    expect(refusal(() => normalizeJsonSchema({ properties: { a: 'string' } }, 's')).message).toContain('#/properties/a');
    expect(normalizeJsonSchema(true, 's')).toBe(true);
  });

  it('splits bounded non-negative integer ranges into aligned blocks (xgrammar gets 0..120 wrong)', () => {
    expect(normalizeJsonSchema({ type: 'integer', minimum: 0, maximum: 120, description: 'age' }, 's')).toEqual({
      anyOf: [
        { maximum: 99, minimum: 0, type: 'integer' },
        { maximum: 109, minimum: 100, type: 'integer' },
        { maximum: 119, minimum: 110, type: 'integer' },
        { enum: [120] },
      ],
    });
    expect(normalizeJsonSchema({ type: 'integer', exclusiveMinimum: -3.5, exclusiveMaximum: 11 }, 's')).toEqual({
      anyOf: [{ maximum: -1, minimum: -3, type: 'integer' }, { maximum: 9, minimum: 0, type: 'integer' }, { enum: [10] }],
    });
    // Nothing to split, or more than the keywords of a plain range: left as it is.
    expect(normalizeJsonSchema({ type: 'integer', minimum: 0, maximum: 99 }, 's')).toEqual({ maximum: 99, minimum: 0, type: 'integer' });
    expect(normalizeJsonSchema({ type: 'integer', minimum: 5 }, 's')).toEqual({ minimum: 5, type: 'integer' });
    expect(normalizeJsonSchema({ type: 'integer', minimum: -500, maximum: -120 }, 's')).toEqual({
      maximum: -120,
      minimum: -500,
      type: 'integer',
    });
    expect(normalizeJsonSchema({ type: ['integer', 'null'], minimum: 0, maximum: 120 }, 's')).toEqual({
      maximum: 120,
      minimum: 0,
      type: ['integer', 'null'],
    });
  });

  it('is idempotent, so the engine can apply it again to a parsed spec', () => {
    const once = normalizeJsonSchema({ type: 'array', maxItems: 3000, items: { type: 'integer', minimum: 0, maximum: 1234 } }, 's');
    expect(normalizeJsonSchema(once, 's')).toEqual(once);
  });
});

describe('preflightGrammar', () => {
  it('refuses counted repetitions above the cap in regexes, grammars and patterns', () => {
    expect(sourceProblem('\\d{4}-\\d{1,2}', 'regex')).toBeNull();
    expect(sourceProblem('a{1001}', 'regex')).toContain('1001');
    expect(sourceProblem('a{2, 100000}', 'ebnf')).toContain('100000');
    expect(refusal(() => preflightGrammar({ type: 'regex', pattern: 'x{5000}' }, 'guided_regex')).param).toBe('guided_regex');
    expect(refusal(() => preflightGrammar({ type: 'grammar', grammar: 'root ::= "a"{100000}' }, 'g')).message).toContain('grammar repeats');
    expect(refusal(() => normalizeJsonSchema({ type: 'string', pattern: '[a-z]{9999}' }, 's')).message).toContain('`pattern` repeats');
  });

  it('refuses parentheses nested deeper than xgrammar survives (1000 deep made its regex parser spin)', () => {
    const nested = (n: number) => `${'('.repeat(n)}a${')'.repeat(n)}`;
    expect(sourceProblem(nested(50), 'regex')).toBeNull();
    expect(sourceProblem(nested(51), 'regex')).toContain('51 deep');
    expect(refusal(() => preflightGrammar({ type: 'regex', pattern: nested(1000) }, 'g')).message).toContain('1000 deep');
    expect(refusal(() => preflightGrammar({ type: 'grammar', grammar: `root ::= ${nested(300)}` }, 'g')).message).toContain('300 deep');
    expect(refusal(() => normalizeJsonSchema({ type: 'string', pattern: nested(60) }, 's')).message).toContain('`pattern` nests');
    // Escaped, in character classes, in EBNF strings: not nesting.
    expect(sourceProblem(`${'\\('.repeat(60)}[${'('.repeat(60)}]`, 'regex')).toBeNull();
    expect(sourceProblem(`root ::= "${'('.repeat(60)}"`, 'ebnf')).toBeNull();
    // In a regex a quote is a character like any other: it hides nothing.
    expect(sourceProblem(`"${nested(60)}`, 'regex')).toContain('60 deep');
  });

  it('caps sources, choices and tags', () => {
    const long = 'a'.repeat(GRAMMAR_LIMITS.maxSourceLength + 1);
    expect(refusal(() => preflightGrammar({ type: 'grammar', grammar: long }, 'g')).message).toContain('characters long');
    expect(refusal(() => preflightGrammar({ type: 'choice', choices: [] }, 'g')).message).toContain('at least one');
    const many = Array.from({ length: GRAMMAR_LIMITS.maxChoices + 1 }, (_, i) => String(i));
    expect(refusal(() => preflightGrammar({ type: 'choice', choices: many }, 'g')).message).toContain('1025 choices');
    // Long alternatives compile slowest: each is capped, and all of them together.
    expect(refusal(() => preflightGrammar({ type: 'choice', choices: ['a', 'b'.repeat(129)] }, 'g')).message).toContain(
      'member of 129 characters',
    );
    const wide = Array.from({ length: 200 }, (_, i) => `${i}`.padEnd(100, 'x'));
    expect(refusal(() => preflightGrammar({ type: 'choice', choices: wide }, 'g')).message).toContain('20000 characters long together');
    expect(refusal(() => normalizeJsonSchema({ enum: ['x'.repeat(200)] }, 's')).message).toContain('`enum` has a member of 202 characters');
    const tags = Array.from({ length: GRAMMAR_LIMITS.maxTools + 1 }, () => ({ begin: '<a>', schema: true, end: '</a>' }));
    expect(
      refusal(() =>
        preflightGrammar({ type: 'structural_tag', triggers: ['<a>'], tags, atLeastOne: false, stopAfterFirst: false }, 'tools'),
      ).message,
    ).toContain('65 tags');
  });

  it('normalizes the schemas inside structural tags', () => {
    const spec = preflightGrammar(
      {
        type: 'structural_tag',
        triggers: ['<a>'],
        tags: [{ begin: '<a>', schema: { type: 'string', maxLength: 9 }, end: '</a>' }],
        atLeastOne: true,
        stopAfterFirst: false,
      },
      'tools',
    );
    expect(spec.type === 'structural_tag' && spec.tags[0].schema).toEqual({ type: 'string' });
  });
});

describe('grammarVocabulary', () => {
  const tiny = JSON.parse(readFileSync('.fixtures/tiny/tokenizer.json', 'utf8')) as Record<string, unknown>;

  it('blanks special added tokens (xgrammar would allow them inside JSON strings), pads to the logits width', () => {
    const { tokens, vocabType, prependSpace } = grammarVocabulary(tiny, { vocabSize: 520 });
    expect(tokens).toHaveLength(520);
    expect(tokens.slice(0, 3)).toEqual(['', '', '']);
    expect(tokens[3]).not.toBe('');
    expect(tokens.slice(512)).toEqual(Array(8).fill(''));
    expect(vocabType).toBe('byte_level');
    expect(prependSpace).toBe(false);
  });

  it('keeps a special token whose text the tool-call format writes, and non-special added tokens', () => {
    const json = {
      ...tiny,
      added_tokens: [
        ...(tiny.added_tokens as object[]),
        { id: 512, content: '<tool_call>', special: true },
        { id: 513, content: '<think>', special: false },
        { id: 514, content: '<|secret|>', special: true },
      ],
    };
    const { tokens } = grammarVocabulary(json, { vocabSize: 515, formatTexts: ['<tool_call>', '</tool_call>'] });
    expect(tokens.slice(512)).toEqual(['<tool_call>', '<think>', '']);
  });

  it('reads a SentencePiece byte-fallback tokenizer as byte_fallback with a prepended space', () => {
    const { tokens, vocabType, prependSpace } = grammarVocabulary(sentencePieceTokenizerJson(), { vocabSize: 400 });
    expect(vocabType).toBe('byte_fallback');
    expect(prependSpace).toBe(true);
    expect(tokens.slice(0, 4)).toEqual(['', '', '', '<0x00>']);
    expect(tokens).toContain('▁world');
  });

  it('detects the vocabulary type from the decoder, including those xgrammar calls raw', () => {
    const type = (decoder: unknown, rest: object = {}) =>
      grammarVocabulary({ model: { vocab: { a: 0 } }, decoder, ...rest }, { vocabSize: 1 });
    expect(type({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'always' }).vocabType).toBe('byte_fallback');
    expect(type({ type: 'WordPiece' }).vocabType).toBe('raw');
    expect(type(null).vocabType).toBe('raw');
    const legacy = type({ type: 'Metaspace' }, { pre_tokenizer: { type: 'Metaspace', add_prefix_space: true } });
    expect(legacy.prependSpace).toBe(true);
    const prepend = type(
      { type: 'Sequence', decoders: [{ type: 'ByteFallback' }] },
      { normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }] } },
    );
    expect(prepend).toMatchObject({ vocabType: 'byte_fallback', prependSpace: true });
  });

  it('reads Unigram vocabularies ([piece, score] in id order) and refuses a tokenizer without one', () => {
    expect(
      grammarVocabulary(
        {
          model: {
            type: 'Unigram',
            vocab: [
              ['<unk>', 0],
              ['▁a', -1],
            ],
          },
        },
        { vocabSize: 2 },
      ).tokens,
    ).toEqual(['<unk>', '▁a']);
    expect(() => grammarVocabulary({ model: {} }, { vocabSize: 2 })).toThrow(ModelLoadError);
  });
});

describe('CompiledGrammarCache', () => {
  function cache(capacity: number) {
    const disposed: string[] = [];
    return { disposed, cache: new CompiledGrammarCache<string>(capacity, (value) => disposed.push(value)) };
  }

  it('keeps at most `capacity` idle entries, freeing the least recently used', () => {
    const { cache: c, disposed } = cache(2);
    for (const key of ['a', 'b', 'c']) c.release(c.insert(key, key));
    expect(c.size).toBe(2);
    expect(disposed).toEqual(['a']);
    c.release(c.acquire('b')!); // b is now the most recent
    c.release(c.insert('d', 'd'));
    expect(disposed).toEqual(['a', 'c']);
    expect(c.evictions).toBe(2);
    expect(c.acquire('a')).toBeUndefined();
  });

  it('never frees an entry in use; it goes when released if the cache is over its bound', () => {
    const { cache: c, disposed } = cache(1);
    const a = c.insert('a', 'a');
    const b = c.insert('b', 'b');
    expect(c.size).toBe(2);
    expect(disposed).toEqual([]);
    c.release(a);
    expect(disposed).toEqual(['a']);
    c.release(b);
    expect(disposed).toEqual(['a']);
    expect(c.size).toBe(1);
  });

  it('clear() frees idle entries now and those in use on their last release', () => {
    const { cache: c, disposed } = cache(4);
    const held = c.insert('a', 'a');
    c.acquire('a');
    c.release(c.insert('b', 'b'));
    c.clear();
    expect(c.size).toBe(0);
    expect(disposed).toEqual(['b']);
    c.release(held);
    expect(disposed).toEqual(['b']);
    c.release(held);
    expect(disposed).toEqual(['b', 'a']);
    expect(() => c.release(held)).toThrow(/released more often/);
  });
});
