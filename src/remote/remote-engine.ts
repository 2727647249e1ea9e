/**
 * An `Engine` whose generations run on other inference servers, so the HTTP layer keeps one code
 * path: the same admission (429), local validation (422 before any header), encoders, metrics and
 * disconnect-cancels, over several upstreams with failover before the first token.
 *
 * The life of one request: validate locally; pick the least loaded upstream; always stream from it
 * (also for `/generate`), so a client that leaves closes the upstream connection and stops its work;
 * commit at the first upstream token. Before that, a refused connection, a timeout, a 5xx or a
 * stream that ends empty moves the request to another upstream, and busy upstreams (429, 503, an
 * `overloaded` event) make it a 429 if none takes it. After it, a failure is the stream's error event.
 */
import { Registry } from 'prom-client';
import { EventChannel } from '../engine/event-channel.js';
import { RequestState } from '../engine/request-state.js';
import {
  GenerationError, InferenceError, OverloadedError, UnavailableError, UpstreamUnavailableError, ValidationError, type ErrorType,
} from '../errors.js';
import { validateParameters } from '../params.js';
import type {
  ChatGenerateRequest, ChatMessage, CloseOptions, Engine, EngineStats, ForwardPassRecord, GenerateOptions, GenerateRequest, Generation,
  GenerationEvent, ModelInfo, TokenizedToken, ValidatedParameters, ValidationLimits,
} from '../types.js';
import { failureKind, type Decoded, type UpstreamCall, type UpstreamFailure } from './dialect.js';
import type { Discovery } from './discovery.js';
import { openaiChatCall, openaiCompletionCall } from './openai-dialect.js';
import { resolveRemoteOptions, type RemoteEngineOptions, type ResolvedRemoteOptions } from './options.js';
import { loadScore, pickLeastLoaded } from './picker.js';
import { sseData } from './sse-data.js';
import { tgiGenerateCall } from './tgi-dialect.js';
import { createUpstreamMetrics, type Outcome, type UpstreamMetrics } from './upstream-metrics.js';
import { Upstream } from './upstream.js';
import { readTokenize, tokenizeCall } from './tokenize.js';

/** TGI's defaults, for what no upstream reports. */
const DEFAULT_LIMITS: ValidationLimits = {
  // Streams carry one sequence: `best_of` > 1 cannot go upstream as a stream.
  maxBestOf: 1,
  maxStopSequences: 4,
  maxTopNTokens: 5,
  // Unknown: the upstream counts tokens and refuses what does not fit (its 4xx becomes our 422).
  maxInputTokens: Number.MAX_SAFE_INTEGER - 1,
  maxTotalTokens: Number.MAX_SAFE_INTEGER,
};
/** After the end event, how long the rest of an upstream stream may take before its connection is dropped. */
const DRAIN_MS = 1000;

/**
 * Discovers the upstreams and resolves once at least one answers, as `createEngine` resolves once
 * the model is loaded. Bad options throw here.
 *
 * @example
 * const engine = await createRemoteEngine({
 *   upstreams: ['http://10.0.0.5:8080', { url: 'http://10.0.0.6:8000', dialect: 'openai', capacity: 32 }],
 * });
 * app.use('/llm', streamingInference({ engine }));
 */
export async function createRemoteEngine(options: RemoteEngineOptions): Promise<RemoteEngine> {
  const engine = new RemoteEngine(resolveRemoteOptions(options));
  await engine.start();
  return engine;
}

/** Where one upstream stands, for tests and dashboards. */
export interface UpstreamStatus {
  url: string;
  dialect: 'tgi' | 'openai';
  up: boolean;
  inFlight: number;
  /** Of those, past their first token. */
  streaming: number;
  capacity: number;
  /** Scraped queue depth, when fresh. */
  queue: number | null;
}

type CallFor = (upstream: Upstream) => UpstreamCall;

/** What only a local ONNX model has. */
type LocalModelField = 'modelDir' | 'onnxFile' | 'kvDtype' | 'attention' | 'graph' | 'kvBytesPerToken';

/** How a request's attempts went, to choose its error when none succeeded. */
interface Tally {
  overloaded: boolean;
  failed: UpstreamFailure | null;
}

export class RemoteEngine implements Engine {
  info!: ModelInfo;
  private readonly upstreams: Upstream[];
  private readonly metrics: UpstreamMetrics;
  private modelId: string | null;
  private stopping: UnavailableError | null = null;
  /** Every request not finished, with the controller that cancels it. */
  private readonly running = new Map<RequestState, AbortController>();

