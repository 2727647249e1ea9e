import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../../src/errors.js';
import { countBeyond, createTokenizer, loadTokenizer, type TextTokenizer } from '../../src/text/tokenizer.js';
import {
  BYTE_LEVEL_CONFIG,
  SENTENCE_PIECE_CONFIG,
  byteLevelTokenizerJson,
  sentencePieceTokenizerJson,
} from '../fixtures/text/tokenizers.js';

const byteLevel = createTokenizer(byteLevelTokenizerJson(), BYTE_LEVEL_CONFIG);
const sentencePiece = createTokenizer(sentencePieceTokenizerJson(), SENTENCE_PIECE_CONFIG);
const vocabularySize = (json: Record<string, unknown>) => Object.keys((json.model as { vocab: object }).vocab).length;
const tokenizers: Array<[string, TextTokenizer]> = [
  ['byte-level BPE', byteLevel],
  ['SentencePiece BPE', sentencePiece],
];

const SAMPLES = [
  'Hello world and the thing',
  'héllo wörld',
  '你好，世界',
  'emoji 🙂👍🏽 and 🇫🇷',
  'spaces  inside\nand\n\nnew lines ',
  'mixed: Hello 世界 🙂 the end.',
];

/** The id of a piece that encodes to exactly one token. */
function id(tokenizer: TextTokenizer, piece: string): number {
  const ids = tokenizer.encode(piece, { addSpecialTokens: false });
  expect(ids).toHaveLength(1);
  return ids[0];
}

describe.each(tokenizers)('%s', (_name, tokenizer) => {
  it.each(SAMPLES)('round-trips %j', (text) => {
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    expect(tokenizer.decode(ids)).toBe(text);
    expect(tokenizer.decode(tokenizer.encode(text), { skipSpecialTokens: true })).toBe(text);
  });

  it.each(SAMPLES)('gives offsets that slice %j exactly', (text) => {
    const tokens = tokenizer.tokenizeWithOffsets(text);
    expect(tokens.map((t) => t.id)).toEqual(tokenizer.encode(text));
    let previousStop = 0;
    for (const token of tokens) {
      expect(token.text).toBe(text.slice(token.start, token.stop));
      expect(token.start).toBeLessThanOrEqual(token.stop);
      expect(token.start).toBeGreaterThanOrEqual(0);
      expect(token.stop).toBeLessThanOrEqual(text.length);
      // Spans never go backwards; a character split over byte tokens repeats its span.
      expect(token.stop).toBeGreaterThanOrEqual(previousStop);
      previousStop = token.stop;
    }
    expect(tokens.at(-1)?.stop).toBe(text.length);
  });

  it('decodes an empty list and ids outside the vocabulary to nothing', () => {
    expect(tokenizer.decode([])).toBe('');
    const ids = tokenizer.encode('the end', { addSpecialTokens: false });
    expect(tokenizer.decode([...ids, tokenizer.vocabSize + 5])).toBe('the end');
  });
});

