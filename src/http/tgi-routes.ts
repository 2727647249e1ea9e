import type { ServerResponse } from 'node:http';
import { parseTgiGenerateBody, tgiGenerateResponse, tgiStreamEvent, type TgiGenerateBody } from '../protocol/tgi.js';
import type { EndEvent, GenerateParameters } from '../types.js';
import type { HandlerContext } from './context.js';
import { serveGeneration, type GenerationSpec } from './serve-generation.js';

/** `POST /generate`, `/generate_stream` and TGI's compatibility route `POST /`. */
export function serveTgi(ctx: HandlerContext, res: ServerResponse, body: unknown, route: 'generate' | 'stream' | 'compat'): Promise<void> {
  let request: TgiGenerateBody;
  const spec: GenerationSpec = {
    family: 'tgi',
    start: (engine, options) => {
      request = parseTgiGenerateBody(body);
      // On `POST /` TGI returns the full text unless told otherwise (a text-generation pipeline).
      if (route === 'compat' && request.parameters?.return_full_text == null) {
        request.parameters = { ...request.parameters, return_full_text: true };
      }
      return engine.generate(request, options);
    },
  };
  const streamed = route === 'stream' || (route === 'compat' && (body as { stream?: unknown })?.stream === true);
  const text = () => ({ returnFullText: flag(request.parameters, 'return_full_text'), prompt: request.inputs });
  if (streamed) {
    spec.frames = (event) => [tgiStreamEvent(event, { ...text(), details: flag(request.parameters, 'details') })];
  } else {
    spec.body = (end) => {
      const response = tgiGenerateResponse(end, {
        ...text(),
        details: flag(request.parameters, 'details'),
        decoderInputDetails: flag(request.parameters, 'decoder_input_details'),
      });
      return { json: route === 'compat' ? [response] : response, headers: timingHeaders(end) };
    };
  }
  return serveGeneration(ctx, res, spec);
}

function flag(parameters: GenerateParameters | undefined, name: 'details' | 'return_full_text' | 'decoder_input_details'): boolean {
  return parameters?.[name] === true;
}

/** TGI's response headers on `/generate` (protocol.md §1.1). */
function timingHeaders(end: EndEvent): Record<string, string> {
  const { queueMs, inferenceMs } = end.timings;
  return {
    'x-compute-type': 'cpu',
    'x-compute-time': ((queueMs + inferenceMs) / 1000).toFixed(3),
    'x-queue-time': String(Math.round(queueMs)),
    'x-inference-time': String(Math.round(inferenceMs)),
    'x-time-per-token': String(Math.round(inferenceMs / Math.max(1, end.generatedTokens))),
    'x-prompt-tokens': String(end.inputLength),
    'x-generated-tokens': String(end.generatedTokens),
  };
}
