/** Timing helpers shared by the bench's in-process runs and its per-system child processes. */
import type { Engine } from '../src/types.js';

/** One stream's times, measured from submission. */
export interface StreamTimes {
  firstTokenMs: number;
  gaps: number[];
  tokens: number;
  totalMs: number;
}

export const pct = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

/** Times a token stream from now: call `token()` as each token arrives. */
export function streamClock(): { token(): void; times(): StreamTimes } {
  const started = performance.now();
  let last = started;
  let firstTokenMs = 0;
  const gaps: number[] = [];
  let tokens = 0;
  return {
    token() {
      const now = performance.now();
      if (tokens === 0) firstTokenMs = now - started;
      else gaps.push(now - last);
      last = now;
      tokens += 1;
    },
    times: () => ({ firstTokenMs, gaps, tokens, totalMs: last - started }),
  };
}

/** One greedy request through the engine. */
export async function stream(engine: Engine, maxNewTokens: number, inputs: string): Promise<StreamTimes> {
  const clock = streamClock();
  // As an OpenAI client that asks for no logprobs reads it (node-llama-cpp and the floor compute none).
  const generation = engine.generate({ inputs, parameters: { max_new_tokens: maxNewTokens, do_sample: false } }, { tokenLogprobs: false });
  for await (const _ of generation) clock.token();
  return clock.times();
}
