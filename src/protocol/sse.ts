/**
 * Server-sent-event framing. TGI writes `data:<json>` with no space after the colon and OpenAI
 * writes `data: <json>`; parsers strip one optional space, so both read the same, but we match
 * each upstream byte for byte so that recorded streams compare equal.
 */

/** One SSE message before framing. */
export interface SseFrame {
  data: string;
  event?: string;
  id?: string;
  /** Reconnection delay in milliseconds. */
  retry?: number;
}

export interface SseFormatOptions {
  /** Put a space after each field's colon: `data: x` (OpenAI) rather than `data:x` (TGI). Default true. */
  space?: boolean;
}

/** Headers of every event stream; `no-transform` and `X-Accel-Buffering` stop proxies and compressors from buffering. */
export const SSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
});

/** A comment line: every parser skips it, and it keeps idle proxies from closing the connection. */
export const KEEP_ALIVE_FRAME = ': keep-alive\n\n';

/** OpenAI's end-of-stream sentinel. TGI's `/generate_stream` never sends it. */
export const DONE_FRAME = 'data: [DONE]\n\n';

const LINE_BREAK = /\r\n|\r|\n/;

/**
 * Frame one SSE message. Multi-line data becomes several `data` lines (the parser joins them
 * with `\n`); a line break in `event` or `id` would start a new field, so it is refused.
 *
 * @example
 * formatSseFrame({ data: '{"a":1}' });                     // 'data: {"a":1}\n\n'
 * formatSseFrame({ data: '{"a":1}' }, { space: false });   // 'data:{"a":1}\n\n'
 */
export function formatSseFrame(frame: SseFrame, options: SseFormatOptions = {}): string {
  const sep = options.space === false ? ':' : ': ';
  let out = '';
  if (frame.event !== undefined) out += `event${sep}${singleLine('event', frame.event)}\n`;
  if (frame.id !== undefined) out += `id${sep}${singleLine('id', frame.id)}\n`;
  if (frame.retry !== undefined) {
    if (!Number.isSafeInteger(frame.retry) || frame.retry < 0) {
      throw new RangeError(`SSE retry must be a non-negative integer, got ${frame.retry}`);
    }
    out += `retry${sep}${frame.retry}\n`;
  }
  for (const line of frame.data.split(LINE_BREAK)) out += `data${sep}${line}\n`;
  return `${out}\n`;
}

/**
 * A JSON value as one TGI frame: `data:<json>` with no space.
 *
 * @example
 * tgiJsonFrame({ error: 'x', error_type: 'validation' }); // 'data:{"error":"x","error_type":"validation"}\n\n'
 */
export function tgiJsonFrame(value: unknown): string {
  return formatSseFrame({ data: JSON.stringify(value) }, { space: false });
}

/**
 * A JSON value as one OpenAI frame: `data: <json>`.
 *
 * @example
 * openaiJsonFrame({ choices: [] }); // 'data: {"choices":[]}\n\n'
 */
export function openaiJsonFrame(value: unknown): string {
  return formatSseFrame({ data: JSON.stringify(value) });
}

function singleLine(field: string, value: string): string {
  if (LINE_BREAK.test(value)) throw new TypeError(`SSE ${field} must not contain CR or LF: ${JSON.stringify(value)}`);
  return value;
}
