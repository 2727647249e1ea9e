/**
 * A stand-in for the Hugging Face Hub on 127.0.0.1, for the tests of `src/hub`: the API calls
 * `@huggingface/hub` makes (`/api/models/{repo}/revision/{rev}`, `/api/models/{repo}/tree/{rev}`)
 * and the download URLs (`/{repo}/resolve/{rev}/{path}`), with the Hub's headers: `X-Repo-Commit`,
 * `ETag` (the git blob sha1 of a small file), a 302 to a CDN path with `X-Linked-Etag` (sha256) and
 * `X-Linked-Size` for an LFS file, range requests, `X-Error-Code` on errors, and 401/403 for a
 * gated repository. Faults on demand: a connection cut mid-body, corrupt bytes, a slow body.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir, readFile } from 'node:fs/promises';
import { join, sep } from 'node:path';

export interface RepoFile {
  path: string;
  bytes: Buffer;
  lfs: boolean;
  /** sha256 for LFS files, git blob sha1 for the others: what the Hub lists as the file's oid. */
  oid: string;
}

interface Repo {
  commit: string;
  files: Map<string, RepoFile>;
  gated: boolean;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

/**
 * Cut the connection after some bytes (`times` over; `settle` delays the cut until it resolves, given
 * the file offset the bytes sent end at); flip every byte; spread the body over a time; send some
 * bytes, then wait for `release`.
 */
type Fault =
  | { cutAfter: number; times?: number; settle?: (end: number) => Promise<void> }
  | { corrupt: true }
  | { slowMs: number }
  | { holdAfter: number; release: Promise<void> };

const LFS = /\.(onnx|onnx_data|bin|safetensors|gguf)$/;

export const GRANTED_TOKEN = 'hf_granted_token_for_tests';

function fileOf(path: string, bytes: Buffer): RepoFile {
  const lfs = LFS.test(path);
  const oid = lfs
    ? createHash('sha256').update(bytes).digest('hex')
    : createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
  return { path, bytes, lfs, oid };
}

/** Every file under `dir`, by its repository path. */
export async function filesOf(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    out[
      full
        .slice(dir.length + 1)
        .split(sep)
        .join('/')
    ] = await readFile(full);
  }
  return out;
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  private readonly repos = new Map<string, Repo>();
  private readonly faults = new Map<string, Fault>();
  private readonly server = createServer((req, res) => this.serve(req, res));
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Adds (or replaces) a repository; returns its commit hash. */
  addRepo(name: string, files: Record<string, Buffer>, options: { gated?: boolean } = {}): string {
    const map = new Map(Object.entries(files).map(([path, bytes]) => [path, fileOf(path, bytes)]));
    const commit = createHash('sha1')
      .update(JSON.stringify([name, ...[...map.values()].map((f) => [f.path, f.oid])]))
      .digest('hex');
    this.repos.set(name, { commit, files: map, gated: options.gated ?? false });
    return commit;
  }

  file(repo: string, path: string): RepoFile {
    return this.repos.get(repo)!.files.get(path)!;
  }

  /** The next download of the file misbehaves once. */
  fault(repo: string, path: string, fault: Fault): void {
    this.faults.set(`${repo}/${path}`, fault);
  }

  /** The repository paths whose bytes were requested (resolve URLs and CDN URLs alike), in order. */
  downloads(): string[] {
    return this.requests.filter((r) => r.method === 'GET' && !r.path.startsWith('/api/')).map((r) => r.path);
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    this.requests.push({ method: req.method!, path, range: req.headers.range ?? null, authorization: req.headers.authorization ?? null });
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(path);
    if (api) return this.serveApi(res, api[1], api[2], api[3]);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (resolve) return this.serveResolve(req, res, resolve[1], resolve[2], resolve[3]);
    const cdn = /^\/cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(path);
    if (cdn) {
      const file = this.repos.get(cdn[1])?.files.get(cdn[2]);
      if (file) return this.sendBytes(req, res, cdn[1], file, { ETag: `"${file.oid}"` });
    }
    error(res, 404, 'EntryNotFound', 'Not found');
  }

  private repo(res: ServerResponse, name: string, revision: string): Repo | null {
    const repo = this.repos.get(name);
    if (!repo) return error(res, 404, 'RepoNotFound', 'Repository not found');
    if (revision !== 'main' && revision !== 'HEAD' && revision !== repo.commit) {
      return error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    }
    return repo;
  }

