/** Child process of the peer comparison: our engine on an ONNX model directory (see peer-job.ts). */
import { createEngine } from '../src/engine/engine.js';
import type { EngineOptions } from '../src/types.js';
import { stream } from './measure.js';
import { type PeerJob, type PeerRunner, runPeerJob } from './peer-job.js';

async function load(job: PeerJob): Promise<PeerRunner> {
  const engine = await createEngine({
    model: job.model,
    dtype: job.dtype as EngineOptions['dtype'],
    threads: job.threads,
    ...(job.speculativeTokens !== undefined ? { speculativeTokens: job.speculativeTokens } : {}),
  });
  return {
    tokenCount: async (text) => (await engine.tokenize(text)).length,
    stream: (text, maxNewTokens) => stream(engine, maxNewTokens, text),
    concurrent: (text, count, maxNewTokens) => Promise.all(Array.from({ length: count }, () => stream(engine, maxNewTokens, text))),
    close: () => engine.close(),
  };
}

await runPeerJob(load);
