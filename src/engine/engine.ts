import { type Worker } from 'node:worker_threads';
import {
  GenerationError,
  InferenceError,
  ModelLoadError,
  UnavailableError,
  ValidationError,
  deserializeError,
  logError,
  type ErrorListener,
  type ErrorPhase,
} from '../errors.js';
import { validateParameters } from '../params.js';
import type { GrammarSpec } from '../grammar/spec.js';
import { checkEngineOptions } from './config.js';
import type {
  ChatGenerateRequest,
  ChatMessage,
  CloseOptions,
  Engine,
  EngineOptions,
  EngineStats,
  ForwardPassRecord,
  GenerateOptions,
  GenerateRequest,
  Generation,
  GenerationEvent,
  ModelInfo,
  TokenizedToken,
} from '../types.js';
import { EventChannel } from './event-channel.js';
import type { FromWorker, Prompt, StepToken, ToWorker } from './messages.js';
import { resolveEngineModel } from '../hub/index.js';
import { startWorker } from './worker-host.js';
import { RequestState } from './request-state.js';

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
  // Bad options reject here, before a model is fetched or loaded.
  checkEngineOptions(options, 'createEngine');
  // A function cannot cross to the worker; the engine keeps it.
  const { onError = logError, ...workerOptions } = options;
  // A Hub id is downloaded (or found in the cache) here, before the worker starts.
  const resolved = await resolveEngineModel(workerOptions);
  const { worker, info } = await startWorker(resolved);
  return new WorkerEngine(worker, info, resolved, onError);
}

/** A dead worker is restarted up to this many times, waiting 0.5 s, then 1 s, between attempts. */
const RESTART_ATTEMPTS = 3;
const RESTART_BACKOFF_MS = 500;

class WorkerEngine implements Engine {
  private readonly requests = new Map<number, RequestState>();
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private readonly passListeners = new Set<(pass: ForwardPassRecord) => void>();
  private latest: EngineStats = { queueSize: 0, batchSize: 0, batchReservedTokens: 0, healthy: true, workerMemoryBytes: 0 };
  /** Why the engine refuses all work: shutting down (503), or failed for good (500). */
  private stopping: InferenceError | null = null;
  private restarting: Promise<void> | null = null;
  /** The health probe under way, shared by concurrent callers. */
  private probe: Promise<boolean> | null = null;
  private worker!: Worker;
  private readonly exited: Promise<void>;
  private markExited!: () => void;

  constructor(
    worker: Worker,
    readonly info: ModelInfo,
    private readonly options: EngineOptions,
    private readonly onError: ErrorListener,
  ) {
    this.exited = new Promise((done) => (this.markExited = done));
    this.attach(worker);
  }

  private attach(worker: Worker): void {
    this.worker = worker;
    worker.on('message', (message: FromWorker) => this.receive(message));
    // An uncaught exception in the worker (its loop failed) comes as 'error', then 'exit'.
    let crashed = false;
    worker.on('error', (error) => {
      crashed = true;
      this.report(error, 'worker');
    });
    worker.once('exit', (code) => this.onExit(worker, code, crashed));
  }

  private report(error: unknown, phase: ErrorPhase): void {
    this.onError(error, { route: null, phase });
  }

  /** A worker that dies fails its requests and is replaced; the host process never goes down with it. */
  private onExit(worker: Worker, code: number, crashed: boolean): void {
    if (worker !== this.worker) return;
    // The dead worker's grammar counters went with it (its matchers too): a new one starts over.
    this.latest = { ...this.latest, queueSize: 0, batchSize: 0, batchReservedTokens: 0, healthy: false, grammar: undefined };
    if (this.stopping) {
      this.failAll(this.stopping);
      return this.markExited();
    }
    if (!crashed) this.report(new Error(`The engine worker exited unexpectedly with code ${code}`), 'worker');
    this.failAll(new GenerationError('the engine worker stopped unexpectedly; it is being restarted'));
    this.restarting = this.restart().finally(() => (this.restarting = null));
  }

