/**
 * `npm start`: builds the demo fixture model if it is missing, loads it, and serves the demo page
 * and the LLM routes through the example Express app.
 *
 * Environment: `PORT` (default 3000), `DEMO_MODEL_SIZE` (`demo`, the default: SmolLM2-135M's shape
 * with 10 layers; `tiny`; `bench`), `DEMO_API_KEY` (require it on the generation routes).
 * `npm start -- --model org/name [--dtype q4]` serves a real model from the Hub instead (downloaded
 * once into the Hugging Face cache) or a model directory.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { progressPrinter } from 'streaming-inference';
import { ensureFixtureModel, type FixtureSize } from 'streaming-inference/fixture';
import { startExpressApp, type RunningApp } from './express-app.js';

export interface DemoOptions {
  size?: FixtureSize;
  /** A Hub id or a model directory, served instead of the fixture model. */
  model?: string;
  dtype?: Parameters<typeof startExpressApp>[0]['dtype'];
  port?: number;
  apiKey?: string;
  log?: (line: string) => void;
}

/** Runs `task`, logging the elapsed seconds every few seconds so a long build does not look hung. */
async function withProgress<T>(label: string, task: Promise<T>, log: (line: string) => void): Promise<T> {
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  log(`${label} ...`);
  const timer = setInterval(() => log(`  ${label}: ${seconds()} s`), 2000);
  try {
    const result = await task;
    log(`  done in ${seconds()} s`);
    return result;
  } finally {
    clearInterval(timer);
  }
}

/**
 * @example
 * const app = await startDemo({ size: 'tiny', port: 0 });
 * // Demo: http://127.0.0.1:40123/ ...
 * await app.close();
 */
export async function startDemo(options: DemoOptions = {}): Promise<RunningApp> {
  const { size = 'demo', port = 3000, apiKey, dtype, log = console.log } = options;
  let app: RunningApp;
  if (options.model) {
    // The download prints its own progress line (bytes, rate, ETA) on stderr.
    log(`Loading ${options.model}${dtype ? ` (${dtype})` : ''} ...`);
    app = await startExpressApp({ model: options.model, dtype, onProgress: progressPrinter(), port, apiKey });
  } else {
    // Random weights: the text is gibberish, but the model has a real model's shape, so the timing is real.
    const model = await withProgress(
      `Preparing the ${size} fixture model in .fixtures/${size} (built once)`,
      ensureFixtureModel(size),
      log,
    );
    app = await withProgress('Loading it into ONNX Runtime', startExpressApp({ model, port, apiKey }), log);
  }
  log(`Demo: ${app.url}/   (LLM routes under ${app.url}/llm${apiKey ? '; POSTs need the DEMO_API_KEY' : ''})`);
  log(
    `Try:  curl -N ${app.url}/llm/generate_stream -H 'content-type: application/json' -d '{"inputs":"Once upon a time","parameters":{"max_new_tokens":50}}'`,
  );
  return app;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const size = (process.env.DEMO_MODEL_SIZE ?? 'demo') as FixtureSize;
  if (!['tiny', 'demo', 'bench'].includes(size)) throw new Error(`DEMO_MODEL_SIZE must be tiny, demo or bench, got "${size}"`);
  const { values } = parseArgs({ options: { model: { type: 'string' }, dtype: { type: 'string' } } });
  const dtype = values.dtype as DemoOptions['dtype'];
  const app = await startDemo({
    size,
    model: values.model,
    dtype,
    port: Number(process.env.PORT ?? 3000),
    apiKey: process.env.DEMO_API_KEY,
  });
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
