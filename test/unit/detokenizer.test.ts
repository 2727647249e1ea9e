import { describe, expect, it } from 'vitest';
import { IncrementalDetokenizer } from '../../src/text/detokenizer.js';
import { createTokenizer, type TextTokenizer } from '../../src/text/tokenizer.js';
import {
  BYTE_LEVEL_CONFIG,
  SENTENCE_PIECE_CONFIG,
  byteLevelTokenizerJson,
  sentencePieceTokenizerJson,
} from '../fixtures/text/tokenizers.js';

const byteLevel = createTokenizer(byteLevelTokenizerJson(), BYTE_LEVEL_CONFIG);
const sentencePiece = createTokenizer(sentencePieceTokenizerJson(), SENTENCE_PIECE_CONFIG);
const tokenizers: Array<[string, TextTokenizer]> = [
  ['byte-level BPE', byteLevel],
  ['SentencePiece BPE', sentencePiece],
];

const SAMPLES = [
  'Hello world and the thing',
  'héllo wörld',
  '你好，世界',
  'emoji 🙂👍🏽 and 🇫🇷',
  'mixed: Hello 世界 🙂 the end.',
  '  leading spaces',
  'new\nlines\n\n and\ttabs ',
  '',
];

/** Streams `ids` through a detokenizer: the piece returned by each push, and what flush() returns. */
function stream(tokenizer: TextTokenizer, ids: number[], skipSpecialTokens?: boolean) {
  const detokenizer = new IncrementalDetokenizer(tokenizer, { skipSpecialTokens });
  const pieces = ids.map((id) => detokenizer.push(id));
  return { pieces, rest: detokenizer.flush(), detokenizer };
}

describe.each(tokenizers)('%s', (_name, tokenizer) => {
  it.each(SAMPLES)('streams %j without broken characters and adds up to decode()', (text) => {
    const ids = tokenizer.encode(text);
    const { pieces, rest, detokenizer } = stream(tokenizer, ids);
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
    expect(rest).toBe('');
    expect(pieces.join('')).toBe(tokenizer.decode(ids, { skipSpecialTokens: true }));
    expect(detokenizer.ids).toEqual(ids);
  });

  it('yields nothing for the leading bytes of a character split over byte tokens', () => {
    const ids = tokenizer.encode('a你', { addSpecialTokens: false });
    const { pieces } = stream(tokenizer, ids);
    expect(pieces.slice(-3)).toEqual(['', '', '你']);
  });

  it('returns the bytes held back at the end through flush()', () => {
    const ids = tokenizer.encode('ok 你好', { addSpecialTokens: false }).slice(0, -2);
    const { pieces, rest } = stream(tokenizer, ids);
    expect(pieces.slice(-1)).toEqual(['']);
    expect(rest).toBe('\uFFFD');
    expect(pieces.join('') + rest).toBe(tokenizer.decode(ids));
  });

  it('returns nothing more after flush() has emptied it', () => {
    const detokenizer = new IncrementalDetokenizer(tokenizer);
    for (const id of tokenizer.encode('the end', { addSpecialTokens: false })) detokenizer.push(id);
    expect(detokenizer.flush()).toBe('');
    expect(detokenizer.flush()).toBe('');
  });

  it('keeps the invariant for random id sequences, including invalid UTF-8 and special tokens', () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let run = 0; run < 300; run++) {
      const ids = Array.from({ length: 1 + Math.floor(random() * 10) }, () => Math.floor(random() * tokenizer.vocabSize));
      for (const skipSpecialTokens of [true, false]) {
        const { pieces, rest } = stream(tokenizer, ids, skipSpecialTokens);
        for (const piece of pieces) expect(piece.endsWith('\uFFFD')).toBe(false);
        expect(pieces.join('') + rest).toBe(tokenizer.decode(ids, { skipSpecialTokens }));
      }
    }
  });
});

describe('byte-level BPE', () => {
  it('skips special tokens by default and keeps them when asked', () => {
    const ids = byteLevel.encode('<|im_start|>assistant\nhello the world<|im_end|>');
    const skipped = stream(byteLevel, ids);
    expect(skipped.pieces[0]).toBe('');
    expect(skipped.pieces.at(-1)).toBe('');
    expect(skipped.pieces.join('')).toBe('assistant\nhello the world');
    const kept = stream(byteLevel, ids, false);
    expect(kept.pieces[0]).toBe('<|im_start|>');
    expect(kept.pieces.at(-1)).toBe('<|im_end|>');
  });

  it('keeps the space that a word token carries in front of it', () => {
    const { pieces } = stream(byteLevel, byteLevel.encode('hello the world'));
    expect(pieces).toEqual(['hello', ' the', ' world']);
  });

  it('decodes only a small window per token, however long the sequence', () => {
    let decoded = 0;
    const counting: TextTokenizer = Object.create(byteLevel, {
      decode: {
        value: (ids: readonly number[], options?: { skipSpecialTokens?: boolean }) => {
          decoded += ids.length;
          return byteLevel.decode(ids, options);
        },
      },
    });
    const ids = byteLevel.encode('hello the world '.repeat(200));
    const detokenizer = new IncrementalDetokenizer(counting);
    for (const id of ids) detokenizer.push(id);
    expect(decoded).toBeLessThan(ids.length * 4);
  });
});

describe('SentencePiece BPE', () => {
  it('drops the first word’s leading space and keeps the later ones', () => {
    const { pieces } = stream(sentencePiece, sentencePiece.encode('Hello world and the world'));
    expect(pieces).toEqual(['', 'Hello', ' world', ' and', ' the', ' world']);
  });

  it('streams a character split over <0xXX> tokens as one piece once complete', () => {
    const ids = sentencePiece.encode('the 🙂', { addSpecialTokens: false });
    const { pieces } = stream(sentencePiece, ids);
    expect(pieces).toEqual(['the', ' ', '', '', '', '🙂']);
  });

  it('skips <s> and </s> by default', () => {
    const ids = [...sentencePiece.encode('Hello world'), 2];
    const { pieces } = stream(sentencePiece, ids);
    expect(pieces.join('')).toBe('Hello world');
    expect(stream(sentencePiece, ids, false).pieces.join('')).toBe('<s> Hello world</s>');
  });
});
