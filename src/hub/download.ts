import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, open, rename, rm, stat, statfs, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { HubApiError, fileDownloadInfo } from '@huggingface/hub';
import { ModelLoadError } from '../errors.js';
import type { RepoCache } from './cache-layout.js';
import { withFileLock } from './file-lock.js';
import { type HubTarget, hubFailure, isNetworkError } from './hub-errors.js';
import type { ProgressMeter } from './progress.js';
import type { HubSettings } from './settings.js';

/** A file of the repository as its listing describes it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** The sha256 of an LFS (or Xet) file, the git blob sha1 of the others: the Hub's etag and the blob's name in the cache. */
  oid: string;
  lfs: boolean;
}

export interface DownloadContext {
  cache: RepoCache;
  commit: string;
  settings: HubSettings;
  target: HubTarget;
  meter: ProgressMeter;
}

const ATTEMPTS = 5;

/** The connection broke or the server failed: the next attempt resumes from the bytes on disk. */
class Interrupted extends Error {}

/**
 * Puts one file into the cache, as blob and snapshot link. Only one process downloads a blob at a
 * time; another one waiting for it watches the partial file grow, then finds the blob in place.
 */
export async function cacheFile(file: RemoteFile, ctx: DownloadContext): Promise<void> {
  const { cache, meter } = ctx;
  if (!(await cache.hasBlob(file.oid, file.size))) {
    const partial = `${cache.blobPath(file.oid)}.incomplete`;
    const watch = async () => meter.update(file.path, (await stat(partial).catch(() => null))?.size ?? 0);
    await withFileLock(
      cache.lockPath(file.oid),
      async () => {
        if (!(await cache.hasBlob(file.oid, file.size))) await download(file, partial, ctx);
      },
      watch,
    );
    meter.update(file.path, file.size);
  }
  await cache.link(ctx.commit, file.path, file.oid);
}

/**
 * `@huggingface/hub`'s `downloadFileToCacheDir` (2.17) writes `<blob>.incomplete` and renames it,
 * but starts over after an interruption, checks no hash, takes no lock, reports no progress, and
 * for a branch names the snapshot folder after the file's last commit rather than the branch's
 * head as huggingface_hub does; `snapshotDownload` fetches every file of the repository. So the
 * transfer is here: Range requests from the bytes on disk, and the file's sha256 (or git sha1)
 * checked before the rename, so a partial or corrupt file never becomes a blob.
 */
