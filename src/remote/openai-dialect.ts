/**
 * OpenAI's wire as a client (vLLM, SGLang, llama.cpp's llama-server, Ollama's `/v1`): streamed
 * `/v1/completions` for prompts and `/v1/chat/completions` for messages, with the usage chunk.
 *
 * What it cannot carry: token ids (`-1`; llama.cpp sends them with logprobs); logprobs unless asked for (NaN, null in JSON); whether
 * `stop` was the end-of-sequence token or a stop sequence, except from vLLM's `stop_reason`; and a
 * chunk may hold several tokens, or part of one, so "one event per token" becomes "one per chunk".
 */
import { usesSampling } from '../engine/sampling.js';
import type { ChatGenerateRequest, FinishReason, GenerateRequest, Token, ValidatedParameters } from '../types.js';
import {
  failureKind,
  textToken,
  type Decoded,
  type EndSummary,
  type StreamDecoder,
  type UpstreamCall,
  type UpstreamFailure,
} from './dialect.js';

/**
 * The sampling fields both OpenAI routes share, from our resolved parameters. Greedy is
 * `temperature: 0`; our seed is sent whenever we sample, so the seed we report is the one used.
 *
 * @example
 * openaiSampling(validated); // { temperature: 0, max_tokens: 5, stream: true, stream_options: { include_usage: true } }
 */
export function openaiSampling(params: ValidatedParameters): Record<string, unknown> {
  const { sampling: s } = params;
  const sample = usesSampling(s);
  return {
    stream: true,
    stream_options: { include_usage: true },
    ...(params.maxNewTokens !== null ? { max_tokens: params.maxNewTokens } : {}),
    temperature: sample ? s.temperature : 0,
    ...(sample && s.topP < 1 ? { top_p: s.topP } : {}),
    ...(sample && s.topK > 0 ? { top_k: s.topK } : {}),
    ...(sample && s.typicalP < 1 ? { typical_p: s.typicalP } : {}),
    ...(sample ? { seed: s.seed } : {}),
    ...(s.repetitionPenalty !== 1 ? { repetition_penalty: s.repetitionPenalty } : {}),
    ...(s.frequencyPenalty !== 0 ? { frequency_penalty: s.frequencyPenalty } : {}),
    ...(s.presencePenalty !== 0 ? { presence_penalty: s.presencePenalty } : {}),
    ...(params.stop.length > 0 ? { stop: params.stop } : {}),
    ...(params.truncate !== null ? { truncate: params.truncate } : {}),
  };
}

/** `/v1/chat/completions`; over TGI upstreams too, which serve the same route. */
export function openaiChatCall(request: ChatGenerateRequest, params: ValidatedParameters, model: string): UpstreamCall {
  const body = {
    model,
    messages: request.messages,
    // vLLM's name, which llama.cpp and our server read too; TGI ignores it.
    ...(request.chatTemplateKwargs ? { chat_template_kwargs: request.chatTemplateKwargs } : {}),
    ...openaiSampling(params),
    ...(params.details ? { logprobs: true, ...(params.topNTokens > 0 ? { top_logprobs: params.topNTokens } : {}) } : {}),
  };
  return { path: '/v1/chat/completions', body, whole: false, decoder: new OpenAIDecoder('chat', params.topNTokens) };
}

/**
 * `/v1/completions`, always with `logprobs` (at least one alternative): every TGI event carries its
 * token's logprob, and llama.cpp sends the token ids with them. Alternatives beyond `top_n_tokens`
 * are dropped.
 */
export function openaiCompletionCall(request: GenerateRequest, params: ValidatedParameters, model: string): UpstreamCall {
  const body = { model, prompt: request.inputs, ...openaiSampling(params), logprobs: Math.max(1, params.topNTokens) };
  return { path: '/v1/completions', body, whole: false, decoder: new OpenAIDecoder('completion', params.topNTokens) };
}

/** OpenAI chat's logprob entry; llama.cpp adds the token `id`, and uses it on completions too. */
interface ContentLogprob {
  id?: number;
  token: string;
  logprob: number;
  top_logprobs?: Array<{ id?: number; token: string; logprob: number }>;
}

interface OpenAIChunk {
  choices?: Array<{
    text?: string;
    delta?: { content?: string | null };
    logprobs?: {
      content?: ContentLogprob[] | null;
      tokens?: string[];
      token_logprobs?: number[];
      top_logprobs?: Array<Record<string, number>> | null;
    } | null;
    finish_reason?: string | null;
    /** vLLM: the stop string or token id that ended it, null for the end-of-sequence token. */
    stop_reason?: string | number | null;
  }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: { message?: string; type?: string; code?: unknown } | string;
}

type Step = { token: Token; topTokens?: Token[] };

/**
 * Chunks to tokens. A completion holds its newest token back until it knows whether it is the
 * last (the finish reason comes in a later chunk), so the end event carries it as TGI's does. A
 * chat needs no such wait: its route shows the finish in a chunk of its own, so the end event
 * carries an empty special token, as a model's end-of-sequence token is.
 */
