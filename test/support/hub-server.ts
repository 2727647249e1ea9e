/**
 * A stand-in for the Hugging Face Hub on 127.0.0.1, for the tests of `src/hub`: the API calls
 * `@huggingface/hub` makes (`/api/models/{repo}/revision/{rev}`, `/api/models/{repo}/tree/{rev}[/{path}]`)
 * and the download URLs (`/{repo}/resolve/{rev}/{path}`), with the Hub's headers: `X-Repo-Commit`,
 * `ETag` (the git blob sha1 of a small file), and for an LFS file `X-Linked-Etag` (sha256) and
 * `X-Linked-Size` with a 302 to a CDN on another origin (a second port), as huggingface.co sends
 * to cdn-lfs.hf.co or, for a Xet-backed file, cas-bridge.xethub.hf.co. A Xet file asked for with
 * `Accept: application/vnd.xet-fileinfo+json` (as `fileDownloadInfo` does) is described in JSON
 * instead of redirected. Range requests; errors with `X-Error-Code` and `X-Error-Message` (JSON
 * from the API, text from resolve); a missing repository is a 401 without a token and a 404 with
 * one, an unknown token a 401, and a gated repository 401 without a token, 403 without access.
 * Faults on demand: a connection cut mid-body, corrupt bytes, a slow body, a held body.
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
  /** Its LFS files are stored in Xet, as most of the Hub's are now. */
  xet: boolean;
  /** Branches and tags besides `main`, all at the one commit. */
  refs: string[];
}

