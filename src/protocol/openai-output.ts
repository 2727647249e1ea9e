/**
 * Pieces the chat and completions encoders share: OpenAI's finish reasons, usage and logprobs.
 */
import type { EndEvent, FinishReason, Token } from '../types.js';

export type OpenAIFinishReason = 'stop' | 'length';

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface OpenAITopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface OpenAILogprob extends OpenAITopLogprob {
  top_logprobs: OpenAITopLogprob[];
}

/** `choices[].logprobs` of a chat response or chunk. */
export interface OpenAIChatLogprobs {
  content: OpenAILogprob[];
  refusal: null;
}

/** What identifies one response: every chunk of a stream repeats it. */
export interface OpenAIResponseIdentity {
  /** `chatcmpl-…` or `cmpl-…`, unique per response. */
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
}

/**
 * OpenAI knows no `eos_token` or `stop_sequence`: both are a normal `stop` (strictly typed
 * clients fail on TGI's raw values, TGI#1724).
 *
 * @example
 * openaiFinishReason('eos_token'); // 'stop'
 */
export function openaiFinishReason(reason: FinishReason): OpenAIFinishReason {
  return reason === 'length' ? 'length' : 'stop';
}

/** @example openaiUsage(end); // { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 } */
export function openaiUsage(end: EndEvent): OpenAIUsage {
  return {
    prompt_tokens: end.inputLength,
    completion_tokens: end.generatedTokens,
    total_tokens: end.inputLength + end.generatedTokens,
  };
}

const utf8 = new TextEncoder();

/**
 * One token in OpenAI's logprobs layout. `bytes` are the UTF-8 of the streamed text, which is
 * empty for a token that ends inside a character (its bytes arrive with the next token's text).
 *
 * @example
 * openaiLogprob({ id: 1, text: 'Hi', logprob: -0.5, special: false }, []);
 * // { token: 'Hi', logprob: -0.5, bytes: [72, 105], top_logprobs: [] }
 */
export function openaiLogprob(token: Token, topTokens: readonly Token[] = []): OpenAILogprob {
  return { ...openaiTopLogprob(token), top_logprobs: topTokens.map(openaiTopLogprob) };
}

/**
 * Logprobs of a finished sequence (non-streamed responses). Special tokens (the eos) are not part
 * of the content, so they are left out here as in the stream.
 *
 * @example
 * openaiChatLogprobs(end); // { content: [{ token: 'Hi', ... }], refusal: null }
 */
export function openaiChatLogprobs(end: EndEvent): OpenAIChatLogprobs {
  const content: OpenAILogprob[] = [];
  end.tokens.forEach((token, i) => {
    if (!token.special) content.push(openaiLogprob(token, end.topTokensPerStep[i]));
  });
  return { content, refusal: null };
}

function openaiTopLogprob(token: Token): OpenAITopLogprob {
  return { token: token.text, logprob: token.logprob, bytes: Array.from(utf8.encode(token.text)) };
}
