/**
 * Our engine against node-llama-cpp on the same fixture weights (ONNX for us, a GGUF written by
 * src/fixture/gguf for it): one stream, concurrent streams, time to first token, a long prefill and
 * resident memory, at each thread count. Every job runs in a child process of its own (so its memory
 * is its own), one after another; rounds repeat the whole sequence, so systems alternate, and each
 * figure is the best of its rounds. Called by bench/run.ts.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fmt } from './measure.js';
import type { PeerJob, PeerJobResult, PeerSystem } from './peer-job.js';

export interface PeerRow {
  label: string;
  system: PeerSystem;
  /** Builds the model if needed; returns the directory (ours) or .gguf file (node-llama-cpp). */
  model: () => Promise<string>;
  /** Ours: the engine's `dtype`. */
  dtype?: string;
  /** Ours: the engine's `speculativeTokens` (its default when absent). */
  speculativeTokens?: number;
  /** Ours: the label of the row its ratios are taken against. */
  versus?: string;
}

/**
 * @example
 * ours('ours q4', () => ensureFixtureModel('bench', { weights: 'q4' }), { dtype: 'q4', versus: 'node-llama-cpp Q4_0' })
 */
export const ours = (
  label: string,
  model: () => Promise<string>,
  options: { dtype?: string; speculativeTokens?: number; versus?: string } = {},
): PeerRow => ({
  label,
  system: 'ours',
  model,
  ...options,
});

/** @example llamaCpp('node-llama-cpp Q4_0', () => ensureFixtureGguf('bench', { type: 'Q4_0' })) */
export const llamaCpp = (label: string, model: () => Promise<string>): PeerRow => ({ label, system: 'node-llama-cpp', model });

export interface PeerSettings {
  prompt: string;
  prefillPrompt: string;
  newTokens: number;
  streams: number;
  threads: number[];
  rounds: number;
}

export interface PeerFigures {
  label: string;
  threads: number;
  versus?: string;
  /** One result per round, in order. */
  rounds: PeerJobResult[];
}

const CHILDREN: Record<PeerSystem, string> = {
  ours: fileURLToPath(new URL('./job-ours.ts', import.meta.url)),
  'node-llama-cpp': fileURLToPath(new URL('./peer-llamacpp.ts', import.meta.url)),
};

/** Runs one job in a child (which inherits this process's tsx loader) and returns what it reports. */
function runJob(label: string, job: PeerJob): Promise<PeerJobResult> {
  return new Promise((resolve, reject) => {
    const child = fork(CHILDREN[job.system], [JSON.stringify(job)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result: PeerJobResult | undefined;
    child.on('message', (message) => (result = message as PeerJobResult));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(`${label} (${job.threads} threads): the job exited with ${signal ?? `code ${code}`} before reporting`));
    });
  });
}

export async function comparePeers(rows: PeerRow[], s: PeerSettings): Promise<PeerFigures[]> {
  const models = new Map<string, string>();
  for (const row of rows) models.set(row.label, await row.model());
  const figures = s.threads.flatMap((threads) =>
    rows.map((row) => ({ label: row.label, threads, versus: row.versus, rounds: [] as PeerJobResult[] })),
  );
  for (let round = 0; round < s.rounds; round++) {
    for (const threads of s.threads) {
      for (const row of rows) {
        const job: PeerJob = {
          system: row.system,
          model: models.get(row.label)!,
          dtype: row.dtype,
          speculativeTokens: row.speculativeTokens,
          threads,
          prompt: s.prompt,
          newTokens: s.newTokens,
          streams: s.streams,
          prefillPrompt: s.prefillPrompt,
        };
        const result = await runJob(row.label, job);
        figures.find((f) => f.label === row.label && f.threads === threads)!.rounds.push(result);
        console.log(
          `  round ${round + 1}, ${threads} thread(s), ${row.label}: ${fmt(result.oneStream.tokensPerSecond)} / ${fmt(result.manyStreams.aggregateTokensPerSecond)} tok/s`,
        );
      }
    }
  }
  return figures;
}