  constructor(private readonly options: ResolvedRemoteOptions) {
    this.modelId = options.modelId;
    this.metrics = createUpstreamMetrics(options.metrics === false ? null : options.metrics.registry ?? new Registry());
    const settings = {
      probeIntervalMs: options.probeIntervalMs,
      loadIntervalMs: options.loadIntervalMs,
      maxBackoffMs: options.maxBackoffMs,
      headersTimeoutMs: options.headersTimeoutMs,
    };
    this.upstreams = options.upstreams.map((u) => new Upstream(u, settings, this.metrics, (found) => this.admit(found)));
  }

  /** @internal Called by `createRemoteEngine`. */
  async start(): Promise<void> {
    await Promise.all(this.upstreams.map((u) => u.start()));
    const deadline = performance.now() + this.options.startTimeoutMs;
    while (!this.upstreams.some((u) => u.discovery)) {
      if (performance.now() > deadline) {
        this.upstreams.forEach((u) => u.stop());
        throw new UpstreamUnavailableError(`None of the upstreams answered within ${this.options.startTimeoutMs} ms: ${this.upstreams.map((u) => u.url).join(', ')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const refused = this.upstreams.filter((u) => u.refused);
    if (refused.length > 0) {
      this.upstreams.forEach((u) => u.stop());
      throw new TypeError(`createRemoteEngine: the upstreams serve different models (${refused.map((u) => `${u.url} ${u.refused}`).join('; ')}); pass \`modelId\` to serve them under one name anyway`);
    }
    this.info = this.describe();
  }

  /** Which upstreams there are and how they stand. */
  status(): UpstreamStatus[] {
    const now = performance.now();
    return this.upstreams.map((u) => ({
      url: u.url,
      dialect: u.dialect,
      up: u.up,
      inFlight: u.inFlight,
      streaming: u.committed,
      capacity: u.capacity,
      queue: u.freshLoad(now)?.queue ?? null,
    }));
  }

  generate(request: GenerateRequest, options: GenerateOptions = {}): Generation {
    return this.begin(options, () => {
      const params = validateParameters(request?.parameters, this.info.limits, { stream: options.stream ?? false, inputs: request?.inputs });
      if (params.decoderInputDetails && this.upstreams.some((u) => u.dialect !== 'tgi')) {
        throw new ValidationError('`decoder_input_details` is not available through OpenAI-dialect upstreams', 'decoder_input_details');
      }
      const call: CallFor = (u) => (u.dialect === 'tgi' ? tgiGenerateCall(request, params) : openaiCompletionCall(request, params, u.model));
      return { params, call };
    });
  }

  chat(request: ChatGenerateRequest, options: GenerateOptions = {}): Generation {
    return this.begin(options, () => {
      const params = validateParameters(request?.parameters, this.info.limits, { stream: options.stream ?? false });
      if (!Array.isArray(request?.messages) || request.messages.length === 0) {
        throw new ValidationError('`messages` must be a non-empty array', 'messages');
      }
      return { params, call: (u: Upstream) => openaiChatCall(request, params, u.model) };
    });
  }

  async applyChatTemplate(messages: ChatMessage[], options: { tools?: unknown[]; addGenerationPrompt?: boolean } = {}): Promise<string> {
    const upstream = this.pickAny();
    const path = upstream.dialect === 'tgi' ? '/chat_tokenize' : '/apply-template';
    const json = await this.postJson(upstream, path, { messages, ...(options.tools ? { tools: options.tools } : {}) });
    const text = (json as { templated_text?: unknown; prompt?: unknown }).templated_text ?? (json as { prompt?: unknown }).prompt;
    if (typeof text !== 'string') throw new GenerationError(`the upstream answered ${path} without the rendered prompt`);
    return text;
  }

  async tokenize(text: string): Promise<TokenizedToken[]> {
    const upstream = this.pickAny();
    const call = tokenizeCall(upstream.dialect, text);
    return readTokenize(text, await this.postJson(upstream, call.path, call.body));
  }

  /**
   * TGI's gauges over the fleet: the upstreams' own queue and batch when freshly scraped, else our
   * requests waiting for a first token and our requests streaming.
   */
  stats(): EngineStats {
    const now = performance.now();
    let queueSize = 0;
    let batchSize = 0;
    for (const u of this.upstreams) {
      const load = u.freshLoad(now);
      queueSize += load ? load.queue : u.inFlight - u.committed;
      batchSize += load ? load.running : u.committed;
    }
    return { queueSize, batchSize, batchReservedTokens: 0, healthy: this.upstreams.some((u) => u.up), workerMemoryBytes: 0 };
  }

  /** Forward passes happen upstream, out of our sight: the `tgi_batch_*` counters stay at zero. */
  onForwardPass(_listener: (pass: ForwardPassRecord) => void): () => void {
    return () => {};
  }

  health(): Promise<boolean> {
    return Promise.resolve(!this.stopping && this.upstreams.some((u) => u.up));
  }

  async close({ drainTimeoutMs = 0 }: CloseOptions = {}): Promise<void> {
    if (!this.stopping) {
      this.stopping = new UnavailableError('Engine is shutting down');
      const deadline = Date.now() + drainTimeoutMs;
      while (this.running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const error = new InferenceError('incomplete_generation', 'Incomplete generation: the engine shut down');
      for (const [state, cancel] of this.running) {
        state.reject(error);
        cancel.abort(error);
      }
      this.upstreams.forEach((u) => u.stop());
    }
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 5));
  }

