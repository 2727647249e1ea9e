/**
 * OpenAI tool calling on the hermes `<tool_call>` format (structured-output.md §2.1, §5.3):
 *
 *   <tool_call>
 *   {"name": "get_weather", "arguments": {"city": "Paris"}}
 *   </tool_call>
 *
 * - `readToolPlan`: `tools`, `tool_choice` (`none`/`auto`/`required`/named), `parallel_tool_calls`
 *   and TGI's `tool_prompt`, checked, with the grammar that enforces the choice: an xgrammar
 *   structural tag that leaves text free until `<tool_call>` and then forces a known name and
 *   arguments valid against that tool's schema.
 * - `ToolCallParser`: generated text → content deltas and `tool_calls` deltas in the shape the
 *   `openai` SDK's stream helpers and runners check; the same parser gives the non-streamed
 *   `message.tool_calls` (`parseToolCalls`).
 *
 * The conversation goes back into the chat template through src/text/tool-messages.ts.
 */
import { randomBytes } from 'node:crypto';
import { ValidationError } from '../errors.js';
import { normalizeJsonSchema } from '../grammar/preflight.js';
import { GRAMMAR_LIMITS, type GrammarSpec, type JsonSchema } from '../grammar/spec.js';
import { isPlainObject, readBoolean, readString, typeName, type JsonObject } from './json-shape.js';
import { TOOL_CALL_CLOSE, TOOL_CALL_OPEN } from '../text/tool-messages.js';
import type { OpenAIChatFinishReason, OpenAIFinishReason } from './openai-output.js';

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

export interface FunctionTool {
  name: string;
  description?: string;
  /** Normalized; absent in the request means "no parameters" (`{}` only). */
  parameters: JsonSchema;
}

export type ToolChoice = 'auto' | 'required' | { name: string };

export interface ToolPlan {
  /** The tools as the request gave them (OpenAI's shape), for chat templates that render tools. */
  tools: JsonObject[];
  functions: FunctionTool[];
  choice: ToolChoice;
  parallel: boolean;
  /** TGI's `tool_prompt`: the lead sentence of the generic tool prompt. */
  prompt?: string;
  /** What the output must match. */
  grammar: GrammarSpec;
}

/**
 * The tool fields of a chat body. `undefined` when there are no tools or `tool_choice` is `none`
 * (then the tools stay out of the prompt and nothing is constrained, as today).
 *
 * @param grammar the body's other output constraint (`response_format`, ...), if any: tools and
 *   another constraint together are refused, as TGI does.
 * @throws ValidationError naming the field.
 * @example
 * readToolPlan({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: 'required' });
 * // { choice: 'required', parallel: true, grammar: { type: 'structural_tag', atLeastOne: true, ... }, ... }
 */
export function readToolPlan(body: JsonObject, grammar?: GrammarSpec): ToolPlan | undefined {
  const tools = readToolList(body.tools);
  const choice = readToolChoice(body.tool_choice, tools);
  const parallel = readBoolean(body, 'parallel_tool_calls') ?? true;
  const prompt = readString(body, 'tool_prompt');
  if (choice === 'none' || tools.length === 0) return undefined;
  if (grammar) {
    throw new ValidationError(
      '`tools` cannot be combined with `response_format` or another output constraint: a tool call is already constrained by its schema',
      'tools',
    );
  }
  const functions = tools.map(({ fn }) => fn);
  return {
    tools: tools.map(({ raw }) => raw),
    functions,
    choice,
    parallel,
    ...(prompt !== undefined ? { prompt } : {}),
    grammar: toolCallGrammar(functions, choice, parallel),
  };
}

