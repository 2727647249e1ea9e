import type { DownloadProgress } from '../types.js';

const REPORT_EVERY_MS = 100;

/**
 * Adds up the files of one model as they arrive, for `onProgress`: bytes, rate and ETA over all the
 * files the cache lacked, reported as each file starts, at most ten times a second, and at the end.
 */
export class ProgressMeter {
  private totalBytes = 0;
  private readonly bytes = new Map<string, number>();
  /** Bytes a file already had when first seen (a resumed download): they count, but not toward the rate. */
  private readonly baseline = new Map<string, number>();
  private readonly started = performance.now();
  private lastReport = -Infinity;

  constructor(
    private readonly repo: string,
    private readonly report?: (progress: DownloadProgress) => void,
  ) {}

  expect(bytes: number): void {
    this.totalBytes += bytes;
  }

  update(file: string, fileBytes: number): void {
    const first = !this.baseline.has(file);
    if (first) this.baseline.set(file, fileBytes);
    this.bytes.set(file, fileBytes);
    const now = performance.now();
    if (!first && now - this.lastReport < REPORT_EVERY_MS) return;
    this.lastReport = now;
    this.emit(file, false);
  }

  finish(): void {
    if (this.totalBytes > 0) this.emit([...this.bytes.keys()].at(-1) ?? '', true);
  }

  private emit(file: string, done: boolean): void {
    if (!this.report) return;
    const downloadedBytes = sum(this.bytes);
    const seconds = (performance.now() - this.started) / 1000;
    const bytesPerSecond = seconds > 0 ? (downloadedBytes - sum(this.baseline)) / seconds : 0;
    const left = Math.max(0, this.totalBytes - downloadedBytes);
    const etaSeconds = done ? 0 : bytesPerSecond > 0 ? left / bytesPerSecond : null;
    this.report({ repo: this.repo, file, downloadedBytes, totalBytes: this.totalBytes, bytesPerSecond, etaSeconds, done });
  }
}

function sum(values: Map<string, number>): number {
  let total = 0;
  for (const value of values.values()) total += value;
  return total;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${(bytes / 1e9).toFixed(2)} GB`;
}

function formatSeconds(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** One line: "Downloading org/name: 45% of 1.20 GB, 35.2 MB/s, ETA 19 s (onnx/model_q4.onnx)". */
export function describeProgress(p: DownloadProgress): string {
  const rate = `${formatBytes(p.bytesPerSecond)}/s`;
  if (p.done) return `Downloaded ${p.repo}: ${formatBytes(p.totalBytes)} at ${rate}`;
  const percent = p.totalBytes > 0 ? Math.floor((100 * p.downloadedBytes) / p.totalBytes) : 0;
  const eta = p.etaSeconds === null ? '' : `, ETA ${formatSeconds(p.etaSeconds)}`;
  return `Downloading ${p.repo}: ${percent}% of ${formatBytes(p.totalBytes)}, ${rate}${eta} (${p.file})`;
}

/**
 * An `onProgress` that writes to a terminal: one line rewritten in place on a TTY; elsewhere (a
 * Docker build log) a line at each tenth, so the log does not fill with carriage returns.
 */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr): (progress: DownloadProgress) => void {
  let tenth = -1;
  return (progress) => {
    const line = describeProgress(progress);
    if (stream.isTTY) {
      stream.write(`\r${line}\x1b[K${progress.done ? '\n' : ''}`);
      return;
    }
    const step = progress.totalBytes > 0 ? Math.floor((10 * progress.downloadedBytes) / progress.totalBytes) : 0;
    if (progress.done || step > tenth) stream.write(`${line}\n`);
    tenth = step;
  };
}