  /**
   * Starts a new worker, retrying a few times: a worker that died of a passing cause (memory) may load
   * again. When none does, the engine has failed for good, as if its model had failed to load: every
   * call gets that 500, with no `Retry-After` to make clients retry forever.
   */
  private async restart(): Promise<void> {
    let failure: unknown;
    for (let attempt = 0; attempt < RESTART_ATTEMPTS; attempt += 1) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, RESTART_BACKOFF_MS * 2 ** (attempt - 1)));
      if (this.stopping) return this.markExited();
      try {
        const { worker } = await startWorker(this.options);
        this.attach(worker);
        this.latest = { ...this.latest, healthy: true };
        return;
      } catch (error) {
        failure = error;
      }
    }
    const reason = failure instanceof Error ? failure.message : String(failure);
    const error = new ModelLoadError(`The engine worker could not be restarted (${RESTART_ATTEMPTS} attempts): ${reason}`, failure);
    this.stopping ??= error;
    this.report(error, 'restart');
    this.markExited();
  }

  generate(request: GenerateRequest, options: GenerateOptions = {}): Generation {
    // `inputs` is checked with the parameters, at TGI's place in the rule order.
    return this.start(request?.parameters, options, { inputs: request?.inputs, grammar: request?.grammar }, () => ({
      text: request.inputs,
    }));
  }

  chat(request: ChatGenerateRequest, options: GenerateOptions = {}): Generation {
    return this.start(request?.parameters, options, { grammar: request?.grammar }, () => {
      if (!Array.isArray(request?.messages) || request.messages.length === 0) {
        throw new ValidationError('`messages` must be a non-empty array', 'messages');
      }
      const { messages, tools, toolPrompt, chatTemplateKwargs } = request;
      return { messages, tools, toolPrompt, chatTemplateKwargs };
    });
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

  onForwardPass(listener: (pass: ForwardPassRecord) => void): () => void {
    this.passListeners.add(listener);
    return () => this.passListeners.delete(listener);
  }

  health(): Promise<boolean> {
    if (this.unavailable()) return Promise.resolve(false);
    if (this.latest.healthy) return Promise.resolve(true);
    this.probe ??= (async () => {
      try {
        for await (const _ of this.generate({ inputs: 'a', parameters: { max_new_tokens: 1, do_sample: false } }));
        return true;
      } catch {
        return false;
      } finally {
        this.probe = null;
      }
    })();
    return this.probe;
  }

  async close({ drainTimeoutMs = 0 }: CloseOptions = {}): Promise<void> {
    if (!this.stopping) {
      this.stopping = new UnavailableError('Engine is shutting down');
      const deadline = Date.now() + drainTimeoutMs;
      while (this.requests.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.failAll(new InferenceError('incomplete_generation', 'Incomplete generation: the engine shut down'));
      await this.restarting;
      this.send({ type: 'close' });
      const timer = setTimeout(() => void this.worker.terminate(), 30_000);
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
  }

  /** Refuses while the engine cannot take work: shutting down, closed, failed, or replacing its worker. */
  private unavailable(): InferenceError | null {
    if (this.stopping) return this.stopping;
    return this.restarting ? new UnavailableError('Engine is restarting after a worker failure') : null;
  }

  /** Validates, registers and submits one request; `prompt` may throw a validation error too. */
  private start(
    parameters: GenerateRequest['parameters'],
    options: GenerateOptions,
    extra: { inputs?: unknown; grammar?: GrammarSpec },
    prompt: () => Prompt,
  ): Generation {
    const id = this.nextId++;
    const channel = new EventChannel<GenerationEvent>();
    const state = new RequestState(channel, () => this.cancel(id));
    try {
      const refused = this.unavailable();
      if (refused) throw refused;
      const params = validateParameters(parameters, this.info.limits, { stream: options.stream ?? false, ...extra });
      if (options.tokenLogprobs === false && !params.details) params.sampling.skipLogprobs = true;
      const message: ToWorker = { type: 'submit', id, prompt: prompt(), params };
      state.params = params;
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
      case 'accepted':
        return this.requests.get(message.id)?.accept(message.inputLength);
      case 'rejected':
        return this.settle(message.id, deserializeError(message.error));
      case 'stats':
        this.latest = message.stats;
        return;
      case 'step':
        this.latest = message.stats;
        if (message.pass) this.passListeners.forEach((listener) => listener(message.pass!));
        return message.tokens.forEach((token) => this.deliver(token));
      case 'failed': {
        this.latest = message.stats;
        const pass = message.pass;
        if (pass) this.passListeners.forEach((listener) => listener(pass));
        // The detail (an ONNX Runtime message naming graph nodes) is for the host's log, once per pass;
        // the requests get a sentence of ours with the detail as its cause.
        const detail = deserializeError(message.error);
        this.report(detail, 'generation');
        const error = new GenerationError('a forward pass failed', detail);
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

  private settle(id: number, error: Error): void {
    this.requests.get(id)?.reject(error);
    this.requests.delete(id);
  }

  private failAll(error: InferenceError): void {
    for (const id of [...this.requests.keys()]) this.settle(id, error);
    for (const pending of this.calls.values()) pending.reject(error);
    this.calls.clear();
  }

  private call(request: Record<string, unknown> & { method: string }): Promise<unknown> {
    const refused = this.unavailable();
    if (refused) return Promise.reject(refused);
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
