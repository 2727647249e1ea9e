/**
 * `/tokenize` through an upstream: TGI and our server answer TGI's `[{id, text, start, stop}]`;
 * llama.cpp answers `{tokens: [{id, piece}]}` with `with_pieces`, whose character offsets we count.
 * An upstream that gives ids only (vLLM) leaves the texts empty. The OpenAI dialect's body carries
 * each server's field for the text (`content`, `prompt`, `inputs`), since no standard names it.
 */
import { GenerationError } from '../errors.js';
import type { TokenizedToken } from '../types.js';
import type { Dialect } from './options.js';

export function tokenizeCall(dialect: Dialect, text: string): { path: string; body: unknown } {
  return dialect === 'tgi'
    ? { path: '/tokenize', body: { inputs: text } }
    : { path: '/tokenize', body: { content: text, prompt: text, inputs: text, with_pieces: true, add_special: false } };
}

/**
 * @example
 * readTokenize('Hi you', { tokens: [{ id: 5, piece: 'Hi' }, { id: 9, piece: ' you' }] });
 * // [{ id: 5, text: 'Hi', start: 0, stop: 2 }, { id: 9, text: ' you', start: 2, stop: 6 }]
 */
export function readTokenize(text: string, json: unknown): TokenizedToken[] {
  if (Array.isArray(json)) return json as TokenizedToken[];
  const tokens = (json as { tokens?: unknown })?.tokens;
  if (!Array.isArray(tokens)) throw new GenerationError('the upstream answered /tokenize without tokens');
  let offset = 0;
  return tokens.map((token: unknown) => {
    const id = typeof token === 'number' ? token : (token as { id: number }).id;
    const piece = typeof (token as { piece?: unknown })?.piece === 'string' ? (token as { piece: string }).piece : '';
    // A piece that is not where the text says (byte pieces of a split character) gets an empty span.
    const start = text.startsWith(piece, offset) ? offset : Math.min(offset, text.length);
    const stop = text.startsWith(piece, offset) ? offset + piece.length : start;
    offset = stop;
    return { id, text: text.slice(start, stop), start, stop };
  });
}
