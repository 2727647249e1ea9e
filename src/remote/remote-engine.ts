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
  GenerationError,
  InferenceError,
  OverloadedError,
  UnavailableError,
  UpstreamUnavailableError,
  ValidationError,
} from '../errors.js';
import { validateParameters } from '../params.js';
import type {
  ChatGenerateRequest,
  ChatMessage,
  CloseOptions,
  Engine,
  EngineStats,
  ForwardPassRecord,
  GenerateOptions,
  GenerateRequest,
  Generation,
  GenerationEvent,
  EngineInfo,
  TokenizedToken,
  ValidatedParameters,
  ValidationLimits,
} from '../types.js';
import { UNREACHABLE, attempt, invalidError, refusal } from './attempt.js';
import type { UpstreamCall, UpstreamFailure } from './dialect.js';
import type { Discovery } from './discovery.js';
import { openaiChatCall, openaiCompletionCall } from './openai-dialect.js';
import { resolveRemoteOptions, type RemoteEngineOptions, type ResolvedRemoteOptions } from './options.js';
import { loadScore, pickLeastLoaded } from './picker.js';
import { tgiGenerateCall } from './tgi-dialect.js';
import { createUpstreamMetrics, type UpstreamMetrics } from './upstream-metrics.js';
import type { UpstreamResponse } from './upstream-http.js';
import { Upstream } from './upstream.js';
import { readTokenize, tokenizeCall } from './tokenize.js';

/** What a server answers for a route it does not have. */
const MISSING_ROUTE = new Set([404, 405, 501]);

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

/** How a request's attempts went, to choose its error when none succeeded. */
interface Tally {
  overloaded: boolean;
  failed: UpstreamFailure | null;
}

export class RemoteEngine implements Engine {
  info!: EngineInfo;
  private readonly upstreams: Upstream[];
  private readonly metrics: UpstreamMetrics;
  private modelId: string | null;
  private stopping: UnavailableError | null = null;
  /** Every request not finished, with the controller that cancels it. */
  private readonly running = new Map<RequestState, AbortController>();

  constructor(private readonly options: ResolvedRemoteOptions) {
    this.modelId = options.modelId;
    this.metrics = createUpstreamMetrics(options.metrics === false ? null : (options.metrics.registry ?? new Registry()));
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
        throw new UpstreamUnavailableError(
          `None of the upstreams answered within ${this.options.startTimeoutMs} ms: ${this.upstreams.map((u) => u.url).join(', ')}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const refused = this.upstreams.filter((u) => u.refused);
    if (refused.length > 0) {
      this.upstreams.forEach((u) => u.stop());
      throw new TypeError(
        `createRemoteEngine: the upstreams serve different models (${refused.map((u) => `${u.url} ${u.refused}`).join('; ')}); pass \`modelId\` to serve them under one name anyway`,
      );
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
      const params = validateParameters(request?.parameters, this.info.limits, {
        stream: options.stream ?? false,
        inputs: request?.inputs,
        grammar: request?.grammar,
      });
      refuseGrammar(params);
      if (params.decoderInputDetails && this.upstreams.some((u) => u.dialect !== 'tgi')) {
        throw new ValidationError('`decoder_input_details` is not available through OpenAI-dialect upstreams', 'decoder_input_details');
      }
      const call: CallFor = (u) =>
        u.dialect === 'tgi' ? tgiGenerateCall(request, params) : openaiCompletionCall(request, params, u.model);
      return { params, call };
    });
  }

  /** The messages go to the upstream's `/v1/chat/completions` and its own chat template, in either dialect. */
  chat(request: ChatGenerateRequest, options: GenerateOptions = {}): Generation {
    return this.begin(options, () => {
      // An upstream sends the tool calls it parses as `tool_calls`, which no engine event carries: refused, never dropped.
      if (request?.tools?.length) throw new ValidationError('`tools` are not relayed to remote upstreams', 'tools');
      const params = validateParameters(request?.parameters, this.info.limits, {
        stream: options.stream ?? false,
        grammar: request?.grammar,
      });
      refuseGrammar(params);
      if (!Array.isArray(request?.messages) || request.messages.length === 0) {
        throw new ValidationError('`messages` must be a non-empty array', 'messages');
      }
      return { params, call: (u: Upstream) => openaiChatCall(request, params, u.model) };
    });
  }

  /**
   * The prompt an upstream's template renders: TGI's `/chat_tokenize`, llama.cpp's `/apply-template`.
   * Other servers (vLLM, our own `serve`) have no such route: a 404 `invalid_request` says so.
   */
  async applyChatTemplate(messages: ChatMessage[], options: { tools?: unknown[]; addGenerationPrompt?: boolean } = {}): Promise<string> {
    if (options.addGenerationPrompt === false) {
      throw new ValidationError('an upstream renders chat templates with the generation prompt only', 'addGenerationPrompt');
    }
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
  private describe(): EngineInfo {
    const found = this.upstreams.map((u) => u.discovery).filter((d): d is Discovery => d !== null);
    const limits = { ...DEFAULT_LIMITS };
    for (const key of Object.keys(limits) as Array<keyof ValidationLimits>) {
      if (key === 'maxBestOf') continue;
      const values = found.map((d) => d.limits[key]).filter((v): v is number => v !== undefined);
      if (values.length > 0) limits[key] = Math.min(...values);
    }
    Object.assign(limits, this.options.limits);
    const sum = (pick: (u: Upstream) => number | null) => this.upstreams.reduce((total, u) => total + (pick(u) ?? 0), 0);
    return {
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
      const failure = await attempt({
        upstream,
        call,
        state,
        cancel,
        started,
        headersTimeoutMs: this.options.headersTimeoutMs,
        metrics: this.metrics,
      });
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

  private pick(tried: Set<Upstream>): Upstream | null {
    const now = performance.now();
    const candidates = this.upstreams.filter((u) => !tried.has(u) && u.available(now));
    return pickLeastLoaded(
      candidates,
      (u) => loadScore({ inFlight: u.inFlight, capacity: u.capacity, others: u.freshLoad(now)?.others ?? 0 }),
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
    let res: UpstreamResponse;
    try {
      res = await upstream.request(path, { json: body, signal: AbortSignal.timeout(this.options.headersTimeoutMs) });
    } catch {
      throw new UpstreamUnavailableError(`The upstream server did not answer ${path}`);
    }
    if (!res.ok) {
      const failure = await refusal(res);
      // As TGI answers `/tokenize` for a model without a tokenizer.
      if (MISSING_ROUTE.has(res.status)) {
        throw new InferenceError('invalid_request', `${path} is not available through the remote upstreams`, { status: 404 });
      }
      if (failure.kind === 'invalid') throw invalidError(failure.message);
      throw new GenerationError(`the upstream server answered ${path} with HTTP ${res.status}`);
    }
    return res.json();
  }
}

/** Upstreams speak their own constraint dialects (or none): a constraint is refused, never dropped. */
function refuseGrammar(params: ValidatedParameters): void {
  if (params.grammar)
    throw new ValidationError('output constraints (grammar, response_format) are not forwarded to remote upstreams', 'grammar');
}
