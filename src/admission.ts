/**
 * Fail-fast admission, as TGI's `--max-concurrent-requests` semaphore (protocol.md §2.3): a
 * request takes a permit before validation or it is refused at once with 429, never queued here.
 * Admitted requests wait in the scheduler's queue instead. A permit covers the request from
 * admission until the response ends, fails or the client goes away.
 */

/** One admitted request's place. */
export interface Permit {
  /** Give the place back. Only the first call counts, so every exit path may call it. */
  release(): void;
  readonly released: boolean;
}

export interface AdmissionOptions {
  /** Requests in flight (queued or generating) at most. */
  maxConcurrentRequests: number;
  /** Called with the new count after every acquire and release, e.g. to set a gauge. */
  onChange?: (inFlight: number) => void;
}

/**
 * Counts requests in flight against a fixed limit.
 *
 * @example
 * const admission = new AdmissionController({ maxConcurrentRequests: 8 });
 * const permit = admission.tryAcquire();
 * if (!permit) throw new OverloadedError();
 * try { await serve(); } finally { permit.release(); }
 */
export class AdmissionController {
  readonly limit: number;
  readonly #onChange: ((inFlight: number) => void) | undefined;
  #inFlight = 0;

  constructor(options: AdmissionOptions) {
    const limit = options.maxConcurrentRequests;
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`maxConcurrentRequests must be a positive integer, got ${String(limit)}`);
    }
    this.limit = limit;
    this.#onChange = options.onChange;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** A permit, or null when `limit` requests are already in flight. */
  tryAcquire(): Permit | null {
    if (this.#inFlight >= this.limit) return null;
    this.#inFlight += 1;
    this.#onChange?.(this.#inFlight);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight -= 1;
        this.#onChange?.(this.#inFlight);
      },
      get released() {
        return released;
      },
    };
  }
}
