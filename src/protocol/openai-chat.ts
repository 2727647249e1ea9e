/**
 * `/v1/chat/completions` as OpenAI speaks it (protocol.md §3, "Our decisions" §4): request
 * decoding, the streamed chunks, and the non-streamed response.
 *
 * `response_format` (and vLLM's `structured_outputs`, `guided_*`) constrain the output with a
 * grammar. `tools` go to the chat template, `tool_choice` becomes a grammar on the hermes
 * `<tool_call>` format (tool-calls.ts), and the reply is read back into `tool_calls`: streamed as
 * the deltas the `openai` SDK's runners accumulate, whole as `message.tool_calls`.
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
  type OpenAIChatFinishReason,
  type OpenAIChatLogprobs,
  type OpenAIResponseIdentity,
  type OpenAIUsage,
} from './openai-output.js';
import { StopTrimmer, trimStop } from './openai-stop.js';
import { DONE_FRAME, openaiJsonFrame } from './sse.js';
import { ToolCallParser, parseToolCalls, readToolPlan, toolCallsFinishReason, type ChatDelta, type ToolCall } from './tool-calls.js';

export interface ParsedChatRequest {
  messages: ChatMessage[];
  /** For the chat template; absent when none were given or `tool_choice` is `none`. */
  tools?: JsonObject[];
  /** TGI's `tool_prompt`, for templates that know no tools. */
  toolPrompt?: string;
  /** Whether the reply is read for `<tool_call>`s (there are `tools` and `tool_choice` is not `none`). */
  toolCalls: boolean;
  /** vLLM's `chat_template_kwargs`: more variables for the chat template (`enable_thinking`, `documents`, ...). */
  chatTemplateKwargs?: JsonObject;
  parameters: GenerateParameters;
  /** From `response_format`, `structured_outputs`, `guided_*`, or the tool choice. */
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
 * // { messages: [...], toolCalls: false, parameters: { do_sample: false }, stream: false,
 * //   includeUsage: false, model: 'm', logprobs: false, topLogprobs: 0 }
 */
export function parseChatRequest(body: unknown, limits: OpenAILimits = {}, defaults?: GenerationDefaults): ParsedChatRequest {
  if (!isPlainObject(body)) throw new ValidationError('the request body must be a JSON object');
  const messages = readMessages(body);
  const chatTemplateKwargs = readObject(body, 'chat_template_kwargs');
  if (chatTemplateKwargs !== undefined) checkTemplateKwargs(chatTemplateKwargs, 'chat_template_kwargs');
  const format = readOpenAIGrammar(body, { tgiGrammar: false });
  const plan = readToolPlan(body, format);
  const grammar = plan?.grammar ?? format;
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
    ...(plan ? { tools: plan.tools } : {}),
    ...(plan?.prompt !== undefined ? { toolPrompt: plan.prompt } : {}),
    toolCalls: plan !== undefined,
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
  /** Read `<tool_call>`s out of the text into `tool_calls` deltas (`ParsedChatRequest.toolCalls`). */
  toolCalls?: boolean;
}

/**
 * Turns engine events into `chat.completion.chunk` frames: a first chunk with the role, one per
 * token with text, a terminal `delta: {}` with `finish_reason`, the usage chunk if asked, `[DONE]`.
 * Special tokens (the eos) carry no text and no logprobs, so they produce no content chunk. Text
 * that may begin a stop string waits for the next token (see `StopTrimmer`).
 *
 * With `toolCalls`, the text after the stop trimmer goes through a `ToolCallParser`: a token may
 * then give no chunk (a tag held back), or several (content, then a call's first delta and its
 * first argument fragment), each a chunk of its own as OpenAI sends them; its logprobs ride on the
 * first. The finish reason is `tool_calls` once a call was made.
 *
 * @example
 * const encoder = new ChatChunkEncoder({ id: 'chatcmpl-1', created: 0, model: 'm', includeUsage: false, logprobs: false });
 * for await (const event of generation) for (const frame of encoder.push(event)) res.write(frame);
 */
export class ChatChunkEncoder {
  readonly #opts: ChatEncoderOptions;
  readonly #stop: StopTrimmer;
  readonly #tools: ToolCallParser | null;
  #started = false;
  #ended = false;

