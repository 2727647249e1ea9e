/**
 * The TypeScript half of grammar screening: rules that refuse, before xgrammar sees it, whatever
 * would compile for seconds or would be silently ignored (structured-output.md §5.4). What only
 * xgrammar can judge (regex and EBNF syntax) is left to the parse in the screening instance.
 *
 * JSON schemas are rebuilt on the way through:
 * - `minLength`/`maxLength` are dropped and so NOT enforced: in the xgrammar build we ship, a length
 *   bound costs seconds to compile (maxLength 200: ~3 s) and makes `\n` and `\"` impossible inside
 *   the string (xgrammar#800, #852);
 * - annotations (`title`, `description`, `examples`, `default`, `$schema`, ...) are dropped;
 * - `maxItems` above the cap is lowered to it (every output still satisfies the schema);
 * - keywords xgrammar would ignore are refused by name (vLLM's list), as are unknown `format`s and
 *   any `$ref` that does not point inside the document;
 * - keywords are sorted, so equal schemas make equal cache keys; `properties` keep their order,
 *   which is the order the grammar emits them in.
 */
import { ValidationError } from '../errors.js';
import { GRAMMAR_LIMITS, type GrammarSpec, type JsonSchema } from './spec.js';

/** Keywords xgrammar does not enforce (vLLM's `has_xgrammar_unsupported_json_features`). */
const REFUSED = new Set([
  'multipleOf',
  'contains',
  'minContains',
  'maxContains',
  'minProperties',
  'maxProperties',
  'propertyNames',
  'patternProperties',
  'dependentSchemas',
  'dependentRequired',
]);

const DROPPED = new Set([
  '$schema',
  '$id',
  '$comment',
  'title',
  'description',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
  'minLength',
  'maxLength',
]);

/** The string formats xgrammar implements. */
const FORMATS = new Set([
  'email',
  'date',
  'time',
  'date-time',
  'duration',
  'ipv4',
  'ipv6',
  'hostname',
  'uuid',
  'uri',
  'uri-reference',
  'uri-template',
  'json-pointer',
  'relative-json-pointer',
]);

const SCHEMA_KEYWORDS = new Set([
  'additionalProperties',
  'additionalItems',
  'items',
  'not',
  'if',
  'then',
  'else',
  'unevaluatedProperties',
  'unevaluatedItems',
]);
const SCHEMA_LIST_KEYWORDS = new Set(['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items']);
const SCHEMA_MAP_KEYWORDS = new Set(['properties', '$defs', 'definitions']);

/** xgrammar recurses on nesting in a 64 KiB WASM stack: 100 nested schemas already overflow it. */
const MAX_DEPTH = 32;
/** Parenthesis depth in a regex or EBNF source: 200 broke the compiler, 1000 made the regex parser spin forever. */
const MAX_NESTING = 50;

/**
 * Checks a JSON schema against the rules above and returns the rebuilt schema.
 *
 * @param param the request field, for messages and OpenAI's `param`.
 * @throws ValidationError naming the keyword and where it is.
 * @example
 * normalizeJsonSchema({ type: 'string', maxLength: 200, title: 'Name' }, 'schema'); // { type: 'string' }
 * normalizeJsonSchema({ type: 'array', uniqueItems: true }, 'schema'); // throws: `uniqueItems` ... not supported
 */
export function normalizeJsonSchema(schema: unknown, param: string): JsonSchema {
  const text = JSON.stringify(schema) ?? '';
  if (text.length > GRAMMAR_LIMITS.maxSourceLength) {
    throw new ValidationError(
      `\`${param}\` is ${text.length} characters of JSON; at most ${GRAMMAR_LIMITS.maxSourceLength} are allowed`,
      param,
    );
  }
  return normalizeNode(schema, schema, param, '#', 0);
}

