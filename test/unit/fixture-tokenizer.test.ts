import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { describe, expect, it } from 'vitest';
import { bytesToUnicode } from '../../src/fixture/bpe-train.js';
import { buildTokenizerFiles } from '../../src/fixture/tokenizer-files.js';

const TEXTS = [
  'Hello world, the river town woke slowly.',
  ' leading space,  double  spaces and trailing ',
  'Café déjà vu — naïve façade, Ærøskøbing',
  '你好，世界。日本語のテキスト',
  'emoji 😀👍🏽 and a family 👨‍👩‍👧',
  '\t\ttabs\n\nnew lines\r\n',
];

function load(vocabSize: number) {
  const files = buildTokenizerFiles({ vocabSize, modelMaxLength: 2048 });
  const json = files['tokenizer.json'] as { model: { vocab: Record<string, number>; merges: string[] } };
  return { files, json, tokenizer: new Tokenizer(files['tokenizer.json'], files['tokenizer_config.json']) };
}

describe.each([512, 49152])('fixture tokenizer with %i tokens', (vocabSize) => {
  const { json, tokenizer } = load(vocabSize);

  it('round-trips ASCII, accented Latin, CJK and emoji', () => {
    for (const text of TEXTS) {
      const { ids } = tokenizer.encode(text);
      expect(tokenizer.decode(ids)).toBe(text);
      expect(Math.max(...ids)).toBeLessThan(vocabSize);
    }
  });

  it('has the vocabulary size asked for, with every merge valid', () => {
    const { vocab, merges } = json.model;
    expect(new Set(Object.values(vocab)).size).toBe(vocabSize);
    expect(Math.max(...Object.values(vocab))).toBe(vocabSize - 1);
    expect(merges).toHaveLength(vocabSize - 3 - 256);
    for (const [i, merge] of merges.entries()) {
      const [left, right] = merge.split(' ');
      expect(vocab[left]).toBeDefined();
      expect(vocab[right]).toBeDefined();
      expect(vocab[left + right]).toBe(259 + i);
    }
  });
});

describe('fixture tokenizer ids and config', () => {
  const { files, json, tokenizer } = load(512);

  it('puts the specials first as SmolLM2 does, then the 256 byte symbols in byte order', () => {
    expect(['<|endoftext|>', '<|im_start|>', '<|im_end|>'].map((t) => tokenizer.token_to_id(t))).toEqual([0, 1, 2]);
    const byteIds = bytesToUnicode().map((symbol) => json.model.vocab[symbol]);
    expect(byteIds).toEqual(Array.from({ length: 256 }, (_, b) => 3 + b));
    expect(tokenizer.encode('<|im_start|>user\nhi<|im_end|>').ids[0]).toBe(1);
  });

  it('learns real subwords from its corpus', () => {
    expect(tokenizer.encode(' the').tokens).toEqual(['Ġthe']);
  });

  it('declares the special tokens and renders SmolLM2’s ChatML template', () => {
    const config = files['tokenizer_config.json'] as Record<string, unknown>;
    expect(config).toMatchObject({ bos_token: '<|im_start|>', eos_token: '<|im_end|>', add_bos_token: false });
    const prompt = new Template(config.chat_template as string).render({
      messages: [{ role: 'user', content: 'Hi' }],
      add_generation_prompt: true,
    });
    expect(prompt).toBe(
      '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' +
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
  });
});