function readToolList(value: unknown): Array<{ raw: JsonObject; fn: FunctionTool }> {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ValidationError(`\`tools\` must be an array, got ${typeName(value)}`, 'tools');
  if (value.length > GRAMMAR_LIMITS.maxTools) {
    throw new ValidationError(`\`tools\` has ${value.length} tools; at most ${GRAMMAR_LIMITS.maxTools} are allowed`, 'tools');
  }
  const names = new Set<string>();
  return value.map((tool: unknown, i) => {
    const at = `tools[${i}]`;
    if (!isPlainObject(tool)) throw new ValidationError(`\`${at}\` must be an object, got ${typeName(tool)}`, at);
    if (tool.type !== 'function') {
      throw new ValidationError(`\`${at}.type\` must be "function"; ${JSON.stringify(tool.type)} tools are not supported`, `${at}.type`);
    }
    const fn = tool.function;
    if (!isPlainObject(fn)) throw new ValidationError(`\`${at}.function\` must be an object, got ${typeName(fn)}`, `${at}.function`);
    if (typeof fn.name !== 'string' || !NAME.test(fn.name)) {
      throw new ValidationError(`\`${at}.function.name\` must be 1 to 64 letters, digits, underscores or dashes`, `${at}.function.name`);
    }
    if (names.has(fn.name)) throw new ValidationError(`\`${at}.function.name\`: two tools are named "${fn.name}"`, `${at}.function.name`);
    names.add(fn.name);
    const description = readString(fn, 'description');
    const parametersAt = `${at}.function.parameters`;
    if (fn.parameters != null && !isPlainObject(fn.parameters)) {
      throw new ValidationError(`\`${parametersAt}\` must be a JSON schema (an object), got ${typeName(fn.parameters)}`, parametersAt);
    }
    const parameters = fn.parameters == null ? NO_PARAMETERS : normalizeJsonSchema(fn.parameters, parametersAt);
    return { raw: tool, fn: { name: fn.name, ...(description !== undefined ? { description } : {}), parameters } };
  });
}

/** A function without `parameters` takes none: its arguments are `{}`. */
const NO_PARAMETERS: JsonSchema = { additionalProperties: false, properties: {}, type: 'object' };

function readToolChoice(value: unknown, tools: readonly { fn: FunctionTool }[]): ToolChoice | 'none' {
  const param = 'tool_choice';
  if (value === undefined || value === null || value === 'auto') return 'auto';
  if (value === 'none') return 'none';
  if (value === 'required') {
    if (tools.length === 0) throw new ValidationError('`tool_choice` "required" needs `tools`', param);
    return 'required';
  }
  if (isPlainObject(value) && value.type === 'function' && isPlainObject(value.function) && typeof value.function.name === 'string') {
    const name = value.function.name;
    if (!tools.some(({ fn }) => fn.name === name)) {
      throw new ValidationError(`\`tool_choice\` names the function "${name}", which is not in \`tools\``, `${param}.function.name`);
    }
    return { name };
  }
  throw new ValidationError(
    `\`tool_choice\` must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}. Given: ${JSON.stringify(value)}`,
    param,
  );
}

/**
 * The structural tag for a tool choice: `auto` leaves text free and constrains any call that
 * starts; `required` and a named choice must begin with a call; `parallel_tool_calls: false` ends
 * the output after the first call.
 *
 * @example
 * toolCallGrammar([{ name: 'f', parameters: { type: 'object' } }], 'auto', true).tags[0].begin;
 * // '<tool_call>\n{"name": "f", "arguments": '
 */
export function toolCallGrammar(
  functions: readonly FunctionTool[],
  choice: ToolChoice,
  parallel: boolean,
): GrammarSpec & { type: 'structural_tag' } {
  const chosen = typeof choice === 'object' ? functions.filter((fn) => fn.name === choice.name) : functions;
  return {
    type: 'structural_tag',
    triggers: [TOOL_CALL_OPEN],
    tags: chosen.map((fn) => ({
      begin: `${TOOL_CALL_OPEN}\n{"name": "${fn.name}", "arguments": `,
      schema: fn.parameters,
      end: `}\n${TOOL_CALL_CLOSE}`,
    })),
    atLeastOne: choice !== 'auto',
    stopAfterFirst: !parallel,
  };
}

/** A non-streamed `message.tool_calls[k]`. */
export interface ToolCall {
  id: string;
  type: 'function';
  /** `arguments` is the JSON text exactly as generated. */
  function: { name: string; arguments: string };
}

/** One streamed `delta.tool_calls[k]`: the first of a call has id, type and name; later ones only arguments. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export type ChatDelta = { content: string } | { tool_calls: [ToolCallDelta] };

/** OpenAI's ids: `call_` and 24 letters and digits. */
export function newToolCallId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return `call_${[...randomBytes(24)].map((byte) => alphabet[byte % alphabet.length]).join('')}`;
}

