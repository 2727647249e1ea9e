import type { ServerResponse } from 'node:http';
import { ChatChunkEncoder, chatCompletionResponse, parseChatRequest } from '../protocol/openai-chat.js';
import { CompletionChunkEncoder, completionResponse, parseCompletionRequest } from '../protocol/openai-completions.js';
import type { Engine } from '../types.js';
import type { HandlerContext } from './context.js';
import { serveGeneration, type GenerationSpec } from './serve-generation.js';

function identity(ctx: HandlerContext, engine: Engine, prefix: string, model: string | undefined) {
  return { id: ctx.newId(prefix), created: ctx.nowSeconds(), model: model ?? engine.info.modelId };
}

/** `POST /v1/chat/completions`, streamed or whole. */
export function serveChat(ctx: HandlerContext, res: ServerResponse, body: unknown): Promise<void> {
  const stream = (body as { stream?: unknown })?.stream === true;
  let encode: ChatChunkEncoder;
  let finish: GenerationSpec['body'];
  const spec: GenerationSpec = {
    family: 'openai',
    start: (engine, options) => {
      const request = parseChatRequest(body, engine.info.limits);
      const id = identity(ctx, engine, 'chatcmpl-', request.model);
      encode = new ChatChunkEncoder({ ...id, includeUsage: request.includeUsage, logprobs: request.logprobs });
      finish = (end) => ({ json: chatCompletionResponse(end, { ...id, logprobs: request.logprobs }) });
      return engine.chat({ messages: request.messages, tools: request.tools, parameters: request.parameters }, options);
    },
    ...(stream ? { frames: (event) => encode.push(event) } : { body: (end) => finish!(end) }),
  };
  return serveGeneration(ctx, res, spec);
}

/** `POST /v1/completions`, streamed or whole. */
export function serveCompletion(ctx: HandlerContext, res: ServerResponse, body: unknown): Promise<void> {
  const stream = (body as { stream?: unknown })?.stream === true;
  let encode: CompletionChunkEncoder;
  let finish: GenerationSpec['body'];
  const spec: GenerationSpec = {
    family: 'openai',
    start: (engine, options) => {
      const request = parseCompletionRequest(body, engine.info.limits);
      const id = identity(ctx, engine, 'cmpl-', request.model);
      const text = { echo: request.echo, prompt: request.prompt };
      encode = new CompletionChunkEncoder({ ...id, ...text, includeUsage: request.includeUsage });
      finish = (end) => ({ json: completionResponse(end, { ...id, ...text }) });
      return engine.generate({ inputs: request.prompt, parameters: request.parameters }, options);
    },
    ...(stream ? { frames: (event) => encode.push(event) } : { body: (end) => finish!(end) }),
  };
  return serveGeneration(ctx, res, spec);
}
