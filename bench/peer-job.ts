/**
 * One job of the peer comparison: one system, one model file, one thread count, measured in a child
 * process of its own so that its resident memory is its own. The parent passes the job as JSON in
 * argv[2]; the child measures the same things in the same order for every system and sends back a
 * `PeerJobResult` over IPC.
 */
import { type StreamTimes, pct } from './measure.js';

export type PeerSystem = 'ours' | 'node-llama-cpp';

export interface PeerJob {
  system: PeerSystem;
  /** Ours: a model directory; node-llama-cpp: a .gguf file. */
  model: string;
  /** Ours: the engine's `dtype`. */
  dtype?: string;
  /** Ours: the engine's `speculativeTokens` (its default when absent). */
  speculativeTokens?: number;
  threads: number;
  prompt: string;
  newTokens: number;
  streams: number;
  /** A long prompt, generated for one token: its time to first token is the prefill time. */
  prefillPrompt: string;
}

export interface PeerJobResult {
  loadMs: number;
  /** Token counts as the system itself tokenized the prompts. */
  promptTokens: number;
  prefillTokens: number;
  oneStream: { tokensPerSecond: number; ttftMs: number };
  manyStreams: { aggregateTokensPerSecond: number; perStreamTokensPerSecond: number; ttftP50: number };
  prefillMs: number;
  /** Largest resident set sampled while generating. */
  rssMb: number;
  /** Largest resident set sampled from the start of loading on. */
  peakRssMb: number;
}

/** What a system must offer the measurement: greedy streams timed from submission. */
export interface PeerRunner {
  tokenCount(text: string): Promise<number>;
  /** One request alone. */
  stream(text: string, maxNewTokens: number): Promise<StreamTimes>;
  /** `count` requests submitted together, each timed from the common submission. */
  concurrent(text: string, count: number, maxNewTokens: number): Promise<StreamTimes[]>;
  close(): Promise<void>;
}

const MB = 1024 * 1024;

/** Largest resident set since `reset()`, sampled every 50 ms (the process's own maxRSS would include its parent's at fork). */
function rssSampler() {
  let peak = 0;
  const sample = () => (peak = Math.max(peak, process.memoryUsage.rss()));
  const timer = setInterval(sample, 50);
  return {
    read: () => (sample(), peak / MB),
    reset: () => (peak = 0),
    stop: () => clearInterval(timer),
  };
}

async function measure(job: PeerJob, load: (job: PeerJob) => Promise<PeerRunner>): Promise<PeerJobResult> {
  const whole = rssSampler();
  const generating = rssSampler();
  const loadStarted = performance.now();
  const runner = await load(job);
  const loadMs = performance.now() - loadStarted;
  try {
    await runner.stream(job.prompt, 4);
    generating.reset();
    const one = await runner.stream(job.prompt, job.newTokens);
    const started = performance.now();
    const many = await runner.concurrent(job.prompt, job.streams, job.newTokens);
    const seconds = (performance.now() - started) / 1000;
    const prefill = await runner.stream(job.prefillPrompt, 1);
    return {
      loadMs,
      promptTokens: await runner.tokenCount(job.prompt),
      prefillTokens: await runner.tokenCount(job.prefillPrompt),
      oneStream: { tokensPerSecond: one.tokens / (one.totalMs / 1000), ttftMs: one.firstTokenMs },
      manyStreams: {
        aggregateTokensPerSecond: many.reduce((n, r) => n + r.tokens, 0) / seconds,
        perStreamTokensPerSecond: many.reduce((s, r) => s + r.tokens / (r.totalMs / 1000), 0) / many.length,
        ttftP50: pct(
          many.map((r) => r.firstTokenMs),
          50,
        ),
      },
      prefillMs: prefill.firstTokenMs,
      rssMb: generating.read(),
      peakRssMb: whole.read(),
    };
  } finally {
    whole.stop();
    generating.stop();
    await runner.close();
  }
}

/** The child side: measures the job given in argv[2] and reports to the parent. */
export async function runPeerJob(load: (job: PeerJob) => Promise<PeerRunner>): Promise<void> {
  const result = await measure(JSON.parse(process.argv[2]) as PeerJob, load);
  // Native threads (llama.cpp's pool, onnxruntime's) may keep the process alive: exit once delivered.
  process.send!(result, () => process.exit(0));
}