/** The best of the rounds, figure by figure. */
export function best(rounds: PeerJobResult[]): PeerJobResult {
  const max = (f: (r: PeerJobResult) => number) => Math.max(...rounds.map(f));
  const min = (f: (r: PeerJobResult) => number) => Math.min(...rounds.map(f));
  return {
    loadMs: min((r) => r.loadMs),
    promptTokens: rounds[0].promptTokens,
    prefillTokens: rounds[0].prefillTokens,
    oneStream: { tokensPerSecond: max((r) => r.oneStream.tokensPerSecond), ttftMs: min((r) => r.oneStream.ttftMs) },
    manyStreams: {
      aggregateTokensPerSecond: max((r) => r.manyStreams.aggregateTokensPerSecond),
      perStreamTokensPerSecond: max((r) => r.manyStreams.perStreamTokensPerSecond),
      ttftP50: min((r) => r.manyStreams.ttftP50),
    },
    prefillMs: min((r) => r.prefillMs),
    rssMb: min((r) => r.rssMb),
    peakRssMb: min((r) => r.peakRssMb),
  };
}

/** `28.3 (±7%)`: the best round and the half-range between rounds. */
function withSpread(values: number[]): string {
  const hi = Math.max(...values);
  const lo = Math.min(...values);
  return values.length < 2 ? fmt(hi) : `${fmt(hi)} (±${fmt((100 * (hi - lo)) / (hi + lo), 0)}%)`;
}

export function printPeers(figures: PeerFigures[], s: PeerSettings): void {
  const b = best(figures[0].rounds);
  console.log(
    `\nPeer comparison: ${b.promptTokens}-token prompt, ${s.newTokens} new tokens, greedy; ${s.streams} streams; prefill of ${b.prefillTokens} tokens; best of ${s.rounds} round(s), spread in brackets.`,
  );
  console.log(
    `| system | threads | 1 stream tok/s | TTFT ms | ${s.streams} streams agg tok/s | per-stream (${s.streams}) | TTFT p50 (${s.streams}) ms | ${b.prefillTokens}-token prefill ms | RSS MB | peak RSS MB | load ms |`,
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const f of figures) {
    const r = best(f.rounds);
    console.log(
      `| ${f.label} | ${f.threads} | ${withSpread(f.rounds.map((x) => x.oneStream.tokensPerSecond))} | ${fmt(r.oneStream.ttftMs, 0)} | ` +
        `${withSpread(f.rounds.map((x) => x.manyStreams.aggregateTokensPerSecond))} | ${fmt(r.manyStreams.perStreamTokensPerSecond)} | ` +
        `${fmt(r.manyStreams.ttftP50, 0)} | ${fmt(r.prefillMs, 0)} | ${fmt(r.rssMb, 0)} | ${fmt(r.peakRssMb, 0)} | ${fmt(r.loadMs, 0)} |`,
    );
  }
  const mismatched = figures.filter((f) => f.rounds[0].promptTokens !== b.promptTokens || f.rounds[0].prefillTokens !== b.prefillTokens);
  if (mismatched.length > 0) console.log(`Warning: ${mismatched.map((f) => f.label).join(', ')} tokenized the prompts differently`);

  console.log(
    '\nRatios, ours / peer (targets for our fastest 4-bit file against Q4_0: tok/s >= 1.0 at 1 stream, >= 1.3 at 8; times <= 1.0):',
  );
  for (const f of figures.filter((x) => x.versus)) {
    const peer = figures.find((x) => x.label === f.versus && x.threads === f.threads);
    if (!peer) continue;
    const [o, p] = [best(f.rounds), best(peer.rounds)];
    console.log(
      `  ${f.label} / ${peer.label}, ${f.threads} thread(s): 1 stream ${fmt(o.oneStream.tokensPerSecond / p.oneStream.tokensPerSecond, 2)}×, ` +
        `${s.streams} streams ${fmt(o.manyStreams.aggregateTokensPerSecond / p.manyStreams.aggregateTokensPerSecond, 2)}×, ` +
        `TTFT ${fmt(o.oneStream.ttftMs / p.oneStream.ttftMs, 2)}×, prefill ${fmt(o.prefillMs / p.prefillMs, 2)}×, RSS ${fmt(o.rssMb / p.rssMb, 2)}×`,
    );
  }
}
