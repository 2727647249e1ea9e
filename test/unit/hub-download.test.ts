import { randomBytes } from 'node:crypto';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { appendFile, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { scanCachedRepo } from '@huggingface/hub';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../../src/errors.js';
import { RepoCache } from '../../src/hub/cache-layout.js';
import { type RemoteFile, cacheFile } from '../../src/hub/download.js';
import { withFileLock } from '../../src/hub/file-lock.js';
import { ProgressMeter } from '../../src/hub/progress.js';
import { hubSettings } from '../../src/hub/settings.js';
import type { DownloadProgress } from '../../src/types.js';
import { FakeHub, GRANTED_TOKEN, UNGRANTED_TOKEN } from '../support/hub-server.js';

const REPO = 'acme/tiny';
const weights = randomBytes(300_000);
const config = Buffer.from('{"model_type":"llama"}\n');

let hub: FakeHub;
const commits: Record<string, string> = {};
let commit: string;
let cacheDir: string;

beforeAll(async () => {
  hub = await new FakeHub().start();
  commit = hub.addRepo(REPO, { 'onnx/model.onnx': weights, 'config.json': config });
  commits[REPO] = commit;
  commits['acme/gated'] = hub.addRepo('acme/gated', { 'config.json': config }, { gated: true });
  // Most of the Hub's LFS files are stored in Xet now: resolve describes them in JSON to a client
  // that asks for it, and redirects a plain GET to the Xet bridge.
  commits['acme/xet'] = hub.addRepo('acme/xet', { 'onnx/model.onnx': weights, 'config.json': config }, { xet: true });
  commits['acme/gated-lfs'] = hub.addRepo('acme/gated-lfs', { 'onnx/model.onnx': weights }, { gated: true });
  commits['acme/gated-xet'] = hub.addRepo('acme/gated-xet', { 'onnx/model.onnx': weights }, { gated: true, xet: true });
});
afterAll(() => hub.close());
beforeEach(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'hub-download-'));
  hub.requests.length = 0;
});
afterEach(() => rm(cacheDir, { recursive: true, force: true }));

function remote(repo: string, path: string): RemoteFile {
  const { size, oid, lfs } = { ...hub.file(repo, path), size: hub.file(repo, path).bytes.length };
  return { path, size, oid, lfs };
}

function context(repo = REPO, token?: string, progress: DownloadProgress[] = []) {
  const settings = hubSettings({ endpoint: hub.url, cacheDir, token, offline: false });
  const meter = new ProgressMeter(repo, (p) => progress.push(p));
  return {
    cache: new RepoCache(cacheDir, repo),
    commit: commits[repo],
    settings,
    target: { repo, revision: 'main', endpoint: hub.url },
    meter,
  };
}

const snapshotFile = (path: string) => join(cacheDir, 'models--acme--tiny', 'snapshots', commit, path);
const blobs = () => readdir(join(cacheDir, 'models--acme--tiny', 'blobs')).catch(() => [] as string[]);

/** Resolves once the partial file holds `end` bytes: the cut then comes after the client has written them. */
async function partialReaches(file: RemoteFile, end: number, repo = REPO): Promise<void> {
  const partial = join(cacheDir, `models--${repo.replace('/', '--')}`, 'blobs', `${file.oid}.incomplete`);
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 5))) {
    if (((await stat(partial).catch(() => null))?.size ?? 0) >= end) return;
  }
}

