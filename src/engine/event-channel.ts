/**
 * A one-consumer async queue: the engine pushes as worker messages arrive, the consumer pulls with
 * `for await`. Values wait in a buffer when the consumer is slower than the model.
 */
export class EventChannel<T> {
  private readonly buffer: T[] = [];
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private error: unknown = null;
  private done = false;

  get closed(): boolean {
    return this.done;
  }

  push(value: T): void {
    if (this.done) return;
    if (this.waiter) {
      this.waiter.resolve({ value, done: false });
      this.waiter = null;
    } else {
      this.buffer.push(value);
    }
  }

  /** Ends the iteration after the buffered values. */
  end(): void {
    this.finish(null);
  }

  /** Ends the iteration with `error` once the buffered values are read. */
  fail(error: unknown): void {
    this.finish(error);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift()!, done: false });
    if (this.error !== null) return Promise.reject(this.error);
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private finish(error: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    if (!this.waiter) return;
    if (error !== null) this.waiter.reject(error);
    else this.waiter.resolve({ value: undefined, done: true });
    this.waiter = null;
  }
}
