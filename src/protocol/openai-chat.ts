/**
 * `/v1/chat/completions` as OpenAI speaks it (protocol.md §3, "Our decisions" §4): request
 * decoding, the streamed chunks, and the non-streamed response.
 *
 * Tools are rendered into the prompt by the chat template and nothing more: the model's reply
 * always comes back as `content`, never parsed into `tool_calls`. Hence `tool_choice` may be `auto`
 * or `none` (which leaves the tools out of the prompt); what we cannot honour is a 422, not a silent
 * no-op. `response_format` (and vLLM's `structured_outputs`, `guided_*`) constrain the output with a grammar.
 */
import { ValidationError } from '../errors.js';
import type { ChatMessage, EndEvent, GenerateParameters, GenerationEvent } from '../types.js';
import type { GrammarSpec } from '../grammar/spec.js';
import { isPlainObject, readBoolean, readNumber, readObject, readString, typeName, type JsonObject } from './json-shape.js';
import { readOpenAIGrammar } from './structured-output.js';
import { checkTemplateKwargs } from '../text/chat-template.js';
import { maxTopLogprobs, readSamplingParameters, readStreamFlags, type GenerationDefaults, type OpenAILimits } from './openai-params.js';
import {
  openaiChatLogprobs,
  openaiFinishReason,
  openaiLogprob,
  openaiUsage,
  type OpenAIChatLogprobs,
  type OpenAIFinishReason,
  type OpenAIResponseIdentity,
  type OpenAIUsage,
} from './openai-output.js';
import { StopTrimmer, trimStop } from './openai-stop.js';
import { DONE_FRAME, openaiJsonFrame } from './sse.js';

export interface ParsedChatRequest {
  messages: ChatMessage[];
  /** For the chat template; absent when none were given or `tool_choice` is `none`. */
  tools?: unknown[];
  /** vLLM's `chat_template_kwargs`: more variables for the chat template (`enable_thinking`, `documents`, ...). */
  chatTemplateKwargs?: JsonObject;
  parameters: GenerateParameters;
  /** From `response_format`, `structured_outputs` or `guided_*`. */
  grammar?: GrammarSpec;
  stream: boolean;
  includeUsage: boolean;
  model?: string;
  logprobs: boolean;
  topLogprobs: number;
}

/**
 * Decode a chat request body. `logprobs` turns on `details` (the non-streamed response needs every
 * token); `top_logprobs` becomes `top_n_tokens`; `defaults` (the model's generation config) fill the
 * sampling fields the body leaves unset.
 *
 * @example
 * parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'Hi' }], temperature: 0 });
 * // { messages: [...], parameters: { do_sample: false }, stream: false, includeUsage: false,
 * //   model: 'm', logprobs: false, topLogprobs: 0 }
 */
export function parseChatRequest(body: unknown, limits: OpenAILimits = {}, defaults?: GenerationDefaults): ParsedChatRequest {
  if (!isPlainObject(body)) throw new ValidationError('the request body must be a JSON object');
  const messages = readMessages(body);
  const tools = readTools(body);
  const chatTemplateKwargs = readObject(body, 'chat_template_kwargs');
  if (chatTemplateKwargs !== undefined) checkTemplateKwargs(chatTemplateKwargs, 'chat_template_kwargs');
  const grammar = readOpenAIGrammar(body, { tgiGrammar: false });
  const parameters = readSamplingParameters(body, limits, defaults);
  const { stream, includeUsage } = readStreamFlags(body);
  const model = readString(body, 'model');

  const logprobs = readBoolean(body, 'logprobs') ?? false;
  const topLogprobs = readNumber(body, 'top_logprobs', { integer: true, min: 0, max: maxTopLogprobs(limits) });
  if (topLogprobs !== undefined && !logprobs) {
    throw new ValidationError('`top_logprobs` requires `logprobs` to be true', 'top_logprobs');
  }
  if (logprobs) parameters.details = true;
  if (topLogprobs) parameters.top_n_tokens = topLogprobs;

  return {
    messages,
    ...(tools ? { tools } : {}),
    ...(chatTemplateKwargs ? { chatTemplateKwargs } : {}),
    parameters,
    ...(grammar ? { grammar } : {}),
    stream,
    includeUsage,
    ...(model !== undefined ? { model } : {}),
    logprobs,
    topLogprobs: topLogprobs ?? 0,
  };
}

export interface ChatEncoderOptions extends OpenAIResponseIdentity {
  includeUsage: boolean;
  logprobs: boolean;
  /** The request's stop strings: a matched one is left out of the content, as OpenAI does. */
  stop?: readonly string[];
}

/**
 * Turns engine events into `chat.completion.chunk` frames: a first chunk with the role, one per
 * token with text, a terminal `delta: {}` with `finish_reason`, the usage chunk if asked, `[DONE]`.
 * Special tokens (the eos) carry no text and no logprobs, so they produce no content chunk. Text
 * that may begin a stop string waits for the next token (see `StopTrimmer`).
 *
 * @example
 * const encoder = new ChatChunkEncoder({ id: 'chatcmpl-1', created: 0, model: 'm', includeUsage: false, logprobs: false });
 * for await (const event of generation) for (const frame of encoder.push(event)) res.write(frame);
 */
export class ChatChunkEncoder {
  readonly #opts: ChatEncoderOptions;
  readonly #stop: StopTrimmer;
  #started = false;
  #ended = false;

  constructor(opts: ChatEncoderOptions) {
    this.#opts = opts;
    this.#stop = new StopTrimmer(opts.stop ?? []);
  }

