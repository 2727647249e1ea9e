/**
 * Models by Hub id, against a stand-in Hub on 127.0.0.1 (test/support/hub-server.ts) serving the
 * tiny fixture model in the Hub's URL and header layout, with a fresh Hugging Face cache per test.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ModelLoadError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { createInferenceHandler } from '../../src/http/handler.js';
import { openModelDir } from '../../src/engine/model-dir.js';
import { type HubSettings, parseHubId, resolveHubModel, resolveModelSource, type ResolveOptions } from '../../src/hub/index.js';
import type { DownloadProgress, Engine } from '../../src/types.js';
import { FakeHub, GRANTED_TOKEN, HUB_ENV_KEYS, UNGRANTED_TOKEN, filesOf, hubEnv } from '../support/hub-server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REPO = 'acme/tiny';
/** What a q4 load reads; the repository also has fp32 and fp16 graphs, special_tokens_map.json, a README and fixture.json. */
const Q4_FILES = ['config.json', 'generation_config.json', 'onnx/model_q4.onnx', 'tokenizer.json', 'tokenizer_config.json'];
/** A repository laid out as microsoft/Phi-4-mini-instruct-onnx: no model at the root, one per folder, with genai_config.json. */
const FOLDERED = 'acme/tiny-onnx';
const FOLDER = 'cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4';

let hub: FakeHub;
let commit: string;
let folderedCommit: string;
let fixture: Record<string, Buffer>;
let cacheDir: string;

beforeAll(async () => {
  hub = await new FakeHub().start();
  fixture = await filesOf(await ensureFixtureModel('tiny'));
  commit = hub.addRepo(
    REPO,
    {
      ...fixture,
      // A copy of the fp32 graph under the q4 name: it loads, and only a q4 load fetches it.
      'onnx/model_q4.onnx': fixture['onnx/model.onnx'],
      'onnx/model_fp16.onnx': Buffer.from('never downloaded'),
      'README.md': Buffer.from('# tiny\n'),
    },
    { refs: ['v1.0'] },
  );
  hub.addRepo('acme/tiny-external', await filesOf(await ensureFixtureModel('tiny', { externalData: true })));
  hub.addRepo('acme/gated', fixture, { gated: true });
  const external = await filesOf(await ensureFixtureModel('tiny', { externalData: true }));
  const genai = Buffer.from(JSON.stringify({ model: { type: 'llama', decoder: { filename: 'model.onnx' } } }));
  const variant: Record<string, Buffer> = { 'genai_config.json': genai };
  for (const [path, bytes] of Object.entries(external)) if (path !== 'fixture.json') variant[path.replace(/^onnx\//, '')] = bytes;
  folderedCommit = hub.addRepo(
    FOLDERED,
    {
      'README.md': Buffer.from('# tiny, one folder per variant\n'),
      ...Object.fromEntries(Object.entries(variant).map(([path, bytes]) => [`${FOLDER}/${path}`, bytes])),
      'cuda/cuda-fp16/genai_config.json': genai,
      'cuda/cuda-fp16/model.onnx': Buffer.from('never downloaded'),
    },
    { xet: true },
  );
});
afterAll(() => hub.close());
beforeEach(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'hub-cache-'));
  hub.requests.length = 0;
});
afterEach(() => rm(cacheDir, { recursive: true, force: true }));

function load(model: string, options: ResolveOptions = {}, settings: Partial<HubSettings> = {}) {
  return resolveHubModel(parseHubId(model)!, {
    ...options,
    settings: { endpoint: hub.url, cacheDir, token: undefined, offline: false, ...settings },
  });
}

/** The repository paths whose bytes were requested, each once. */
function fetched(repo = REPO): string[] {
  const paths = hub.downloads().map((path) => path.replace(new RegExp(`^/(cdn/${repo}|${repo}/resolve/[^/]+)/`), ''));
  return [...new Set(paths)].sort();
}

async function snapshotFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir, { recursive: true });
  const files = [];
  for (const name of names) if ((await stat(join(dir, name))).isFile()) files.push(name);
  return files.sort();
}

