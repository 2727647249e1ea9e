/**
 * llama.cpp's `llama-server` as a real upstream: the binary that test/support/build-llama-server.sh
 * builds once into a cache outside the clone (from the llama.cpp source node-llama-cpp ships), serving
 * the tiny fixture's weights as a GGUF with a printable-ASCII vocabulary. Random weights over a full
 * byte vocabulary emit invalid UTF-8, and llama-server then fails its OpenAI streams mid-way; with
 * every token printable, every output is valid text.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bytesToUnicode, learnMerges, syntheticMerges } from '../../src/fixture/bpe-train.js';
import { TRAINING_CORPUS } from '../../src/fixture/corpus.js';
import { fixtureLlamaModel, writeLlamaGguf } from '../../src/fixture/gguf/index.js';
import { FIXTURE_SIZES } from '../../src/fixture/sizes.js';
import { SPECIAL_TOKENS, buildTokenizerFiles } from '../../src/fixture/tokenizer-files.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * `LLAMA_SERVER` if set, else where the build script puts the binary for the llama.cpp commit in
 * node_modules; null when there is none.
 */
export function llamaServerBinary(): string | null {
  if (process.env.LLAMA_SERVER) return process.env.LLAMA_SERVER;
  const bundle = join(ROOT, 'node_modules/node-llama-cpp/llama/gitRelease.bundle');
  if (!existsSync(bundle)) return null;
  // The bundle's HEAD commit names the cache entry (see build-llama-server.sh); read from the bundle's header.
  const header = readFileSync(bundle).subarray(0, 4096).toString('latin1');
  const commit = /^([0-9a-f]{40}) HEAD$/m.exec(header)?.[1];
  if (!commit) return null;
  const cache = process.env.STREAMING_INFERENCE_CACHE ?? join(homedir(), '.cache', 'streaming-inference');
  const binary = join(cache, 'llama-server', commit.slice(0, 12), 'build', 'bin', 'llama-server');
  return existsSync(binary) ? binary : null;
}

/**
 * The tiny fixture's tokenizer files with the same number of tokens, all printable ASCII: the
 * specials, the printable bytes and newline, then merges learned from the fixture's corpus.
 */
export function asciiTokenizerFiles(): ReturnType<typeof buildTokenizerFiles> {
  const { vocab, maxPositions } = FIXTURE_SIZES.tiny;
  const files = buildTokenizerFiles({ vocabSize: vocab, modelMaxLength: maxPositions });
  const symbols = bytesToUnicode();
  const printable = [10, ...Array.from({ length: 95 }, (_, i) => 32 + i)].map((b) => symbols[b]);
  const base = [...SPECIAL_TOKENS, ...printable];
  const known = new Set(base);
  const ascii = TRAINING_CORPUS.replace(/[^\n\x20-\x7e]/g, '');
  const learned = learnMerges(ascii, vocab - base.length, known);
  const synthetic = syntheticMerges(
    learned.map(([a, b]) => a + b),
    vocab - base.length - learned.length,
    known,
  );
  const merges = [...learned, ...synthetic];
  const tokens = [...base, ...merges.map(([a, b]) => a + b)];
  const model = (files['tokenizer.json'] as { model: Record<string, unknown> }).model;
  model.vocab = Object.fromEntries(tokens.map((token, id) => [token, id]));
  model.merges = merges.map(([a, b]) => `${a} ${b}`);
  return files;
}

/** Writes the tiny fixture as an F32 GGUF with the ASCII vocabulary. */
export async function writeAsciiGguf(file: string): Promise<void> {
  await writeLlamaGguf(file, fixtureLlamaModel({ size: 'tiny', tokenizer: asciiTokenizerFiles() }), 'F32');
}

export interface LlamaServer {
  url: string;
  output(): string;
  close(): Promise<void>;
}

/**
 * Starts llama-server on a free port with `slots` parallel slots of the fixture's whole context each,
 * one thread, and `/metrics` on; resolves once `/health` answers 200.
 */
export async function startLlamaServer(binary: string, model: string, slots = 2): Promise<LlamaServer> {
  const { createServer } = await import('node:net');
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  const context = slots * FIXTURE_SIZES.tiny.maxPositions;
  const child: ChildProcess = spawn(
    binary,
    ['-m', model, '--host', '127.0.0.1', '--port', String(port), '-np', String(slots), '-c', String(context), '-t', '1', '--metrics'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`llama-server exited:\n${output}`);
    if (Date.now() > deadline) throw new Error(`llama-server did not start:\n${output}`);
    const ok = await fetch(`${url}/health`).then(
      (res) => res.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    output: () => output,
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = once(child, 'exit');
      child.kill('SIGKILL');
      await gone;
    },
  };
}
