/**
 * One upstream's try at one request, and how an upstream's refusals read. The request is committed
 * at the upstream's first token: before that, whatever goes wrong is returned as the reason to try
 * another upstream, and the client sees nothing of it; after it, the failure ends the client's stream.
 */
import type { RequestState } from '../engine/request-state.js';
import { GenerationError, InferenceError, ValidationError, type ErrorType } from '../errors.js';
import { failureKind, type Decoded, type FailureKind, type UpstreamCall, type UpstreamFailure } from './dialect.js';
import { sseData } from './sse-data.js';
import type { UpstreamResponse } from './upstream-http.js';
import type { Outcome, UpstreamMetrics } from './upstream-metrics.js';
import type { Upstream } from './upstream.js';

export interface AttemptContext {
  upstream: Upstream;
  call: UpstreamCall;
  /** The client's request: its events, `accepted`, and the rejection that ends it. */
  state: RequestState;
  /** Aborted when the client leaves or the engine closes; closes the upstream connection. */
  cancel: AbortSignal;
  /** When the request arrived (performance.now()), for its queue time. */
  started: number;
  headersTimeoutMs: number;
  metrics: UpstreamMetrics;
}

/** The message of a connection that failed before any answer, told apart from an upstream's own error. */
export const UNREACHABLE = 'unreachable';

/** After the end event, how long the rest of an upstream stream may take before its connection is dropped. */
const DRAIN_MS = 1000;

const OUTCOME: Record<FailureKind, Outcome> = { overloaded: 'overloaded', invalid: 'invalid', failed: 'error' };

/**
 * Runs one try. Resolves with null when the request is settled (finished, failed after its first
 * token, or cancelled), or with why it should move on to another upstream. Never rejects.
 */
export function attempt(context: AttemptContext): Promise<UpstreamFailure | null> {
  return new Attempt(context).run();
}

class Attempt {
  private readonly controller = new AbortController();
  private committed = false;
  private ended = false;
  private outcome: Outcome = 'error';
  private timer: NodeJS.Timeout | undefined;
  private answered = 0;
  private firstToken = 0;
  /** The upstream's answer was read to its end: its connection is back in the pool. */
  private drained = false;

  constructor(private readonly context: AttemptContext) {}

  async run(): Promise<UpstreamFailure | null> {
    const { upstream, call, cancel, headersTimeoutMs, metrics } = this.context;
    const onCancel = () => this.controller.abort(cancel.reason);
    cancel.addEventListener('abort', onCancel, { once: true });
    upstream.begin(this.controller);
    // A whole answer's headers come with its last token, so only a stream's are timed; a hung
    // upstream is then found by its probe, which moves the request on.
    if (!call.whole) this.timer = setTimeout(() => this.controller.abort(new Error('no answer in time')), headersTimeoutMs);
    try {
      return await this.exchange();
    } catch (error) {
      return this.broken(error);
    } finally {
      clearTimeout(this.timer);
      cancel.removeEventListener('abort', onCancel);
      // Drops the connection if the answer was left unread.
      if (!this.drained) this.controller.abort();
      upstream.finish(this.controller, this.committed);
      metrics.outcome(upstream.url, this.outcome);
    }
  }

  private async exchange(): Promise<UpstreamFailure | null> {
    const { upstream, call } = this.context;
    const res = await upstream.request(call.path, {
      json: call.body,
      accept: call.whole ? 'application/json' : 'text/event-stream',
      signal: this.controller.signal,
    });
    clearTimeout(this.timer);
    this.answered = performance.now();
    if (!res.ok) return this.refused(await refusal(res), res.status);
    const bodies = call.whole ? wholeBody(res) : sseData(res.body);
    for await (const data of bodies) {
      upstream.heard();
      if (this.ended) continue;
      const failure = this.deliver(decode(call, data));
      if (failure) return this.refused(failure);
      // The stream should end right after its last event; its connection goes back to the pool if it does.
      if (this.ended) this.timer = setTimeout(() => this.controller.abort(), DRAIN_MS);
    }
    this.drained = true;
    if (!this.ended) {
      const failure = this.deliver(call.decoder.close());
      if (failure) return this.refused(failure);
    }
    if (this.ended) {
      this.outcome = 'ok';
      upstream.succeeded();
      return null;
    }
    if (!this.committed) return this.refused({ kind: 'failed', message: 'the upstream server ended the stream before any token' });
    throw new GenerationError('the upstream server ended the stream early');
  }

