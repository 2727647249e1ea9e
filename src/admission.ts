/**
 * Fail-fast admission, as TGI's `--max-concurrent-requests` semaphore (protocol.md §2.3): a
 * request takes a permit before validation or it is refused at once with 429, never queued here.
 * Admitted requests wait in the scheduler's queue instead. A permit covers the request from
 * admission until the response ends, fails or the client goes away.
 *
 * The limit protects an engine, so mounts that share one engine share one count (`engineAdmission`);
 * each mount keeps its own count too, so a mount may admit fewer than the engine does.
 */

/** One admitted request's place. */
export interface Permit {
  /** Give the place back. Only the first call counts, so every exit path may call it. */
  release(): void;
}

export interface AdmissionOptions {
  /** Requests in flight (queued or generating) at most. */
  maxConcurrentRequests: number;
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
  #limit: number;
  #inFlight = 0;

  constructor(options: AdmissionOptions) {
    this.#limit = checkLimit(options.maxConcurrentRequests);
  }

  get limit(): number {
    return this.#limit;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Raises the limit, never lowers it: a mount that allows more has joined a shared engine. */
  raiseTo(limit: number): void {
    this.#limit = Math.max(this.#limit, checkLimit(limit));
  }

  /** A permit, or null when `limit` requests are already in flight. */
  tryAcquire(): Permit | null {
    if (this.#inFlight >= this.#limit) return null;
    this.#inFlight += 1;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight -= 1;
      },
    };
  }
}

function checkLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`maxConcurrentRequests must be a positive integer, got ${String(limit)}`);
  }
  return limit;
}

const perEngine = new WeakMap<object, AdmissionController>();

/**
 * The one controller of `engine`, shared by every mount that serves it: two mounts at 128 admit 128
 * requests in all, not 256. Its limit is the largest `maxConcurrentRequests` a mount declared; each
 * mount's own controller keeps a lower one for that mount.
 *
 * @example
 * const permit = acquireAll([mountAdmission, engineAdmission(engine, 128)]);
 */
export function engineAdmission(engine: object, maxConcurrentRequests: number): AdmissionController {
  const limit = checkLimit(maxConcurrentRequests);
  const controller = perEngine.get(engine);
  if (!controller) {
    const created = new AdmissionController({ maxConcurrentRequests: limit });
    perEngine.set(engine, created);
    return created;
  }
  controller.raiseTo(limit);
  return controller;
}

/** A permit from every controller, or null (holding none) when one of them is full. */
export function acquireAll(controllers: readonly AdmissionController[]): Permit | null {
  const permits: Permit[] = [];
  for (const controller of controllers) {
    const permit = controller.tryAcquire();
    if (!permit) {
      for (const held of permits) held.release();
      return null;
    }
    permits.push(permit);
  }
  return { release: () => permits.forEach((permit) => permit.release()) };
}