  push(event: GenerationEvent): string[] {
    if (this.#ended) throw new Error('ChatChunkEncoder: an event arrived after the end event');
    const { logprobs } = this.#opts;
    const frames: string[] = [];
    if (!this.#started) {
      this.#started = true;
      frames.push(this.#chunk({ role: 'assistant', content: '' }, logprobs ? { content: [], refusal: null } : null, null));
    }
    const { token } = event;
    const piece = token.special ? '' : token.text;
    const content = event.type === 'end' ? this.#stop.finish(piece, event.finishReason) : this.#stop.push(piece);
    if (content !== '' || (logprobs && !token.special)) {
      const lp = logprobs ? { content: token.special ? [] : [openaiLogprob(token, event.topTokens)], refusal: null as null } : null;
      frames.push(this.#chunk({ content }, lp, null));
    }
    if (event.type === 'end') {
      this.#ended = true;
      frames.push(this.#chunk({}, null, openaiFinishReason(event.finishReason)));
      if (this.#opts.includeUsage) frames.push(openaiJsonFrame({ ...this.#head(), choices: [], usage: openaiUsage(event) }));
      frames.push(DONE_FRAME);
    }
    return frames;
  }

  #head() {
    const { id, created, model } = this.#opts;
    return { id, object: 'chat.completion.chunk', created, model };
  }

  #chunk(delta: ChatDelta, logprobs: OpenAIChatLogprobs | null, finishReason: OpenAIFinishReason | null): string {
    return openaiJsonFrame({
      ...this.#head(),
      choices: [{ index: 0, delta, logprobs, finish_reason: finishReason }],
      ...(this.#opts.includeUsage ? { usage: null } : {}),
    });
  }
}

type ChatDelta = { role?: 'assistant'; content?: string };

export interface ChatCompletion extends OpenAIResponseIdentity {
  object: 'chat.completion';
  choices: Array<{
    index: 0;
    message: { role: 'assistant'; content: string; refusal: null };
    logprobs: OpenAIChatLogprobs | null;
    finish_reason: OpenAIFinishReason;
  }>;
  usage: OpenAIUsage;
}

/**
 * The non-streamed `chat.completion` body.
 *
 * @example
 * chatCompletionResponse(end, { id: 'chatcmpl-1', created: 1700000000, model: 'm', logprobs: false });
 */
export function chatCompletionResponse(
  end: EndEvent,
  opts: OpenAIResponseIdentity & { logprobs: boolean; stop?: readonly string[] },
): ChatCompletion {
  const { id, created, model } = opts;
  return {
    id,
    object: 'chat.completion',
    created,
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: trimStop(end.generatedText, opts.stop ?? [], end.finishReason), refusal: null },
        logprobs: opts.logprobs ? openaiChatLogprobs(end) : null,
        finish_reason: openaiFinishReason(end.finishReason),
      },
    ],
    usage: openaiUsage(end),
  };
}

function readMessages(body: JsonObject): ChatMessage[] {
  const messages = body.messages;
  if (messages === undefined) throw new ValidationError('missing field `messages`', 'messages');
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ValidationError(`\`messages\` must be a non-empty array, got ${typeName(messages)}`, 'messages');
  }
  messages.forEach((message: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isPlainObject(message)) throw new ValidationError(`\`${at}\` must be an object, got ${typeName(message)}`, at);
    if (typeof message.role !== 'string' || message.role === '') {
      throw new ValidationError(`\`${at}.role\` must be a non-empty string`, `${at}.role`);
    }
    readContent(message.content, `${at}.content`);
    // Templates print these as they are: a wrong type would reach the prompt unseen.
    readString(message, 'name', `${at}.name`);
    readString(message, 'tool_call_id', `${at}.tool_call_id`);
    if (message.tool_calls != null && !Array.isArray(message.tool_calls)) {
      throw new ValidationError(`\`${at}.tool_calls\` must be an array, got ${typeName(message.tool_calls)}`, `${at}.tool_calls`);
    }
  });
  return messages as ChatMessage[];
}

/** A string, null (an assistant turn with tool calls), or text parts: this model reads text only. */
function readContent(content: unknown, at: string): void {
  if (content === undefined || content === null || typeof content === 'string') return;
  if (!Array.isArray(content)) {
    throw new ValidationError(`\`${at}\` must be a string or an array of content parts, got ${typeName(content)}`, at);
  }
  content.forEach((part: unknown, j) => {
    const partAt = `${at}[${j}]`;
    if (!isPlainObject(part) || part.type !== 'text') {
      const type = isPlainObject(part) ? JSON.stringify(part.type) : typeName(part);
      throw new ValidationError(`\`${partAt}\` must be a text part (type "text"); this model reads text only. Given: ${type}`, partAt);
    }
    if (typeof part.text !== 'string') throw new ValidationError(`\`${partAt}.text\` must be a string`, `${partAt}.text`);
  });
}

function readTools(body: JsonObject): unknown[] | undefined {
  const tools = body.tools;
  const choice = body.tool_choice ?? 'auto';
  if (choice !== 'auto' && choice !== 'none') {
    throw new ValidationError(
      '`tool_choice` may only be "auto" or "none": tools are shown to the model, but calls are neither forced nor parsed',
      'tool_choice',
    );
  }
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools) || !tools.every(isPlainObject)) {
    throw new ValidationError(`\`tools\` must be an array of objects, got ${typeName(tools)}`, 'tools');
  }
  return choice === 'none' || tools.length === 0 ? undefined : tools;
}