  private serveApi(res: ServerResponse, name: string, kind: string, revision: string): void {
    const repo = this.repo(res, name, revision);
    if (!repo) return;
    if (kind === 'revision') {
      return json(res, 200, {
        _id: name,
        id: name,
        sha: repo.commit,
        private: false,
        gated: repo.gated ? 'manual' : false,
        downloads: 0,
        likes: 0,
        lastModified: '2026-01-01T00:00:00.000Z',
        pipeline_tag: 'text-generation',
      });
    }
    const dirs = new Set<string>();
    for (const path of repo.files.keys()) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    json(res, 200, [
      ...[...dirs].map((path) => ({ type: 'directory', oid: '0'.repeat(40), size: 0, path })),
      ...[...repo.files.values()].map((f) => ({
        type: 'file',
        oid: f.lfs ? createHash('sha1').update(f.oid).digest('hex') : f.oid,
        size: f.bytes.length,
        path: f.path,
        ...(f.lfs ? { lfs: { oid: f.oid, size: f.bytes.length, pointerSize: 134 } } : {}),
      })),
    ]);
  }

  private serveResolve(req: IncomingMessage, res: ServerResponse, name: string, revision: string, path: string): void {
    const repo = this.repo(res, name, revision);
    if (!repo) return;
    if (repo.gated && req.headers.authorization !== `Bearer ${GRANTED_TOKEN}`) {
      if (req.headers.authorization)
        return void error(res, 403, 'GatedRepo', `Access to model ${name} is restricted and you are not in the authorized list.`);
      return void error(
        res,
        401,
        'GatedRepo',
        `Access to model ${name} is restricted. You must have access to it and be authenticated to access it.`,
      );
    }
    const file = repo.files.get(path);
    if (!file) return void error(res, 404, 'EntryNotFound', `Entry not found`);
    const headers = { 'X-Repo-Commit': repo.commit };
    if (file.lfs) {
      res
        .writeHead(302, {
          ...headers,
          Location: `/cdn/${name}/${path}`,
          'X-Linked-Etag': `"${file.oid}"`,
          'X-Linked-Size': String(file.bytes.length),
          ETag: `"${createHash('sha1').update(file.oid).digest('hex')}"`,
          'Content-Length': 0,
        })
        .end();
      return;
    }
    this.sendBytes(req, res, name, file, { ...headers, ETag: `"${file.oid}"` });
  }

  private sendBytes(req: IncomingMessage, res: ServerResponse, repo: string, file: RepoFile, headers: Record<string, string>): void {
    const size = file.bytes.length;
    const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = match ? Number(match[1]) : 0;
    const end = match && match[2] ? Math.min(Number(match[2]), size - 1) : size - 1;
    if (start >= size) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end();
      return;
    }
    res.writeHead(match ? 206 : 200, {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Length': end - start + 1,
      'Content-Type': 'application/octet-stream',
      ...(match ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    let body = file.bytes.subarray(start, end + 1);
    // A probe (bytes=0-0) is not the download a fault is aimed at.
    const key = `${repo}/${file.path}`;
    const fault = end - start > 0 ? this.faults.get(key) : undefined;
    if (fault && !('times' in fault && fault.times! > 1)) this.faults.delete(key);
    else if (fault && 'times' in fault) fault.times!--;
    if (fault && 'corrupt' in fault) body = Buffer.from(body.map((b) => b ^ 0xff));
    if (fault && 'cutAfter' in fault) {
      // A FIN, not a reset. fetch() drops the chunks it has queued but not handed over when the body
      // ends early, so a test that needs bytes on disk before the cut waits for them with `settle`.
      const sent = body.subarray(0, fault.cutAfter);
      res.write(sent, () => void (fault.settle?.(start + sent.length) ?? Promise.resolve()).then(() => res.socket?.end()));
      return;
    }
    if (fault && 'holdAfter' in fault) {
      res.write(body.subarray(0, fault.holdAfter));
      void fault.release.then(() => res.end(body.subarray(fault.holdAfter)));
      return;
    }
    if (fault && 'slowMs' in fault) {
      const pieces = 10;
      const step = Math.ceil(body.length / pieces);
      let i = 0;
      const timer = setInterval(() => {
        if (res.destroyed) return clearInterval(timer);
        res.write(body.subarray(i * step, (i + 1) * step));
        if (++i === pieces) {
          clearInterval(timer);
          res.end();
        }
      }, fault.slowMs / pieces);
      return;
    }
    res.end(body);
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers }).end(JSON.stringify(body));
}

function error(res: ServerResponse, status: number, code: string, message: string): null {
  json(res, status, { error: message }, { 'X-Error-Code': code });
  return null;
}