type State = 'text' | 'head' | 'arguments' | 'tail';

/**
 * Splits generated text into content and tool calls as it streams. Held back, so that no tag text
 * ever reaches `content`: a partial `<tool_` at the end of a token (until it completes or
 * diverges), whitespace next to a call, and the call's closing `}\n</tool_call>`.
 *
 * Whitespace-only text before a call, between calls and after the last is dropped, so the
 * concatenated content deltas equal the non-streamed `content`.
 *
 * @example
 * const parser = new ToolCallParser();
 * parser.push('<tool_call>\n{"name": "f", "arguments": {"a"');
 * // [{ tool_calls: [{ index: 0, id: 'call_…', type: 'function', function: { name: 'f', arguments: '' } }] },
 * //  { tool_calls: [{ index: 0, function: { arguments: '{"a"' } }] }]
 */
export class ToolCallParser {
  readonly #newId: () => string;
  readonly #calls: ToolCall[] = [];
  #content = '';
  #state: State = 'text';
  /** Unconsumed text of the current state. */
  #pending = '';
  /** Whitespace not yet known to be content. */
  #space = '';
  /** The whitespace before a `<tool_call>` whose head is not read yet: content if it is no call. */
  #spaceBeforeCall = '';
  #depth = 0;
  #inString = false;
  #escaped = false;
  #out: ChatDelta[] = [];

  constructor(options: { newId?: () => string } = {}) {
    this.#newId = options.newId ?? newToolCallId;
  }

  /** The calls so far (for the non-streamed message and `finish_reason`). */
  get toolCalls(): readonly ToolCall[] {
    return this.#calls;
  }

  /** All content so far; `null` when there is none. */
  get content(): string | null {
    return this.#content === '' ? null : this.#content;
  }

  /** The deltas that `text` (the next piece of generated text) completes. */
  push(text: string): ChatDelta[] {
    this.#pending += text;
    this.#run();
    return this.#flush();
  }

  /** At the end of generation: what was held back and turned out to be content. */
  finish(): ChatDelta[] {
    if (this.#state === 'text') {
      this.#text(this.#pending);
      if (this.#calls.length === 0) this.#emit(this.#space);
    } else if (this.#state === 'head') {
      // A call cut off before its name: it was never announced, so it is text.
      this.#space = this.#spaceBeforeCall;
      this.#text(TOOL_CALL_OPEN + this.#pending);
    }
    this.#pending = '';
    this.#space = '';
    return this.#flush();
  }

  #run(): void {
    for (;;) {
      const before = this.#state;
      if (this.#state === 'text') this.#scanText();
      else if (this.#state === 'head') this.#scanHead();
      else if (this.#state === 'arguments') this.#scanArguments();
      else this.#scanTail();
      if (this.#state === before) return;
    }
  }

  #scanText(): void {
    const at = this.#pending.indexOf(TOOL_CALL_OPEN);
    if (at >= 0) {
      this.#text(this.#pending.slice(0, at));
      this.#spaceBeforeCall = this.#space;
      this.#space = '';
      this.#pending = this.#pending.slice(at + TOOL_CALL_OPEN.length);
      this.#state = 'head';
      return;
    }
    const keep = partialSuffix(this.#pending, TOOL_CALL_OPEN);
    this.#text(this.#pending.slice(0, this.#pending.length - keep));
    this.#pending = this.#pending.slice(this.#pending.length - keep);
  }

  #scanHead(): void {
    const head = scanHead(this.#pending);
    if (head === 'partial') return;
    if (head === 'fail') {
      // Not our format (unconstrained output): it was text after all.
      this.#space = this.#spaceBeforeCall;
      this.#text(TOOL_CALL_OPEN);
      this.#state = 'text';
      return;
    }
    const index = this.#calls.length;
    const id = this.#newId();
    this.#calls.push({ id, type: 'function', function: { name: head.name, arguments: '' } });
    this.#out.push({ tool_calls: [{ index, id, type: 'function', function: { name: head.name, arguments: '' } }] });
    this.#pending = this.#pending.slice(head.length);
    this.#depth = 0;
    this.#inString = false;
    this.#escaped = false;
    this.#state = 'arguments';
  }

  #scanArguments(): void {
    const text = this.#pending;
    let end = text.length;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === '\\') this.#escaped = true;
        else if (c === '"') this.#inString = false;
      } else if (c === '"') this.#inString = true;
      else if (c === '{' || c === '[') this.#depth++;
      else if ((c === '}' || c === ']') && --this.#depth === 0) {
        end = i + 1;
        this.#state = 'tail';
        break;
      }
    }
    this.#arguments(text.slice(0, end));
    this.#pending = text.slice(end);
  }