describe('byte-level BPE', () => {
  it('merges known words, keeps the space in front of them, and splits the rest into bytes', () => {
    const ids = byteLevel.encode('hello the world');
    expect(ids).toEqual([id(byteLevel, 'hello'), id(byteLevel, ' the'), id(byteLevel, ' world')]);
    expect(byteLevel.encode('你')).toHaveLength(3);
    expect(byteLevel.encode('é')).toHaveLength(1);
  });

  it('matches special tokens as one id and knows them as special', () => {
    const ids = byteLevel.encode('<|im_start|>user\nHi<|im_end|>');
    const start = id(byteLevel, '<|im_start|>');
    const end = id(byteLevel, '<|im_end|>');
    expect(ids[0]).toBe(start);
    expect(ids.at(-1)).toBe(end);
    expect(byteLevel.isSpecial(start)).toBe(true);
    expect(byteLevel.isSpecial(id(byteLevel, '<|endoftext|>'))).toBe(true);
    expect(byteLevel.isSpecial(id(byteLevel, 'hello'))).toBe(false);
    expect(byteLevel.decode(ids)).toBe('<|im_start|>user\nHi<|im_end|>');
    expect(byteLevel.decode(ids, { skipSpecialTokens: true })).toBe('user\nHi');
  });

  it('keeps a special token whose text it is told to keep as text: streamed, decoded and not special', () => {
    const json = byteLevelTokenizerJson();
    const added = json.added_tokens as Array<{ id: number }>;
    const tag = { ...added[0], id: Math.max(...added.map((t) => t.id)) + 1, content: '<tool_call>', special: true };
    json.added_tokens = [...added, tag];
    const plain = createTokenizer(json, BYTE_LEVEL_CONFIG);
    const tools = createTokenizer(json, BYTE_LEVEL_CONFIG, { textTokens: ['<tool_call>'] });
    const ids = tools.encode('<|im_start|><tool_call>Hi');
    expect(ids[1]).toBe(tag.id);
    expect(plain.isSpecial(tag.id)).toBe(true);
    expect(tools.isSpecial(tag.id)).toBe(false);
    expect(plain.decode(ids, { skipSpecialTokens: true })).toBe('Hi');
    expect(tools.decode(ids, { skipSpecialTokens: true })).toBe('<tool_call>Hi');
  });

  it('adds no tokens for special tokens (no post-processor template)', () => {
    expect(byteLevel.encode('hello')).toEqual(byteLevel.encode('hello', { addSpecialTokens: false }));
  });

  it('reports the vocabulary size, special token strings (AddedToken objects unwrapped) and the config', () => {
    expect(byteLevel.vocabSize).toBe(vocabularySize(byteLevelTokenizerJson()));
    expect(byteLevel.bosToken).toBe('<|endoftext|>');
    expect(byteLevel.eosToken).toBe('<|im_end|>');
    expect(byteLevel.config).toEqual(BYTE_LEVEL_CONFIG);
  });

  it('does not clean up spaces before punctuation (as TGI’s Rust tokenizers)', () => {
    expect(byteLevel.decode(byteLevel.encode('a , b .'))).toBe('a , b .');
  });

  it('gives every byte token of a character that character’s span', () => {
    const tokens = byteLevel.tokenizeWithOffsets('a🙂b');
    expect(tokens.map((t) => [t.text, t.start, t.stop])).toEqual([
      ['a', 0, 1],
      ['🙂', 1, 3],
      ['🙂', 1, 3],
      ['🙂', 1, 3],
      ['🙂', 1, 3],
      ['b', 3, 4],
    ]);
  });
});

describe('SentencePiece BPE with byte fallback', () => {
  it('prepends ▁ to the first word only and adds <s> unless asked not to', () => {
    const hello = id(sentencePiece, 'Hello');
    const world = id(sentencePiece, ' world');
    expect(sentencePiece.encode('Hello world')).toEqual([1, hello, world]);
    expect(sentencePiece.encode('Hello world', { addSpecialTokens: false })).toEqual([hello, world]);
    expect(sentencePiece.decode([1, hello, world])).toBe('<s> Hello world');
    expect(sentencePiece.decode([1, hello, world], { skipSpecialTokens: true })).toBe('Hello world');
  });

  it('loses one of several leading spaces, like Llama with the Rust tokenizers', () => {
    // "  two" becomes "▁▁two" (no ▁ prepended: it already starts with one); the decoder strips one space.
    expect(sentencePiece.decode(sentencePiece.encode('  two'), { skipSpecialTokens: true })).toBe(' two');
  });

  it('falls back to <0xXX> byte tokens for characters outside the vocabulary', () => {
    const ids = sentencePiece.encode('é你🙂', { addSpecialTokens: false });
    // "▁" then the UTF-8 bytes: 2 + 3 + 4.
    expect(ids).toHaveLength(1 + 9);
    const byteToken = (b: number) => 3 + b;
    expect(ids.slice(1)).toEqual([0xc3, 0xa9, 0xe4, 0xbd, 0xa0, 0xf0, 0x9f, 0x99, 0x82].map(byteToken));
  });

  it('knows <unk>, <s>, </s> as special and unwraps AddedToken bos/eos', () => {
    expect([0, 1, 2].map((i) => sentencePiece.isSpecial(i))).toEqual([true, true, true]);
    expect(sentencePiece.isSpecial(id(sentencePiece, 'Hello'))).toBe(false);
    expect(sentencePiece.bosToken).toBe('<s>');
    expect(sentencePiece.eosToken).toBe('</s>');
    expect(sentencePiece.vocabSize).toBe(vocabularySize(sentencePieceTokenizerJson()));
  });

  it('gives the <s> added by the post-processor an empty span and words their spaces', () => {
    const tokens = sentencePiece.tokenizeWithOffsets('Hello world');
    expect(tokens).toEqual([
      { id: 1, text: '', start: 0, stop: 0 },
      { id: id(sentencePiece, 'Hello'), text: 'Hello', start: 0, stop: 5 },
      { id: id(sentencePiece, ' world'), text: ' world', start: 5, stop: 11 },
    ]);
  });

  it('counts offsets in UTF-16 code units, like String#slice', () => {
    const tokens = sentencePiece.tokenizeWithOffsets('the 🙂 and');
    expect(tokens.filter((t) => t.text === '🙂').map((t) => [t.start, t.stop])).toEqual([
      [4, 6],
      [4, 6],
      [4, 6],
      [4, 6],
    ]);
    expect(tokens.at(-1)).toMatchObject({ text: ' and', start: 6, stop: 10 });
  });
});

