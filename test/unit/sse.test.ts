import { describe, expect, it } from 'vitest';
import { DONE_FRAME, KEEP_ALIVE_FRAME, SSE_HEADERS, formatSseFrame, openaiJsonFrame, tgiJsonFrame } from '../../src/protocol/sse.js';

describe('formatSseFrame', () => {
  it('writes one data line and a blank line, with a space by default', () => {
    expect(formatSseFrame({ data: '{"a":1}' })).toBe('data: {"a":1}\n\n');
  });

  it('writes no space after the colon in TGI style', () => {
    expect(formatSseFrame({ data: '{"a":1}' }, { space: false })).toBe('data:{"a":1}\n\n');
  });

  it('splits multi-line data on LF, CRLF and CR into several data lines', () => {
    expect(formatSseFrame({ data: 'a\nb\r\nc\rd' })).toBe('data: a\ndata: b\ndata: c\ndata: d\n\n');
  });

  it('keeps an empty data line and a trailing line break as empty data lines', () => {
    expect(formatSseFrame({ data: '' })).toBe('data: \n\n');
    expect(formatSseFrame({ data: 'x\n' })).toBe('data: x\ndata: \n\n');
  });

  it('writes event, id and retry before the data, in the chosen style', () => {
    expect(formatSseFrame({ event: 'error', id: '7', retry: 1000, data: 'x' })).toBe('event: error\nid: 7\nretry: 1000\ndata: x\n\n');
    expect(formatSseFrame({ event: 'error', id: '7', data: 'x' }, { space: false })).toBe('event:error\nid:7\ndata:x\n\n');
  });

  it('refuses CR or LF in event and id', () => {
    expect(() => formatSseFrame({ event: 'a\nb', data: 'x' })).toThrow(/event must not contain CR or LF/);
    expect(() => formatSseFrame({ id: 'a\rb', data: 'x' })).toThrow(/id must not contain CR or LF/);
  });

  it('refuses a retry that is not a non-negative integer', () => {
    expect(() => formatSseFrame({ retry: -1, data: 'x' })).toThrow(RangeError);
    expect(() => formatSseFrame({ retry: 1.5, data: 'x' })).toThrow(RangeError);
  });
});

describe('JSON frames and constants', () => {
  it('frames JSON for TGI without a space and for OpenAI with one', () => {
    expect(tgiJsonFrame({ error: 'x', error_type: 'validation' })).toBe('data:{"error":"x","error_type":"validation"}\n\n');
    expect(openaiJsonFrame({ choices: [] })).toBe('data: {"choices":[]}\n\n');
  });

  it('keeps a JSON string with a newline on one data line (JSON escapes it)', () => {
    expect(openaiJsonFrame({ text: 'a\nb' })).toBe('data: {"text":"a\\nb"}\n\n');
  });

  it('has the exact headers, keep-alive comment and [DONE] sentinel', () => {
    expect(SSE_HEADERS).toEqual({
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    expect(Object.isFrozen(SSE_HEADERS)).toBe(true);
    expect(KEEP_ALIVE_FRAME).toBe(': keep-alive\n\n');
    expect(DONE_FRAME).toBe('data: [DONE]\n\n');
  });
});