  #scanTail(): void {
    const at = this.#pending.indexOf(TOOL_CALL_CLOSE);
    if (at < 0) return;
    this.#pending = this.#pending.slice(at + TOOL_CALL_CLOSE.length);
    this.#state = 'text';
  }

  /**
   * Content, except trailing whitespace, which waits for the next text: dropped if a call or the
   * end (after calls) comes first. Token boundaries then never change what content is.
   */
  #text(text: string): void {
    const body = text.trimEnd();
    if (body === '') {
      this.#space += text;
      return;
    }
    this.#emit(this.#space + body);
    this.#space = text.slice(body.length);
  }

  #emit(piece: string): void {
    if (piece === '') return;
    this.#content += piece;
    const last = this.#out.at(-1);
    if (last && 'content' in last) last.content += piece;
    else this.#out.push({ content: piece });
  }

  #arguments(fragment: string): void {
    if (fragment === '') return;
    const index = this.#calls.length - 1;
    this.#calls[index].function.arguments += fragment;
    const last = this.#out.at(-1);
    if (last && 'tool_calls' in last && last.tool_calls[0].index === index && last.tool_calls[0].id === undefined) {
      last.tool_calls[0].function.arguments += fragment;
    } else {
      this.#out.push({ tool_calls: [{ index, function: { arguments: fragment } }] });
    }
  }

  #flush(): ChatDelta[] {
    const out = this.#out;
    this.#out = [];
    return out;
  }
}

/** The length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(text.length, tag.length - 1); n > 0; n--) if (tag.startsWith(text.slice(text.length - n))) return n;
  return 0;
}

/** `{"name": "x", "arguments": ` after `<tool_call>`, up to the arguments' `{`; any JSON whitespace between. */
function scanHead(text: string): { name: string; length: number } | 'partial' | 'fail' {
  let i = 0;
  const space = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const literal = (expected: string): 'ok' | 'partial' | 'fail' => {
    for (const char of expected) {
      if (i === text.length) return 'partial';
      if (text[i++] !== char) return 'fail';
    }
    return 'ok';
  };
  for (const part of ['{', '"name"', ':', '"']) {
    space();
    const result = literal(part);
    if (result !== 'ok') return result;
  }
  const start = i - 1;
  while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
  if (i >= text.length) return 'partial';
  let name: string;
  try {
    name = JSON.parse(text.slice(start, ++i)) as string;
  } catch {
    return 'fail';
  }
  for (const part of [',', '"arguments"', ':']) {
    space();
    const result = literal(part);
    if (result !== 'ok') return result;
  }
  space();
  if (i === text.length) return 'partial';
  return text[i] === '{' ? { name, length: i } : 'fail';
}

/**
 * The non-streamed message's `content` and `tool_calls`, by the same rules as the stream.
 *
 * @example
 * parseToolCalls('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>');
 * // { content: null, toolCalls: [{ id: 'call_…', type: 'function', function: { name: 'f', arguments: '{}' } }] }
 */
export function parseToolCalls(text: string, options: { newId?: () => string } = {}): { content: string | null; toolCalls: ToolCall[] } {
  const parser = new ToolCallParser(options);
  parser.push(text);
  parser.finish();
  return { content: parser.content, toolCalls: [...parser.toolCalls] };
}

/** `tool_calls` once a call was made and the output ended on its own; `length` stays `length`. */
export function toolCallsFinishReason(reason: OpenAIFinishReason, calls: number): OpenAIChatFinishReason {
  return calls > 0 && reason === 'stop' ? 'tool_calls' : reason;
}
