/**
 * `streaming-inference/protocol`: the wire formats as pure functions, for hosts that build their own
 * routes over an `Engine` (any framework, any runtime with a Node-like response). Request parsers
 * throw `ValidationError` (422) with TGI's or OpenAI's wording; encoders turn the engine's events
 * into response bodies and SSE frames; `errorResponse` gives any error's status, headers and body.
 *
 * @example
 * import { createEngine } from 'streaming-inference';
 * import { SSE_HEADERS, errorResponse, parseTgiGenerateBody, tgiStreamEvent } from 'streaming-inference/protocol';
 *
 * const engine = await createEngine({ model: './models/smollm2' });
 * app.post('/my/stream', async (req, res) => {
 *   try {
 *     const request = parseTgiGenerateBody(req.body);
 *     const generation = engine.generate(request, { stream: true });
 *     await generation.accepted; // refusals (422, 429, 503) before the first byte
 *     res.writeHead(200, SSE_HEADERS);
 *     for await (const event of generation) res.write(tgiStreamEvent(event, { details: false, returnFullText: false }));
 *     res.end();
 *   } catch (error) {
 *     const { status, headers, body } = errorResponse(error, 'tgi');
 *     if (res.headersSent) res.end(); else res.writeHead(status, headers).end(body);
 *   }
 * });
 */
export {
  DONE_FRAME,
  KEEP_ALIVE_FRAME,
  SSE_HEADERS,
  formatSseFrame,
  openaiJsonFrame,
  tgiJsonFrame,
  type SseFormatOptions,
  type SseFrame,
} from './sse.js';
export {
  parseTgiGenerateBody,
  tgiErrorBody,
  tgiGenerateResponse,
  tgiStreamEvent,
  tgiStreamResponse,
  tgiTokenizeResponse,
  type TgiDetails,
  type TgiErrorBody,
  type TgiGenerateBody,
  type TgiGenerateOptions,
  type TgiGenerateResponse,
  type TgiStreamDetails,
  type TgiStreamOptions,
  type TgiStreamResponse,
  type TgiTextOptions,
} from './tgi.js';
export {
  ChatChunkEncoder,
  chatCompletionResponse,
  parseChatRequest,
  type ChatCompletion,
  type ChatEncoderOptions,
  type ParsedChatRequest,
} from './openai-chat.js';
export {
  CompletionChunkEncoder,
  completionResponse,
  parseCompletionRequest,
  type Completion,
  type CompletionEncoderOptions,
  type ParsedCompletionRequest,
} from './openai-completions.js';
export {
  openaiChatLogprobs,
  openaiCompletionLogprobs,
  openaiFinishReason,
  openaiLogprob,
  openaiUsage,
  type OpenAIChatLogprobs,
  type OpenAICompletionLogprobs,
  type OpenAIFinishReason,
  type OpenAILogprob,
  type OpenAIResponseIdentity,
  type OpenAITopLogprob,
  type OpenAIUsage,
} from './openai-output.js';
export type { GenerationDefaults, OpenAILimits } from './openai-params.js';
export { StopTrimmer, trimStop } from './openai-stop.js';
export {
  errorResponse,
  inStreamErrorFrame,
  openaiErrorBody,
  type ErrorResponse,
  type OpenAIErrorBody,
  type RouteFamily,
} from './error-body.js';