  /** Another upstream joins only if it serves the model the first one did (unless `modelId` names it). */
  private admit(found: Discovery): string | null {
    if (this.options.modelId !== null) return null;
    this.modelId ??= found.modelId;
    return found.modelId === this.modelId ? null : `serves "${found.modelId}", not "${this.modelId}"`;
  }

  /** What the mount shows at `/info`: the smallest limits of the upstreams that answered, and their summed size. */
  private describe(): ModelInfo {
    const found = this.upstreams.map((u) => u.discovery).filter((d): d is Discovery => d !== null);
    const limits = { ...DEFAULT_LIMITS };
    for (const key of Object.keys(limits) as Array<keyof ValidationLimits>) {
      if (key === 'maxBestOf') continue;
      const values = found.map((d) => d.limits[key]).filter((v): v is number => v !== undefined);
      if (values.length > 0) limits[key] = Math.min(...values);
    }
    Object.assign(limits, this.options.limits);
    const sum = (pick: (u: Upstream) => number | null) => this.upstreams.reduce((total, u) => total + (pick(u) ?? 0), 0);
    const info: Omit<ModelInfo, LocalModelField> = {
      modelId: this.modelId ?? found[0].modelId,
      modelType: 'remote',
      vocabSize: 0,
      maxPositionEmbeddings: limits.maxTotalTokens,
      eosTokenIds: [],
      hasChatTemplate: true,
      limits,
      maxBatchSize: sum((u) => u.discovery?.maxBatchSize ?? u.capacity),
      maxBatchPrefillTokens: 0,
      maxBatchTotalTokens: sum((u) => u.discovery?.maxBatchTotalTokens ?? null),
    };
    // The fields that describe a local ONNX model have nothing to say about a remote one.
    return info as ModelInfo;
  }

  /** Validates and registers one request, then runs it in the background; validation errors reject `accepted`. */
  private begin(options: GenerateOptions, prepare: () => { params: ValidatedParameters; call: CallFor }): Generation {
    const cancel = new AbortController();
    const state = new RequestState(new EventChannel<GenerationEvent>(), () => cancel.abort(new DOMException('cancelled', 'AbortError')));
    try {
      if (this.stopping) throw this.stopping;
      const { params, call } = prepare();
      state.params = params;
      state.watch(options.signal);
      if (!cancel.signal.aborted) {
        this.running.set(state, cancel);
        void this.run(state, call, cancel.signal).finally(() => this.running.delete(state));
      }
    } catch (error) {
      state.reject(error);
    }
    return state.generation();
  }

  /** Tries upstreams until one commits or the request cannot go anywhere. Never rejects. */
  private async run(state: RequestState, callFor: CallFor, cancel: AbortSignal): Promise<void> {
    const started = performance.now();
    const tried = new Set<Upstream>();
    const tally: Tally = { overloaded: false, failed: null };
    while (tried.size < this.options.maxAttempts && !cancel.aborted) {
      const upstream = this.pick(tried);
      if (!upstream) break;
      tried.add(upstream);
      let call: UpstreamCall;
      try {
        call = callFor(upstream);
      } catch (error) {
        return state.reject(error);
      }
      const failure = await this.attempt(upstream, call, state, cancel, started);
      if (!failure) return;
      if (failure.kind === 'invalid') return state.reject(invalidError(failure.message));
      if (failure.kind === 'overloaded') tally.overloaded = true;
      else tally.failed = failure;
      this.metrics.failover(upstream.url, failure.kind === 'overloaded' ? 'overloaded' : 'error');
    }
    if (cancel.aborted) return;
    const busy = this.upstreams.some((u) => !tried.has(u) && u.busy());
    if (tally.overloaded || busy) return state.reject(new OverloadedError());
    if (tally.failed && tally.failed.message !== UNREACHABLE) return state.reject(new GenerationError(tally.failed.message));
    state.reject(new UpstreamUnavailableError('No upstream server is reachable'));
  }

