/**
 * The one module of JSON field readers, in both wordings: the OpenAI decoders' and TGI's parameter
 * validation (params.ts), so a field is read by the same rules on every route and only the words of
 * the refusal differ.
 */
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { checkStopCount, readBoolean, readNumber, readStop, readString, type Wording } from '../../src/protocol/json-shape.js';

function refusal(read: () => unknown): [string | null, string] {
  try {
    read();
  } catch (error) {
    expect(ValidationError.isInstance(error)).toBe(true);
    const { param, message } = error as ValidationError;
    return [param, message.replace('Input validation error: ', '')];
  }
  throw new Error('expected a ValidationError');
}

describe('JSON field readers, in OpenAI and TGI words', () => {
  const both = (read: (wording: Wording) => unknown) => [refusal(() => read('openai')), refusal(() => read('tgi'))];

  it('a number: OpenAI names the type received, TGI says what it wants', () => {
    expect(both((w) => readNumber({ temperature: 'hot' }, 'temperature', {}, w))).toEqual([
      ['temperature', '`temperature` must be a number, got a string'],
      ['temperature', '`temperature` must be a finite number'],
    ]);
    expect(both((w) => readNumber({ top_k: 1.5 }, 'top_k', { integer: true }, w))).toEqual([
      ['top_k', '`top_k` must be an integer, got a number'],
      ['top_k', '`top_k` must be an integer'],
    ]);
  });

  it('a huge whole number: out of OpenAI integers, out of range for TGI', () => {
    expect(both((w) => readNumber({ seed: 1e20 }, 'seed', { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }, w))).toEqual([
      ['seed', '`seed` must be an integer, got a number'],
      ['seed', '`seed` must be an integer >= 0 and <= 9007199254740991. Given: 100000000000000000000'],
    ]);
  });

  it('ranges, closed and open at the bottom', () => {
    expect(refusal(() => readNumber({ n: 3 }, 'n', { min: 0, max: 2 }))).toEqual(['n', '`n` must be >= 0 and <= 2. Given: 3']);
    expect(refusal(() => readNumber({ p: 0 }, 'p', { above: 0, max: 1 }))).toEqual(['p', '`p` must be > 0 and <= 1. Given: 0']);
    expect(refusal(() => readNumber({ p: -1 }, 'p', { above: 0 }))).toEqual(['p', '`p` must be > 0. Given: -1']);
    expect(readNumber({ p: 1 }, 'p', { above: 0, max: 1 })).toBe(1);
  });

  it('booleans and strings, nested paths named', () => {
    expect(both((w) => readBoolean({ details: 1 }, 'details', 'details', w))).toEqual([
      ['details', '`details` must be a boolean, got a number'],
      ['details', '`details` must be a boolean'],
    ]);
    expect(refusal(() => readString({ name: [] }, 'name', 'messages[0].name'))).toEqual([
      'messages[0].name',
      '`messages[0].name` must be a string, got an array',
    ]);
  });

  it('null is absent in both', () => {
    for (const wording of ['openai', 'tgi'] as const) {
      expect(readNumber({ x: null }, 'x', {}, wording)).toBeUndefined();
      expect(readBoolean({ x: null }, 'x', 'x', wording)).toBeUndefined();
      expect(readStop({ stop: null }, wording)).toBeUndefined();
    }
  });

  it("stop: OpenAI's string or array, TGI's array only; one count check for both", () => {
    expect(readStop({ stop: '\n' })).toEqual(['\n']);
    expect(refusal(() => readStop({ stop: '\n' }, 'tgi'))).toEqual(['stop', '`stop` must be an array of strings']);
    expect(refusal(() => readStop({ stop: [1] }))).toEqual(['stop', '`stop` must be a string or an array of strings, got an array']);
    expect(refusal(() => checkStopCount(['a', 'b', 'c'], 2))).toEqual(['stop', '`stop` supports up to 2 stop sequences. Given: 3']);
    expect(checkStopCount(['a', 'b'], 2)).toBeUndefined();
  });
});
