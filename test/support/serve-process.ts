/**
 * Our own `streaming-inference serve` as a real upstream process on 127.0.0.1: the built CLI
 * (`dist/cli.js`, which `npm test` builds first; `STREAMING_INFERENCE_CLI` points elsewhere), started
 * as an operator would, and stopped, frozen or killed as a failing machine would be.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CLI = process.env.STREAMING_INFERENCE_CLI ?? fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface ServeProcess {
  url: string;
  port: number;
  /** Everything it printed. */
  output(): string;
  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...). */
  signal(name: NodeJS.Signals): void;
  /** Starts it again on the same port, with the same arguments or new ones; stops it first if it runs. */
  restart(args?: string[]): Promise<void>;
  /** SIGKILL if still running, and wait for the exit. */
  close(): Promise<void>;
}

/**
 * @example
 * const upstream = await startServe(['--model', model, '--threads', '1', '--max-concurrent-requests', '2']);
 * const router = await startServe(['--upstream', upstream.url]);
 * await fetch(`${upstream.url}/health`);
 * await upstream.close();
 */
export async function startServe(args: string[], port = 0): Promise<ServeProcess> {
  let child: ChildProcess;
  let output = '';
  let url = '';

  const launch = async (onPort: number, using: string[]) => {
    output = '';
    child = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--port', String(onPort), ...using], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    // The banner names the port the system chose for --port 0, once the model is loaded.
    const deadline = Date.now() + 60_000;
    let match: RegExpExecArray | null = null;
    while (!(match = /Serving \S+ at (http:\/\/127\.0\.0\.1:\d+)/.exec(output))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`serve did not start:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    url = match[1];
  };
  await launch(port, args);

  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const close = async () => {
    if (exited()) return;
    const gone = once(child, 'exit');
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await gone;
  };
  return {
    get url() {
      return url;
    },
    get port() {
      return Number(new URL(url).port);
    },
    output: () => output,
    signal: (name) => void child.kill(name),
    async restart(next = args) {
      await close();
      args = next;
      await launch(Number(new URL(url).port), args);
    },
    close,
  };
}

/** Starts several at once (they load their models in parallel); if one fails, the others are stopped. */
export async function startServes(count: number, args: string[]): Promise<ServeProcess[]> {
  const started = await Promise.allSettled(Array.from({ length: count }, () => startServe(args)));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  const running = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  if (!failed) return running;
  await Promise.all(running.map((p) => p.close()));
  throw failed.reason;
}
