import type { EventChannel } from './event-channel.js';
import type { StepToken } from './messages.js';
import type { GenerationEvent, Generation, PrefillToken, Token, ValidatedParameters } from '../types.js';

/**
 * The main thread's record of one request: it turns the worker's per-step tokens into the public
 * events (numbering them, collecting `details`) and ties cancellation to the signal and to a
 * consumer that stops iterating.
 */
export class RequestState {
  params: ValidatedParameters | null = null;
  private index = 0;
  private inputLength = 0;
  private readonly tokens: Token[] = [];
  private readonly topTokensPerStep: Token[][] = [];
  private prefill: PrefillToken[] = [];
  private readonly accepted: Promise<{ inputLength: number }>;
  private settleAccepted!: { resolve: (v: { inputLength: number }) => void; reject: (e: unknown) => void };
  private unwatch: () => void = () => {};

  constructor(
    private readonly channel: EventChannel<GenerationEvent>,
    private readonly onCancel: () => void,
  ) {
    this.accepted = new Promise((resolve, reject) => (this.settleAccepted = { resolve, reject }));
    // Callers that only iterate never look at `accepted`; its rejection must not be reported as unhandled.
    this.accepted.catch(() => {});
  }

  watch(signal: AbortSignal | undefined): void {
    if (!signal) return;
    const abort = () => {
      this.onCancel();
      this.reject(signal.reason ?? new DOMException('The operation was aborted', 'AbortError'));
    };
    if (signal.aborted) return abort();
    signal.addEventListener('abort', abort, { once: true });
    this.unwatch = () => signal.removeEventListener('abort', abort);
  }

  accept(inputLength: number): void {
    this.inputLength = inputLength;
    this.settleAccepted.resolve({ inputLength });
  }

  push(step: StepToken): void {
    const params = this.params!;
    this.index += 1;
    if (step.prefill) this.prefill = step.prefill;
    if (params.details) {
      this.tokens.push(step.token);
      if (step.topTokens) this.topTokensPerStep.push(step.topTokens);
    }
    const base = { index: this.index, token: step.token, ...(step.topTokens ? { topTokens: step.topTokens } : {}) };
    if (!step.end) return this.channel.push({ type: 'token', ...base });
    const { end } = step;
    this.channel.push({
      type: 'end',
      ...base,
      generatedText: end.generatedText,
      finishReason: end.finishReason,
      generatedTokens: end.generatedTokens,
      seed: params.sampling.seed,
      inputLength: this.inputLength,
      prefill: this.prefill,
      tokens: this.tokens,
      topTokensPerStep: this.topTokensPerStep,
      timings: { queueMs: end.queueMs, inferenceMs: end.inferenceMs, firstTokenMs: end.firstTokenMs },
    });
    this.unwatch();
    this.channel.end();
  }

  reject(error: unknown): void {
    this.unwatch();
    this.settleAccepted.reject(error);
    this.channel.fail(error);
  }

  generation(): Generation {
    const channel = this.channel;
    const cancel = () => {
      this.unwatch();
      this.onCancel();
      channel.end();
    };
    return {
      accepted: this.accepted,
      [Symbol.asyncIterator]: () => ({
        next: () => channel.next(),
        // A consumer that breaks out of `for await` cancels the generation.
        return: async () => {
          cancel();
          return { value: undefined, done: true };
        },
      }),
    };
  }
}