  /** Passes decoded events to the client, committing at the first token; returns an error that comes before it. */
  private deliver(decoded: Decoded[]): UpstreamFailure | null {
    const { upstream, call, state, started, metrics } = this.context;
    if (!this.committed && call.decoder.started) {
      this.committed = true;
      this.firstToken = performance.now();
      upstream.commit(this.controller);
      metrics.firstToken(upstream.url, (this.firstToken - this.answered) / 1000);
      state.accept(0);
    }
    for (const event of decoded) {
      if (event.type === 'error') {
        if (!this.committed) return event.failure;
        throw inStreamError(event.failure);
      }
      const step = { id: 0, token: event.token, topTokens: event.topTokens, prefill: event.prefill };
      if (event.type === 'token') {
        state.push(step);
        continue;
      }
      this.ended = true;
      const now = performance.now();
      const { summary } = event;
      // Over TGI the prompt length comes with the last event.
      state.accept(summary.inputLength);
      state.push({
        ...step,
        end: {
          finishReason: summary.finishReason,
          generatedText: summary.generatedText,
          generatedTokens: summary.generatedTokens,
          queueMs: this.answered - started,
          inferenceMs: now - this.answered,
          firstTokenMs: this.firstToken - this.answered,
        },
      });
    }
    return null;
  }

  /** A failure before the first token: the upstream's record, and the reason to move on. */
  private refused(failure: UpstreamFailure, status = 0): UpstreamFailure {
    const { upstream } = this.context;
    this.outcome = OUTCOME[failure.kind];
    if (failure.kind === 'overloaded') upstream.overloaded(failure.retryAfter);
    // A wrong key or an unknown route will not mend by itself: out with it, as with one unreachable.
    else if (failure.kind === 'failed') upstream.failed(status === 401 || status === 403 || status === 404);
    return failure;
  }

  /** The connection broke, or the stream failed after its first token. */
  private broken(error: unknown): UpstreamFailure | null {
    const { upstream, state, cancel } = this.context;
    if (this.ended) {
      this.outcome = 'ok';
      return null;
    }
    if (cancel.aborted) {
      this.outcome = 'cancelled';
      return null;
    }
    if (!this.committed && !InferenceError.isInstance(error)) {
      this.outcome = 'unavailable';
      upstream.failed(true);
      return { kind: 'failed', message: UNREACHABLE };
    }
    upstream.failed(false);
    state.reject(InferenceError.isInstance(error) ? error : new GenerationError('the upstream server closed the connection', error));
    return null;
  }
}

/** An event that is not what the dialect says is the upstream's failure, not a bug of ours. */
function decode(call: UpstreamCall, data: string): Decoded[] {
  try {
    return call.decoder.decode(data);
  } catch {
    return [
      { type: 'error', failure: { kind: 'failed', message: `the upstream sent an event that cannot be read: ${data.slice(0, 100)}` } },
    ];
  }
}

async function* wholeBody(res: UpstreamResponse): AsyncGenerator<string> {
  yield await res.text();
}

/** An error status: its kind, the upstream's message (TGI's or OpenAI's shape) and `Retry-After`. */
export async function refusal(res: UpstreamResponse): Promise<UpstreamFailure> {
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
  const retryAfter = Number(res.header('retry-after'));
  return {
    kind: failureKind(type, res.status),
    message,
    ...(typeof type === 'string' ? { errorType: type } : {}),
    ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfter } : {}),
  };
}

/** The upstream's own validation message, without a second "Input validation error: " in front. */
export function invalidError(message: string): ValidationError {
  return new ValidationError(message.replace(/^Input validation error: /, ''));
}

const KNOWN: readonly ErrorType[] = ['generation', 'incomplete_generation', 'validation', 'template_error', 'overloaded'];

/** An upstream's error event after the first token: the same type when it is one of ours, else a generation error. */
function inStreamError(failure: UpstreamFailure): InferenceError {
  const type = failure.errorType as ErrorType | undefined;
  if (type && KNOWN.includes(type)) return new InferenceError(type, failure.message);
  return new GenerationError(failure.message.replace(/^Request failed during generation: /, ''));
}
