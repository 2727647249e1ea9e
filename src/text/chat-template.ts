/**
 * Chat templates from `tokenizer_config.json`, rendered with `@huggingface/jinja` the way transformers'
 * `apply_chat_template` does.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { TemplateError, ValidationError } from '../errors.js';
import { readJsonObject } from '../json-file.js';
import type { ChatMessage } from '../types.js';
import { tokenContent } from './tokenizer.js';
import { templateKnowsTools, templateMessages } from './tool-messages.js';

export interface ChatTemplateInput {
  messages: ChatMessage[];
  /** Default true: end the prompt with the opening of an assistant turn. */
  addGenerationPrompt?: boolean;
  /** OpenAI's function tools, for the template; one that knows no tools gets them in a generic system prompt. */
  tools?: unknown[];
  /** TGI's `tool_prompt`: the lead sentence of that generic prompt. */
  toolPrompt?: string;
  /** More template variables (vLLM's `chat_template_kwargs`: `enable_thinking`, `documents`, ...). */
  kwargs?: Record<string, unknown>;
}

/** The variables the renderer sets itself, and @huggingface/jinja's globals: no kwarg may replace them. */
const RESERVED_VARIABLES: ReadonlySet<string> = new Set([
  'messages',
  'tools',
  'add_generation_prompt',
  'bos_token',
  'eos_token',
  'raise_exception',
  'range',
  'strftime_now',
  'true',
  'false',
  'none',
  'True',
  'False',
  'None',
]);

/**
 * Refuses template arguments that would replace a variable the renderer sets (the messages, the
 * tools, the special tokens) or a template global: a request must not rewrite its own prompt there.
 *
 * @throws ValidationError naming `${path}.${key}`.
 * @example
 * checkTemplateKwargs({ enable_thinking: false }, 'chat_template_kwargs'); // fine
 * checkTemplateKwargs({ messages: [] }, 'chat_template_kwargs'); // throws: set by the server
 */
export function checkTemplateKwargs(kwargs: Record<string, unknown>, path: string): void {
  for (const key of Object.keys(kwargs)) {
    if (RESERVED_VARIABLES.has(key)) {
      throw new ValidationError(`\`${path}.${key}\` is not allowed: the chat template's \`${key}\` is set by the server`, `${path}.${key}`);
    }
  }
}

/**
 * A model's chat template. `tokenizer_config.json` holds one template as a string, or several as
 * `[{name, template}]`: "default", plus e.g. "tool_use", chosen when tools are given.
 *
 * @example
 * const template = ChatTemplate.fromConfig(tokenizer.config);
 * const prompt = template?.render({ messages: [{ role: 'user', content: 'Hi' }] });
 */
export class ChatTemplate {
  readonly #sources: ReadonlyMap<string, string>;
  readonly #compiled = new Map<string, Template>();
  readonly #name: string | undefined;
  readonly #bosToken: string | null;
  readonly #eosToken: string | null;

  private constructor(sources: Map<string, string>, config: Record<string, unknown>, name: string | undefined) {
    this.#sources = sources;
    this.#name = name;
    this.#bosToken = tokenContent(config.bos_token);
    this.#eosToken = tokenContent(config.eos_token);
  }

  /** Returns null when the config has no template. A `name` that does not exist is a TemplateError. */
  static fromConfig(config: Record<string, unknown>, options: { name?: string } = {}): ChatTemplate | null {
    const sources = templateSources(config.chat_template);
    if (sources.size === 0) return null;
    if (options.name !== undefined && !sources.has(options.name)) {
      throw new TemplateError(`no chat template named "${options.name}" (available: ${[...sources.keys()].join(', ')})`);
    }
    return new ChatTemplate(sources, config, options.name);
  }

  /**
   * The model directory's template: `chat_template` in tokenizer_config.json, or, as newer
   * transformers versions save it, `chat_template.jinja` or `chat_template.json` beside it.
   */
  static async load(dir: string, config: Record<string, unknown>): Promise<ChatTemplate | null> {
    if (config.chat_template === undefined || config.chat_template === null) {
      const jinja = await readFile(join(dir, 'chat_template.jinja'), 'utf8').catch(() => null);
      const json = jinja === null ? await readJsonObject(join(dir, 'chat_template.json'), 'an object with a chat_template') : undefined;
      const chatTemplate = jinja ?? json?.chat_template;
      if (chatTemplate !== undefined) return ChatTemplate.fromConfig({ ...config, chat_template: chatTemplate });
    }
    return ChatTemplate.fromConfig(config);
  }

  /** @throws ValidationError for a reserved kwarg (see `checkTemplateKwargs`), TemplateError when the template fails. */
  render(input: ChatTemplateInput): string {
    if (input.kwargs) checkTemplateKwargs(input.kwargs, 'chat_template_kwargs');
    const name = this.#pick(input.tools);
    const template = this.#template(name);
    // Calls and results in the history need the same treatment as the request's tools.
    const generic = !templateKnowsTools(this.#sources.get(name) ?? '');
    const messages = templateMessages(input.messages.map(flattenContent), { generic, tools: input.tools, prompt: input.toolPrompt });
    const variables: Record<string, unknown> = {
      ...input.kwargs,
      messages,
      add_generation_prompt: input.addGenerationPrompt ?? true,
    };
    // Absent tokens stay undefined, so a template that needs one fails as it would in transformers.
    if (this.#bosToken !== null) variables.bos_token = this.#bosToken;
    if (this.#eosToken !== null) variables.eos_token = this.#eosToken;
    if (input.tools !== undefined && !generic) variables.tools = input.tools;
    try {
      // @huggingface/jinja defines raise_exception(message) as a function that throws it.
      return template.render(variables);
    } catch (error) {
      throw new TemplateError(messageOf(error), error);
    }
  }

  #pick(tools: unknown[] | undefined): string {
    if (this.#name !== undefined) return this.#name;
    if (tools !== undefined && this.#sources.has('tool_use')) return 'tool_use';
    if (this.#sources.has('default')) return 'default';
    const names = [...this.#sources.keys()].join(', ');
    throw new TemplateError(`the model has several chat templates and none is named "default" (available: ${names})`);
  }

  /** Parsed on first use, so a broken template fails the requests that use it, not the model load. */
  #template(name: string): Template {
    let template = this.#compiled.get(name);
    if (template === undefined) {
      try {
        template = new Template(this.#sources.get(name) ?? '');
      } catch (error) {
        throw new TemplateError(messageOf(error), error);
      }
      this.#compiled.set(name, template);
    }
    return template;
  }
}

function templateSources(value: unknown): Map<string, string> {
  if (typeof value === 'string') return new Map([['default', value]]);
  const sources = new Map<string, string>();
  if (!Array.isArray(value)) return sources;
  for (const entry of value) {
    const { name, template } = (entry ?? {}) as { name?: unknown; template?: unknown };
    if (typeof name === 'string' && typeof template === 'string') sources.set(name, template);
  }
  return sources;
}

/** Templates concatenate `content` as a string, so OpenAI-style text parts are joined first. */
function flattenContent(message: ChatMessage): ChatMessage {
  if (!Array.isArray(message.content)) return message;
  const texts = message.content.map((part) => {
    if (part.type !== 'text' || typeof part.text !== 'string') {
      throw new TemplateError(`message content part of type "${part.type}" is not supported: this model takes text only`);
    }
    return part.text;
  });
  return { ...message, content: texts.join('') };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