async function download(file: RemoteFile, partial: string, ctx: DownloadContext): Promise<void> {
  const transfer = new Transfer(file, partial, ctx);
  await transfer.resume();
  for (let attempt = 1; transfer.have < file.size; attempt++) {
    try {
      await transfer.receive(await resolveUrl(file, ctx));
    } catch (error) {
      if (!(error instanceof Interrupted || isNetworkError(error))) throw hubFailure(error, transfer.target);
      if (attempt >= ATTEMPTS) {
        throw new ModelLoadError(
          `${file.path} of ${ctx.target.repo}: the download broke off at ${transfer.have} of ${file.size} bytes after ` +
            `${ATTEMPTS} attempts (${(error as Error).message}). The partial file ${partial} is kept; loading again resumes it.`,
          error,
        );
      }
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
  await transfer.verify();
  await rename(partial, ctx.cache.blobPath(file.oid));
}

/** The library's probe follows the Hub's redirect once, so the ranged requests go straight to the CDN. */
async function resolveUrl(file: RemoteFile, ctx: DownloadContext): Promise<string> {
  const { settings, target } = ctx;
  const info = await fileDownloadInfo({
    repo: { type: 'model', name: target.repo },
    path: file.path,
    revision: ctx.commit,
    hubUrl: settings.endpoint,
    accessToken: settings.token,
  });
  if (!info)
    throw new ModelLoadError(
      `${file.path} of ${target.repo}@${target.revision} is in the file listing, but the Hub has no such file (404)`,
    );
  return info.url;
}

/** The bytes of one file on their way into `<blob>.incomplete`, hashed as they are written. */
class Transfer {
  have = 0;
  private hash: Hash;
  readonly target: HubTarget;

  constructor(
    private readonly file: RemoteFile,
    private readonly partial: string,
    private readonly ctx: DownloadContext,
  ) {
    this.hash = this.newHash();
    this.target = { ...ctx.target, file: file.path };
  }

  /** The Hub hashes LFS files with sha256 and the others as git blobs: sha1 of "blob <size>\0" and the bytes. */
  private newHash(): Hash {
    return this.file.lfs ? createHash('sha256') : createHash('sha1').update(`blob ${this.file.size}\0`);
  }

  /** Hashes what an interrupted download left, to go on from there, and checks the rest fits on the disk. */
  async resume(): Promise<void> {
    const { file, partial } = this;
    await mkdir(dirname(partial), { recursive: true });
    await this.write(() => appendFile(partial, '')); // an empty file gets no body to create it
    const size = (await stat(partial).catch(() => null))?.size ?? 0;
    if (size > file.size) await rm(partial, { force: true });
    else if (size > 0) {
      for await (const chunk of createReadStream(partial)) this.hash.update(chunk as Buffer);
      this.have = size;
    }
    this.ctx.meter.update(file.path, this.have);
    const needed = file.size - this.have;
    const fs = await statfs(dirname(partial)).catch(() => null);
    if (fs && fs.bavail * fs.bsize < needed) {
      throw new ModelLoadError(
        `${file.path} of ${this.target.repo} needs ${needed} bytes in ${dirname(partial)}, but the disk has ` +
          `${fs.bavail * fs.bsize} free. Free some space or point HF_HUB_CACHE at a larger disk.`,
      );
    }
  }

  /** One GET of the bytes from `have` on, appended to the partial file. */
  async receive(url: string): Promise<void> {
    const { settings } = this.ctx;
    const headers: Record<string, string> = {};
    if (this.have > 0) headers.Range = `bytes=${this.have}-`;
    if (settings.token && new URL(url).origin === new URL(settings.endpoint).origin) headers.Authorization = `Bearer ${settings.token}`;
    const response = await fetch(url, { headers });
    if (response.status >= 500) throw new Interrupted(`the server answered ${response.status}`);
    if (!response.ok) throw new HubApiError(url, response.status, undefined, await response.text().catch(() => ''));
    const range = response.headers.get('content-range') ?? '';
    if (this.have > 0 && response.status === 200) {
      // The server ignored the range: the whole file comes again.
      await this.write(() => truncate(this.partial, 0));
      this.hash = this.newHash();
      this.have = 0;
    } else if (this.have > 0 && !range.startsWith(`bytes ${this.have}-`)) {
      throw new ModelLoadError(`${this.file.path} of ${this.target.repo}: asked for bytes ${this.have}- and got "${range}"`);
    }
    const handle = await this.write(() => open(this.partial, 'a'));
    try {
      for await (const chunk of response.body ?? []) {
        this.hash.update(chunk);
        await this.write(() => handle.write(chunk));
        this.have += chunk.byteLength;
        this.ctx.meter.update(this.file.path, this.have);
      }
    } catch (error) {
      if (error instanceof ModelLoadError) throw error;
      throw new Interrupted((error as Error & { cause?: Error }).cause?.message ?? (error as Error).message);
    } finally {
      await handle.close();
    }
  }

  /**
   * The hash covers the bytes this process wrote; the size on disk shows whether another program
   * appended to the same partial file meanwhile (huggingface_hub resumes `<blob>.incomplete` too,
   * and does not see this process's lock).
   */
  async verify(): Promise<void> {
    const { file, partial, target } = this;
    const digest = this.hash.digest('hex');
    const onDisk = (await stat(partial).catch(() => null))?.size ?? 0;
    if (digest === file.oid && this.have === file.size && onDisk === file.size) return;
    await rm(partial, { force: true });
    if (digest === file.oid && this.have === file.size) {
      throw new ModelLoadError(
        `${file.path} of ${target.repo}@${target.revision}: ${partial} holds ${onDisk} bytes, not the ${file.size} this ` +
          'download wrote: another program wrote to it at the same time. The download was discarded; loading again fetches it anew.',
      );
    }
    throw new ModelLoadError(
      `${file.path} of ${target.repo}@${target.revision} failed verification: got ${this.have} bytes with ` +
        `${file.lfs ? 'sha256' : 'git sha1'} ${digest}, the Hub lists ${file.size} bytes with ${file.oid}. The download was discarded.`,
    );
  }

  /** A file-system failure (a full disk above all) is final and names the file; the bytes written stay for a resume. */
  private async write<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (error) {
      const why = (error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'the disk is full' : (error as Error).message;
      throw new ModelLoadError(
        `${this.file.path} of ${this.target.repo}: cannot write ${this.partial}: ${why}. The bytes written so far are kept; loading again resumes.`,
        error,
      );
    }
  }
}
