/**
 * The model's tokenizer: `@huggingface/tokenizers` behind a small interface that speaks numbers and
 * camelCase, adds character offsets for `/tokenize`, and reports bad files as `ModelLoadError`.
 */
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from '../errors.js';
import { readJsonObject } from '../json-file.js';
import type { TokenizedToken } from '../types.js';
import { IncrementalDetokenizer } from './detokenizer.js';

/**
 * The tokenizer as the engine and the HTTP layer use it.
 *
 * @example
 * tokenizer.encode('Hello world'); // [1, 15043, 3186] with Llama's <s>
 */
export interface TextTokenizer {
  /** `addSpecialTokens` (default true) applies the post-processor, e.g. Llama's leading `<s>`. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** `skipSpecialTokens` defaults to false. Ids outside the vocabulary decode to nothing. */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  isSpecial(id: number): boolean;
  /** Character offsets for TGI's /tokenize: [{id, text, start, stop}] where text = input.slice(start, stop) */
  tokenizeWithOffsets(text: string): TokenizedToken[];
  /** Including added tokens: one more than the highest id. */
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** tokenizer_config.json contents ({} if absent). */
  readonly config: Record<string, unknown>;
}

const FORMAT =
  'a tokenizer in the Hugging Face tokenizers format (keys model, normalizer, pre_tokenizer, post_processor, decoder, added_tokens)';

/**
 * Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model directory.
 *
 * @example
 * const tokenizer = await loadTokenizer('./models/smollm2-135m-instruct');
 * tokenizer.decode(tokenizer.encode('Hello')); // 'Hello'
 */
export async function loadTokenizer(modelDir: string, options: TokenizerOptions = {}): Promise<TextTokenizer> {
  const tokenizerPath = join(modelDir, 'tokenizer.json');
  const tokenizerJson = await readJsonObject(tokenizerPath, FORMAT);
  if (tokenizerJson === undefined) {
    throw new ModelLoadError(`${tokenizerPath} not found: expected ${FORMAT}`);
  }
  const configPath = join(modelDir, 'tokenizer_config.json');
  const config = (await readJsonObject(configPath, 'a JSON object of tokenizer settings')) ?? {};
  return build(tokenizerJson, config, tokenizerPath, options);
}

export interface TokenizerOptions {
  /**
   * Special tokens with one of these texts count as text: they are streamed and kept in the
   * generated text. For the tool-call tags, which some vocabularies have as special tokens and the
   * route must read (vLLM's hermes parser turns `skip_special_tokens` off for the same reason).
   */
  textTokens?: readonly string[];
}

/**
 * The same as {@link loadTokenizer}, from already parsed files.
 *
 * @example
 * const tokenizer = createTokenizer(JSON.parse(json), { eos_token: '</s>' });
 */
export function createTokenizer(tokenizerJson: object, tokenizerConfig: object = {}, options: TokenizerOptions = {}): TextTokenizer {
  return build(tokenizerJson, tokenizerConfig, 'tokenizer.json', options);
}

function build(tokenizerJson: object, config: object, source: string, options: TokenizerOptions): TextTokenizer {
  try {
    return new HfTextTokenizer(new Tokenizer(tokenizerJson, config), config as Record<string, unknown>, options.textTokens ?? []);
  } catch (error) {
    throw new ModelLoadError(`${source} is not a usable tokenizer (${(error as Error).message}): expected ${FORMAT}`, error);
  }
}

/**
 * `bos_token` and friends are strings or AddedToken objects `{content, ...}` in tokenizer_config.json.
 *
 * @example
 * tokenContent({ __type: 'AddedToken', content: '<s>' }); // '<s>'
 */
