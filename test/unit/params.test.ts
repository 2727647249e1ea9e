import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import type { GrammarSpec } from '../../src/grammar/index.js';
import { checkTokenBudget, validateParameters, type ValidateOptions } from '../../src/params.js';
import type { GenerateParameters, ValidationLimits } from '../../src/types.js';
import { TGI_PARAMETERS } from '../support/tgi-parameters.js';

const LIMITS: ValidationLimits = { maxBestOf: 1, maxStopSequences: 4, maxTopNTokens: 5, maxInputTokens: 1023, maxTotalTokens: 1024 };
const PLAIN: ValidateOptions = { stream: false };

function errorOf(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

function expectRejected(parameters: unknown, message: string, param: string, options = PLAIN, limits = LIMITS): void {
  const error = errorOf(() => validateParameters(parameters as GenerateParameters, limits, options));
  expect(error.message).toBe(`Input validation error: ${message}`);
  expect(error.param).toBe(param);
  expect(error.status).toBe(422);
  expect(error.errorType).toBe('validation');
}

const accepts = (parameters: unknown, options = PLAIN, limits = LIMITS) =>
  validateParameters(parameters as GenerateParameters, limits, options);

describe('validateParameters: the two default paths', () => {
  const defaults = {
    maxNewTokens: null,
    stop: [],
    returnFullText: false,
    details: false,
    decoderInputDetails: false,
    topNTokens: 0,
    truncate: null,
  };
  const neutral = { temperature: 1, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0 };

  it('parameters missing (undefined or null): do_sample true, everything else off', () => {
    for (const missing of [undefined, null]) {
      expect(accepts(missing, { stream: false, random: () => 0.5 })).toEqual({
        ...defaults,
        sampling: { doSample: true, ...neutral, seed: 2 ** 52 },
      });
    }
  });

  it('parameters present: an omitted do_sample is false', () => {
    expect(accepts({}, { stream: false, random: () => 0 })).toEqual({ ...defaults, sampling: { doSample: false, ...neutral, seed: 0 } });
    expect(accepts({ max_new_tokens: 5 }).sampling.doSample).toBe(false);
  });

  it('assigns a random safe-integer seed when none is given, and keeps a given one', () => {
    for (let i = 0; i < 20; i++) {
      const { seed } = accepts({}).sampling;
      expect(Number.isSafeInteger(seed) && seed >= 0).toBe(true);
    }
    expect(
      accepts(
        { seed: 42 },
        {
          stream: false,
          random: () => {
            throw new Error('not called');
          },
        },
      ).sampling.seed,
    ).toBe(42);
    expect(accepts({ seed: Number.MAX_SAFE_INTEGER }).sampling.seed).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('resolves every field given', () => {
    const result = accepts({
      do_sample: true,
      temperature: 0.7,
      top_k: 40,
      top_p: 0.9,
      typical_p: 0.95,
      repetition_penalty: 1.2,
      frequency_penalty: -0.5,
      seed: 7,
      max_new_tokens: 64,
      stop: ['\n', 'User:'],
      return_full_text: true,
      details: true,
      decoder_input_details: true,
      top_n_tokens: 5,
      truncate: 100,
      watermark: false,
      best_of: 1,
      adapter_id: 'base',
      unknown_field: { ignored: true },
    });
    expect(result).toEqual({
      sampling: {
        doSample: true,
        temperature: 0.7,
        topK: 40,
        topP: 0.9,
        typicalP: 0.95,
        repetitionPenalty: 1.2,
        frequencyPenalty: -0.5,
        presencePenalty: 0,
        seed: 7,
      },
      maxNewTokens: 64,
      stop: ['\n', 'User:'],
      returnFullText: true,
      details: true,
      decoderInputDetails: true,
      topNTokens: 5,
      truncate: 100,
    });
  });

  it('treats null fields as absent', () => {
    const result = accepts({ temperature: null, top_p: null, stop: null, do_sample: null, details: null, seed: null, grammar: null });
    expect(result.sampling.temperature).toBe(1);
    expect(result.sampling.doSample).toBe(false);
    expect(result.stop).toEqual([]);
  });
});

describe('validateParameters: each rule with its TGI message', () => {
  it('best_of', () => {
    expectRejected({ best_of: 2 }, '`best_of` != 1 is not supported when streaming tokens', 'best_of', { stream: true });
    expectRejected({ best_of: 2, do_sample: true }, '`best_of` != 1 is not allowed for this endpoint', 'best_of');
    const two = { ...LIMITS, maxBestOf: 2 };
    expectRejected({ best_of: 3, do_sample: true }, '`best_of` must be > 0 and <= 2. Given: 3', 'best_of', PLAIN, two);
    expectRejected({ best_of: 2 }, 'you must use sampling when `best_of` is > 1', 'best_of', PLAIN, two);
    expectRejected({ best_of: 2, do_sample: true, seed: 1 }, '`seed` must not be set when `best_of` > 1', 'seed', PLAIN, two);
    // Any sampling field present counts as sampling for rule 1.
    expect(() => accepts({ best_of: 2, top_k: 5 }, PLAIN, two)).not.toThrow();
    for (const n of [0, 1, null]) expect(() => accepts({ best_of: n }, { stream: true })).not.toThrow();
  });

  it('decoder_input_details while streaming', () => {
    expectRejected(
      { decoder_input_details: true },
      '`decoder_input_details` == true is not supported when streaming tokens',
      'decoder_input_details',
      { stream: true },
    );
    expect(accepts({ decoder_input_details: true }).decoderInputDetails).toBe(true);
  });

  it('temperature, repetition_penalty', () => {
    for (const t of [0, -1]) expectRejected({ temperature: t }, '`temperature` must be strictly positive', 'temperature');
    for (const r of [0, -0.5])
      expectRejected({ repetition_penalty: r }, '`repetition_penalty` must be strictly positive', 'repetition_penalty');
    expect(accepts({ temperature: 1e-3, repetition_penalty: 1e-3 }).sampling.temperature).toBe(1e-3);
  });

  it('frequency_penalty in [-2, 2]', () => {
    for (const f of [-2.01, 2.01])
      expectRejected({ frequency_penalty: f }, '`frequency_penalty` must be >= -2.0 and <= 2.0', 'frequency_penalty');
    expect(accepts({ frequency_penalty: -2 }).sampling.frequencyPenalty).toBe(-2);
    expect(accepts({ frequency_penalty: 2 }).sampling.frequencyPenalty).toBe(2);
    expect(accepts({ presence_penalty: -2 }).sampling.presencePenalty).toBe(-2);
    expect(() => accepts({ presence_penalty: 2.5 })).toThrow('`presence_penalty` must be >= -2.0 and <= 2.0');
  });

  it('top_p and typical_p in (0, 1], 1 meaning off (our decision, TGI#2222)', () => {
    for (const p of [0, -0.1, 1.01]) {
      expectRejected({ top_p: p }, '`top_p` must be > 0.0 and <= 1.0', 'top_p');
      expectRejected({ typical_p: p }, '`typical_p` must be > 0.0 and <= 1.0', 'typical_p');
    }
    const result = accepts({ top_p: 1, typical_p: 1 });
    expect(result.sampling.topP).toBe(1);
    expect(result.sampling.typicalP).toBe(1);
    expect(accepts({ top_p: 0.5 }).sampling.topP).toBe(0.5);
  });

  it('top_k, max_new_tokens', () => {
    for (const k of [0, -3]) expectRejected({ top_k: k }, '`top_k` must be strictly positive', 'top_k');
    expectRejected({ max_new_tokens: 0 }, '`max_new_tokens` must be strictly positive', 'max_new_tokens');
    expect(accepts({ top_k: 1, max_new_tokens: 1 }).maxNewTokens).toBe(1);
  });

  it('number of stop sequences, top_n_tokens', () => {
    expectRejected({ stop: ['a', 'b', 'c', 'd', 'e'] }, '`stop` supports up to 4 stop sequences. Given: 5', 'stop');
    expect(accepts({ stop: ['a', 'b', 'c', 'd'] }).stop).toHaveLength(4);
    expectRejected({ top_n_tokens: 6 }, '`top_n_tokens` must be >= 0 and <= 5. Given: 6', 'top_n_tokens');
    expect(accepts({ top_n_tokens: 0 }).topNTokens).toBe(0);
  });

  it('inputs, when passed: a non-empty string', () => {
    expectRejected({}, '`inputs` cannot be empty', 'inputs', { stream: false, inputs: '' });
    expectRejected({}, '`inputs` must be a string', 'inputs', { stream: false, inputs: undefined });
    expectRejected({}, '`inputs` must be a string', 'inputs', { stream: false, inputs: ['a'] });
    expect(() => accepts({}, { stream: false, inputs: 'Hi' })).not.toThrow();
  });

  it('truncate in (0, max_input_tokens]', () => {
    for (const t of [0, 1024]) {
      expectRejected({ truncate: t }, `\`truncate\` must be strictly positive and less than 1023. Given: ${t}`, 'truncate');
    }
    expect(accepts({ truncate: 1023 }).truncate).toBe(1023);
  });

  it('grammar: read into a spec; a malformed one, or one next to a route constraint, is refused', () => {
    expect(accepts({ grammar: { type: 'regex', value: '\\d+' } }).grammar).toEqual({ type: 'regex', pattern: '\\d+' });
    expect(accepts({}).grammar).toBeUndefined();
    expect(errorOf(() => accepts({ grammar: { type: 'xml', value: 'x' } })).param).toBe('grammar.type');
    const route: GrammarSpec = { type: 'choice', choices: ['a'] };
    expect(validateParameters({}, LIMITS, { ...PLAIN, grammar: route }).grammar).toEqual(route);
    expect(errorOf(() => validateParameters({ grammar: { type: 'regex', value: 'x' } }, LIMITS, { ...PLAIN, grammar: route })).param).toBe(
      'grammar',
    );
  });

  it('watermark, which we do not implement', () => {
    expectRejected({ watermark: true }, '`watermark` is not supported', 'watermark');
    expect(() => accepts({ watermark: false })).not.toThrow();
  });
});

describe('validateParameters: check order (the earlier rule wins)', () => {
  const cases: Array<[GenerateParameters & Record<string, unknown>, string, ValidateOptions?]> = [
    [{ temperature: 0, top_k: 'x' as unknown as number }, 'top_k'], // types first, as serde
    [{ best_of: 2, temperature: 0 }, 'best_of', { stream: true }],
    [{ decoder_input_details: true, temperature: 0 }, 'decoder_input_details', { stream: true }],
    [{ temperature: 0, repetition_penalty: 0 }, 'temperature'],
    [{ repetition_penalty: 0, frequency_penalty: 5 }, 'repetition_penalty'],
    [{ frequency_penalty: 5, top_p: 2 }, 'frequency_penalty'],
    [{ top_p: 2, typical_p: 2 }, 'top_p'],
    [{ typical_p: 2, top_k: 0 }, 'typical_p'],
    [{ top_k: 0, max_new_tokens: 0 }, 'top_k'],
    [{ max_new_tokens: 0, stop: ['1', '2', '3', '4', '5'] }, 'max_new_tokens'],
    [{ stop: ['1', '2', '3', '4', '5'], top_n_tokens: 9 }, 'stop'],
    [{ top_n_tokens: 9, truncate: 0 }, 'top_n_tokens', { stream: false, inputs: '' }],
    [{ truncate: 0 }, 'inputs', { stream: false, inputs: '' }],
    [{ truncate: 0, grammar: {} }, 'truncate'],
  ];
  it.each(cases)('%j fails on %s', (parameters, param, options = PLAIN) => {
    expect(errorOf(() => validateParameters(parameters, LIMITS, options)).param).toBe(param);
  });
});

describe('validateParameters: wrong JSON types are ValidationErrors naming the field', () => {
  const huge = JSON.parse('{"a":1e309,"b":18446744073709551615}') as { a: number; b: number };
  const cases: Array<[string, unknown, string]> = [
    ['temperature', 'hot', '`temperature` must be a finite number'],
    ['temperature', Number.NaN, '`temperature` must be a finite number'],
    ['temperature', huge.a, '`temperature` must be a finite number'],
    ['top_p', -Infinity, '`top_p` must be a finite number'],
    ['repetition_penalty', [1.2], '`repetition_penalty` must be a finite number'],
    ['frequency_penalty', {}, '`frequency_penalty` must be a finite number'],
    ['typical_p', true, '`typical_p` must be a finite number'],
    ['top_k', 1.5, '`top_k` must be an integer'],
    ['top_k', '5', '`top_k` must be an integer'],
    ['top_k', 2 ** 31, '`top_k` must be an integer >= -2147483648 and <= 2147483647. Given: 2147483648'],
    ['max_new_tokens', -1, '`max_new_tokens` must be an integer >= 0 and <= 4294967295. Given: -1'],
    ['max_new_tokens', 2 ** 32, '`max_new_tokens` must be an integer >= 0 and <= 4294967295. Given: 4294967296'],
    ['max_new_tokens', Infinity, '`max_new_tokens` must be an integer'],
    ['seed', -1, '`seed` must be an integer >= 0 and <= 9007199254740991. Given: -1'],
    ['seed', 2 ** 53, '`seed` must be an integer >= 0 and <= 9007199254740991. Given: 9007199254740992'],
    ['seed', huge.b, '`seed` must be an integer >= 0 and <= 9007199254740991. Given: 18446744073709552000'],
    ['seed', 0.5, '`seed` must be an integer'],
    ['top_n_tokens', -1, '`top_n_tokens` must be an integer >= 0 and <= 4294967295. Given: -1'],
    ['truncate', 'all', '`truncate` must be an integer'],
    ['best_of', -2, '`best_of` must be an integer >= 0 and <= 9007199254740991. Given: -2'],
    ['do_sample', 'true', '`do_sample` must be a boolean'],
    ['details', 1, '`details` must be a boolean'],
    ['decoder_input_details', 'yes', '`decoder_input_details` must be a boolean'],
    ['return_full_text', 0, '`return_full_text` must be a boolean'],
    ['watermark', [], '`watermark` must be a boolean'],
    ['stop', 'abc', '`stop` must be an array of strings'],
    ['stop', [1], '`stop` must be an array of strings'],
    ['stop', ['a', null], '`stop` must be an array of strings'],
    ['stop', { 0: 'a' }, '`stop` must be an array of strings'],
    ['adapter_id', 5, '`adapter_id` must be a string'],
  ];
  it.each(cases)('%s = %j', (field, value, message) => expectRejected({ [field]: value }, message, field));

  it('refuses parameters that are not an object', () => {
    for (const parameters of ['x', [], 5, true]) expectRejected(parameters, '`parameters` must be an object', 'parameters');
  });

  it('fuzz: every field × odd values gives a result or a ValidationError, never another error', () => {
    const fields = TGI_PARAMETERS;
    const values = [
      null,
      undefined,
      0,
      -0,
      1,
      -1,
      0.5,
      2,
      1e309,
      -1e309,
      Number.NaN,
      2 ** 53,
      2 ** 64,
      -(2 ** 64),
      '',
      'x',
      '1',
      true,
      false,
      [],
      ['a'],
      [1],
      {},
      { a: 1 },
      Number.MIN_VALUE,
    ];
    let outcomes = 0;
    for (const field of fields) {
      for (const value of values) {
        for (const stream of [false, true]) {
          try {
            const result = validateParameters({ [field]: value } as GenerateParameters, LIMITS, { stream });
            expect(Number.isSafeInteger(result.sampling.seed)).toBe(true);
          } catch (error) {
            expect(error).toBeInstanceOf(ValidationError);
          }
          outcomes++;
        }
      }
    }
    expect(outcomes).toBe(fields.length * values.length * 2);
  });
});

describe('checkTokenBudget', () => {
  const params = (parameters: GenerateParameters) => validateParameters(parameters, LIMITS, PLAIN);
  const budgetError = (inputLength: number, parameters: GenerateParameters, limits = LIMITS): ValidationError =>
    errorOf(() => checkTokenBudget(inputLength, params(parameters), limits));

  it('returns the given max_new_tokens, or what the budget leaves', () => {
    expect(checkTokenBudget(10, params({ max_new_tokens: 20 }), LIMITS)).toEqual({ maxNewTokens: 20, dropLeading: 0 });
    expect(checkTokenBudget(10, params({}), LIMITS)).toEqual({ maxNewTokens: 1014, dropLeading: 0 });
    expect(checkTokenBudget(1000, params({ max_new_tokens: 24 }), LIMITS)).toEqual({ maxNewTokens: 24, dropLeading: 0 });
  });

  it('refuses inputs + max_new_tokens over max_total_tokens', () => {
    const error = budgetError(1000, { max_new_tokens: 100 });
    expect(error.message).toBe(
      'Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: 1000 `inputs` tokens and 100 `max_new_tokens`',
    );
    expect(budgetError(1100, {}).message).toContain('Given: 1100 `inputs` tokens and 0 `max_new_tokens`');
  });

  it('refuses inputs over max_input_tokens, after the budget check', () => {
    const limits = { ...LIMITS, maxInputTokens: 100 };
    expect(budgetError(200, { max_new_tokens: 10 }, limits).message).toBe(
      'Input validation error: `inputs` must have less than 100 tokens. Given: 200',
    );
    expect(budgetError(200, { max_new_tokens: 900 }, limits).message).toContain('`inputs` tokens + `max_new_tokens` must be <= 1024');
    expect(budgetError(200, { max_new_tokens: 10 }, limits).param).toBe('inputs');
  });

  it('applies truncate: keeps the last t tokens', () => {
    expect(checkTokenBudget(50, params({ truncate: 10 }), LIMITS)).toEqual({ maxNewTokens: 1014, dropLeading: 40 });
    expect(checkTokenBudget(5, params({ truncate: 10 }), LIMITS)).toEqual({ maxNewTokens: 1019, dropLeading: 0 });
    // A prompt too long for the budget passes once truncated.
    expect(checkTokenBudget(5000, params({ truncate: 1000, max_new_tokens: 24 }), LIMITS)).toEqual({ maxNewTokens: 24, dropLeading: 4000 });
  });

  it('refuses a prompt that fills the whole budget, leaving no token to generate', () => {
    const limits = { ...LIMITS, maxInputTokens: 1024 };
    expect(budgetError(1024, {}, limits).message).toBe('Input validation error: `inputs` must have less than 1024 tokens. Given: 1024');
  });
});