  constructor(opts: ChatEncoderOptions) {
    this.#opts = opts;
    this.#stop = new StopTrimmer(opts.stop ?? []);
    this.#tools = opts.toolCalls ? new ToolCallParser() : null;
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
    const text = event.type === 'end' ? this.#stop.finish(piece, event.finishReason) : this.#stop.push(piece);
    const deltas = this.#deltas(text, event.type === 'end');
    // A token whose text is held back still reports its logprob, in an empty content delta.
    if (deltas.length === 0 && logprobs && !token.special) deltas.push({ content: '' });
    deltas.forEach((delta, i) => {
      const lp = logprobs
        ? { content: token.special || i > 0 ? [] : [openaiLogprob(token, event.topTokens)], refusal: null as null }
        : null;
      frames.push(this.#chunk(delta, lp, null));
    });
    if (event.type === 'end') {
      this.#ended = true;
      const reason = toolCallsFinishReason(openaiFinishReason(event.finishReason), this.#tools?.toolCalls.length ?? 0);
      frames.push(this.#chunk({}, null, reason));
      if (this.#opts.includeUsage) frames.push(openaiJsonFrame({ ...this.#head(), choices: [], usage: openaiUsage(event) }));
      frames.push(DONE_FRAME);
    }
    return frames;
  }

  #deltas(text: string, end: boolean): ChatDelta[] {
    if (!this.#tools) return text === '' ? [] : [{ content: text }];
    const deltas = this.#tools.push(text);
    if (end) deltas.push(...this.#tools.finish());
    return deltas;
  }

  #head() {
    const { id, created, model } = this.#opts;
    return { id, object: 'chat.completion.chunk', created, model };
  }

  #chunk(delta: ChunkDelta, logprobs: OpenAIChatLogprobs | null, finishReason: OpenAIChatFinishReason | null): string {
    return openaiJsonFrame({
      ...this.#head(),
      choices: [{ index: 0, delta, logprobs, finish_reason: finishReason }],
      ...(this.#opts.includeUsage ? { usage: null } : {}),
    });
  }
}

type ChunkDelta = { role: 'assistant'; content: '' } | ChatDelta | Record<string, never>;

export interface ChatCompletionMessage {
  role: 'assistant';
  /** `null` when the answer is only tool calls. */
  content: string | null;
  refusal: null;
  tool_calls?: ToolCall[];
}

export interface ChatCompletion extends OpenAIResponseIdentity {
  object: 'chat.completion';
  choices: Array<{
    index: 0;
    message: ChatCompletionMessage;
    logprobs: OpenAIChatLogprobs | null;
    finish_reason: OpenAIChatFinishReason;
  }>;
  usage: OpenAIUsage;
}

/**
 * The non-streamed `chat.completion` body. With `toolCalls`, the text is read by the same rules as
 * the stream: `message.tool_calls` with `call_…` ids and `arguments` as the JSON text generated.
 *
 * @example
 * chatCompletionResponse(end, { id: 'chatcmpl-1', created: 1700000000, model: 'm', logprobs: false });
 */
export function chatCompletionResponse(
  end: EndEvent,
  opts: OpenAIResponseIdentity & { logprobs: boolean; stop?: readonly string[]; toolCalls?: boolean },
): ChatCompletion {
  const { id, created, model } = opts;
  const text = trimStop(end.generatedText, opts.stop ?? [], end.finishReason);
  const { content, toolCalls } = opts.toolCalls ? parseToolCalls(text) : { content: text, toolCalls: [] };
  const message: ChatCompletionMessage =
    toolCalls.length > 0
      ? { role: 'assistant', content, refusal: null, tool_calls: toolCalls }
      : { role: 'assistant', content: content ?? '', refusal: null };
  return {
    id,
    object: 'chat.completion',
    created,
    model,
    choices: [
      {
        index: 0,
        message,
        logprobs: opts.logprobs ? openaiChatLogprobs(end) : null,
        finish_reason: toolCallsFinishReason(openaiFinishReason(end.finishReason), toolCalls.length),
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
    readToolCalls(message.tool_calls, `${at}.tool_calls`);
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

/**
 * An assistant turn's earlier calls, which the template writes back into the prompt: each needs a
 * function name, and arguments as OpenAI sends them (a JSON string) or already an object.
 */
function readToolCalls(calls: unknown, at: string): void {
  if (calls === undefined || calls === null) return;
  if (!Array.isArray(calls)) throw new ValidationError(`\`${at}\` must be an array, got ${typeName(calls)}`, at);
  calls.forEach((call: unknown, j) => {
    const callAt = `${at}[${j}]`;
    if (!isPlainObject(call)) throw new ValidationError(`\`${callAt}\` must be an object, got ${typeName(call)}`, callAt);
    readString(call, 'id', `${callAt}.id`);
    if (call.type != null && call.type !== 'function') {
      throw new ValidationError(`\`${callAt}.type\` must be "function". Given: ${JSON.stringify(call.type)}`, `${callAt}.type`);
    }
    const fn = call.function;
    if (!isPlainObject(fn))
      throw new ValidationError(`\`${callAt}.function\` must be an object, got ${typeName(fn)}`, `${callAt}.function`);
    if (typeof fn.name !== 'string' || fn.name === '') {
      throw new ValidationError(`\`${callAt}.function.name\` must be a non-empty string`, `${callAt}.function.name`);
    }
    if (typeof fn.arguments !== 'string' && !isPlainObject(fn.arguments)) {
      throw new ValidationError(
        `\`${callAt}.function.arguments\` must be a JSON string (or an object), got ${typeName(fn.arguments)}`,
        `${callAt}.function.arguments`,
      );
    }
  });
}
