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
 * or no heartbeat for 30 s on another). Two waiters that both take over the same dead lock may both
 * download; the checksum then refuses a blob they spoiled between them, never lets one through.
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
  const [info, owner] = await Promise.all([stat(path).catch(() => null), readFile(path, 'utf8').catch(() => '')]);
  if (!info) return false; // released meanwhile: try again
  const [host, pid] = owner.split(' ');
  if (host === hostname() && Number(pid) > 0) {
    try {
      process.kill(Number(pid), 0);
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ESRCH';
    }
    return false;
  }
  return Date.now() - info.mtimeMs > STALE_MS;
}
