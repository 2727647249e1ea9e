import type { ServerResponse } from 'node:http';
import { OverloadedError } from '../errors.js';
import { errorResponse, inStreamErrorFrame, type RouteFamily } from '../protocol/error-body.js';
import type { EndEvent, Engine, GenerateOptions, Generation, GenerationEvent } from '../types.js';
import type { HandlerContext } from './context.js';
import { sendError, sendJson } from './respond.js';
import { SseWriter } from './sse-writer.js';

/** What differs between the generation routes: how to start, and how to encode. */
export interface GenerationSpec {
  family: RouteFamily;
  /** Parses the route's body and starts the generation; throws validation errors. */
  start(engine: Engine, options: GenerateOptions): Generation;
  /** Streamed: the SSE frames of one event. Absent: the route answers one JSON body. */
  frames?(event: GenerationEvent): string[];
  /** Not streamed: the JSON body of the finished generation, and extra headers. */
  body?(end: EndEvent): { json: unknown; headers?: Record<string, string> };
}

/**
 * The life of one generation request: admit (429), start and validate (422), all before any header;
 * then stream or answer whole. A permit is released exactly once whatever happens, and a client
 * that goes away aborts the generation, which the engine drops at its next step.
 */
export async function serveGeneration(ctx: HandlerContext, res: ServerResponse, spec: GenerationSpec): Promise<void> {
  const engine = ctx.engine();
  ctx.metrics?.request();
  const permit = ctx.admission.tryAcquire();
  if (!permit) {
    ctx.metrics?.failure('overloaded');
    return sendError(res, errorResponse(new OverloadedError(), spec.family));
  }
  const controller = new AbortController();
  const onClose = () => !res.writableFinished && controller.abort();
  res.on('close', onClose);
  // The client may have gone while its body was read, before there was a listener to tell us.
  if (res.destroyed || res.socket?.destroyed) controller.abort();
  const writer = spec.frames ? new SseWriter(res, ctx.stallTimeoutMs, ctx.keepAliveMs) : null;
  const started = performance.now();
  try {
    const generation = spec.start(engine, { signal: controller.signal, stream: writer !== null });
    await generation.accepted;
    let end: EndEvent | null = null;
    writer?.open({ 'x-compute-type': 'cpu' });
    for await (const event of generation) {
      if (writer) {
        for (const frame of spec.frames!(event)) if (!(await writer.write(frame))) controller.abort();
      }
      if (event.type === 'end') end = event;
    }
    if (!writer && end) {
      const { json, headers } = spec.body!(end);
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
      else await writer?.write(inStreamErrorFrame(error, spec.family));
    }
  } finally {
    permit.release();
    res.off('close', onClose);
    writer?.end();
  }
}

function errorType(error: unknown): string {
  return (error as { errorType?: string })?.errorType ?? 'generation';
}