describe('loadTokenizer', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'text-tokenizer-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function modelDir(name: string, files: Record<string, string>): Promise<string> {
    const path = join(dir, name);
    await mkdir(path);
    for (const [file, content] of Object.entries(files)) await writeFile(join(path, file), content);
    return path;
  }

  it('reads tokenizer.json and tokenizer_config.json', async () => {
    const path = await modelDir('complete', {
      'tokenizer.json': JSON.stringify(sentencePieceTokenizerJson()),
      'tokenizer_config.json': JSON.stringify(SENTENCE_PIECE_CONFIG),
    });
    const tokenizer = await loadTokenizer(path);
    expect(tokenizer.encode('Hello world')).toEqual(sentencePiece.encode('Hello world'));
    expect(tokenizer.config.chat_template).toBe(SENTENCE_PIECE_CONFIG.chat_template);
    expect(tokenizer.eosToken).toBe('</s>');
  });

  it('works without tokenizer_config.json', async () => {
    const path = await modelDir('no-config', { 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) });
    const tokenizer = await loadTokenizer(path);
    expect(tokenizer.config).toEqual({});
    expect(tokenizer.bosToken).toBeNull();
    expect(tokenizer.decode(tokenizer.encode('hello 🙂'))).toBe('hello 🙂');
  });

  it('names the missing file', async () => {
    const path = await modelDir('empty', {});
    const error = await loadTokenizer(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toContain(join(path, 'tokenizer.json'));
    expect((error as Error).message).toMatch(/not found.*Hugging Face tokenizers format/);
  });

  it('names an unparsable file', async () => {
    const path = await modelDir('broken-json', { 'tokenizer.json': '{"model": ' });
    const error = await loadTokenizer(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toMatch(/tokenizer\.json is not valid JSON: .*expected a tokenizer/);
  });

  it('names a file that is JSON but not a tokenizer', async () => {
    const path = await modelDir('wrong-shape', { 'tokenizer.json': '{"hello": 1}' });
    const error = await loadTokenizer(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toContain(`${join(path, 'tokenizer.json')} is not a usable tokenizer`);
  });

  it('names an unparsable tokenizer_config.json', async () => {
    const path = await modelDir('broken-config', {
      'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
      'tokenizer_config.json': '[1, 2',
    });
    const error = await loadTokenizer(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toContain(join(path, 'tokenizer_config.json'));
  });
});

describe('add_bos_token / add_eos_token in tokenizer_config.json', () => {
  it('adds the tokens the config asks for when tokenizer.json does not', () => {
    const plain = createTokenizer(byteLevelTokenizerJson(), BYTE_LEVEL_CONFIG);
    const flagged = createTokenizer(byteLevelTokenizerJson(), { ...BYTE_LEVEL_CONFIG, add_bos_token: true, add_eos_token: true });
    const ids = plain.encode('hi');
    const bos = plain.encode('<|endoftext|>', { addSpecialTokens: false });
    const eos = plain.encode('<|im_end|>', { addSpecialTokens: false });
    expect(bos).toHaveLength(1);
    expect(flagged.encode('hi')).toEqual([...bos, ...ids, ...eos]);
    expect(flagged.encode('hi', { addSpecialTokens: false })).toEqual(ids);
  });
});

describe('countBeyond', () => {
  const tokenizer = createTokenizer(byteLevelTokenizerJson(), BYTE_LEVEL_CONFIG);

  it('finds a text far over the limit without tokenizing all of it', () => {
    const text = 'hello world, '.repeat(200_000);
    const count = countBeyond(tokenizer, text, 1000);
    expect(count).not.toBeNull();
    expect(count!).toBeGreaterThan(1000);
    // It stopped early: the whole text has hundreds of thousands of tokens.
    expect(count!).toBeLessThan(20_000);
  });

  it('returns null for texts that may fit, so they are tokenized exactly', () => {
    expect(countBeyond(tokenizer, 'hello world', 1000)).toBeNull();
    const near = 'ab '.repeat(540);
    expect(tokenizer.encode(near).length).toBeGreaterThan(1000);
    // Within the margin above the limit: left to the exact count.
    expect(countBeyond(tokenizer, near, 1000)).toBeNull();
  });
});