export function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly #inner: Tokenizer;
  readonly #special: Set<number>;

  constructor(
    inner: Tokenizer,
    readonly config: Record<string, unknown>,
    textTokens: readonly string[],
  ) {
    this.#inner = inner;
    this.bosToken = tokenContent(config.bos_token);
    this.eosToken = tokenContent(config.eos_token);
    let maxId = -1;
    for (const id of inner.get_vocab().values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    // The library skips the same set when decoding with skip_special_tokens.
    this.#special = new Set([...inner.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id));
    const extra = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : [];
    for (const token of extra) {
      const id = typeof token === 'string' ? inner.token_to_id(token) : undefined;
      if (id !== undefined) this.#special.add(id);
    }
    for (const text of textTokens) {
      const id = inner.token_to_id(text);
      if (id !== undefined) this.#special.delete(id);
    }
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const ids = this.#inner.encode(text, { add_special_tokens: addSpecial }).ids;
    if (!addSpecial) return ids;
    // transformers (and TGI) honour add_bos_token / add_eos_token even where tokenizer.json's
    // post-processor does not add them.
    const bos = this.config.add_bos_token === true && this.bosToken !== null ? this.#inner.token_to_id(this.bosToken) : undefined;
    const eos = this.config.add_eos_token === true && this.eosToken !== null ? this.#inner.token_to_id(this.eosToken) : undefined;
    if (bos !== undefined && ids[0] !== bos) ids.unshift(bos);
    if (eos !== undefined && ids[ids.length - 1] !== eos) ids.push(eos);
    return ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    // Like the Rust tokenizers (and so TGI), unknown ids are dropped; the library would crash on them.
    // Special tokens are skipped here rather than by the library, whose set would also hold `textTokens`.
    const skip = options.skipSpecialTokens ?? false;
    const known = ids.filter((id) => this.#inner.id_to_token(id) !== undefined && !(skip && this.#special.has(id)));
    if (known.length === 0) return '';
    // No clean-up of spaces before punctuation: TGI (Rust tokenizers) does none, and it would make
    // streamed text differ from the final text, since it rewrites what was already sent.
    return this.#inner.decode(known, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  isSpecial(id: number): boolean {
    return this.#special.has(id);
  }

  tokenizeWithOffsets(text: string): TokenizedToken[] {
    return tokenizeWithOffsets(this, text);
  }
}

/**
 * The JS tokenizer reports no offsets, so they are recovered by decoding the tokens one by one and
 * aligning each piece of text with the input. Tokens added by the post-processor (bos/eos) span no
 * input; the bytes of one character (byte fallback, byte-level BPE) all get that character's span.
 */
function tokenizeWithOffsets(tokenizer: TextTokenizer, text: string): TokenizedToken[] {
  const all = tokenizer.encode(text);
  const content = tokenizer.encode(text, { addSpecialTokens: false });
  const found = findRun(all, content);
  const first = found < 0 ? 0 : found;
  const spans = contentSpans(tokenizer, text, found < 0 ? all : content);
  return all.map((id, i) => {
    const [start, stop] = spans[i - first] ?? (i < first ? [0, 0] : [text.length, text.length]);
    return { id, text: text.slice(start, stop), start, stop };
  });
}

/** Where `run` starts inside `ids`, or -1. */
function findRun(ids: number[], run: number[]): number {
  for (let i = 0; i + run.length <= ids.length; i++) {
    if (run.every((id, j) => ids[i + j] === id)) return i;
  }
  return -1;
}

function contentSpans(tokenizer: TextTokenizer, text: string, ids: number[]): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  const detokenizer = new IncrementalDetokenizer(tokenizer, { skipSpecialTokens: false });
  let cursor = 0;
  let tokens = 0;
  // The last `tokens` ids produced `piece`: the earlier ones are the leading bytes of its first character.
  const place = (piece: string) => {
    const [start, stop] = align(text, cursor, piece);
    const head = Math.min(stop, start + ((text.codePointAt(start) ?? 0) > 0xffff ? 2 : 1));
    for (let i = 1; i < tokens; i++) spans.push([start, head]);
    spans.push([start, stop]);
    cursor = stop;
    tokens = 0;
  };
  for (const id of ids) {
    tokens++;
    const piece = detokenizer.push(id);
    if (piece !== '') place(piece);
  }
  if (tokens > 0) place(detokenizer.flush());
  return spans;
}

/**
 * The span of `piece` in `text` at `cursor`. Decoders may drop or add a leading space (SentencePiece
 * strips the first one), so whitespace is skipped on both sides; a piece that differs otherwise (a
 * normalizer changed it) is given its own length.
 */
function align(text: string, cursor: number, piece: string): [number, number] {
  if (text.startsWith(piece, cursor)) return [cursor, cursor + piece.length];
  const trimmed = piece.trimStart();
  let at = cursor;
  while (at < text.length && /\s/.test(text[at])) at++;
  if (text.startsWith(trimmed, at)) return [cursor, at + trimmed.length];
  return [cursor, Math.min(text.length, cursor + piece.length)];
}

/** Characters tokenized per piece when counting a long text. */
const COUNT_PIECE = 8192;

/**
 * Whether `text` surely has more than `limit` tokens, found by tokenizing it piece by piece and
 * stopping early: an oversized prompt then costs the worker about `limit` tokens of work instead of
 * the whole text (a 2 MB body takes seconds, and every stream waits meanwhile). Pieces end at a
 * space, where byte-level and SentencePiece pre-tokenizers split anyway; a margin covers the few
 * tokens a piece boundary can shift. Returns the count so far (a lower bound), or null.
 */
export function countBeyond(tokenizer: TextTokenizer, text: string, limit: number): number | null {
  const margin = limit + Math.ceil(limit / 10) + 64;
  if (text.length <= margin) return null;
  let count = 0;
  for (let start = 0; start < text.length;) {
    let end = Math.min(text.length, start + COUNT_PIECE);
    const space = end < text.length ? text.lastIndexOf(' ', end) : -1;
    if (space > start) end = space;
    count += tokenizer.encode(text.slice(start, end), { addSpecialTokens: false }).length;
    if (count > margin) return count;
    start = end;
  }
  return null;
}
