import { copyFile, mkdir, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';
import { ModelLoadError } from '../errors.js';

/**
 * One model repository in the Hugging Face cache, laid out as `huggingface_hub` does so that each
 * reuses the other's downloads: `models--org--name/blobs/<sha256 or git oid>`,
 * `snapshots/<commit>/<path>` symlinked to the blob, `refs/<branch>` holding the commit, and
 * `.locks/models--org--name/<blob>.lock` beside them.
 */
export class RepoCache {
  readonly folder: string;
  private readonly locks: string;

  constructor(
    readonly cacheDir: string,
    readonly repo: string,
  ) {
    const name = getRepoFolderName({ type: 'model', name: repo });
    this.folder = join(cacheDir, name);
    this.locks = join(cacheDir, '.locks', name);
  }

  snapshotDir(commit: string): string {
    return join(this.folder, 'snapshots', commit);
  }

  /** A repository's file names are joined onto the cache: none may climb out of it. */
  snapshotPath(commit: string, path: string): string {
    const dir = this.snapshotDir(commit);
    const file = join(dir, path);
    if (path.includes('\\') || !file.startsWith(dir + sep)) throw new ModelLoadError(`${this.repo}: refusing the file name "${path}"`);
    return file;
  }

  blobPath(hash: string): string {
    return join(this.folder, 'blobs', hash);
  }

  lockPath(hash: string): string {
    return join(this.locks, `${hash}.lock`);
  }

  async readRef(revision: string): Promise<string | null> {
    const commit = await readFile(join(this.folder, 'refs', revision), 'utf8').catch(() => null);
    return commit?.trim() || null;
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    if ((await this.readRef(revision)) === commit) return;
    const file = join(this.folder, 'refs', revision);
    await mkdir(dirname(file), { recursive: true });
    const temp = `${file}.${process.pid}.tmp`;
    await writeFile(temp, commit);
    await rename(temp, file);
  }

  /** The snapshot has `path`, of `size` bytes when given (a file replaced upstream has another size). */
  async has(commit: string, path: string, size?: number): Promise<boolean> {
    const found = await stat(this.snapshotPath(commit, path)).catch(() => null);
    return found !== null && found.isFile() && (size === undefined || found.size === size);
  }

  async hasBlob(hash: string, size: number): Promise<boolean> {
    const found = await stat(this.blobPath(hash)).catch(() => null);
    return found !== null && found.size === size;
  }

  /** Points the snapshot's `path` at the blob: a relative symlink, or a copy where symlinks are not allowed. */
  async link(commit: string, path: string, hash: string): Promise<void> {
    const file = this.snapshotPath(commit, path);
    const blob = this.blobPath(hash);
    await mkdir(dirname(file), { recursive: true });
    await rm(file, { force: true });
    await symlink(relative(dirname(file), blob), file).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code === 'EEXIST') return; // another process linked it first
      if (error.code !== 'EPERM') throw error;
      await copyFile(blob, file);
    });
  }

  /** Every file of a cached snapshot, relative and `/`-separated; empty when the snapshot is not cached. */
  async snapshotFiles(commit: string): Promise<string[]> {
    const dir = this.snapshotDir(commit);
    const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
    const files: string[] = [];
    for (const name of names) {
      // stat follows the symlinks into blobs/; a dangling one is not a cached file.
      if ((await stat(join(dir, name)).catch(() => null))?.isFile()) files.push(name.split(sep).join('/'));
    }
    return files.sort();
  }
}
