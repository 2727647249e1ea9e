/**
 * The request fields that constrain the output, from every wire format we speak, turned into one
 * `GrammarSpec` (structured-output.md §2, §5.3):
 * - OpenAI `response_format`: `text`, `json_object`, `json_schema` (`{json_schema: {name, schema, strict}}`),
 *   and TGI's `{type, value}` shape of the same field (`json`, `json_object`, `json_schema`, `regex`);
 * - vLLM `structured_outputs: {json | regex | choice | grammar | json_object}` and the older
 *   top-level `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`;
 * - TGI `parameters.grammar: {type: json | json_object | regex | json_schema, value}`, without TGI's
 *   demand for a top-level `properties` (`{"type": "object"}` is a fine schema).
 *
 * Schemas pass through `normalizeJsonSchema`: unsupported keywords are refused by name, and
 * `minLength`/`maxLength` are dropped, so string lengths are not enforced (see src/grammar/preflight.ts).
 * `strict: false` is enforced all the same: a local server has no unconstrained fallback worth offering.
 */
import { ValidationError } from '../errors.js';
import { normalizeJsonSchema } from '../grammar/preflight.js';
import type { GrammarSpec, JsonSchema } from '../grammar/spec.js';
import { isPlainObject, readBoolean, typeName, type JsonObject } from './json-shape.js';

/** OpenAI's `json_object`: any JSON object (vLLM's reading, and OpenAI's semantics). */
const ANY_OBJECT: GrammarSpec = { type: 'json_schema', schema: { type: 'object' } };

/**
 * `response_format` of a chat or completions body: OpenAI's shape or TGI's `{type, value}`.
 * `undefined` for none or `text`.
 *
 * @throws ValidationError naming the field.
 * @example
 * readResponseFormat({ response_format: { type: 'json_schema', json_schema: { name: 'e', schema: { type: 'object' } } } });
 * // { type: 'json_schema', schema: { type: 'object' } }
 */
export function readResponseFormat(body: JsonObject): GrammarSpec | undefined {
  const format = body.response_format;
  const param = 'response_format';
  if (format === undefined || format === null) return undefined;
  if (!isPlainObject(format)) throw new ValidationError(`\`${param}\` must be an object, got ${typeName(format)}`, param);
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
    case 'json':
      return format.value == null ? ANY_OBJECT : jsonSpec(format.value, `${param}.value`);
    case 'json_schema': {
      if (format.json_schema != null) return schemaConfig(format.json_schema, `${param}.json_schema`);
      if (format.value != null) return schemaConfig(format.value, `${param}.value`);
      throw new ValidationError(`\`${param}.json_schema\` is required for type "json_schema"`, `${param}.json_schema`);
    }
    case 'regex':
      return { type: 'regex', pattern: requireString(format.value, `${param}.value`) };
    default:
      throw new ValidationError(
        `\`${param}.type\` must be "text", "json_object" or "json_schema" (or TGI's "json" and "regex"). Given: ${JSON.stringify(format.type)}`,
        `${param}.type`,
      );
  }
}

/**
 * TGI's `grammar` (`parameters.grammar` on `/generate*`; top-level on `/v1/completions`, where
 * `@huggingface/inference`'s `textGeneration` puts it).
 *
 * @example
 * readTgiGrammar({ type: 'regex', value: '\\d{4}' }, 'grammar'); // { type: 'regex', pattern: '\\d{4}' }
 */
export function readTgiGrammar(grammar: unknown, param: string): GrammarSpec | undefined {
  if (grammar === undefined || grammar === null) return undefined;
  if (!isPlainObject(grammar)) throw new ValidationError(`\`${param}\` must be an object, got ${typeName(grammar)}`, param);
  const { type, value } = grammar;
  if (value === undefined || value === null) throw new ValidationError(`missing field \`${param}.value\``, `${param}.value`);
  switch (type) {
    case 'json':
    case 'json_object':
      return jsonSpec(value, `${param}.value`);
    case 'json_schema':
      return schemaConfig(value, `${param}.value`);
    case 'regex':
      return { type: 'regex', pattern: requireString(value, `${param}.value`) };
    default:
      throw new ValidationError(
        `\`${param}.type\` must be "json", "json_object", "json_schema" or "regex". Given: ${JSON.stringify(type)}`,
        `${param}.type`,
      );
  }
}

/**
 * vLLM's `structured_outputs` object, or its older top-level `guided_*` fields. At most one
 * constraint; vLLM's tuning keys (`disable_any_whitespace`, `whitespace_pattern`, ...) are ignored.
 *
 * @example
 * readStructuredOutputs({ structured_outputs: { choice: ['yes', 'no'] } }); // { type: 'choice', choices: ['yes', 'no'] }
 * readStructuredOutputs({ guided_regex: '[a-z]+' }); // { type: 'regex', pattern: '[a-z]+' }
 */
