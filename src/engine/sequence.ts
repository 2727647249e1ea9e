import { GenerationError } from '../errors.js';
import type { RowMatcher } from '../grammar/index.js';
import type { TextTokenizer } from '../text/tokenizer.js';
import { IncrementalDetokenizer } from '../text/detokenizer.js';
import type { FinishReason, PrefillToken, Token, ValidatedParameters } from '../types.js';
import { createSequenceSampler, type SequenceSampler } from './sampling.js';
import { StopSequenceMatcher } from './stopping.js';
import type { StepToken } from './messages.js';

/** TGI's DEFAULT_GENERATION_LENGTH: the most new tokens one request reserves up front. */
const RESERVED_NEW_TOKENS = 1024;

/** What a sequence needs from the worker it runs in. */
export interface SequenceContext {
  tokenizer: TextTokenizer;
  eosTokenIds: ReadonlySet<number>;
}

/**
 * One request's state in the worker: its own sampler (and seeded PRNG), stop criteria and
 * detokenizer, so rows of a batch never influence each other.
 */
export class Sequence {
  readonly generated: number[] = [];
  /**
   * The streamed texts of the non-special tokens, which is the generated text. Bytes held back for an
   * unfinished character go out with the last token; only when a special token (eos) ends the
   * sequence right after such bytes are they dropped, so the stream and generated_text always agree.
   */
  private text = '';
  private readonly sampler: SequenceSampler;
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly stops: StopSequenceMatcher;
  private startedAt = 0;
  private firstTokenAt = 0;
  finished = false;

  constructor(
    readonly id: number,
    readonly promptIds: number[],
    readonly params: ValidatedParameters,
    readonly maxNewTokens: number,
    private readonly ctx: SequenceContext,
    private readonly receivedAt = performance.now(),
    /** The request's grammar state, owned by the sequence: the loop calls `release()` when it leaves. */
    private readonly grammar?: RowMatcher,
  ) {
    this.sampler = createSequenceSampler(params.sampling, promptIds, grammar);
    this.detokenizer = new IncrementalDetokenizer(ctx.tokenizer, { skipSpecialTokens: true });
    this.stops = new StopSequenceMatcher(params.stop);
  }

  get inputLength(): number {
    return this.promptIds.length;
  }

  /**
   * Tokens the sequence reserves in the KV budget: the prompt and its new tokens, counting at most
   * TGI's 1024-token generation chunk, so requests without max_new_tokens (the budget's whole rest)
   * do not each hold the cache of a full context.
   */
  get reservedTokens(): number {
    return this.promptIds.length + Math.min(this.maxNewTokens, RESERVED_NEW_TOKENS);
  }

  /** Whether a grammar constrains the output (such rows are not speculated on). */
  get constrained(): boolean {
    return this.grammar !== undefined;
  }

  /** Frees the grammar state; idempotent, and nothing for a free row. */
  release(): void {
    this.grammar?.release();
  }

  get lastToken(): number {
    return this.generated.length > 0 ? this.generated[this.generated.length - 1] : this.promptIds[this.promptIds.length - 1];
  }

  markStarted(): void {
    this.startedAt = performance.now();
  }

  /** Prompt tokens with the logprobs the prefill computed (the first has none). */
  prefillTokens(logprobs: readonly (number | null)[]): PrefillToken[] {
    return this.promptIds.map((id, j) => ({ id, text: this.ctx.tokenizer.decode([id]), logprob: logprobs[j] }));
  }

  /** Chooses the next token from this row's last-position logits and checks the stop criteria. */
  next(logits: Float32Array): StepToken {
    const choice = this.sampler.next(logits, this.params.topNTokens);
    const id = choice.id;
    // The mask allowed only what the grammar accepts: a refusal means the grammar state is broken.
    if (this.grammar && !this.grammar.accept(id)) throw new GenerationError(`the grammar refused token ${id}, which its mask allowed`);
    this.sampler.accept(id);
    this.generated.push(id);
    if (this.firstTokenAt === 0) this.firstTokenAt = performance.now();
    const special = this.ctx.tokenizer.isSpecial(id);
    const piece = this.detokenizer.push(id);
    const token: Token = { id, text: special ? this.ctx.tokenizer.decode([id]) : piece, logprob: choice.logprob, special };
    const step: StepToken = { id: this.id, token };
    if (this.params.topNTokens > 0) step.topTokens = choice.topTokens.map((t) => this.describe(t.id, t.logprob));
    const reason = this.stopReason(id, piece);
    if (reason && !special) token.text += this.detokenizer.flush();
    if (!special) this.text += token.text;
    if (reason) {
      this.finished = true;
      const now = performance.now();
      step.end = {
        finishReason: reason,
        generatedText: this.text,
        generatedTokens: this.generated.length,
        queueMs: this.startedAt - this.receivedAt,
        inferenceMs: now - this.startedAt,
        firstTokenMs: this.firstTokenAt - this.startedAt,
      };
    }
    return step;
  }

  private stopReason(id: number, piece: string): FinishReason | null {
    if (this.ctx.eosTokenIds.has(id) || this.grammar?.isTerminated()) return 'eos_token';
    if (piece && this.stops.push(piece) !== null) return 'stop_sequence';
    if (this.generated.length >= this.maxNewTokens) return 'length';
    return null;
  }

  private describe(id: number, logprob: number): Token {
    return { id, text: this.ctx.tokenizer.decode([id]), logprob, special: this.ctx.tokenizer.isSpecial(id) };
  }
}
