import type { ServerResponse } from 'node:http';
import { validateParameters } from '../params.js';
import { parseTgiGenerateBody, tgiGenerateResponse, tgiStreamEvent } from '../protocol/tgi.js';
import type { EndEvent, Engine } from '../types.js';
import type { HandlerContext } from './context.js';
import { serveGeneration, type StartedGeneration } from './serve-generation.js';

type TgiRoute = 'generate' | 'stream' | 'compat';

/** `POST /generate`, `/generate_stream` and TGI's compatibility route `POST /`. */
export function serveTgi(ctx: HandlerContext, res: ServerResponse, body: unknown, route: TgiRoute): Promise<void> {
  return serveGeneration(ctx, res, { family: 'tgi', start: (engine, signal) => startTgi(engine, signal, body, route) });
}

function startTgi(engine: Engine, signal: AbortSignal, body: unknown, route: TgiRoute): StartedGeneration {
  const request = parseTgiGenerateBody(body);
  const stream = route === 'stream' || (route === 'compat' && request.stream === true);
  // The engine validates the request again; the response's shape is read from this validation.
  const validated = validateParameters(request.parameters, engine.info.limits, {
    stream,
    inputs: request.inputs,
    // On `POST /` TGI returns the full text unless told otherwise (a text-generation pipeline).
    ...(route === 'compat' ? { returnFullText: true } : {}),
  });
  const generation = engine.generate({ inputs: request.inputs, parameters: request.parameters }, { signal, stream });
  const text = { returnFullText: validated.returnFullText, prompt: request.inputs };
  if (stream) {
    return { generation, encoder: { stream, frames: (event) => [tgiStreamEvent(event, { ...text, details: validated.details })] } };
  }
  const whole = (end: EndEvent) => {
    const response = tgiGenerateResponse(end, { ...text, details: validated.details, decoderInputDetails: validated.decoderInputDetails });
    return { json: route === 'compat' ? [response] : response, headers: timingHeaders(end) };
  };
  return { generation, encoder: { stream, body: whole } };
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
