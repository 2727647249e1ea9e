/**
 * Streaming detokenization, TGI's `decode_token` (prefix_offset/read_offset): decode a small window of
 * recent ids twice, with and without the newest ones, and emit the difference once it is stable.
 */
/** What detokenizing needs of a tokenizer (tokenizer.ts's `TextTokenizer` has it); no import back. */
export interface TokenDecoder {
  decode(ids: number[], options: { skipSpecialTokens: boolean }): string;
}

const REPLACEMENT_CHARACTER = '\uFFFD';

/**
 * Turns generated ids into text pieces whose concatenation equals decoding all ids at once.
 *
 * The window starts one emitted chunk back (`prefixOffset`) rather than at the new ids, because
 * decoders are not additive per token: SentencePiece turns "▁world" into " world" only when something
 * precedes it, and a character split over byte tokens decodes to U+FFFD until its last byte arrives.
 *
 * @example
 * const detokenizer = new IncrementalDetokenizer(tokenizer);
 * for (const id of ids) process.stdout.write(detokenizer.push(id));
 * process.stdout.write(detokenizer.flush());
 */
export class IncrementalDetokenizer {
  readonly #tokenizer: TokenDecoder;
  readonly #skipSpecialTokens: boolean;
  readonly #ids: number[] = [];
  /** Start of the decoding window: the previous read offset. */
  #prefixOffset = 0;
  /** End of the text already emitted. */
  #readOffset = 0;
  /** decode(ids[prefixOffset..readOffset]), kept until the offsets move. */
  #prefixText: string | null = '';

  constructor(tokenizer: TokenDecoder, options: { skipSpecialTokens?: boolean } = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecialTokens = options.skipSpecialTokens ?? true;
  }

  get ids(): readonly number[] {
    return this.#ids;
  }

  /** Adds one generated token; returns the newly stable text (may be ''). */
  push(id: number): string {
    this.#ids.push(id);
    const prefixText = this.#prefix();
    const text = this.#decode(this.#prefixOffset, this.#ids.length);
    // A trailing U+FFFD is a character still missing bytes: wait for them rather than show it.
    if (text.length <= prefixText.length || text.endsWith(REPLACEMENT_CHARACTER)) return '';
    this.#advance();
    return text.slice(prefixText.length);
  }

  /** Returns the text held back (e.g. the generation ended mid-character), so nothing is lost. */
  flush(): string {
    const prefixText = this.#prefix();
    const text = this.#decode(this.#prefixOffset, this.#ids.length);
    if (text.length <= prefixText.length) return '';
    this.#advance();
    return text.slice(prefixText.length);
  }

  #advance(): void {
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    this.#prefixText = null;
  }

  #prefix(): string {
    this.#prefixText ??= this.#decode(this.#prefixOffset, this.#readOffset);
    return this.#prefixText;
  }

  #decode(start: number, end: number): string {
    if (end <= start) return '';
    return this.#tokenizer.decode(this.#ids.slice(start, end), { skipSpecialTokens: this.#skipSpecialTokens });
  }
}