async function failure(promise: Promise<unknown>): Promise<ModelLoadError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ModelLoadError);
  return error as ModelLoadError;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 20));
}

describe('a model by Hub id', () => {
  it('downloads exactly the files its dtype needs; a second load asks the API only', async () => {
    const progress: DownloadProgress[] = [];
    const first = await load(REPO, { dtype: 'q4', onProgress: (p) => progress.push(p) });
    expect(first).toEqual({ dir: join(cacheDir, 'models--acme--tiny', 'snapshots', commit), repo: REPO, revision: 'main', commit });
    expect(fetched()).toEqual(Q4_FILES);
    expect(await snapshotFiles(first.dir)).toEqual(Q4_FILES);
    expect(await readFile(join(cacheDir, 'models--acme--tiny', 'refs', 'main'), 'utf8')).toBe(commit);
    const total = Q4_FILES.reduce((sum, path) => sum + hub.file(REPO, path).bytes.length, 0);
    expect(progress.at(-1)).toMatchObject({ repo: REPO, downloadedBytes: total, totalBytes: total, done: true });

    hub.requests.length = 0;
    progress.length = 0;
    expect(await load(REPO, { dtype: 'q4', onProgress: (p) => progress.push(p) })).toEqual(first);
    expect(hub.requests.map((r) => r.path)).toEqual([`/api/models/${REPO}/revision/main`, `/api/models/${REPO}/tree/${commit}`]);
    expect(progress).toEqual([]);
  });

  it('loads offline from the cache, with no request at all, and says what the cache lacks', async () => {
    const online = await load(REPO, { dtype: 'q4' });
    hub.requests.length = 0;
    expect(await load(REPO, { dtype: 'q4' }, { offline: true })).toEqual(online);
    expect(hub.requests).toEqual([]);

    const fp16 = await failure(load(REPO, { dtype: 'fp16' }, { offline: true }));
    expect(fp16.message).toMatch(
      /^HF_HUB_OFFLINE=1, and the cached snapshot of acme\/tiny@main does not have it: .*onnx\/model_fp16\.onnx not found \(dtype "fp16".*dtypes present: q4 \(onnx\/model_q4\.onnx\)/,
    );
    const never = await failure(load('acme/tiny-external', {}, { offline: true }));
    expect(never.message).toBe(
      `HF_HUB_OFFLINE=1, and acme/tiny-external@main is not in the Hugging Face cache ${cacheDir}. ` +
        'Fetch it with network first: streaming-inference download acme/tiny-external',
    );
    expect(hub.requests).toEqual([]);
  });

  it('falls back to the cache when the Hub cannot be reached, and says so when the cache lacks the model', async () => {
    const online = await load(REPO, { dtype: 'q4' });
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const unreachable = { endpoint: `http://127.0.0.1:${port}` };
    expect(await load(REPO, { dtype: 'q4' }, unreachable)).toEqual(online);
    const error = await failure(load('acme/gated', {}, unreachable));
    expect(error.message).toMatch(
      /^acme\/gated@main: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\), and acme\/gated@main is not in the Hugging Face cache/,
    );
  });

  it('finds a cache written by Python huggingface_hub (relative links, refs for a branch and a tag, a commit without a ref) and downloads nothing', async () => {
    // As huggingface_hub 0.2x/1.x writes it: blobs named by etag, snapshot entries as links relative to
    // their own folder (os.path.relpath), refs/<branch or tag> holding the commit, .no_exist/ for
    // files found missing, and the lock files its filelock leaves behind.
    const folder = join(cacheDir, 'models--acme--tiny');
    const files = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'];
    await mkdir(join(folder, 'blobs'), { recursive: true });
    await mkdir(join(folder, 'refs'));
    await writeFile(join(folder, 'refs', 'main'), commit);
    await writeFile(join(folder, 'refs', 'v1.0'), commit);
    await mkdir(join(folder, '.no_exist', commit), { recursive: true });
    await writeFile(join(folder, '.no_exist', commit, 'chat_template.jinja'), '');
    await mkdir(join(cacheDir, '.locks', 'models--acme--tiny'), { recursive: true });
    const links: Record<string, string> = {};
    for (const path of files) {
      const { oid, bytes } = hub.file(REPO, path);
      await writeFile(join(folder, 'blobs', oid), bytes);
      await writeFile(join(cacheDir, '.locks', 'models--acme--tiny', `${oid}.lock`), '');
      const link = join(folder, 'snapshots', commit, path);
      await mkdir(join(link, '..'), { recursive: true });
      links[path] = path.includes('/') ? `../../../blobs/${oid}` : `../../blobs/${oid}`;
      await symlink(links[path], link);
    }
    const inodes = async () => Promise.all(files.map(async (path) => (await lstat(join(folder, 'snapshots', commit, path))).ino));
    const before = await inodes();

    const dir = join(folder, 'snapshots', commit);
    for (const model of [REPO, `${REPO}@v1.0`, `${REPO}@${commit}`]) expect((await load(model)).dir, model).toBe(dir);
    expect(hub.downloads()).toEqual([]);
    hub.requests.length = 0;
    for (const model of [REPO, `${REPO}@v1.0`, `${REPO}@${commit}`]) {
      expect((await load(model, {}, { offline: true })).dir, model).toBe(dir);
    }
    expect(hub.requests).toEqual([]);
    // Python's links are used as they are, not rewritten.
    for (const path of files) expect(await readlink(join(dir, path))).toBe(links[path]);
    expect(await inodes()).toEqual(before);
    // A commit-hash revision writes no ref; the branch and the tag keep theirs.
    expect((await readdir(join(folder, 'refs'))).sort()).toEqual(['main', 'v1.0']);
  });

  it('writes what Python huggingface_hub reads: relative links into blobs/, refs/<revision> holding the commit', async () => {
    const { dir } = await load(`${REPO}@v1.0`, { dtype: 'q4' });
    const folder = join(cacheDir, 'models--acme--tiny');
    expect(await readFile(join(folder, 'refs', 'v1.0'), 'utf8')).toBe(commit);
    for (const path of Q4_FILES) {
      const { oid } = hub.file(REPO, path);
      expect(await readlink(join(dir, path)), path).toBe(`${path.includes('/') ? '../../../' : '../../'}blobs/${oid}`);
    }
    expect((await readdir(join(folder, 'blobs'))).sort()).toEqual(Q4_FILES.map((path) => hub.file(REPO, path).oid).sort());
  });

  it('pins a revision: a commit hash loads without a ref, an unknown revision is a 404', async () => {
    const { dir } = await load(`${REPO}@${commit}`, { dtype: 'q4' });
    expect(dir).toBe(join(cacheDir, 'models--acme--tiny', 'snapshots', commit));
    expect(await stat(join(cacheDir, 'models--acme--tiny', 'refs')).catch(() => null)).toBeNull();
    const error = await failure(load(`${REPO}@v9`));
    expect(error.message).toMatch(/^acme\/tiny@v9 not found at http:\/\/127\.0\.0\.1:\d+ \(404: Invalid rev id: v9\)/);
  });

  it('fetches the external data file beside the graph', async () => {
    const { dir } = await load('acme/tiny-external');
    expect(await snapshotFiles(dir)).toEqual([
      'config.json',
      'generation_config.json',
      'onnx/model.onnx',
      'onnx/model.onnx_data',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
  });
});

describe('a model in a folder of the repository', () => {
  it('loads org/name/folder: only the files of that folder, from its folder of the snapshot, online and offline', async () => {
    const id = `${FOLDERED}/${FOLDER}`;
    const { dir } = await load(id);
    expect(dir).toBe(join(cacheDir, 'models--acme--tiny-onnx', 'snapshots', folderedCommit, ...FOLDER.split('/')));
    const needed = ['config.json', 'generation_config.json', 'genai_config.json', 'model.onnx', 'model.onnx_data', 'tokenizer.json'];
    expect(fetched(FOLDERED)).toEqual([...needed, 'tokenizer_config.json'].map((path) => `${FOLDER}/${path}`).sort());
    // The loader opens the folder as a directory: genai_config.json names the graph, its data is beside it.
    expect((await openModelDir(dir)).onnxFile).toBe(join(dir, 'model.onnx'));
    hub.requests.length = 0;
    expect((await load(id, {}, { offline: true })).dir).toBe(dir);
    expect(hub.requests).toEqual([]);
    const settings = { endpoint: hub.url, cacheDir, token: undefined, offline: true };
    expect(await resolveModelSource(id, { settings })).toEqual({ dir, modelId: id });
  });

  it('names the folders that hold a model when the id names none of them', async () => {
    const folders = `${FOLDER}, cuda/cuda-fp16: name one after the id, as in ${FOLDERED}/${FOLDER}`;
    expect((await failure(load(FOLDERED))).message).toBe(
      `${FOLDERED}@main has neither config.json nor genai_config.json at its root. Its models are in the folders ${folders}`,
    );
    expect((await failure(load(`${FOLDERED}/cpu_and_mobile`))).message).toBe(
      `${FOLDERED}@main/cpu_and_mobile has neither config.json nor genai_config.json. Its models are in the folders ${folders}`,
    );
    expect((await failure(load(`${FOLDERED}/cpu@${folderedCommit}`))).message).toBe(
      `${FOLDERED}@${folderedCommit} has no folder cpu. Its models are in the folders ${FOLDER}, cuda/cuda-fp16: ` +
        `name one after the id, as in ${FOLDERED}/${FOLDER}@${folderedCommit}`,
    );
    expect(fetched(FOLDERED)).toEqual([]);
  });
});

describe('bad input', () => {
  it('a dtype the repository does not ship: lists the ones it has, and downloads no graph', async () => {
    const error = await failure(load(REPO, { dtype: 'q8' }));
    expect(error.message).toBe(
      'acme/tiny@main/onnx/model_quantized.onnx not found (dtype "q8"; nor model_quantized.onnx, onnx/decoder_model_merged_quantized.onnx, ' +
        'decoder_model_merged_quantized.onnx): dtypes present: fp32 (onnx/model.onnx), fp16 (onnx/model_fp16.onnx), q4 (onnx/model_q4.onnx)',
    );
    expect(fetched().filter((path) => path.endsWith('.onnx'))).toEqual([]);
  });

  it('a repository that does not exist: 401 without a token, 404 with one, and nothing is written to the cache', async () => {
    // Without a token the Hub answers a missing repository as a private one: 401, "Repository not found".
    const error = await failure(load('acme/nope'));
    expect(error.message).toBe(
      `acme/nope@main not found at ${hub.url} (401: Repository not found). Check the id; if it is a private repository, ` +
        'set HF_TOKEN to a token with access. No local directory of that name exists either.',
    );
    const withToken = await failure(load('acme/nope', {}, { token: UNGRANTED_TOKEN }));
    expect(withToken.message).toBe(
      `acme/nope@main not found at ${hub.url} (404: Repository not found). Check the id and revision; ` +
        'a private repository needs a token with access to it. No local directory of that name exists either.',
    );
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('a snapshot entry that cannot be written: names the repository and the file', async () => {
    // Something that is not a file where the link goes (a folder someone made by hand).
    await mkdir(join(cacheDir, 'models--acme--tiny', 'snapshots', commit, 'config.json'), { recursive: true });
    const error = await failure(load(REPO, { dtype: 'q4' }));
    expect(error.message).toMatch(/^config\.json of acme\/tiny@main: .*config\.json/);
  });

  it('a token the Hub does not know: says so, rather than that the repository is missing or gated', async () => {
    const error = await failure(load(REPO, {}, { token: 'hf_revoked' }));
    expect(error.message).toMatch(
      /^acme\/tiny@main: the Hub refused the token \(401: Invalid credentials in Authorization header\)\. Check HF_TOKEN/,
    );
  });

  it('a gated repository: 401 without a token names the file and HF_TOKEN; the token is sent when set', async () => {
    const error = await failure(load('acme/gated'));
    expect(error.message).toMatch(
      /^config\.json of acme\/gated@main: the Hub refused it without a token \(401: Access to model acme\/gated is restricted/,
    );
    expect(error.message).toContain(
      `set HF_TOKEN to a token with access (for a gated model, accept its conditions at ${hub.url}/acme/gated first)`,
    );
    const { dir } = await load('acme/gated', {}, { token: GRANTED_TOKEN });
    expect(await snapshotFiles(dir)).toContain('onnx/model.onnx');
  });
});

describe('two processes at once', () => {
  it('share one download: `streaming-inference download` in another process waits for the blob this one is writing', async () => {
    let release!: () => void;
    hub.fault(REPO, 'onnx/model_q4.onnx', { holdAfter: 100_000, release: new Promise<void>((r) => (release = r)) });
    const here = load(REPO, { dtype: 'q4' });
    await until(() => hub.requests.some((r) => r.path === '/cdn/acme/tiny/onnx/model_q4.onnx' && r.range === null));

    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'download', REPO, '--dtype', 'q4'], {
      cwd: ROOT,
      env: { ...process.env, ...hubEnv(hub, cacheDir) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // The other process has listed the repository: next it finds the small files cached and waits on the graph's lock.
    await until(() => hub.requests.filter((r) => r.path.includes('/tree/')).length === 2 || child.exitCode !== null);
    release();
    const [{ dir }, [code]] = await Promise.all([here, once(child, 'exit')]);
    // Whether the child prints a progress line depends on who finishes first; what matters is one body.
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).toBe(dir);
    const bodies = hub.requests.filter((r) => r.path === '/cdn/acme/tiny/onnx/model_q4.onnx' && r.range !== 'bytes=0-0');
    expect(bodies).toHaveLength(1);
    expect((await readFile(join(dir, 'onnx/model_q4.onnx'))).equals(fixture['onnx/model.onnx'])).toBe(true);
  });
});

describe('the engine', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of HUB_ENV_KEYS) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  async function greedy(engine: Engine): Promise<string> {
    let text = '';
    for await (const event of engine.generate({ inputs: 'Once upon a time', parameters: { max_new_tokens: 8, do_sample: false } })) {
      text += event.token.text;
    }
    return text;
  }

  it('generates from a model given by id, as from the same files in a directory; /health is 503 while it downloads', async () => {
    Object.assign(process.env, hubEnv(hub, cacheDir));
    let release!: () => void;
    hub.fault(REPO, 'onnx/model_q4.onnx', { holdAfter: 100_000, release: new Promise<void>((r) => (release = r)) });
    const progress: DownloadProgress[] = [];
    const handler = createInferenceHandler({ model: REPO, dtype: 'q4', onProgress: (p) => progress.push(p), metrics: false });
    await until(() => progress.some((p) => p.file === 'onnx/model_q4.onnx'));
    const health = await serve(handler, '/health');
    const info = await serve(handler, '/info');
    release();
    expect(health.status).toBe(503);
    expect(info.status).toBe(503);
    expect(JSON.parse(info.body).error).toMatch(
      /^Model is loading: Downloading acme\/tiny: \d+% of \d+\.\d kB, .* \(onnx\/model_q4\.onnx\)$/,
    );

    const byId = await handler.ready();
    const byDir = await createEngine({ model: await ensureFixtureModel('tiny') });
    try {
      expect(byId.info.modelId).toBe(REPO);
      expect(byId.info.onnxFile).toBe(join(cacheDir, 'models--acme--tiny', 'snapshots', commit, 'onnx', 'model_q4.onnx'));
      const text = await greedy(byId);
      expect(text.length).toBeGreaterThan(0);
      expect(text).toBe(await greedy(byDir));
      expect((await serve(handler, '/health')).status).toBe(200);
    } finally {
      await Promise.all([handler.close(), byDir.close()]);
    }
  });
});

/** One request through the handler on a real server. */
async function serve(handler: ReturnType<typeof createInferenceHandler>, path: string): Promise<{ status: number; body: string }> {
  const server = createServer((req, res) => void handler.handle(req, res, path));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  } finally {
    server.close();
  }
}
