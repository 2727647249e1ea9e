/** Pure wire-format encoders and decoders: TGI, OpenAI chat and completions, SSE framing, errors. */
export * from './sse.js';
export * from './tgi.js';
export * from './openai-params.js';
export * from './openai-output.js';
export * from './openai-chat.js';
export * from './openai-completions.js';
export * from './error-body.js';