function normalizeNode(node: unknown, root: unknown, param: string, at: string, depth: number): JsonSchema {
  const fail = (message: string): never => {
    throw new ValidationError(`\`${param}\` at ${at}: ${message}`, param);
  };
  if (typeof node === 'boolean') return node;
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return fail('a schema must be an object or a boolean');
  if (depth > MAX_DEPTH) return fail(`schemas nested deeper than ${MAX_DEPTH} levels are not supported`);
  const input = node as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const child = (value: unknown, path: string) => normalizeNode(value, root, param, `${at}/${path}`, depth + 1);

  for (const key of Object.keys(input).sort()) {
    const value = input[key];
    if (DROPPED.has(key)) continue;
    if (REFUSED.has(key)) fail(`\`${key}\` is not supported by the grammar engine`);
    if (key === 'uniqueItems') {
      if (value === true) fail('`uniqueItems` is not supported by the grammar engine');
      continue;
    }
    if (SCHEMA_MAP_KEYWORDS.has(key)) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`\`${key}\` must be an object`);
      // Insertion order, not sorted: it is the order of the generated keys.
      out[key] = Object.fromEntries(
        Object.entries(value as object).map(([name, sub]) => [name, child(sub, `${key}/${escapePointer(name)}`)]),
      );
    } else if (SCHEMA_LIST_KEYWORDS.has(key) && Array.isArray(value)) {
      out[key] = value.map((sub, i) => child(sub, `${key}/${i}`));
    } else if (SCHEMA_KEYWORDS.has(key)) {
      out[key] = child(value, key);
    } else if (key === '$ref') {
      out[key] = checkRef(value, root, fail);
    } else if (key === 'enum') {
      if (!Array.isArray(value)) fail('`enum` must be an array');
      if ((value as unknown[]).length > GRAMMAR_LIMITS.maxEnumMembers) {
        fail(`\`enum\` has ${(value as unknown[]).length} members; at most ${GRAMMAR_LIMITS.maxEnumMembers} are allowed`);
      }
      const problem = choicesProblem((value as unknown[]).map((member) => JSON.stringify(member)));
      if (problem) fail(`\`enum\` ${problem}`);
      out[key] = value;
    } else if (key === 'minItems') {
      if (typeof value === 'number' && value > GRAMMAR_LIMITS.maxRepetition) {
        fail(`\`minItems\` is ${value}; at most ${GRAMMAR_LIMITS.maxRepetition} is allowed`);
      }
      out[key] = value;
    } else if (key === 'maxItems') {
      out[key] = typeof value === 'number' ? Math.min(value, GRAMMAR_LIMITS.maxRepetition) : value;
    } else if (key === 'format') {
      if (typeof value !== 'string' || !FORMATS.has(value))
        fail(`the string format ${JSON.stringify(value)} is not supported (supported: ${[...FORMATS].join(', ')})`);
      out[key] = value;
    } else if (key === 'pattern') {
      if (typeof value !== 'string') fail('`pattern` must be a string');
      const problem = sourceProblem(value as string, 'regex');
      if (problem) fail(`\`pattern\` ${problem}`);
      out[key] = value;
    } else {
      out[key] = value;
    }
  }
  return integerRange(out);
}

