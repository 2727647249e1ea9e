import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InferenceError, UnavailableError, ValidationError, deserializeError } from '../errors.js';
import { validateParameters } from '../params.js';
import type {
  ChatGenerateRequest, ChatMessage, CloseOptions, Engine, EngineOptions, EngineStats, GenerateOptions,
  GenerateRequest, Generation, GenerationEvent, ModelInfo, TokenizedToken,
} from '../types.js';
import { EventChannel } from './event-channel.js';
import type { FromWorker, Prompt, StepToken, ToWorker, WorkerInit } from './messages.js';
import { RequestState } from './request-state.js';

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

/**
 * Loads a model in a worker thread and resolves once it can generate.
 *
 * @example
 * const engine = await createEngine({ model: './models/smollm2' });
 * for await (const event of engine.generate({ inputs: 'Once upon a time', parameters: { max_new_tokens: 20 } })) {
 *   process.stdout.write(event.token.text);
 * }
 * await engine.close();
 */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  if (!options || typeof options.model !== 'string') throw new TypeError('createEngine: options.model must be a model directory');
  const worker = spawnWorker({ options: { ...options, model: resolve(options.model) } });
  const info = await new Promise<ModelInfo>((resolveInfo, reject) => {
    const onMessage = (message: FromWorker) => {
      if (message.type === 'ready') resolveInfo(message.info);
      else if (message.type === 'fatal') reject(deserializeError(message.error));
      else return;
      worker.off('message', onMessage);
    };
    worker.on('message', onMessage);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new UnavailableError(`Engine worker exited while loading (code ${code})`)));
  }).catch(async (error) => {
    await worker.terminate();
    throw error;
  });
  worker.removeAllListeners('error').removeAllListeners('exit');
  return new WorkerEngine(worker, info);
}

class WorkerEngine implements Engine {
  private readonly requests = new Map<number, RequestState>();
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private latest: EngineStats = { queueSize: 0, batchSize: 0, batchReservedTokens: 0, healthy: true };
  private stopping: UnavailableError | null = null;
  private readonly exited: Promise<void>;

  constructor(private readonly worker: Worker, readonly info: ModelInfo) {
    worker.on('message', (message: FromWorker) => this.receive(message));
    this.exited = new Promise((done) => {
      worker.once('error', (error) => this.failAll(new InferenceError('generation', `Engine worker failed: ${error.message}`)));
      worker.once('exit', () => {
        this.latest = { ...this.latest, healthy: false };
        this.stopping ??= new UnavailableError('Engine is closed');
        this.failAll(this.stopping);
        done();
      });
    });
  }

  generate(request: GenerateRequest, options: GenerateOptions = {}): Generation {
    return this.start(() => {
      if (typeof request?.inputs !== 'string') throw new ValidationError('`inputs` must be a string', 'inputs');
      if (request.inputs.length === 0) throw new ValidationError('`inputs` cannot be empty', 'inputs');
      return { text: request.inputs };
    }, request?.parameters, options);
  }

  chat(request: ChatGenerateRequest, options: GenerateOptions = {}): Generation {
    return this.start(() => {
      if (!Array.isArray(request?.messages) || request.messages.length === 0) {
        throw new ValidationError('`messages` must be a non-empty array', 'messages');
      }
      return { messages: request.messages, tools: request.tools };
    }, request?.parameters, options);
  }

  applyChatTemplate(messages: ChatMessage[], options: { tools?: unknown[]; addGenerationPrompt?: boolean } = {}): Promise<string> {
    return this.call({ method: 'applyChatTemplate', messages, ...options }) as Promise<string>;
  }

  tokenize(text: string): Promise<TokenizedToken[]> {
    return this.call({ method: 'tokenize', text }) as Promise<TokenizedToken[]>;
  }

  stats(): EngineStats {
    return this.latest;
  }

  async close({ drainTimeoutMs = 0 }: CloseOptions = {}): Promise<void> {
    if (!this.stopping) {
      this.stopping = new UnavailableError('Engine is shutting down');
      const deadline = Date.now() + drainTimeoutMs;
      while (this.requests.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.failAll(new InferenceError('incomplete_generation', 'Incomplete generation: the engine shut down'));
      this.send({ type: 'close' });
      const timer = setTimeout(() => void this.worker.terminate(), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
  }

  private start(prompt: () => Prompt, parameters: GenerateRequest['parameters'], options: GenerateOptions): Generation {
    const id = this.nextId++;
    const channel = new EventChannel<GenerationEvent>();
    const state = new RequestState(channel, () => this.cancel(id));
    try {
      if (this.stopping) throw this.stopping;
      const message: ToWorker = {
        type: 'submit', id, prompt: prompt(),
        params: validateParameters(parameters, this.info.limits, { stream: options.stream ?? false }),
      };
      state.params = message.params;
      this.requests.set(id, state);
      state.watch(options.signal);
      if (!channel.closed) this.send(message);
    } catch (error) {
      state.reject(error);
    }
    return state.generation();
  }

  private cancel(id: number): void {
    if (this.requests.delete(id)) this.send({ type: 'cancel', id });
  }

  private receive(message: FromWorker): void {
    switch (message.type) {
      case 'accepted': return this.requests.get(message.id)?.accept(message.inputLength);
      case 'rejected': return this.settle(message.id, deserializeError(message.error));
      case 'step':
        this.latest = message.stats;
        return message.tokens.forEach((token) => this.deliver(token));
      case 'failed': {
        this.latest = message.stats;
        const error = deserializeError(message.error);
        return message.ids.forEach((id) => this.settle(id, error));
      }
      case 'reply': {
        const pending = this.calls.get(message.callId);
        this.calls.delete(message.callId);
        if (message.error) pending?.reject(deserializeError(message.error));
        else pending?.resolve(message.result);
      }
    }
  }

  private deliver(step: StepToken): void {
    const state = this.requests.get(step.id);
    if (!state) return;
    state.push(step);
    if (step.end) this.requests.delete(step.id);
  }

  private settle(id: number, error: InferenceError): void {
    this.requests.get(id)?.reject(error);
    this.requests.delete(id);
  }

  private failAll(error: InferenceError): void {
    for (const id of [...this.requests.keys()]) this.settle(id, error);
    for (const pending of this.calls.values()) pending.reject(error);
    this.calls.clear();
  }

  private call(request: Record<string, unknown> & { method: string }): Promise<unknown> {
    if (this.stopping) return Promise.reject(this.stopping);
    const callId = this.nextId++;
    return new Promise((resolveCall, reject) => {
      this.calls.set(callId, { resolve: resolveCall, reject });
      this.send({ type: 'call', callId, ...request } as ToWorker);
    });
  }

  private send(message: ToWorker): void {
    this.worker.postMessage(message);
  }
}