export interface LoggedRequest {
  /** `hub` for the Hub's own origin, `cdn` for the one its redirects lead to. */
  origin: 'hub' | 'cdn';
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

/** A token with access to the gated repositories. */
export const GRANTED_TOKEN = 'hf_granted_token_for_tests';
/** A valid token whose user has not been granted access to the gated repositories. */
export const UNGRANTED_TOKEN = 'hf_no_access';

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

/** The variables through which the environment reaches `src/hub`'s settings, huggingface_hub's older names included. */
export const HUB_ENV_KEYS = [
  'HF_ENDPOINT',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'HF_TOKEN_PATH',
  'HF_HUB_OFFLINE',
  'TRANSFORMERS_OFFLINE',
] as const;

/**
 * The Hub variables of a user of `hub` whose cache is `cacheDir`, with no token and online, whatever
 * the machine running the tests has set (a developer's HF_TOKEN or TRANSFORMERS_OFFLINE would
 * otherwise reach the stand-in, or keep it from being asked).
 */
export function hubEnv(hub: FakeHub, cacheDir: string): Record<(typeof HUB_ENV_KEYS)[number], string> {
  return {
    HF_ENDPOINT: hub.url,
    HF_HUB_CACHE: cacheDir,
    HUGGINGFACE_HUB_CACHE: cacheDir,
    HF_TOKEN: '',
    HUGGING_FACE_HUB_TOKEN: '',
    HF_TOKEN_PATH: `${cacheDir}/no-token`,
    HF_HUB_OFFLINE: '0',
    TRANSFORMERS_OFFLINE: '0',
  };
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  private readonly repos = new Map<string, Repo>();
  private readonly faults = new Map<string, Fault>();
  private readonly server = createServer((req, res) => this.serve(req, res));
  private readonly cdn = createServer((req, res) => this.serveCdn(req, res));
  url = '';
  /** The CDN's origin: another port, so another origin, as cdn-lfs.hf.co is to huggingface.co. */
  cdnUrl = '';

  async start(): Promise<this> {
    const listen = async (server: typeof this.server) => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    this.url = await listen(this.server);
    this.cdnUrl = await listen(this.cdn);
    return this;
  }

  async close(): Promise<void> {
    for (const server of [this.server, this.cdn]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  /** Adds (or replaces) a repository; returns its commit hash. */
  addRepo(name: string, files: Record<string, Buffer>, options: { gated?: boolean; xet?: boolean; refs?: string[] } = {}): string {
    const map = new Map(Object.entries(files).map(([path, bytes]) => [path, fileOf(path, bytes)]));
    const commit = createHash('sha1')
      .update(JSON.stringify([name, ...[...map.values()].map((f) => [f.path, f.oid])]))
      .digest('hex');
    this.repos.set(name, { commit, files: map, gated: options.gated ?? false, xet: options.xet ?? false, refs: options.refs ?? [] });
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

  private log(origin: LoggedRequest['origin'], req: IncomingMessage): string {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    this.requests.push({
      origin,
      method: req.method!,
      path,
      range: req.headers.range ?? null,
      authorization: req.headers.authorization ?? null,
    });
    return path;
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const path = this.log('hub', req);
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)(?:\/(.+))?$/.exec(path);
    const resolve = api ? null : /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const send = api ? json : text;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    // The Hub refuses a token it does not know on every route, public repositories included.
    if (token !== undefined && token !== GRANTED_TOKEN && token !== UNGRANTED_TOKEN) {
      return void error(res, send, 401, undefined, 'Invalid credentials in Authorization header');
    }
    if (!api && !resolve) return void error(res, send, 404, 'EntryNotFound', 'Entry not found');
    const [name, revision] = api ? [api[1], api[3]] : [resolve![1], resolve![2]];
    const repo = this.repos.get(name);
    // Without a token a missing repository is a 401, as a private one would be: the Hub does not say which.
    if (!repo) return void error(res, send, token ? 404 : 401, 'RepoNotFound', 'Repository not found');
    if (revision !== 'main' && revision !== 'HEAD' && revision !== repo.commit && !repo.refs.includes(revision)) {
      return void error(res, send, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    }
    if (api) return this.serveApi(res, name, repo, api[2], api[4]);
    this.serveResolve(req, res, name, repo, resolve![3], token);
  }

  private serveCdn(req: IncomingMessage, res: ServerResponse): void {
    const cdn = /^\/cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(this.log('cdn', req));
    const repo = cdn ? this.repos.get(cdn[1]) : undefined;
    const file = repo?.files.get(cdn![2]);
    if (!file) return void error(res, text, 404, undefined, 'Not found');
    // cdn-lfs.hf.co is CloudFront; fileDownloadInfo keeps such a URL for the download itself.
    const headers: Record<string, string> = repo!.xet ? {} : { 'X-Cache': 'Hit from cloudfront' };
    this.sendBytes(req, res, cdn![1], file, { ...headers, ETag: `"${file.oid}"` });
  }

  private serveApi(res: ServerResponse, name: string, repo: Repo, kind: string, folder?: string): void {
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
    const inside = (path: string) => folder === undefined || path.startsWith(`${folder}/`);
    const dirs = new Set<string>();
    for (const path of repo.files.keys()) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    const entries = [
      ...[...dirs].filter(inside).map((path) => ({ type: 'directory', oid: '0'.repeat(40), size: 0, path })),
      ...[...repo.files.values()]
        .filter((f) => inside(f.path))
        .map((f) => ({
          type: 'file',
          oid: f.lfs ? createHash('sha1').update(f.oid).digest('hex') : f.oid,
          size: f.bytes.length,
          path: f.path,
          ...(f.lfs ? { lfs: { oid: f.oid, size: f.bytes.length, pointerSize: 134 } } : {}),
          ...(f.lfs && repo.xet ? { xetHash: xetHashOf(f) } : {}),
        })),
    ];
    if (folder !== undefined && entries.length === 0) return void error(res, json, 404, 'EntryNotFound', `${folder} does not exist`);
    json(res, 200, entries);
  }

  private serveResolve(req: IncomingMessage, res: ServerResponse, name: string, repo: Repo, path: string, token?: string): void {
    if (repo.gated && token !== GRANTED_TOKEN) {
      if (token) {
        return void error(res, text, 403, 'GatedRepo', `Access to model ${name} is restricted and you are not in the authorized list.`);
      }
      return void error(
        res,
        text,
        401,
        'GatedRepo',
        `Access to model ${name} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      );
    }
    const file = repo.files.get(path);
    if (!file) return void error(res, text, 404, 'EntryNotFound', 'Entry not found');
    const headers = { 'X-Repo-Commit': repo.commit };
    if (!file.lfs) return this.sendBytes(req, res, name, file, { ...headers, ETag: `"${file.oid}"` });
    const linked = {
      ...headers,
      'X-Linked-Etag': `"${file.oid}"`,
      'X-Linked-Size': String(file.bytes.length),
      ETag: `"${file.oid}"`,
    };
    if (repo.xet && (req.headers.accept ?? '').includes(XET_FILEINFO)) {
      const hash = xetHashOf(file);
      const reconstruction = `${this.cdnUrl}/v1/reconstructions/${hash}`;
      const auth = `${this.url}/api/models/${name}/xet-read-token/${repo.commit}`;
      const body = { hash, refreshUrl: auth, reconstructionUrl: reconstruction, etag: file.oid, size: file.bytes.length };
      res
        .writeHead(200, {
          ...linked,
          'Content-Type': XET_FILEINFO,
          'X-Xet-Hash': hash,
          Link: `<${reconstruction}>; rel="xet-reconstruction-info", <${auth}>; rel="xet-auth"`,
        })
        .end(JSON.stringify(body));
      return;
    }
    res.writeHead(302, { ...linked, Location: `${this.cdnUrl}/cdn/${name}/${path}`, 'Content-Length': 0 }).end();
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

const XET_FILEINFO = 'application/vnd.xet-fileinfo+json';

/** Stands for the Xet merkle hash: the stand-in serves the bytes over HTTP only, so any stable hex does. */
function xetHashOf(file: RepoFile): string {
  return createHash('sha256').update('xet').update(file.bytes).digest('hex');
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers }).end(JSON.stringify(body));
}

function text(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers }).end(body);
}

/** The API answers `{"error": ...}`, a resolve URL the message as text; both say it in headers too. */
function error(res: ServerResponse, send: typeof json | typeof text, status: number, code: string | undefined, message: string): void {
  const headers: Record<string, string> = { 'X-Error-Message': message, ...(code ? { 'X-Error-Code': code } : {}) };
  if (send === json) json(res, status, { error: message }, headers);
  else text(res, status, message, headers);
}