export class OpenAIDecoder implements StreamDecoder {
  started = false;
  private held: Step | null = null;
  private finish: FinishReason | null = null;
  private text = '';
  private count = 0;
  private usage: { prompt: number; completion: number } | null = null;
  private done = false;

  /** `topN`: the alternatives each token keeps (the request's `top_n_tokens`). */
  constructor(
    private readonly route: 'chat' | 'completion',
    private readonly topN = 0,
  ) {}

  decode(data: string): Decoded[] {
    if (this.done) return [];
    if (data.trim() === '[DONE]') return this.close();
    const chunk = JSON.parse(data) as OpenAIChunk;
    if (chunk.error !== undefined) return [{ type: 'error', failure: errorFailure(chunk.error) }];
    const out: Decoded[] = [];
    if (chunk.usage) this.usage = { prompt: chunk.usage.prompt_tokens ?? 0, completion: chunk.usage.completion_tokens ?? 0 };
    const choice = chunk.choices?.[0];
    if (!choice) return out;
    for (const found of this.route === 'chat' ? chatSteps(choice) : completionSteps(choice)) {
      const step = this.topN > 0 ? { token: found.token, topTokens: found.topTokens?.slice(0, this.topN) } : { token: found.token };
      this.started = true;
      this.text += step.token.text;
      this.count += 1;
      if (this.route === 'chat') {
        out.push({ type: 'token', ...step });
      } else {
        if (this.held) out.push({ type: 'token', ...this.held });
        this.held = step;
      }
    }
    if (choice.finish_reason) this.finish = finishReason(choice.finish_reason, choice.stop_reason);
    return out;
  }

  close(): Decoded[] {
    if (this.done || this.finish === null) return [];
    this.done = true;
    const last = this.route === 'chat' ? null : this.held;
    this.started = true;
    const summary: EndSummary = {
      finishReason: this.finish,
      generatedText: this.text,
      generatedTokens: this.usage?.completion ?? this.count,
      inputLength: this.usage?.prompt ?? 0,
    };
    return [{ type: 'end', ...(last ?? { token: textToken('', Number.NaN, true) }), summary }];
  }
}

function chatSteps(choice: NonNullable<OpenAIChunk['choices']>[number]): Step[] {
  return contentSteps(choice.delta?.content ?? '', choice.logprobs?.content ?? []);
}

/** One step per logprob entry (several tokens may share a chunk), else one for the chunk's text. */
function contentSteps(text: string, entries: ContentLogprob[]): Step[] {
  if (entries.length === 0) return text === '' ? [] : [{ token: textToken(text) }];
  // The entries' texts, if they add up to the chunk's; else the chunk's text on the first.
  const exact = entries.map((e) => e.token).join('') === text;
  return entries.map((entry, i) => ({
    token: withId(textToken(exact ? entry.token : i === 0 ? text : '', entry.logprob), entry.id),
    topTokens: (entry.top_logprobs ?? []).map((top) => withId(textToken(top.token, top.logprob), top.id)),
  }));
}

function withId(token: Token, id: number | undefined): Token {
  return typeof id === 'number' ? { ...token, id } : token;
}

function completionSteps(choice: NonNullable<OpenAIChunk['choices']>[number]): Step[] {
  const text = choice.text ?? '';
  const logprobs = choice.logprobs;
  if (logprobs?.content) return contentSteps(text, logprobs.content);
  const tokens = logprobs?.tokens ?? [];
  if (tokens.length === 0) return text === '' ? [] : [{ token: textToken(text) }];
  const exact = tokens.join('') === text;
  return tokens.map((token, i) => {
    const top = logprobs?.top_logprobs?.[i] ?? {};
    return {
      token: textToken(exact ? token : i === 0 ? text : '', logprobs?.token_logprobs?.[i] ?? Number.NaN),
      topTokens: Object.entries(top)
        .map(([alt, logprob]) => textToken(alt, logprob))
        .sort((a, b) => b.logprob - a.logprob),
    };
  });
}

/** OpenAI says `stop` for both; vLLM's `stop_reason` names the stop string that matched. */
function finishReason(reason: string, stopReason: string | number | null | undefined): FinishReason {
  if (reason === 'length') return 'length';
  return typeof stopReason === 'string' ? 'stop_sequence' : 'eos_token';
}

/** Our server and TGI put the error type in `code`; vLLM and llama.cpp in `type` (`code` is a status there). */
function errorFailure(error: NonNullable<OpenAIChunk['error']>): UpstreamFailure {
  if (typeof error === 'string') return { kind: 'failed', message: error };
  const errorType = typeof error.code === 'string' ? error.code : error.type;
  return { kind: failureKind(errorType), message: error.message ?? 'upstream error', ...(errorType ? { errorType } : {}) };
}
