/**
 * Child process of the peer comparison: node-llama-cpp (llama.cpp's Node bindings, prebuilt CPU
 * binary) on a GGUF of the same fixture weights (see peer-job.ts). It is used as its documentation
 * shows: one context per concurrency level, a context sequence per stream, `sequence.evaluate` with
 * temperature 0, stopping at an end-of-generation token as a caller does. Its KV cache keeps its
 * default type (F16); its contexts are sized for the prompts, as a server sizes them.
 */
import { type LlamaContextSequence, LlamaLogLevel, getLlama } from 'node-llama-cpp';
import { type StreamTimes, streamClock } from './measure.js';
import { type PeerJob, type PeerRunner, runPeerJob } from './peer-job.js';

async function load(job: PeerJob): Promise<PeerRunner> {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: job.model, gpuLayers: 0 });
  const tokens = (text: string) => model.tokenize(text);
  const streamTokens = tokens(job.prompt).length + job.newTokens;
  // `min` makes llama.cpp use exactly this many threads; `ideal` alone is a ceiling it may undercut.
  const threads = { ideal: job.threads, min: job.threads };
  const single = await model.createContext({
    sequences: 1,
    contextSize: Math.max(streamTokens, tokens(job.prefillPrompt).length + 1),
    threads,
  });
  const multi = await model.createContext({ sequences: job.streams, contextSize: streamTokens, threads });
  const alone = single.getSequence();
  const together = Array.from({ length: job.streams }, () => multi.getSequence());

  async function generate(sequence: LlamaContextSequence, text: string, maxNewTokens: number): Promise<StreamTimes> {
    await sequence.clearHistory();
    const clock = streamClock();
    let count = 0;
    for await (const token of sequence.evaluate(tokens(text), { temperature: 0 })) {
      clock.token();
      if (++count >= maxNewTokens || model.isEogToken(token)) break;
    }
    return clock.times();
  }

  return {
    tokenCount: async (text) => tokens(text).length,
    stream: (text, maxNewTokens) => generate(alone, text, maxNewTokens),
    concurrent: (text, count, maxNewTokens) =>
      Promise.all(together.slice(0, count).map((sequence) => generate(sequence, text, maxNewTokens))),
    async close() {
      await multi.dispose();
      await single.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

await runPeerJob(load);
