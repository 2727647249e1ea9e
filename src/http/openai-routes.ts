import type { ServerResponse } from 'node:http';
import { ChatChunkEncoder, chatCompletionResponse, parseChatRequest } from '../protocol/openai-chat.js';
import { CompletionChunkEncoder, completionResponse, parseCompletionRequest } from '../protocol/openai-completions.js';
import type { EndEvent, Engine, GenerationDefaults, GenerationEvent } from '../types.js';
import type { HandlerContext } from './context.js';
import { serveGeneration, type ResponseEncoder } from './serve-generation.js';

/** `POST /v1/chat/completions`, streamed or whole. */
export function serveChat(ctx: HandlerContext, res: ServerResponse, body: unknown): Promise<void> {
  return serveGeneration(ctx, res, {
    family: 'openai',
    start: (engine, signal) => {
      const request = parseChatRequest(body, engine.info.limits, generationDefaults(ctx, engine));
      const { stream, parameters } = request;
      const generation = engine.chat(
        {
          messages: request.messages,
          tools: request.tools,
          toolPrompt: request.toolPrompt,
          chatTemplateKwargs: request.chatTemplateKwargs,
          parameters,
          grammar: request.grammar,
        },
        { signal, stream, tokenLogprobs: request.logprobs },
      );
      const opts = {
        ...identity(ctx, engine, 'chatcmpl-', request.model),
        logprobs: request.logprobs,
        stop: parameters.stop ?? [],
        toolCalls: request.toolCalls,
      };
      if (!stream) return { generation, encoder: whole((end) => chatCompletionResponse(end, opts)) };
      return { generation, encoder: streamed(new ChatChunkEncoder({ ...opts, includeUsage: request.includeUsage })) };
    },
  });
}

/** `POST /v1/completions`, streamed or whole. */
export function serveCompletion(ctx: HandlerContext, res: ServerResponse, body: unknown): Promise<void> {
  return serveGeneration(ctx, res, {
    family: 'openai',
    start: (engine, signal) => {
      const request = parseCompletionRequest(body, engine.info.limits, generationDefaults(ctx, engine));
      const { stream, parameters } = request;
      const generation = engine.generate(
        { inputs: request.prompt, parameters, grammar: request.grammar },
        { signal, stream, tokenLogprobs: request.logprobs !== null },
      );
      const opts = {
        ...identity(ctx, engine, 'cmpl-', request.model),
        echo: request.echo,
        prompt: request.prompt,
        stop: parameters.stop ?? [],
        logprobs: request.logprobs !== null,
      };
      if (!stream) return { generation, encoder: whole((end) => completionResponse(end, opts)) };
      return { generation, encoder: streamed(new CompletionChunkEncoder({ ...opts, includeUsage: request.includeUsage })) };
    },
  });
}

function identity(ctx: HandlerContext, engine: Engine, prefix: string, model: string | undefined) {
  return { id: ctx.newId(prefix), created: ctx.nowSeconds(), model: model ?? engine.info.modelId };
}

/** The model's generation_config.json sampling defaults, unless the handler turned them off. */
function generationDefaults(ctx: HandlerContext, engine: Engine): GenerationDefaults {
  return ctx.generationConfig === 'auto' ? (engine.info.generationDefaults ?? {}) : {};
}

function streamed(encoder: { push(event: GenerationEvent): string[] }): ResponseEncoder {
  return { stream: true, frames: (event) => encoder.push(event) };
}

function whole(body: (end: EndEvent) => unknown): ResponseEncoder {
  return { stream: false, body: (end) => ({ json: body(end) }) };
}
