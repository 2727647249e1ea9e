import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { readOpenAIGrammar, readResponseFormat, readStructuredOutputs, readTgiGrammar } from '../../src/protocol/structured-output.js';

const ANY_OBJECT = { type: 'json_schema', schema: { type: 'object' } };
const PERSON = { type: 'object', properties: { name: { type: 'string', maxLength: 20 } }, required: ['name'] };
const PERSON_SPEC = { type: 'json_schema', schema: { properties: { name: { type: 'string' } }, required: ['name'], type: 'object' } };

function refusal(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(ValidationError.isInstance(error)).toBe(true);
    expect((error as ValidationError).status).toBe(422);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

describe('response_format', () => {
  it('text and absent constrain nothing', () => {
    expect(readResponseFormat({})).toBeUndefined();
    expect(readResponseFormat({ response_format: null })).toBeUndefined();
    expect(readResponseFormat({ response_format: { type: 'text' } })).toBeUndefined();
  });

  it('json_object is any JSON object', () => {
    expect(readResponseFormat({ response_format: { type: 'json_object' } })).toEqual(ANY_OBJECT);
  });

  it("json_schema as the openai SDK's zodResponseFormat sends it (strict, $schema, maxLength dropped)", () => {
    const body = {
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'event',
          strict: true,
          schema: { $schema: 'http://json-schema.org/draft-07/schema#', ...PERSON, additionalProperties: false },
        },
      },
    };
    expect(readResponseFormat(body)).toEqual({ type: 'json_schema', schema: { ...PERSON_SPEC.schema, additionalProperties: false } });
  });

  it('json_schema.strict must be a boolean when given, as the openai SDK sends it', () => {
    const format = (strict: unknown) => ({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: PERSON, strict } } });
    for (const strict of ['true', 1, {}]) {
      const err = refusal(() => readResponseFormat(format(strict)));
      expect([err.param, err.message]).toEqual([
        'response_format.json_schema.strict',
        expect.stringContaining('`response_format.json_schema.strict` must be a boolean'),
      ]);
    }
    expect(readResponseFormat(format(null))).toEqual(PERSON_SPEC);
  });

  it('json_schema without a schema is any object; strict: false is enforced all the same', () => {
    expect(readResponseFormat({ response_format: { type: 'json_schema', json_schema: { name: 'x', strict: false } } })).toEqual(ANY_OBJECT);
    expect(
      readResponseFormat({ response_format: { type: 'json_schema', json_schema: { name: 'x', strict: false, schema: PERSON } } }),
    ).toEqual(PERSON_SPEC);
  });

  it("TGI's {type, value} shapes: json, json_object, json_schema, regex", () => {
    expect(readResponseFormat({ response_format: { type: 'json_object', value: PERSON } })).toEqual(PERSON_SPEC);
    expect(readResponseFormat({ response_format: { type: 'json', value: JSON.stringify(PERSON) } })).toEqual(PERSON_SPEC);
    expect(readResponseFormat({ response_format: { type: 'json_schema', value: { name: 'p', schema: PERSON } } })).toEqual(PERSON_SPEC);
    expect(readResponseFormat({ response_format: { type: 'regex', value: '\\d+' } })).toEqual({ type: 'regex', pattern: '\\d+' });
  });

  it('refuses what it cannot honour, naming the field', () => {
    expect(refusal(() => readResponseFormat({ response_format: 'json' })).param).toBe('response_format');
    expect(refusal(() => readResponseFormat({ response_format: { type: 'grammar' } })).param).toBe('response_format.type');
    expect(refusal(() => readResponseFormat({ response_format: { type: 'json_schema' } })).param).toBe('response_format.json_schema');
    expect(refusal(() => readResponseFormat({ response_format: { type: 'json_schema', json_schema: { name: 'a b' } } })).param).toBe(
      'response_format.json_schema.name',
    );
    expect(refusal(() => readResponseFormat({ response_format: { type: 'json', value: '{nope' } })).message).toContain('not valid JSON');
    expect(refusal(() => readResponseFormat({ response_format: { type: 'json_object', value: [1] } })).message).toContain(
      'must be a JSON schema',
    );
    const keyword = refusal(() =>
      readResponseFormat({
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } },
      }),
    );
    expect(keyword.message).toContain('`uniqueItems`');
    expect(keyword.param).toBe('response_format.json_schema.schema');
  });
});

describe('TGI grammar', () => {
  it('json (schema or JSON string), json_object, json_schema, regex', () => {
    expect(readTgiGrammar({ type: 'json', value: PERSON }, 'parameters.grammar')).toEqual(PERSON_SPEC);
    expect(readTgiGrammar({ type: 'json', value: JSON.stringify(PERSON) }, 'parameters.grammar')).toEqual(PERSON_SPEC);
    expect(readTgiGrammar({ type: 'json_object', value: PERSON }, 'parameters.grammar')).toEqual(PERSON_SPEC);
    expect(readTgiGrammar({ type: 'json_schema', value: { name: 'p', schema: PERSON } }, 'parameters.grammar')).toEqual(PERSON_SPEC);
    expect(readTgiGrammar({ type: 'regex', value: '\\d{4}-\\d{2}-\\d{2}' }, 'parameters.grammar')).toEqual({
      type: 'regex',
      pattern: '\\d{4}-\\d{2}-\\d{2}',
    });
    expect(readTgiGrammar(null, 'parameters.grammar')).toBeUndefined();
  });

  it("does not demand TGI's top-level `properties`", () => {
    expect(readTgiGrammar({ type: 'json', value: { type: 'object' } }, 'grammar')).toEqual(ANY_OBJECT);
    expect(readTgiGrammar({ type: 'json', value: { type: 'array', items: { type: 'integer' } } }, 'grammar')).toEqual({
      type: 'json_schema',
      schema: { items: { type: 'integer' }, type: 'array' },
    });
  });

  it('refuses unknown types and missing values', () => {
    expect(refusal(() => readTgiGrammar({ type: 'lark', value: 'x' }, 'parameters.grammar')).param).toBe('parameters.grammar.type');
    expect(refusal(() => readTgiGrammar({ type: 'regex' }, 'parameters.grammar')).param).toBe('parameters.grammar.value');
    expect(refusal(() => readTgiGrammar({ type: 'regex', value: 3 }, 'parameters.grammar')).param).toBe('parameters.grammar.value');
    expect(refusal(() => readTgiGrammar('regex', 'parameters.grammar')).param).toBe('parameters.grammar');
  });
});