describe('cacheFile', () => {
  it('follows the redirect of an LFS file into blobs/<sha256>, linked from the snapshot as huggingface_hub lays it out', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    const progress: DownloadProgress[] = [];
    const ctx = context(REPO, undefined, progress);
    ctx.meter.expect(file.size);
    await cacheFile(file, ctx);
    ctx.meter.finish();

    expect((await readFile(snapshotFile('onnx/model.onnx'))).equals(weights)).toBe(true);
    expect(await readlink(snapshotFile('onnx/model.onnx'))).toBe(`../../../blobs/${file.oid}`);
    expect(await blobs()).toEqual([file.oid]);
    // The library's probe (bytes=0-0) resolves the redirect; the bytes come from the CDN path in one GET.
    expect(hub.downloads()).toEqual([
      '/acme/tiny/resolve/' + commit + '/onnx/model.onnx',
      '/cdn/acme/tiny/onnx/model.onnx',
      '/cdn/acme/tiny/onnx/model.onnx',
    ]);
    expect(progress.at(-1)).toMatchObject({ repo: REPO, downloadedBytes: file.size, totalBytes: file.size, done: true });
    // @huggingface/hub's own cache scanner reads what we wrote (it does not look into snapshot subfolders).
    await cacheFile(remote(REPO, 'config.json'), ctx);
    await ctx.cache.writeRef('main', commit);
    const scanned = await scanCachedRepo(join(cacheDir, 'models--acme--tiny'));
    expect(scanned.revisions[0]).toMatchObject({ commitOid: commit, refs: ['main'] });
    expect(scanned.revisions[0].files.map((f) => [f.path, f.blob.size])).toEqual([[snapshotFile('config.json'), config.length]]);
  });

  it('downloads a Xet-backed file: the probe gets its JSON description, each ranged GET the redirect to the bridge', async () => {
    const file = remote('acme/xet', 'onnx/model.onnx');
    hub.fault('acme/xet', 'onnx/model.onnx', { cutAfter: 100_000, settle: (end) => partialReaches(file, end, 'acme/xet') });
    await cacheFile(file, context('acme/xet'));
    const snapshot = join(cacheDir, 'models--acme--xet', 'snapshots', commits['acme/xet'], 'onnx/model.onnx');
    expect((await readFile(snapshot)).equals(weights)).toBe(true);
    expect(await readlink(snapshot)).toBe(`../../../blobs/${file.oid}`);
    const resolves = hub.requests.filter((r) => r.origin === 'hub' && r.path.includes('/resolve/'));
    // Each attempt probes again (a bridge URL is signed for a while only), then GETs through the redirect.
    expect(resolves.map((r) => r.range)).toEqual(['bytes=0-0', null, 'bytes=0-0', 'bytes=100000-']);
    const bridge = hub.requests.filter((r) => r.origin === 'cdn');
    expect(bridge.map((r) => r.range)).toEqual([null, 'bytes=100000-']);
  });

  it('sends the token to the Hub only, never to the CDN or Xet bridge on the other origin its redirects lead to', async () => {
    for (const repo of ['acme/gated-lfs', 'acme/gated-xet']) {
      hub.requests.length = 0;
      const file = remote(repo, 'onnx/model.onnx');
      await cacheFile(file, context(repo, GRANTED_TOKEN));
      const blob = join(cacheDir, `models--${repo.replace('/', '--')}`, 'blobs', file.oid);
      expect((await readFile(blob)).equals(weights), repo).toBe(true);
      const onHub = hub.requests.filter((r) => r.origin === 'hub');
      const onCdn = hub.requests.filter((r) => r.origin === 'cdn');
      expect(onHub.length, repo).toBeGreaterThan(0);
      expect(onCdn.length, repo).toBeGreaterThan(0);
      expect(new Set(onHub.map((r) => r.authorization)), repo).toEqual(new Set([`Bearer ${GRANTED_TOKEN}`]));
      expect(new Set(onCdn.map((r) => r.authorization)), repo).toEqual(new Set([null]));
    }
  });

  it('names a small file by its git blob sha1, as the Hub etag does', async () => {
    const file = remote(REPO, 'config.json');
    expect(file.lfs).toBe(false);
    await cacheFile(file, context());
    expect(await blobs()).toEqual([file.oid]);
    expect(await readFile(snapshotFile('config.json'), 'utf8')).toBe(config.toString());
  });

  it('resumes with a Range request when the server cuts the connection mid-body', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    hub.fault(REPO, 'onnx/model.onnx', { cutAfter: 100_000, settle: (end) => partialReaches(file, end) });
    await cacheFile(file, context());
    expect((await readFile(snapshotFile('onnx/model.onnx'))).equals(weights)).toBe(true);
    const ranges = hub.requests.filter((r) => r.path.startsWith('/cdn/')).map((r) => r.range);
    expect(ranges[0]).toBe('bytes=0-0');
    expect(ranges[1]).toBeNull();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(ranges.at(-1)!)![1]);
    expect(resumedAt).toBe(100_000);
  });

  it('gives up after five broken attempts, names the file and keeps the bytes for the next load', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    hub.fault(REPO, 'onnx/model.onnx', { cutAfter: 10_000, times: 5, settle: (end) => partialReaches(file, end) });
    const error = await cacheFile(file, context()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    const partial = join(cacheDir, 'models--acme--tiny', 'blobs', `${file.oid}.incomplete`);
    const kept = (await stat(partial)).size;
    expect(kept).toBe(50_000);
    expect((error as Error).message).toBe(
      `onnx/model.onnx of acme/tiny: the download broke off at ${kept} of 300000 bytes after 5 attempts (other side closed). ` +
        `The partial file ${partial} is kept; loading again resumes it.`,
    );
    expect(await blobs()).toEqual([`${file.oid}.incomplete`]);
    await cacheFile(file, context());
    expect((await readFile(snapshotFile('onnx/model.onnx'))).equals(weights)).toBe(true);
    expect(hub.requests.at(-1)!.range).toBe(`bytes=${kept}-`);
  });

  it('stores an empty file', async () => {
    const empty = hub.addRepo('acme/empty', { 'added_tokens.json': Buffer.alloc(0) });
    const file = remote('acme/empty', 'added_tokens.json');
    await cacheFile(file, { ...context('acme/empty'), commit: empty });
    expect(await readFile(join(cacheDir, 'models--acme--empty', 'snapshots', empty, 'added_tokens.json'))).toHaveLength(0);
  });

  it('resumes the .incomplete file an interrupted process left, and counts it as already there', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    await mkdir(join(cacheDir, 'models--acme--tiny', 'blobs'), { recursive: true });
    await writeFile(join(cacheDir, 'models--acme--tiny', 'blobs', `${file.oid}.incomplete`), weights.subarray(0, 123_456));
    const progress: DownloadProgress[] = [];
    const ctx = context(REPO, undefined, progress);
    ctx.meter.expect(file.size);
    await cacheFile(file, ctx);
    ctx.meter.finish();
    expect((await readFile(snapshotFile('onnx/model.onnx'))).equals(weights)).toBe(true);
    expect(hub.requests.filter((r) => r.path.startsWith('/cdn/')).map((r) => r.range)).toEqual(['bytes=0-0', 'bytes=123456-']);
    expect(progress[0].downloadedBytes).toBe(123_456);
  });

  it('refuses bytes whose sha256 differs from the listing, and keeps nothing of them', async () => {
    hub.fault(REPO, 'onnx/model.onnx', { corrupt: true });
    const error = await cacheFile(remote(REPO, 'onnx/model.onnx'), context()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toMatch(
      /^onnx\/model\.onnx of acme\/tiny@main failed verification: got 300000 bytes with sha256 [0-9a-f]{64}, the Hub lists 300000 bytes/,
    );
    expect(await blobs()).toEqual([]);
    expect(await stat(snapshotFile('onnx/model.onnx')).catch(() => null)).toBeNull();
  });

  it('refuses a partial file that another program appended to meanwhile, as huggingface_hub resuming the same .incomplete would', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    const partial = join(cacheDir, 'models--acme--tiny', 'blobs', `${file.oid}.incomplete`);
    let release!: () => void;
    hub.fault(REPO, 'onnx/model.onnx', { holdAfter: 100_000, release: new Promise<void>((r) => (release = r)) });
    const download = cacheFile(file, context()).then(
      () => null,
      (e: unknown) => e,
    );
    await partialReaches(file, 100_000);
    await appendFile(partial, weights.subarray(100_000, 150_000));
    release();
    const error = await download;
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toBe(
      `onnx/model.onnx of acme/tiny@main: ${partial} holds 350000 bytes, not the 300000 this download wrote: another program ` +
        'wrote to it at the same time. The download was discarded; loading again fetches it anew.',
    );
    expect(await blobs()).toEqual([]);
  });

  it('reports a full disk as a ModelLoadError naming the file, and no blob appears', async () => {
    const file = remote(REPO, 'onnx/model.onnx');
    const blobDir = join(cacheDir, 'models--acme--tiny', 'blobs');
    await mkdir(blobDir, { recursive: true });
    // A real ENOSPC from the kernel: the partial file is /dev/full, which refuses every write.
    await symlink('/dev/full', join(blobDir, `${file.oid}.incomplete`));
    const error = await cacheFile(file, context()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toContain(
      `onnx/model.onnx of acme/tiny: cannot write ${blobDir}/${file.oid}.incomplete: the disk is full`,
    );
    expect(await blobs()).toEqual([`${file.oid}.incomplete`]);
  });

  it('lets two loads at once share one download: the second waits for the first blob', async () => {
    hub.fault(REPO, 'onnx/model.onnx', { slowMs: 500 });
    const file = remote(REPO, 'onnx/model.onnx');
    await Promise.all([cacheFile(file, context()), cacheFile(file, context())]);
    expect((await readFile(snapshotFile('onnx/model.onnx'))).equals(weights)).toBe(true);
    const bodies = hub.requests.filter((r) => r.path.startsWith('/cdn/') && r.range !== 'bytes=0-0');
    expect(bodies).toHaveLength(1);
    expect(await readdir(join(cacheDir, '.locks', 'models--acme--tiny'))).toEqual([]);
  });

  it('asks for a token on a gated repository (401), refuses one without access (403), and sends it', async () => {
    const file = remote('acme/gated', 'config.json');
    const without = await cacheFile(file, context('acme/gated')).catch((e: unknown) => e);
    expect(without).toBeInstanceOf(ModelLoadError);
    expect((without as Error).message).toMatch(
      /^config\.json of acme\/gated@main: the Hub refused it without a token \(401: Access to model acme\/gated is restricted.*set HF_TOKEN/,
    );
    const denied = await cacheFile(file, context('acme/gated', UNGRANTED_TOKEN)).catch((e: unknown) => e);
    expect((denied as Error).message).toMatch(/^config\.json of acme\/gated@main: the token has no access \(403/);
    await cacheFile(file, context('acme/gated', GRANTED_TOKEN));
    expect(hub.requests.at(-1)!.authorization).toBe(`Bearer ${GRANTED_TOKEN}`);
  });
});

describe('withFileLock', () => {
  it('never takes over a lock that a process holds with flock(2), as huggingface_hub does, however old its file', async () => {
    const lock = join(cacheDir, 'y.lock');
    await writeFile(lock, ''); // what Python's filelock creates, and leaves behind when done
    // util-linux flock(1) without a fork: the process that holds the lock is the one killed below.
    const holder = spawn('flock', ['--exclusive', '--no-fork', lock, 'sleep', '60'], { stdio: 'ignore' });
    try {
      while (!(await readFile('/proc/locks', 'utf8')).includes(` ${holder.pid} `)) await new Promise((r) => setTimeout(r, 10));
      const old = new Date(Date.now() - 60_000);
      await utimes(lock, old, old);
      let ran = false;
      const task = withFileLock(lock, async () => {
        ran = true;
      });
      await new Promise((r) => setTimeout(r, 500));
      expect(ran).toBe(false);
      holder.kill();
      await task;
      expect(ran).toBe(true);
    } finally {
      holder.kill();
    }
  });

  it('takes over a lock whose holder died', async () => {
    const lock = join(cacheDir, 'x.lock');
    // A pid far above pid_max on Linux: no such process.
    await writeFile(lock, `${hostname()} 99999999`);
    expect(await withFileLock(lock, async () => (await readFile(lock, 'utf8')).split(' ')[1])).toBe(String(process.pid));
    expect(await lstat(lock).catch(() => null)).toBeNull();
  });
});
