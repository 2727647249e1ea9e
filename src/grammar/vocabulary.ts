/**
 * The vocabulary as xgrammar's TokenizerInfo needs it, from `tokenizer.json` (the web build has no
 * `from_huggingface` detection, so this is our port of it, with two fixes).
 *
 * xgrammar treats a token as special, never allowed by a grammar, only when its text is empty
 * (`IsSpecialToken(token) { return token == ""; }`). Passed with their text, 16 of SmolLM2's 17
 * added tokens (`<|im_start|>`, `<repo_name>`, ...) were allowed inside JSON strings
 * (structured-output.md §3.1.3). So every added token marked `special` is blanked, except those
 * whose text the tool-call format itself writes (`<tool_call>` is a special token in some models).
 */
import { ModelLoadError } from '../errors.js';

export type VocabType = 'byte_level' | 'byte_fallback' | 'raw';

export interface GrammarVocabulary {
  /** Token strings in id order, as the tokenizer's model stores them; `''` for special tokens and gaps. */
  tokens: string[];
  vocabType: VocabType;
  /** The tokenizer puts "▁" before the text (Llama-style SentencePiece). */
  prependSpace: boolean;
}

export interface VocabularyOptions {
  /** The width of a logits row (config.json's `vocab_size`), which may exceed the tokenizer's. */
  vocabSize: number;
  /** Texts a grammar must be able to produce: a special token whose text occurs in one keeps it. */
  formatTexts?: readonly string[];
}

type Json = Record<string, unknown>;

/**
 * @throws ModelLoadError when `tokenizer.json` has no vocabulary we can read.
 * @example
 * const { tokens, vocabType } = grammarVocabulary(tokenizerJson, { vocabSize: 49152, formatTexts: ['<tool_call>'] });
 * // tokens[1] === '' for <|im_start|>; vocabType 'byte_level'
 */
export function grammarVocabulary(tokenizerJson: Json, options: VocabularyOptions): GrammarVocabulary {
  const { vocabSize, formatTexts = [] } = options;
  const tokens: string[] = new Array<string>(vocabSize).fill('');
  const model = tokenizerJson.model as Json | undefined;
  const vocab = model?.vocab;
  const put = (token: unknown, id: unknown): void => {
    if (typeof token === 'string' && Number.isInteger(id) && (id as number) >= 0 && (id as number) < vocabSize)
      tokens[id as number] = token;
  };
  if (Array.isArray(vocab)) {
    // Unigram: [[piece, score], ...] in id order.
    vocab.forEach((entry: unknown, id) => put(Array.isArray(entry) ? entry[0] : undefined, id));
  } else if (typeof vocab === 'object' && vocab !== null) {
    for (const [token, id] of Object.entries(vocab)) put(token, id);
  } else {
    throw new ModelLoadError('tokenizer.json has no model.vocab: grammars need the token strings');
  }
  const added = Array.isArray(tokenizerJson.added_tokens) ? (tokenizerJson.added_tokens as Json[]) : [];
  for (const token of added) {
    const content = typeof token.content === 'string' ? token.content : '';
    const keep = token.special !== true || (content !== '' && formatTexts.some((text) => text.includes(content)));
    put(keep ? content : '', token.id);
  }
  return { tokens, vocabType: vocabType(tokenizerJson.decoder), prependSpace: prependsSpace(tokenizerJson) };
}

/** Decoders of a `Sequence` decoder, or the one decoder. */
function parts(component: unknown, listKey: string): Json[] {
  if (typeof component !== 'object' || component === null) return [];
  const object = component as Json;
  return object.type === 'Sequence' && Array.isArray(object[listKey]) ? (object[listKey] as Json[]) : [object];
}

/**
 * `ByteLevel` → byte_level. `ByteFallback` → byte_fallback, and so is a `Metaspace` or "▁" → " "
 * `Replace` decoder (xgrammar's byte_fallback also turns "▁" into a space; its own detection
 * calls those raw, and "▁" would never match a space).
 */
function vocabType(decoder: unknown): VocabType {
  const decoders = parts(decoder, 'decoders');
  if (decoders.some((d) => d.type === 'ByteLevel')) return 'byte_level';
  const spaceReplace = (d: Json) => d.type === 'Replace' && (d.pattern as Json | undefined)?.String === '▁';
  if (decoders.some((d) => d.type === 'ByteFallback' || d.type === 'Metaspace' || spaceReplace(d))) return 'byte_fallback';
  return 'raw';
}

/** A `Prepend "▁"` normalizer, or a Metaspace pre-tokenizer that prepends (newer and older keys). */
function prependsSpace(tokenizerJson: Json): boolean {
  if (parts(tokenizerJson.normalizer, 'normalizers').some((n) => n.type === 'Prepend' && n.prepend === '▁')) return true;
  return parts(tokenizerJson.pre_tokenizer, 'pretokenizers').some(
    (p) => p.type === 'Metaspace' && (p.prepend_scheme === 'always' || p.prepend_scheme === 'first' || p.add_prefix_space === true),
  );
}
