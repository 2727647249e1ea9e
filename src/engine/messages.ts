/** The messages between the main-thread `Engine` and its worker. Plain data: they cross `postMessage`. */
import type { SerializedError } from '../errors.js';
import type {
  ChatMessage,
  EngineOptions,
  EngineStats,
  FinishReason,
  ForwardPassRecord,
  ModelInfo,
  PrefillToken,
  Token,
  ValidatedParameters,
} from '../types.js';

export type Prompt =
  { text: string } | { messages: ChatMessage[]; tools?: unknown[]; toolPrompt?: string; chatTemplateKwargs?: Record<string, unknown> };

export type ToWorker =
  | { type: 'submit'; id: number; prompt: Prompt; params: ValidatedParameters }
  | { type: 'cancel'; id: number }
  | { type: 'call'; callId: number; method: 'tokenize'; text: string }
  | { type: 'call'; callId: number; method: 'applyChatTemplate'; messages: ChatMessage[]; tools?: unknown[]; addGenerationPrompt?: boolean }
  | { type: 'close' };

export interface WorkerInit {
  options: EngineOptions;
}

/** The end of one sequence, sent with its last token. */
export interface SequenceEnd {
  finishReason: FinishReason;
  generatedText: string;
  generatedTokens: number;
  queueMs: number;
  inferenceMs: number;
  firstTokenMs: number;
}

/** One sequence's share of a forward pass. */
export interface StepToken {
  id: number;
  token: Token;
  topTokens?: Token[];
  /** With the first token, when `decoder_input_details` asked for it. */
  prefill?: PrefillToken[];
  end?: SequenceEnd;
}

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'fatal'; error: SerializedError }
  | { type: 'accepted'; id: number; inputLength: number }
  | { type: 'rejected'; id: number; error: SerializedError }
  /** Every sequence's token of one forward pass, in one message. */
  | { type: 'step'; tokens: StepToken[]; stats: EngineStats; pass?: ForwardPassRecord }
  | { type: 'failed'; ids: number[]; error: SerializedError; stats: EngineStats; pass?: ForwardPassRecord }
  /** Stats that changed between passes (a grammar refused or released), which no 'step' would carry yet. */
  | { type: 'stats'; stats: EngineStats }
  | { type: 'reply'; callId: number; result?: unknown; error?: SerializedError };
