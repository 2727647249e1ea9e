import type { ServerResponse } from 'node:http';
import { KEEP_ALIVE_FRAME, SSE_HEADERS } from '../protocol/sse.js';

/**
 * Writes Server-Sent Events to a Node response: headers flushed at once, each frame flushed as
 * written (also through `compression()`, which adds `res.flush`), and a full socket buffer waits
 * for `drain` or `close`, whichever comes first, so a vanished reader never hangs the writer.
 *
 * A client that stops reading for `stallTimeoutMs` is disconnected: its generation is then
 * cancelled like any other disconnect, so it can neither hold a batch slot forever nor make the
 * server buffer its tokens without bound.
 */
export class SseWriter {
  private timer: NodeJS.Timeout | null = null;
  private lastWrite = 0;

  constructor(
    private readonly res: ServerResponse & { flush?: () => void },
    private readonly stallTimeoutMs: number,
    /** An idle stream gets a comment this often, so proxies and clients do not time it out. */
    private readonly keepAliveMs: number,
  ) {}

  open(headers: Record<string, string> = {}): void {
    this.res.writeHead(200, { ...SSE_HEADERS, ...headers });
    // Held until the end of this tick, so that a first frame already at hand (a remote engine opens
    // the stream at its upstream's first token) leaves in the same packet as the headers.
    const socket = this.res.socket;
    socket?.cork();
    this.res.flushHeaders();
    if (socket) process.nextTick(() => socket.uncork());
    this.lastWrite = Date.now();
    this.timer = setInterval(() => {
      if (Date.now() - this.lastWrite >= this.keepAliveMs) void this.write(KEEP_ALIVE_FRAME);
    }, this.keepAliveMs);
    this.timer.unref();
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  /** Resolves false when the client is gone, so the caller can stop generating for it. */
  async write(frame: string): Promise<boolean> {
    if (this.closed) return false;
    this.lastWrite = Date.now();
    const flushed = this.res.write(frame);
    this.res.flush?.();
    if (flushed) return true;
    await new Promise<void>((resolve) => {
      const stalled = setTimeout(() => this.res.destroy(), this.stallTimeoutMs);
      const done = () => {
        clearTimeout(stalled);
        this.res.off('drain', done).off('close', done);
        resolve();
      };
      this.res.on('drain', done).on('close', done);
    });
    return !this.closed;
  }

  end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.res.writableEnded) this.res.end();
  }
}