  /**
   * One upstream's try at a request. Returns null when the request is settled (done, failed after
   * its first token, or cancelled), or why it should move on.
   */
  private async attempt(upstream: Upstream, call: UpstreamCall, state: RequestState, cancel: AbortSignal, started: number): Promise<UpstreamFailure | null> {
    const controller = new AbortController();
    const onCancel = () => controller.abort(cancel.reason);
    cancel.addEventListener('abort', onCancel, { once: true });
    upstream.begin(controller);
    let committed = false;
    let ended = false;
    let timer: NodeJS.Timeout | undefined = setTimeout(() => controller.abort(new Error('no answer in time')), this.options.headersTimeoutMs);
    let outcome: Outcome = 'error';
    try {
      const res = await upstream.fetch(call.path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: call.whole ? 'application/json' : 'text/event-stream' },
        body: JSON.stringify(call.body),
        signal: controller.signal,
      });
      clearTimeout(timer);
      const answered = performance.now();
      let firstToken = answered;
      if (!res.ok) {
        const failure = await refusal(res);
        outcome = failure.kind === 'overloaded' ? 'overloaded' : failure.kind === 'invalid' ? 'invalid' : 'error';
        if (failure.kind === 'overloaded') upstream.overloaded(failure.retryAfter);
        else if (failure.kind === 'failed') upstream.failed(res.status === 401 || res.status === 403 || res.status === 404);
        return failure;
      }
      const handle = (decoded: Decoded[]): UpstreamFailure | null => {
        if (!committed && call.decoder.started) {
          committed = true;
          firstToken = performance.now();
          upstream.commit(controller);
          this.metrics.firstToken(upstream.url, (performance.now() - answered) / 1000);
          state.accept(0);
        }
        for (const event of decoded) {
          if (event.type === 'error') {
            if (!committed) return event.failure;
            throw inStreamError(event.failure);
          }
          const now = performance.now();
          if (event.type === 'end') {
            ended = true;
            // Over TGI the prompt length comes with the last event.
            state.accept(event.summary.inputLength);
            const { summary } = event;
            state.push({
              id: 0, token: event.token, topTokens: event.topTokens, prefill: event.prefill,
              end: {
                finishReason: summary.finishReason, generatedText: summary.generatedText, generatedTokens: summary.generatedTokens,
                queueMs: answered - started, inferenceMs: now - answered, firstTokenMs: firstToken - answered,
              },
            });
          } else {
            state.push({ id: 0, token: event.token, topTokens: event.topTokens, prefill: event.prefill });
          }
        }
        return null;
      };
      const bodies = call.whole ? wholeBody(res) : sseData(res.body as unknown as AsyncIterable<Uint8Array>);
      for await (const data of bodies) {
        upstream.heard();
        if (ended) continue;
        const failure = handle(decode(call, data));
        if (failure) return this.moveOn(upstream, failure, (kind) => (outcome = kind));
        // The stream should end right after its last event; keep the connection for reuse if it does.
        if (ended) timer = setTimeout(() => controller.abort(), DRAIN_MS);
      }
      if (!ended) {
        const failure = handle(call.decoder.close());
        if (failure) return this.moveOn(upstream, failure, (kind) => (outcome = kind));
      }
      if (ended) {
        outcome = 'ok';
        upstream.succeeded();
        return null;
      }
      if (!committed) {
        upstream.failed(false);
        return { kind: 'failed', message: 'the upstream server ended the stream before any token' };
      }
      throw new GenerationError('the upstream server ended the stream early');
    } catch (error) {
      if (ended) {
        outcome = 'ok';
        return null;
      }
      if (cancel.aborted) {
        outcome = 'cancelled';
        return null;
      }
      if (!committed && !InferenceError.isInstance(error)) {
        outcome = 'unavailable';
        upstream.failed(true);
        return { kind: 'failed', message: UNREACHABLE };
      }
      upstream.failed(false);
      state.reject(InferenceError.isInstance(error) ? error : new GenerationError('the upstream server closed the connection', error));
      return null;
    } finally {
      clearTimeout(timer);
      cancel.removeEventListener('abort', onCancel);
      // Drops the connection if the stream was left unread; a finished one is already back in the pool.
      controller.abort();
      upstream.finish(controller, committed);
      this.metrics.outcome(upstream.url, outcome);
    }
  }

  private moveOn(upstream: Upstream, failure: UpstreamFailure, set: (outcome: Outcome) => void): UpstreamFailure {
    set(failure.kind === 'overloaded' ? 'overloaded' : failure.kind === 'invalid' ? 'invalid' : 'error');
    if (failure.kind === 'overloaded') upstream.overloaded(failure.retryAfter);
    else if (failure.kind === 'failed') upstream.failed(false);
    return failure;
  }

  private pick(tried: Set<Upstream>): Upstream | null {
    const now = performance.now();
    const candidates = this.upstreams.filter((u) => !tried.has(u) && u.available(now));
    return pickLeastLoaded(
      candidates,
      (u) => loadScore({ inFlight: u.inFlight, capacity: u.capacity, queue: u.freshLoad(now)?.queue ?? 0 }),
      this.options.random,
    );
  }

  /** For the small calls (tokenize, templates): any upstream that is up. */
  private pickAny(): Upstream {
    if (this.stopping) throw this.stopping;
    const up = this.upstreams.filter((u) => u.up);
    const chosen = pickLeastLoaded(up, (u) => u.inFlight / u.capacity, this.options.random);
    if (!chosen) throw new UpstreamUnavailableError('No upstream server is reachable');
    return chosen;
  }

  private async postJson(upstream: Upstream, path: string, body: unknown): Promise<unknown> {
    let res: Response;
    try {
      res = await upstream.fetch(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.headersTimeoutMs),
      });
    } catch (error) {
      throw new UpstreamUnavailableError(`The upstream server did not answer ${path}`);
    }
    if (!res.ok) {
      const failure = await refusal(res);
      if (failure.kind === 'invalid') throw invalidError(failure.message);
      throw new GenerationError(`the upstream server answered ${path} with HTTP ${res.status}`);
    }
    return res.json();
  }
}

