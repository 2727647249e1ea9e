/**
 * Pieces the chat and completions encoders share: OpenAI's finish reasons, usage and logprobs.
 */
import type { EndEvent, FinishReason, Token } from '../types.js';

export type OpenAIFinishReason = 'stop' | 'length';

/** A chat answer that ended with tool calls says so (see `toolCallsFinishReason`). */
export type OpenAIChatFinishReason = OpenAIFinishReason | 'tool_calls';

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

/** `choices[].logprobs` of a legacy completion, in OpenAI's and vLLM's layout. */
export interface OpenAICompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per token: the most likely alternatives and the chosen token, text → logprob. */
  top_logprobs: Array<Record<string, number>>;
  /** Per token: where its text starts in the choice's text, in characters (code points, as Python counts). */
  text_offset: number[];
}

/**
 * Legacy completion logprobs of some generated tokens whose text starts at `offset`. Special
 * tokens (the eos) are not part of the text, so they are left out, as on the chat route.
 *
 * @example
 * openaiCompletionLogprobs([{ id: 1, text: 'Hi', logprob: -0.5, special: false }], [[]], 0);
 * // { tokens: ['Hi'], token_logprobs: [-0.5], top_logprobs: [{ Hi: -0.5 }], text_offset: [0] }
 */
export function openaiCompletionLogprobs(
  tokens: readonly Token[],
  topTokens: readonly (readonly Token[] | undefined)[],
  offset: number,
): OpenAICompletionLogprobs {
  const out: OpenAICompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  tokens.forEach((token, i) => {
    if (token.special) return;
    out.tokens.push(token.text);
    out.token_logprobs.push(token.logprob);
    // The chosen token is always there, as OpenAI documents ("up to logprobs+1 elements"); the first text of a duplicate wins.
    const top = Object.create(null) as Record<string, number>;
    for (const t of [...(topTokens[i] ?? []), token]) if (!Object.hasOwn(top, t.text)) top[t.text] = t.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += codePoints(token.text);
  });
  return out;
}

/** The length of `text` in code points. */
export function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function openaiTopLogprob(token: Token): OpenAITopLogprob {
  return { token: token.text, logprob: token.logprob, bytes: Array.from(utf8.encode(token.text)) };
}
