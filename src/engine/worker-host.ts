import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ModelLoadError, deserializeError } from '../errors.js';
import type { EngineOptions, ModelInfo } from '../types.js';
import type { FromWorker, WorkerInit } from './messages.js';

/**
 * Starts the worker from beside the built bundle (`worker.js` / `worker.cjs`), or from the TypeScript
 * source through tsx when the engine itself runs from `src/` (tests, `tsx` scripts).
 */
function spawnWorker(workerData: WorkerInit): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL(here.endsWith('.cjs') ? './worker.cjs' : './worker.js', here), { workerData });
  const tsx = join(dirname(createRequire(here).resolve('tsx/package.json')), 'dist/esm/api/index.mjs');
  const source = new URL('./worker.ts', here).href;
  const code = `import(${JSON.stringify(pathToFileURL(tsx).href)}).then((m) => { m.register(); return import(${JSON.stringify(source)}); });`;
  return new Worker(code, { eval: true, workerData });
}

/** Starts a worker and waits until its model is loaded; any failure to get there is a ModelLoadError. */
export async function startWorker(options: EngineOptions): Promise<{ worker: Worker; info: ModelInfo }> {
  const worker = spawnWorker({ options });
  let onMessage!: (message: FromWorker) => void;
  let onError!: (error: Error) => void;
  let onExit!: (code: number) => void;
  try {
    const info = await new Promise<ModelInfo>((resolve, reject) => {
      onMessage = (message) => {
        if (message.type === 'ready') resolve(message.info);
        else if (message.type === 'fatal') reject(deserializeError(message.error));
      };
      // E.g. onnxruntime-node's native binding failing to load in the thread.
      onError = (error) => reject(new ModelLoadError(`The engine worker failed while loading: ${error.message}`, error));
      onExit = (code) => reject(new ModelLoadError(`The engine worker exited while loading (code ${code})`));
      worker.on('message', onMessage).once('error', onError).once('exit', onExit);
    });
    // Only our own listeners: Worker keeps internal ones that ref its message port.
    worker.off('message', onMessage).off('error', onError).off('exit', onExit);
    return { worker, info };
  } catch (error) {
    await worker.terminate();
    throw error;
  }
}
