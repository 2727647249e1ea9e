/**
 * Readers for fields of a parsed JSON request body. Each returns `undefined` for a missing or
 * `null` field (OpenAI clients send `null` for "unset") and throws a 422 `ValidationError` naming
 * the field otherwise, so a decoder never lets a wrongly typed value through to the engine.
 */
import { ValidationError } from '../errors.js';

export type JsonObject = Record<string, unknown>;

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
export function readNumber(body: JsonObject, name: string, rule: NumberRule = {}): number | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  const kind = rule.integer ? 'an integer' : 'a number';
  const ok = typeof value === 'number' && (rule.integer ? Number.isSafeInteger(value) : Number.isFinite(value));
  if (!ok) throw new ValidationError(`\`${name}\` must be ${kind}, got ${typeName(value)}`, name);
  const { min, above, max } = rule;
  if ((min !== undefined && value < min) || (above !== undefined && value <= above) || (max !== undefined && value > max)) {
    const lower = min !== undefined ? `>= ${min}` : above !== undefined ? `> ${above}` : null;
    const upper = max !== undefined ? `<= ${max}` : null;
    throw new ValidationError(`\`${name}\` must be ${[lower, upper].filter(Boolean).join(' and ')}. Given: ${value}`, name);
  }
  return value;
}

/** `path` names the field in the error when it is nested (`structured_outputs.json_object`). */
export function readBoolean(body: JsonObject, name: string, path = name): boolean | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new ValidationError(`\`${path}\` must be a boolean, got ${typeName(value)}`, path);
  return value;
}

/** `path` names the field in the error when it is nested (`messages[0].name`). */
export function readString(body: JsonObject, name: string, path = name): string | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ValidationError(`\`${path}\` must be a string, got ${typeName(value)}`, path);
  return value;
}

export function readObject(body: JsonObject, name: string): JsonObject | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) throw new ValidationError(`\`${name}\` must be an object, got ${typeName(value)}`, name);
  return value;
}

/**
 * OpenAI's `stop`: a string or an array of strings, always returned as an array.
 *
 * @example
 * readStop({ stop: '\n' }); // ['\n']
 */
export function readStop(body: JsonObject): string[] | undefined {
  const value = body.stop;
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) return [...value];
  throw new ValidationError(`\`stop\` must be a string or an array of strings, got ${typeName(value)}`, 'stop');
}