/** The message of a connection that failed before any answer; tells it apart from an upstream's own error. */
const UNREACHABLE = 'unreachable';

/** An event that is not what the dialect says is the upstream's failure, not a bug of ours. */
function decode(call: UpstreamCall, data: string): Decoded[] {
  try {
    return call.decoder.decode(data);
  } catch {
    return [{ type: 'error', failure: { kind: 'failed', message: `the upstream sent an event that cannot be read: ${data.slice(0, 100)}` } }];
  }
}

async function* wholeBody(res: Response): AsyncGenerator<string> {
  yield await res.text();
}

/** An error status: its kind, the upstream's message (TGI's or OpenAI's shape) and `Retry-After`. */
async function refusal(res: Response): Promise<UpstreamFailure> {
  const text = await res.text().catch(() => '');
  let message = `HTTP ${res.status}`;
  let type: unknown;
  try {
    const json = JSON.parse(text) as { error?: string | { message?: string; type?: string; code?: unknown }; error_type?: string };
    if (typeof json.error === 'string') {
      message = json.error;
      type = json.error_type;
    } else if (json.error && typeof json.error.message === 'string') {
      message = json.error.message;
      type = typeof json.error.code === 'string' ? json.error.code : json.error.type;
    }
  } catch {
    // Not JSON: the status says enough.
  }
  const retryAfter = Number(res.headers.get('retry-after'));
  return {
    kind: failureKind(type, res.status),
    message,
    ...(typeof type === 'string' ? { errorType: type } : {}),
    ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfter } : {}),
  };
}

/** The upstream's own validation message, without a second "Input validation error: " in front. */
function invalidError(message: string): ValidationError {
  return new ValidationError(message.replace(/^Input validation error: /, ''));
}

const KNOWN: readonly ErrorType[] = ['generation', 'incomplete_generation', 'validation', 'template_error', 'overloaded'];

/** An upstream's error event after the first token: the same type when it is one of ours, else a generation error. */
function inStreamError(failure: UpstreamFailure): InferenceError {
  const type = failure.errorType as ErrorType | undefined;
  if (type && KNOWN.includes(type)) return new InferenceError(type, failure.message);
  return new GenerationError(failure.message.replace(/^Request failed during generation: /, ''));
}