describe('vLLM structured_outputs and guided_*', () => {
  it('reads each constraint', () => {
    expect(readStructuredOutputs({ structured_outputs: { json: PERSON } })).toEqual(PERSON_SPEC);
    expect(readStructuredOutputs({ structured_outputs: { regex: '[a-z]+' } })).toEqual({ type: 'regex', pattern: '[a-z]+' });
    expect(readStructuredOutputs({ structured_outputs: { choice: ['yes', 'no'] } })).toEqual({ type: 'choice', choices: ['yes', 'no'] });
    expect(readStructuredOutputs({ structured_outputs: { grammar: 'root ::= "a"' } })).toEqual({
      type: 'grammar',
      grammar: 'root ::= "a"',
    });
    expect(readStructuredOutputs({ structured_outputs: { json_object: true } })).toEqual(ANY_OBJECT);
  });

  it('ignores its tuning keys', () => {
    expect(readStructuredOutputs({ structured_outputs: { choice: ['a'], disable_any_whitespace: true, whitespace_pattern: ' ' } })).toEqual(
      { type: 'choice', choices: ['a'] },
    );
  });

  it('reads the older guided_* fields as aliases', () => {
    expect(readStructuredOutputs({ guided_json: JSON.stringify(PERSON) })).toEqual(PERSON_SPEC);
    expect(readStructuredOutputs({ guided_regex: '\\d+' })).toEqual({ type: 'regex', pattern: '\\d+' });
    expect(readStructuredOutputs({ guided_choice: ['a', 'b'] })).toEqual({ type: 'choice', choices: ['a', 'b'] });
    expect(readStructuredOutputs({ guided_grammar: 'root ::= "b"', guided_decoding_backend: 'xgrammar' })).toEqual({
      type: 'grammar',
      grammar: 'root ::= "b"',
    });
  });

  it('refuses more than one constraint, bad shapes, and structural tags', () => {
    expect(refusal(() => readStructuredOutputs({ structured_outputs: { regex: 'a', choice: ['a'] } })).message).toContain(
      'only one output constraint',
    );
    expect(refusal(() => readStructuredOutputs({ structured_outputs: { regex: 'a' }, guided_regex: 'b' })).param).toBe('guided_regex');
    expect(refusal(() => readStructuredOutputs({ guided_choice: [] })).param).toBe('guided_choice');
    expect(refusal(() => readStructuredOutputs({ guided_choice: ['a', 1] })).param).toBe('guided_choice');
    expect(refusal(() => readStructuredOutputs({ structured_outputs: { regex: '' } })).param).toBe('structured_outputs.regex');
    expect(refusal(() => readStructuredOutputs({ structured_outputs: [] })).param).toBe('structured_outputs');
    expect(refusal(() => readStructuredOutputs({ structured_outputs: { structural_tag: '{}' } })).param).toBe(
      'structured_outputs.structural_tag',
    );
  });

  it('type-checks json_object, which only true turns on (a string or a number was ignored, and answered 200)', () => {
    for (const value of ['yes', 1, {}, []]) {
      const err = refusal(() => readStructuredOutputs({ structured_outputs: { json_object: value } }));
      expect([err.param, err.message]).toEqual([
        'structured_outputs.json_object',
        expect.stringContaining('`structured_outputs.json_object` must be a boolean'),
      ]);
    }
    expect(readStructuredOutputs({ structured_outputs: { json_object: false } })).toBeUndefined();
    expect(readStructuredOutputs({ structured_outputs: { json_object: null, regex: 'a' } })).toEqual({ type: 'regex', pattern: 'a' });
  });
});

describe('readOpenAIGrammar', () => {
  it('takes any one source; TGI grammar only where asked (/v1/completions)', () => {
    expect(readOpenAIGrammar({ response_format: { type: 'json_object' } }, { tgiGrammar: false })).toEqual(ANY_OBJECT);
    expect(readOpenAIGrammar({ guided_regex: 'x' }, { tgiGrammar: false })).toEqual({ type: 'regex', pattern: 'x' });
    expect(readOpenAIGrammar({ grammar: { type: 'regex', value: 'y' } }, { tgiGrammar: true })).toEqual({ type: 'regex', pattern: 'y' });
    expect(readOpenAIGrammar({ grammar: { type: 'regex', value: 'y' } }, { tgiGrammar: false })).toBeUndefined();
    expect(readOpenAIGrammar({ response_format: { type: 'text' } }, { tgiGrammar: true })).toBeUndefined();
  });

  it('refuses two sources together', () => {
    const error = refusal(() =>
      readOpenAIGrammar({ response_format: { type: 'json_object' }, guided_choice: ['a'] }, { tgiGrammar: false }),
    );
    expect(error.message).toContain('`response_format` and `structured_outputs`');
  });
});
