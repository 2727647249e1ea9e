import type { BigIntStats } from 'node:fs';
import { mkdir, open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';

/** A holder refreshes its lock this often; a lock untouched for STALE_MS belongs to a process that died. */
const HEARTBEAT_MS = 5_000;
const STALE_MS = 30_000;
const POLL_MS = 100;

/**
 * Runs `task` while holding the lock file `path`, so two processes sharing a cache download a file
 * once: the second waits (calling `waiting` at each poll) and then finds the blob in place.
 * `huggingface_hub` locks the same path with flock(2), which Node cannot call; this lock is an
 * exclusively created file instead, taken over when its holder is gone (a dead pid on this host,
 * or no heartbeat for 30 s on another), but never while a process holds it with flock(2).
 * Two waiters that both take over the same dead lock may both download; the checksum and the
 * size check then refuse a blob they spoiled between them, never let one through.
 */
export async function withFileLock<T>(path: string, task: () => Promise<T>, waiting?: () => Promise<void> | void): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const owner = `${hostname()} ${process.pid}`;
  for (;;) {
    const handle = await open(path, 'wx').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'EEXIST') return null;
      throw error;
    });
    if (handle) {
      await handle.writeFile(owner);
      await handle.close();
      break;
    }
    if (await isStale(path)) await rm(path, { force: true });
    else {
      await waiting?.();
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await task();
  } finally {
    clearInterval(heartbeat);
    await rm(path, { force: true });
  }
}

async function isStale(path: string): Promise<boolean> {
  const [info, owner] = await Promise.all([stat(path, { bigint: true }).catch(() => null), readFile(path, 'utf8').catch(() => '')]);
  if (!info) return false; // released meanwhile: try again
  if (await heldWithFlock(info)) return false;
  const [host, pid] = owner.split(' ');
  if (host === hostname() && Number(pid) > 0) {
    try {
      process.kill(Number(pid), 0);
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ESRCH';
    }
    return false;
  }
  return Date.now() - Number(info.mtimeMs) > STALE_MS;
}

/**
 * huggingface_hub's filelock leaves its `.lock` file behind, empty, when it is done, so an old
 * empty lock is usually free; but one that a Python process is downloading under is held with
 * flock(2), which Linux lists in /proc/locks by device and inode. Elsewhere (no /proc/locks) the
 * 30 s rule alone decides.
 */
async function heldWithFlock(info: BigIntStats): Promise<boolean> {
  const locks = await readFile('/proc/locks', 'utf8').catch(() => '');
  if (!locks) return false;
  // glibc's gnu_dev_major and gnu_dev_minor; the kernel prints them in hex, the inode in decimal.
  const major = ((info.dev >> 8n) & 0xfffn) | ((info.dev >> 32n) & 0xfffff000n);
  const minor = (info.dev & 0xffn) | ((info.dev >> 12n) & 0xffffff00n);
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${info.ino}`;
  return locks.split('\n').some((line) => line.split(/\s+/).includes(id));
}
