/**
 * The command line with Hub ids, as a Docker build and an operator use it, against the stand-in Hub
 * (test/support/hub-server.ts): `download` at build time, then `serve` with HF_HUB_OFFLINE=1;
 * `check` by id; `npm start -- --model org/name`. Progress goes to stderr, one line per tenth when
 * it is not a terminal (test/unit/hub-progress.test.ts has the terminal's rewritten line).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { post } from '../conformance/http-client.js';
import { FakeHub, filesOf, hubEnv } from '../support/hub-server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REPO = 'acme/tiny';
const FOLDERED = 'acme/tiny-onnx';
const FOLDER = 'cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4';
const GREEDY = { inputs: 'Once upon a time', parameters: { max_new_tokens: 4, do_sample: false } };

let hub: FakeHub;
let cacheDir: string;
let commits: Record<string, string>;

beforeAll(async () => {
  hub = await new FakeHub().start();
  cacheDir = await mkdtemp(join(tmpdir(), 'hub-cli-'));
  const tiny = await filesOf(await ensureFixtureModel('tiny'));
  const variant: Record<string, Buffer> = {
    'genai_config.json': Buffer.from(JSON.stringify({ model: { type: 'llama', decoder: { filename: 'model.onnx' } } })),
  };
  for (const [path, bytes] of Object.entries(tiny)) if (path !== 'fixture.json') variant[path.replace(/^onnx\//, '')] = bytes;
  commits = {
    [REPO]: hub.addRepo(REPO, { ...tiny, 'onnx/model_q4.onnx': tiny['onnx/model.onnx'] }, { xet: true }),
    [FOLDERED]: hub.addRepo(FOLDERED, Object.fromEntries(Object.entries(variant).map(([path, bytes]) => [`${FOLDER}/${path}`, bytes]))),
  };
});
afterAll(async () => {
  await hub.close();
  await rm(cacheDir, { recursive: true, force: true });
});

/** The environment of a user whose Hugging Face cache is `cacheDir`, with no token. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...hubEnv(hub, cacheDir), ...extra };
}

function start(args: string[], extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: ROOT, env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  /** Resolves with the match once stdout has `pattern`; rejects if the process exits first. */
  const waitFor = async (pattern: RegExp): Promise<RegExpExecArray> => {
    for (let match: RegExpExecArray | null; ; await new Promise((r) => setTimeout(r, 50))) {
      if ((match = pattern.exec(out.stdout))) return match;
      if (child.exitCode !== null) throw new Error(`exited ${child.exitCode} before ${pattern}:\n${out.stdout}\n${out.stderr}`);
    }
  };
  return { child, out, exited, waitFor };
}

describe('streaming-inference with Hub ids', () => {
  it('download org/name/folder at build time, then serve it with HF_HUB_OFFLINE=1: no request reaches the Hub', async () => {
    const id = `${FOLDERED}/${FOLDER}`;
    const download = start(['src/cli.ts', 'download', id]);
    expect(await download.exited, download.out.stderr).toBe(0);
    const dir = join(cacheDir, 'models--acme--tiny-onnx', 'snapshots', commits[FOLDERED], ...FOLDER.split('/'));
    expect(download.out.stdout).toBe(`${dir}\n`);
    // Not a terminal (a build log): whole lines, the last one the total.
    expect(download.out.stderr).toMatch(/^Downloading acme\/tiny-onnx: 0% of [\d.]+ kB, .*\n/);
    expect(download.out.stderr).toMatch(/\nDownloaded acme\/tiny-onnx: [\d.]+ kB at [\d.]+ [kMG]B\/s\n$/);

    hub.requests.length = 0;
    const serve = start(['src/cli.ts', 'serve', '--model', id, '--port', '0'], { HF_HUB_OFFLINE: '1' });
    try {
      const [, modelId, url] = await serve.waitFor(/Serving (\S+) at (http:\/\/127\.0\.0\.1:\d+)/);
      expect(modelId).toBe(id);
      expect(await (await fetch(`${url}/info`)).json()).toMatchObject({ model_id: id });
      const res = await post(`${url}/generate`, GREEDY);
      expect(((await res.json()) as { generated_text: string }).generated_text.length).toBeGreaterThan(0);
    } finally {
      serve.child.kill('SIGTERM');
    }
    expect(await serve.exited).toBe(0);
    // Nothing to download, so no progress line.
    expect(serve.out.stderr).not.toContain('Download');
    expect(hub.requests).toEqual([]);
  });

  it('check --model org/name --dtype q4 downloads the q4 graph, then runs its self-test on it', async () => {
    const check = start(['src/cli.ts', 'check', '--model', REPO, '--dtype', 'q4', '--tokens', '4']);
    expect(await check.exited, check.out.stdout + check.out.stderr).toBe(0);
    const dir = join(cacheDir, 'models--acme--tiny', 'snapshots', commits[REPO]);
    expect(check.out.stdout).toContain(`Model      ${dir} (model_type llama)`);
    expect(check.out.stdout).toContain('onnx/model_q4.onnx');
    expect(check.out.stderr).toMatch(/\nDownloaded acme\/tiny: [\d.]+ kB at /);
  });

  it('npm start -- --model org/name --dtype q4 serves the demo with the model from the Hub', async () => {
    const demo = start(['examples/start-demo.ts', '--model', REPO, '--dtype', 'q4'], { PORT: '0' });
    try {
      const [, url] = await demo.waitFor(/^Demo: (http:\/\/127\.0\.0\.1:\d+)\//m);
      expect(demo.out.stdout.split('\n')[0]).toBe(`Loading ${REPO} (q4) ...`);
      expect(await (await fetch(`${url}/llm/info`)).json()).toMatchObject({ model_id: REPO });
    } finally {
      demo.child.kill('SIGTERM');
    }
    expect(await demo.exited).toBe(0);
  });
});