export function readStructuredOutputs(body: JsonObject): GrammarSpec | undefined {
  const found: Array<[string, GrammarSpec]> = [];
  const add = (param: string, spec: GrammarSpec | undefined) => spec && found.push([param, spec]);
  const outputs = body.structured_outputs;
  if (outputs !== undefined && outputs !== null) {
    if (!isPlainObject(outputs))
      throw new ValidationError(`\`structured_outputs\` must be an object, got ${typeName(outputs)}`, 'structured_outputs');
    readVllmFields(outputs, 'structured_outputs.', add);
    if (readBoolean(outputs, 'json_object', 'structured_outputs.json_object')) add('structured_outputs.json_object', ANY_OBJECT);
    if (outputs.structural_tag != null) {
      throw new ValidationError(
        '`structured_outputs.structural_tag` is not supported; use `tools` for tool calls',
        'structured_outputs.structural_tag',
      );
    }
  }
  readVllmFields(body, 'guided_', add);
  if (found.length > 1) {
    throw new ValidationError(`only one output constraint may be given; got ${found.map(([p]) => `\`${p}\``).join(' and ')}`, found[1][0]);
  }
  return found[0]?.[1];
}

/**
 * Every constraint field an OpenAI-route body may carry (`grammar`, TGI's, only when `tgiGrammar`:
 * on `/v1/completions`); more than one is a 422.
 *
 * @example
 * readOpenAIGrammar({ response_format: { type: 'json_object' } }, { tgiGrammar: false }); // { type: 'json_schema', schema: { type: 'object' } }
 */
export function readOpenAIGrammar(body: JsonObject, options: { tgiGrammar: boolean }): GrammarSpec | undefined {
  const found: Array<[string, GrammarSpec]> = [];
  const add = (param: string, spec: GrammarSpec | undefined) => spec && found.push([param, spec]);
  add('response_format', readResponseFormat(body));
  add('structured_outputs', readStructuredOutputs(body));
  if (options.tgiGrammar) add('grammar', readTgiGrammar(body.grammar, 'grammar'));
  if (found.length > 1) {
    throw new ValidationError(`only one output constraint may be given; got ${found.map(([p]) => `\`${p}\``).join(' and ')}`, found[1][0]);
  }
  return found[0]?.[1];
}

/** `json`, `regex`, `choice`, `grammar` under `prefix` (`structured_outputs.` or `guided_`). */
function readVllmFields(object: JsonObject, prefix: string, add: (param: string, spec: GrammarSpec | undefined) => void): void {
  const field = (name: string) => [object[prefix.endsWith('.') ? name : `${prefix}${name}`], `${prefix}${name}`] as const;
  const [json, jsonParam] = field('json');
  if (json != null) add(jsonParam, jsonSpec(json, jsonParam));
  const [regex, regexParam] = field('regex');
  if (regex != null) add(regexParam, { type: 'regex', pattern: requireString(regex, regexParam) });
  const [choice, choiceParam] = field('choice');
  if (choice != null) {
    if (!Array.isArray(choice) || choice.length === 0 || !choice.every((c) => typeof c === 'string')) {
      throw new ValidationError(`\`${choiceParam}\` must be a non-empty array of strings`, choiceParam);
    }
    add(choiceParam, { type: 'choice', choices: [...choice] });
  }
  const [grammar, grammarParam] = field('grammar');
  if (grammar != null) add(grammarParam, { type: 'grammar', grammar: requireString(grammar, grammarParam) });
}

/** `{name?, schema?, strict?}` (OpenAI's `json_schema`, TGI's `json_schema` value); no schema: any object. */
function schemaConfig(config: unknown, param: string): GrammarSpec {
  if (!isPlainObject(config)) throw new ValidationError(`\`${param}\` must be an object, got ${typeName(config)}`, param);
  if (config.name != null && (typeof config.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(config.name))) {
    throw new ValidationError(`\`${param}.name\` must be 1 to 64 letters, digits, underscores or dashes`, `${param}.name`);
  }
  // Read only to be checked: the schema is enforced whether strict or not.
  readBoolean(config, 'strict', `${param}.strict`);
  return config.schema == null ? ANY_OBJECT : jsonSpec(config.schema, `${param}.schema`);
}

/** A schema given as an object, a boolean, or a JSON string of one (TGI and vLLM accept both). */
function jsonSpec(value: unknown, param: string): GrammarSpec {
  let schema: unknown = value;
  if (typeof value === 'string') {
    try {
      schema = JSON.parse(value);
    } catch (error) {
      throw new ValidationError(`\`${param}\` is not valid JSON: ${(error as Error).message}`, param);
    }
  }
  if (typeof schema !== 'boolean' && !isPlainObject(schema)) {
    throw new ValidationError(`\`${param}\` must be a JSON schema (an object), got ${typeName(schema)}`, param);
  }
  return { type: 'json_schema', schema: normalizeJsonSchema(schema as JsonSchema, param) };
}

function requireString(value: unknown, param: string): string {
  if (typeof value !== 'string' || value === '')
    throw new ValidationError(`\`${param}\` must be a non-empty string, got ${typeName(value)}`, param);
  return value;
}
