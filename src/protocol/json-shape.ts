/**
 * Readers for fields of a parsed JSON request body, for every route family: the OpenAI decoders and
 * TGI's parameter validation (params.ts). Each returns `undefined` for a missing or `null` field
 * (OpenAI clients send `null` for "unset"; TGI's serde reads it as absent) and throws a 422
 * `ValidationError` naming the field otherwise, so a decoder never lets a wrongly typed value
 * through to the engine.
 */
import { ValidationError } from '../errors.js';

export type JsonObject = Record<string, unknown>;

/** The widths of TGI's Rust integer fields (`top_k: i32`, `max_new_tokens: u32`), which bound them on every route. */
export const I32_MAX = 2 ** 31 - 1;
export const U32_MAX = 2 ** 32 - 1;

/**
 * Whose words a refusal is in. `openai`: the message names the type received (`must be a number,
 * got a string`). `tgi`: the sentences TGI routes have always answered and their clients match
 * (`must be a finite number`, `must be an integer >= 0 and <= 4294967295. Given: 1e+20`), where an
 * integer is any whole number and a huge one is out of range rather than of the wrong type.
 */
export type Wording = 'openai' | 'tgi';

export function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** JSON's name for a value's type, for error messages. */
export function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

export interface NumberRule {
  min?: number;
  /** An exclusive lower bound, for a value that must be strictly positive (`typical_p`). */
  above?: number;
  max?: number;
  integer?: boolean;
}

/**
 * A number within `[min, max]` (or `(above, max]`).
 *
 * @example
 * readNumber({ temperature: 0.5 }, 'temperature', { min: 0, max: 2 }); // 0.5
 * readNumber({ typical_p: 0 }, 'typical_p', { above: 0, max: 1 }); // ValidationError: `typical_p` must be > 0 and <= 1. Given: 0
 */
export function readNumber(body: JsonObject, name: string, rule: NumberRule = {}, wording: Wording = 'openai'): number | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  const tgi = wording === 'tgi';
  const whole = tgi ? Number.isInteger : Number.isSafeInteger;
  const ok = typeof value === 'number' && (rule.integer ? whole(value) : Number.isFinite(value));
  if (!ok) {
    const kind = rule.integer ? 'an integer' : tgi ? 'a finite number' : 'a number';
    throw new ValidationError(`\`${name}\` must be ${kind}${tgi ? '' : `, got ${typeName(value)}`}`, name);
  }
  const { min, above, max } = rule;
  if ((min !== undefined && value < min) || (above !== undefined && value <= above) || (max !== undefined && value > max)) {
    const lower = min !== undefined ? `>= ${min}` : above !== undefined ? `> ${above}` : null;
    const upper = max !== undefined ? `<= ${max}` : null;
    const range = [lower, upper].filter(Boolean).join(' and ');
    throw new ValidationError(`\`${name}\` must be ${tgi && rule.integer ? 'an integer ' : ''}${range}. Given: ${value}`, name);
  }
  return value;
}

/** `path` names the field in the error when it is nested (`structured_outputs.json_object`). */
export function readBoolean(body: JsonObject, name: string, path = name, wording: Wording = 'openai'): boolean | undefined {
  return readTyped(body, name, 'boolean', path, wording) as boolean | undefined;
}

/** `path` names the field in the error when it is nested (`messages[0].name`). */
export function readString(body: JsonObject, name: string, path = name, wording: Wording = 'openai'): string | undefined {
  return readTyped(body, name, 'string', path, wording) as string | undefined;
}

function readTyped(body: JsonObject, name: string, type: 'boolean' | 'string', path: string, wording: Wording): unknown {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== type) {
    throw new ValidationError(`\`${path}\` must be a ${type}${wording === 'tgi' ? '' : `, got ${typeName(value)}`}`, path);
  }
  return value;
}

export function readObject(body: JsonObject, name: string): JsonObject | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) throw new ValidationError(`\`${name}\` must be an object, got ${typeName(value)}`, name);
  return value;
}

/**
 * `stop`, always returned as an array: OpenAI's is a string or an array of strings, TGI's an array.
 *
 * @example
 * readStop({ stop: '\n' }); // ['\n']
 * readStop({ stop: '\n' }, 'tgi'); // ValidationError: `stop` must be an array of strings
 */
export function readStop(body: JsonObject, wording: Wording = 'openai'): string[] | undefined {
  const value = body.stop;
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string' && wording === 'openai') return [value];
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) return [...value];
  const expected = wording === 'openai' ? `a string or an array of strings, got ${typeName(value)}` : 'an array of strings';
  throw new ValidationError(`\`stop\` must be ${expected}`, 'stop');
}

/** The server's `max_stop_sequences`, in TGI's words on every route. */
export function checkStopCount(stop: readonly string[], max: number | undefined): void {
  if (max !== undefined && stop.length > max) {
    throw new ValidationError(`\`stop\` supports up to ${max} stop sequences. Given: ${stop.length}`, 'stop');
  }
}
