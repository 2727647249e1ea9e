/**
 * TGI's wire as a client (TGI itself and our own `serve`): `/generate_stream` with `details`, which
 * carries every token's id, text, logprob and alternatives, the finish reason and the prompt length,
 * so the TGI routes stay lossless through the router. Chat goes to the upstream's
 * `/v1/chat/completions`, which both TGI and our server have.
 */
import { usesSampling } from '../engine/sampling.js';
import type { FinishReason, GenerateParameters, GenerateRequest, PrefillToken, Token, ValidatedParameters } from '../types.js';
import { failureKind, type Decoded, type StreamDecoder, type UpstreamCall } from './dialect.js';

/**
 * Always streamed, so a client that leaves stops the upstream's work too; except a `/generate` that
 * asks for `decoder_input_details`, whose prompt logprobs only TGI's whole answer carries.
 *
 * @example
 * tgiGenerateCall({ inputs: 'Hi', parameters: { max_new_tokens: 5 } }, validated);
 * // { path: '/generate_stream', body: { inputs: 'Hi', parameters: { max_new_tokens: 5, do_sample: false, details: true, ... } }, ... }
 */
export function tgiGenerateCall(request: GenerateRequest, params: ValidatedParameters): UpstreamCall {
  const whole = params.decoderInputDetails;
  const parameters: GenerateParameters = {
    ...request.parameters,
    // Explicit, because sending `parameters` at all changes TGI's default from sampling to greedy.
    do_sample: params.sampling.doSample,
    details: true,
    // The HTTP layer puts the prompt in front itself.
    return_full_text: false,
  };
  // Our seed is reported back, so the upstream must sample with it.
  if (usesSampling(params.sampling)) parameters.seed = params.sampling.seed;
  if (!whole) delete parameters.decoder_input_details;
  return {
    path: whole ? '/generate' : '/generate_stream',
    body: { inputs: request.inputs, parameters },
    whole,
    decoder: new TgiDecoder(whole),
  };
}

interface TgiStreamEvent {
  token: Token;
  top_tokens?: Token[];
  generated_text: string | null;
  details: { finish_reason: FinishReason; generated_tokens: number; input_length: number } | null;
  error?: string;
  error_type?: string;
}

interface TgiWholeResponse {
  generated_text: string;
  details: {
    finish_reason: FinishReason;
    generated_tokens: number;
    prefill: PrefillToken[];
    tokens: Token[];
    top_tokens?: Token[][];
  };
}

/** `/generate_stream` events, or one `/generate` body. */
export class TgiDecoder implements StreamDecoder {
  started = false;

  constructor(private readonly whole: boolean) {}

  decode(data: string): Decoded[] {
    const json = JSON.parse(data) as TgiStreamEvent & TgiWholeResponse;
    if (typeof json.error === 'string') {
      return [{ type: 'error', failure: { kind: failureKind(json.error_type), message: json.error, errorType: json.error_type } }];
    }
    this.started = true;
    return this.whole ? this.decodeWhole(json) : [this.decodeEvent(json)];
  }

  close(): Decoded[] {
    return [];
  }

  private decodeEvent(event: TgiStreamEvent): Decoded {
    const base = { token: event.token, ...(event.top_tokens ? { topTokens: event.top_tokens } : {}) };
    if (event.generated_text === null || !event.details) return { type: 'token', ...base };
    const { finish_reason: finishReason, generated_tokens: generatedTokens, input_length: inputLength } = event.details;
    return { type: 'end', ...base, summary: { finishReason, generatedText: event.generated_text, generatedTokens, inputLength } };
  }

  /** The whole answer as the events a stream would have had; the prompt length is the prefill's. */
  private decodeWhole(response: TgiWholeResponse): Decoded[] {
    const { tokens, top_tokens: top, prefill } = response.details;
    const summary = {
      finishReason: response.details.finish_reason,
      generatedText: response.generated_text,
      generatedTokens: response.details.generated_tokens,
      inputLength: prefill.length,
    };
    return tokens.map((token, i): Decoded => {
      const base = { token, ...(top ? { topTokens: top[i] } : {}), ...(i === 0 ? { prefill } : {}) };
      return i === tokens.length - 1 ? { type: 'end', ...base, summary } : { type: 'token', ...base };
    });
  }
}
