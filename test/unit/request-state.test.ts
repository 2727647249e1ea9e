import { describe, expect, it } from 'vitest';
import { EventChannel } from '../../src/engine/event-channel.js';
import type { StepToken } from '../../src/engine/messages.js';
import { RequestState } from '../../src/engine/request-state.js';
import { validateParameters } from '../../src/params.js';
import type { GenerationEvent, Token } from '../../src/types.js';

const limits = { maxBestOf: 2, maxStopSequences: 4, maxTopNTokens: 5, maxInputTokens: 100, maxTotalTokens: 200 };
const token = (id: number, text: string): Token => ({ id, text, logprob: -id / 4, special: false });
const end = { finishReason: 'length' as const, generatedText: 'ab', generatedTokens: 2, queueMs: 1, inferenceMs: 2, firstTokenMs: 1 };

/** A request state over a real channel, counting how often it asked the engine to cancel. */
function setup(parameters: Record<string, unknown> = {}) {
  const cancels = { count: 0 };
  const state = new RequestState(new EventChannel<GenerationEvent>(), () => (cancels.count += 1));
  state.params = validateParameters({ seed: 9, ...parameters }, limits, { stream: false });
  return { state, cancels };
}

async function events(state: RequestState): Promise<GenerationEvent[]> {
  const out: GenerationEvent[] = [];
  for await (const event of state.generation()) out.push(event);
  return out;
}

describe('RequestState', () => {
  it('numbers the tokens and ends with the whole result', async () => {
    const { state } = setup();
    state.accept(3);
    const steps: StepToken[] = [
      { id: 1, token: token(1, 'a') },
      { id: 1, token: token(2, 'b'), end },
    ];
    steps.forEach((step) => state.push(step));
    await expect(state.generation().accepted).resolves.toEqual({ inputLength: 3 });
    const [first, last] = await events(state);
    expect(first).toEqual({ type: 'token', index: 1, token: token(1, 'a') });
    expect(last).toMatchObject({
      type: 'end',
      index: 2,
      generatedText: 'ab',
      finishReason: 'length',
      generatedTokens: 2,
      seed: 9,
      inputLength: 3,
      tokens: [],
      topTokensPerStep: [],
      prefill: [],
      timings: { queueMs: 1, inferenceMs: 2, firstTokenMs: 1 },
    });
  });

  it('collects details, alternatives and the prefill when asked', async () => {
    const { state } = setup({ details: true, top_n_tokens: 1 });
    state.accept(1);
    const prefill = [{ id: 7, text: 'x', logprob: null }];
    state.push({ id: 1, token: token(1, 'a'), topTokens: [token(1, 'a')], prefill });
    state.push({ id: 1, token: token(2, 'b'), topTokens: [token(3, 'c')], end });
    const last = (await events(state)).at(-1);
    expect(last).toMatchObject({ tokens: [token(1, 'a'), token(2, 'b')], topTokensPerStep: [[token(1, 'a')], [token(3, 'c')]], prefill });
  });

  it('a refusal rejects `accepted` and the iteration with the same error', async () => {
    const { state } = setup();
    const error = new Error('refused');
    state.reject(error);
    await expect(state.generation().accepted).rejects.toBe(error);
    await expect(events(state)).rejects.toBe(error);
  });

  it('an abort cancels once and fails the iteration with the reason', async () => {
    const { state, cancels } = setup();
    const controller = new AbortController();
    state.watch(controller.signal);
    state.accept(1);
    state.push({ id: 1, token: token(1, 'a') });
    controller.abort(new Error('client left'));
    const iterator = state.generation()[Symbol.asyncIterator]();
    expect(await iterator.next()).toMatchObject({ value: { index: 1 } });
    await expect(iterator.next()).rejects.toThrow('client left');
    expect(cancels.count).toBe(1);
  });

  it('a signal aborted before the request was watched cancels at once', async () => {
    const { state, cancels } = setup();
    state.watch(AbortSignal.abort());
    expect(cancels.count).toBe(1);
    await expect(state.generation().accepted).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('a consumer that stops iterating cancels the generation', async () => {
    const { state, cancels } = setup();
    state.accept(1);
    state.push({ id: 1, token: token(1, 'a') });
    state.push({ id: 1, token: token(2, 'b') });
    for await (const event of state.generation()) if (event.index === 1) break;
    expect(cancels.count).toBe(1);
  });

  it('an abort after the end cancels nothing', async () => {
    const { state, cancels } = setup();
    const controller = new AbortController();
    state.watch(controller.signal);
    state.accept(1);
    state.push({ id: 1, token: token(1, 'a'), end });
    controller.abort();
    expect(await events(state)).toHaveLength(1);
    expect(cancels.count).toBe(0);
  });
});