const RANGE_KEYWORDS = new Set(['type', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']);
/** More parts than this and the range is left to xgrammar as it is (a compile-time guard). */
const MAX_RANGE_PARTS = 128;

/**
 * Works around xgrammar 0.1.27's integer ranges, which are off within the last decade when the
 * bounds share leading digits (maximum 120 allows 121–129; minimum 102 with maximum 149 allows
 * 100). A bounded range of non-negative integers becomes an `anyOf` of aligned blocks (a fixed
 * prefix, then free digits), which it gets right, and an `enum` of the single values. Ranges with
 * negative values are left as they are: their bounds are approximate (minimum -110 allows -119),
 * and so are those of `number` ranges (maximum 120 allows 120.5).
 *
 * @example
 * integerRange({ maximum: 120, minimum: 0, type: 'integer' });
 * // { anyOf: [{ maximum: 99, minimum: 0, type: 'integer' }, { maximum: 109, minimum: 100, ... },
 * //           { maximum: 119, minimum: 110, ... }, { enum: [120] }] }
 */
function integerRange(schema: Record<string, unknown>): Record<string, unknown> {
  if (schema.type !== 'integer' || !Object.keys(schema).every((key) => RANGE_KEYWORDS.has(key))) return schema;
  const finite = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) ? value : undefined);
  const lows = [finite(schema.minimum), finite(schema.exclusiveMinimum)].map((v, i) =>
    v === undefined ? -Infinity : i === 0 ? Math.ceil(v) : Math.floor(v) + 1,
  );
  const highs = [finite(schema.maximum), finite(schema.exclusiveMaximum)].map((v, i) =>
    v === undefined ? Infinity : i === 0 ? Math.floor(v) : Math.ceil(v) - 1,
  );
  const lo = Math.max(...lows);
  const hi = Math.min(...highs);
  if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || lo > hi) return schema;
  if (hi < 0) return schema;
  const parts = alignedParts(Math.max(lo, 0), hi);
  // Negative values are off even as aligned blocks or an enum (it seems to merge those back into a
  // range), so they stay one range.
  const negative = lo < 0 ? [{ maximum: -1, minimum: lo, type: 'integer' }] : [];
  // Single values are one `enum`: fewer alternatives to compile.
  const singles = parts.filter(([min, max]) => min === max).map(([value]) => value);
  const blocks = parts.filter(([min, max]) => min !== max).map(([min, max]) => ({ maximum: max, minimum: min, type: 'integer' }));
  if (parts.length < 2 || blocks.length > MAX_RANGE_PARTS) return schema;
  return { anyOf: [...negative, ...blocks, ...(singles.length > 0 ? [{ enum: singles }] : [])] };
}

/**
 * [a, b] (0 <= a <= b) as blocks that each fix a prefix and leave the remaining digits free
 * ([120, 129] is "12" and one free digit): [7, 123] → [7, 7], [8, 8], [9, 9], [10, 19], ..., [90, 99],
 * [100, 109], [110, 119], [120, 120], [121, 121], [122, 122], [123, 123].
 */
function alignedParts(a: number, b: number): Array<[number, number]> {
  const parts: Array<[number, number]> = [];
  while (a <= b) {
    let size = 1;
    while (a % (size * 10) === 0 && a + size * 10 - 1 <= b) size *= 10;
    parts.push([a, a + size - 1]);
    a += size;
  }
  return parts;
}

/** Only pointers into this document (`#`, `#/$defs/x`, ...) that lead to a schema. */
function checkRef(ref: unknown, root: unknown, fail: (message: string) => never): string {
  if (typeof ref !== 'string' || !(ref === '#' || ref.startsWith('#/'))) {
    return fail(`\`$ref\` ${JSON.stringify(ref)} must point inside this schema ("#/$defs/name"); other documents are not fetched`);
  }
  let target: unknown = root;
  for (const raw of ref === '#' ? [] : ref.slice(2).split('/')) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    target = typeof target === 'object' && target !== null ? (target as Record<string, unknown>)[part] : undefined;
    if (target === undefined) return fail(`\`$ref\` ${JSON.stringify(ref)} points to nothing in this schema`);
  }
  if (typeof target !== 'boolean' && (typeof target !== 'object' || target === null || Array.isArray(target))) {
    return fail(`\`$ref\` ${JSON.stringify(ref)} does not point to a schema`);
  }
  return ref;
}

