#!/usr/bin/env node
/**
 * The standalone server: `streaming-inference serve --model DIR`. It uses the core handler on
 * `node:http` directly, so it needs neither Express nor Koa installed (both are optional peers).
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { createInferenceHandler } from './http/handler.js';
import { DTYPES, isDtype } from './engine/model-dir.js';
import { parseHubId, progressPrinter, resolveHubModel } from './hub/index.js';
import type { Dtype } from './types.js';

const USAGE = `Usage:
  streaming-inference serve --model DIR|org/name[/folder][@revision] [--port 3000] [--host 127.0.0.1] [--max-concurrent-requests 128]
                            [--dtype fp32|fp16|q8|int8|q4|...] [--model-file onnx/other.onnx] [--threads N] [--max-batch-size 32]
                            [--drain-timeout-ms 10000] [--body-limit 2000000] [--stall-timeout-ms 30000]
  streaming-inference serve --upstream URL [--upstream URL ...] [--port 3000] [--max-concurrent-requests 128] ...
                            a router in front of other servers; URL#dialect=openai&capacity=32 for an OpenAI one
  streaming-inference check --model DIR|org/name[/folder][@revision] [--dtype q4] [--model-file onnx/other.onnx] [--threads N] [--tokens 16]
                            what the engine makes of a model, then a self-test: batched tokens == alone
  streaming-inference download org/name[/folder][@revision] [--dtype q4] [--model-file onnx/other.onnx]
                            fetch the files the model needs into the Hugging Face cache (then run offline: HF_HUB_OFFLINE=1);
                            a folder for repositories with one model per folder (microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/...)
  streaming-inference fixture --size tiny|demo|bench --out DIR`;

function int(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got "${value}"`);
  return n;
}

function dtypeOption(value: string | undefined): Dtype | undefined {
  if (value !== undefined && !isDtype(value)) throw new Error(`--dtype must be one of ${DTYPES.join(', ')}, got "${value}"`);
  return value;
}

export async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      port: { type: 'string', default: '3000' },
      host: { type: 'string', default: '127.0.0.1' },
      'max-concurrent-requests': { type: 'string' },
      dtype: { type: 'string' },
      'model-file': { type: 'string' },
      threads: { type: 'string' },
      'max-batch-size': { type: 'string' },
      'drain-timeout-ms': { type: 'string', default: '10000' },
      'body-limit': { type: 'string' },
      'stall-timeout-ms': { type: 'string' },
      upstream: { type: 'string', multiple: true },
    },
  });
  const upstreams = values.upstream ?? [];
  if (upstreams.length > 0) {
    const local = (['model', 'dtype', 'model-file', 'threads', 'max-batch-size'] as const).filter((name) => values[name] !== undefined);
    if (local.length > 0) throw new Error(`--${local.join(', --')} cannot apply with --upstream: the upstreams serve the model`);
  } else if (!values.model) {
    throw new Error('--model DIR, --model org/name or --upstream URL is required');
  }
  const own = {
    maxConcurrentRequests: int(values['max-concurrent-requests'], 'max-concurrent-requests'),
    bodyLimit: int(values['body-limit'], 'body-limit'),
    stallTimeoutMs: int(values['stall-timeout-ms'], 'stall-timeout-ms'),
  };
  const handler = createInferenceHandler(
    upstreams.length > 0
      ? { upstreams, ...own }
      : {
          model: values.model!,
          onProgress: progressPrinter(),
          dtype: dtypeOption(values.dtype),
          modelFile: values['model-file'],
          threads: int(values.threads, 'threads'),
          maxBatchSize: int(values['max-batch-size'], 'max-batch-size'),
          ...own,
        },
  );
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (handler.matches(path)) return void handler.handle(req, res, path);
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"Not found","error_type":"not_found"}');
  });
  const port = int(values.port, 'port')!;
  await new Promise<void>((resolve) => server.listen(port, values.host, resolve));
  const address = server.address();
  const url = `http://${values.host}:${typeof address === 'object' && address ? address.port : port}`;
  console.log(`Loading ${values.model ?? upstreams.join(', ')} ...`);
  const engine = await handler.ready();
  console.log(
    `Serving ${engine.info.modelId} at ${url} (try: curl -N ${url}/generate_stream -H 'content-type: application/json' -d '{"inputs":"Hello","parameters":{"max_new_tokens":20}}')`,
  );

  const drainTimeoutMs = int(values['drain-timeout-ms'], 'drain-timeout-ms');
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: finishing running requests (up to ${drainTimeoutMs} ms) ...`);
    server.close();
    await handler.close({ drainTimeoutMs });
    server.closeAllConnections();
    console.log('Stopped.');
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}

async function check(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      dtype: { type: 'string' },
      'model-file': { type: 'string' },
      threads: { type: 'string' },
      tokens: { type: 'string', default: '16' },
    },
  });
  if (!values.model) throw new Error('--model DIR or --model org/name is required');
  const { checkModel } = await import('./check.js');
  const options = {
    model: values.model,
    dtype: dtypeOption(values.dtype),
    onProgress: progressPrinter(),
    modelFile: values['model-file'],
    threads: int(values.threads, 'threads'),
  };
  const report = await checkModel(options, (line) => console.log(line), int(values.tokens, 'tokens'));
  if (!report.ok) process.exitCode = 1;
}

/** `download org/name`: for a Docker image, fetch at build time and serve offline. Prints the snapshot directory. */
async function download(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { dtype: { type: 'string' }, 'model-file': { type: 'string' } },
  });
  const id = positionals.length === 1 ? parseHubId(positionals[0]) : null;
  if (!id) {
    throw new Error(
      `download takes one Hub id, org/name, org/name/folder or either @revision, got ${JSON.stringify(positionals.join(' '))}`,
    );
  }
  const dtype = dtypeOption(values.dtype);
  const { dir } = await resolveHubModel(id, { dtype, modelFile: values['model-file'], onProgress: progressPrinter() });
  console.log(dir);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === 'serve') return serve(rest);
  if (command === 'download') return download(rest);
  if (command === 'check') return check(rest);
  if (command === 'fixture') {
    const { main: fixture } = await import('./fixture/cli.js');
    process.exitCode = await fixture(rest);
    return;
  }
  console.log(USAGE);
  if (command !== '--help' && command !== '-h') process.exitCode = 1;
}

main(process.argv.slice(2)).catch((error: Error) => {
  console.error(error.message);
  process.exit(1);
});
