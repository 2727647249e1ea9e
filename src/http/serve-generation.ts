import type { ServerResponse } from 'node:http';
import { acquireAll } from '../admission.js';
import { InferenceError, OverloadedError } from '../errors.js';
import { errorResponse, inStreamErrorFrame, type RouteFamily } from '../protocol/error-body.js';
import type { EndEvent, Engine, Generation, GenerationEvent } from '../types.js';
import type { HandlerContext } from './context.js';
import { sendError, sendJson } from './respond.js';
import { SseWriter } from './sse-writer.js';

/** How the events of one parsed request become its response: SSE frames, or one JSON body. */
export type ResponseEncoder =
  | { stream: true; frames(event: GenerationEvent): string[] }
  | { stream: false; body(end: EndEvent): { json: unknown; headers?: Record<string, string> } };

/** A started generation and the encoder its parsed request asked for. */
export interface StartedGeneration {
  generation: Generation;
  encoder: ResponseEncoder;
}

/** What differs between the generation routes: how to parse and start, and how to encode. */
export interface GenerationSpec {
  family: RouteFamily;
  /** Parses the route's body and starts the generation; throws validation errors. */
  start(engine: Engine, signal: AbortSignal): StartedGeneration;
}

/**
 * The life of one generation request: admit (429), start and validate (422), all before any header;
 * then stream or answer whole. A permit is released exactly once whatever happens, and a client
 * that goes away aborts the generation, which the engine drops at its next step.
 */
export async function serveGeneration(ctx: HandlerContext, res: ServerResponse, spec: GenerationSpec): Promise<void> {
  const engine = ctx.engine();
  ctx.metrics?.request();
  const permit = acquireAll([ctx.admission, ctx.engineAdmission(engine)]);
  if (!permit) {
    ctx.metrics?.failure('overloaded');
    return sendError(res, errorResponse(new OverloadedError(), spec.family));
  }
  const controller = new AbortController();
  const onClose = () => !res.writableFinished && controller.abort();
  res.on('close', onClose);
  // The client may have gone while its body was read, before there was a listener to tell us.
  if (res.destroyed || res.socket?.destroyed) controller.abort();
  // Writes nothing until opened: a response that is not streamed only uses it to end.
  const writer = new SseWriter(res, ctx.stallTimeoutMs, ctx.keepAliveMs);
  const started = performance.now();
  try {
    const { generation, encoder } = spec.start(engine, controller.signal);
    await generation.accepted;
    const end = encoder.stream ? await stream(generation, encoder, writer, controller) : await collect(generation);
    if (!encoder.stream && end) {
      const { json, headers } = encoder.body(end);
      sendJson(res, 200, json, headers);
    }
    // A client gone before it had the last event is a drop, even when the engine had finished.
    if (controller.signal.aborted) ctx.metrics?.failure('dropped');
    else if (end) ctx.metrics?.success(end, (performance.now() - started) / 1000);
  } catch (error) {
    if (controller.signal.aborted) {
      ctx.metrics?.failure('dropped');
    } else {
      ctx.metrics?.failure(errorType(error));
      if (!res.headersSent) sendError(res, errorResponse(error, spec.family));
      else await writer.write(inStreamErrorFrame(error, spec.family));
      // Not one of ours: a bug. The client has its generic 500; the handler reports the error with its route.
      if (!InferenceError.isInstance(error)) throw error;
    }
  } finally {
    permit.release();
    res.off('close', onClose);
    writer.end();
  }
}

/** Streams every event's frames; a client gone mid-write aborts the generation. Returns the end event. */
function stream(
  generation: Generation,
  encoder: Extract<ResponseEncoder, { stream: true }>,
  writer: SseWriter,
  controller: AbortController,
): Promise<EndEvent | null> {
  writer.open({ 'x-compute-type': 'cpu' });
  return collect(generation, async (event) => {
    for (const frame of encoder.frames(event)) if (!(await writer.write(frame))) controller.abort();
  });
}

/** Reads the generation to its end, passing each event to `each`; returns the end event. */
async function collect(generation: Generation, each?: (event: GenerationEvent) => Promise<void>): Promise<EndEvent | null> {
  let end: EndEvent | null = null;
  for await (const event of generation) {
    await each?.(event);
    if (event.type === 'end') end = event;
  }
  return end;
}

function errorType(error: unknown): string {
  return InferenceError.isInstance(error) ? error.errorType : 'internal';
}