function escapePointer(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * What makes a regex or EBNF source too costly or dangerous for xgrammar: a `{n}`, `{n,}` or
 * `{n,m}` count above the cap (it unrolls them: a large one compiles for seconds), or parentheses
 * nested deeper than MAX_NESTING (its parsers and compiler recurse on them).
 *
 * @param syntax `ebnf` skips string literals ("...") when counting parentheses; both skip
 *   character classes and escapes.
 * @example
 * sourceProblem('\\d{4}', 'regex'); // null
 * sourceProblem('a{100000}', 'regex'); // 'repeats 100000 times; at most 1000 is allowed'
 */
export function sourceProblem(source: string, syntax: 'regex' | 'ebnf'): string | null {
  for (const match of source.matchAll(/\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}/g)) {
    const count = Math.max(Number(match[1]), match[2] ? Number(match[2]) : 0);
    if (count > GRAMMAR_LIMITS.maxRepetition) return `repeats ${count} times; at most ${GRAMMAR_LIMITS.maxRepetition} is allowed`;
  }
  let depth = 0;
  let deepest = 0;
  let inside: '[' | '"' | null = null;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inside === '[' ? c === ']' : inside === '"' ? c === '"' : false) inside = null;
    else if (inside) continue;
    else if (c === '[' || (c === '"' && syntax === 'ebnf')) inside = c;
    else if (c === '(') deepest = Math.max(deepest, ++depth);
    else if (c === ')') depth--;
  }
  return deepest > MAX_NESTING ? `nests parentheses ${deepest} deep; at most ${MAX_NESTING} levels are allowed` : null;
}

/** Strings too long, or too long together, to compile as alternatives in reasonable time. */
function choicesProblem(choices: readonly string[]): string | null {
  const longest = Math.max(...choices.map((choice) => choice.length));
  if (longest > GRAMMAR_LIMITS.maxChoiceLength)
    return `has a member of ${longest} characters; at most ${GRAMMAR_LIMITS.maxChoiceLength} are allowed`;
  const total = choices.reduce((sum, choice) => sum + choice.length, 0);
  if (total > GRAMMAR_LIMITS.maxChoiceListLength)
    return `is ${total} characters long together; at most ${GRAMMAR_LIMITS.maxChoiceListLength} are allowed`;
  return null;
}

/**
 * Every rule above, for any spec (the protocol parsers already normalized their schemas; a spec
 * built elsewhere gets the same treatment). Returns the spec to lower, with schemas rebuilt.
 *
 * @throws ValidationError
 * @example
 * preflightGrammar({ type: 'regex', pattern: 'a{5000}' }, 'grammar'); // throws
 */
export function preflightGrammar(spec: GrammarSpec, param: string): GrammarSpec {
  const source = (what: 'regex' | 'grammar', text: string): void => {
    if (text.length > GRAMMAR_LIMITS.maxSourceLength) {
      throw new ValidationError(
        `the ${what} is ${text.length} characters long; at most ${GRAMMAR_LIMITS.maxSourceLength} are allowed`,
        param,
      );
    }
    const problem = sourceProblem(text, what === 'regex' ? 'regex' : 'ebnf');
    if (problem) throw new ValidationError(`the ${what} ${problem}`, param);
  };
  switch (spec.type) {
    case 'json_schema':
      return { type: 'json_schema', schema: normalizeJsonSchema(spec.schema, param) };
    case 'regex':
      source('regex', spec.pattern);
      return spec;
    case 'grammar':
      source('grammar', spec.grammar);
      return spec;
    case 'choice': {
      if (spec.choices.length === 0) throw new ValidationError('`choice` needs at least one string', param);
      if (spec.choices.length > GRAMMAR_LIMITS.maxChoices) {
        throw new ValidationError(`${spec.choices.length} choices; at most ${GRAMMAR_LIMITS.maxChoices} are allowed`, param);
      }
      const problem = choicesProblem(spec.choices);
      if (problem) throw new ValidationError(`the choice list ${problem}`, param);
      return spec;
    }
    case 'structural_tag': {
      if (spec.tags.length === 0) throw new ValidationError('a structural tag needs at least one tag', param);
      if (spec.tags.length > GRAMMAR_LIMITS.maxTools) {
        throw new ValidationError(`${spec.tags.length} tags; at most ${GRAMMAR_LIMITS.maxTools} are allowed`, param);
      }
      return { ...spec, tags: spec.tags.map((tag) => ({ ...tag, schema: normalizeJsonSchema(tag.schema, param) })) };
    }
  }
}
