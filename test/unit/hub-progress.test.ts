import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressMeter, describeProgress, progressPrinter } from '../../src/hub/progress.js';
import type { DownloadProgress } from '../../src/types.js';

const at = (downloadedBytes: number, done = false): DownloadProgress => ({
  repo: 'acme/big',
  file: 'onnx/model_q4.onnx',
  downloadedBytes,
  totalBytes: 1.2e9,
  bytesPerSecond: 35.2e6,
  etaSeconds: done ? 0 : (1.2e9 - downloadedBytes) / 35.2e6,
  done,
});

function terminal(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream;
  stream.isTTY = isTTY;
  const chunks: string[] = [];
  (stream as unknown as PassThrough).on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  return { stream, text: () => chunks.join('') };
}

describe('describeProgress', () => {
  it('says bytes, rate and ETA in one line', () => {
    expect(describeProgress(at(540e6))).toBe('Downloading acme/big: 45% of 1.20 GB, 35.2 MB/s, ETA 19 s (onnx/model_q4.onnx)');
    expect(describeProgress(at(0))).toBe('Downloading acme/big: 0% of 1.20 GB, 35.2 MB/s, ETA 34 s (onnx/model_q4.onnx)');
    expect(describeProgress({ ...at(0), bytesPerSecond: 1e6, etaSeconds: 1200 })).toContain('ETA 20 min 0 s');
    expect(describeProgress({ ...at(0), bytesPerSecond: 0, etaSeconds: null })).toBe(
      'Downloading acme/big: 0% of 1.20 GB, 0.0 kB/s (onnx/model_q4.onnx)',
    );
    expect(describeProgress(at(1.2e9, true))).toBe('Downloaded acme/big: 1.20 GB at 35.2 MB/s');
  });
});

describe('progressPrinter', () => {
  it('rewrites one line on a TTY and ends it when done', async () => {
    const { stream, text } = terminal(true);
    const print = progressPrinter(stream);
    print(at(100e6));
    print(at(200e6));
    print(at(1.2e9, true));
    await new Promise((r) => setImmediate(r));
    expect(text()).toBe(
      `\r${describeProgress(at(100e6))}\x1b[K\r${describeProgress(at(200e6))}\x1b[K\r${describeProgress(at(1.2e9, true))}\x1b[K\n`,
    );
  });

  it('writes a line per tenth elsewhere, so a build log stays readable', async () => {
    const { stream, text } = terminal(false);
    const print = progressPrinter(stream);
    for (let bytes = 0; bytes < 1.2e9; bytes += 10e6) print(at(bytes));
    print(at(1.2e9, true));
    await new Promise((r) => setImmediate(r));
    const lines = text().trimEnd().split('\n');
    expect(lines).toHaveLength(11);
    expect(lines.at(-1)).toBe('Downloaded acme/big: 1.20 GB at 35.2 MB/s');
  });
});

describe('ProgressMeter', () => {
  it('adds up the files, leaves resumed bytes out of the rate, and reports the end once', () => {
    const reports: DownloadProgress[] = [];
    const meter = new ProgressMeter('acme/big', (p) => reports.push(p));
    meter.expect(1000);
    meter.expect(500);
    meter.update('a.onnx', 400); // left by an interrupted download
    for (let bytes = 401; bytes <= 1000; bytes++) meter.update('a.onnx', bytes);
    meter.update('b.json', 500);
    meter.finish();
    expect(reports.length).toBeLessThan(50);
    expect(reports[0]).toMatchObject({
      file: 'a.onnx',
      downloadedBytes: 400,
      totalBytes: 1500,
      bytesPerSecond: 0,
      etaSeconds: null,
      done: false,
    });
    expect(reports.at(-1)).toMatchObject({ file: 'b.json', downloadedBytes: 1500, totalBytes: 1500, etaSeconds: 0, done: true });
    expect(reports.filter((r) => r.done)).toHaveLength(1);
  });

  it('says nothing when the cache had everything', () => {
    const reports: DownloadProgress[] = [];
    new ProgressMeter('acme/big', (p) => reports.push(p)).finish();
    expect(reports).toEqual([]);
  });
});
