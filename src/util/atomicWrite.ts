import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

/**
 * Crash-safe file replacement: write a temp file in the same directory, rename it over the
 * target. Readers see the old content or the new, never a torn file. Temp names start with `.`
 * and end in `.tmp` so that directory watchers (the kubelet's, CDI's) ignore them.
 *
 * `durable` (the default) also fsyncs the file before the rename and the directory after it, so
 * the new content survives a power loss. A process crash never needs that (the page cache
 * outlives the process): files that can be rebuilt from a durable record skip it.
 *
 * Open, write, rename and close touch only the page cache and are called synchronously: each
 * asynchronous call is a thread-pool round trip that cost more CPU than the call itself. Only
 * the fsyncs, which wait for the disk, leave the event loop.
 */
export interface AtomicWriteOptions {
  /** File mode of the new file (default 0o600). */
  readonly mode?: number;
  /** fsync the file and its directory (default true). */
  readonly durable?: boolean;
}

const fsync = promisify(fs.fsync);

function tempName(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
}

async function fsyncDir(dir: string): Promise<void> {
  const fd = fs.openSync(dir, 'r');
  try {
    await fsync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export async function atomicWriteFile(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const durable = options.durable ?? true;
  const tmp = tempName(target);
  const fd = fs.openSync(tmp, 'wx', options.mode ?? 0o600);
  try {
    try {
      fs.writeFileSync(fd, data);
      if (durable) await fsync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (durable) await fsyncDir(path.dirname(target));
}

/**
 * Removes a file; a missing file is not an error. Returns whether it existed. `durable` (the
 * default) fsyncs the directory so the removal survives a power loss.
 */
export async function removeFile(target: string, options: { durable?: boolean } = {}): Promise<boolean> {
  try {
    fs.unlinkSync(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  if (options.durable ?? true) await fsyncDir(path.dirname(target));
  return true;
}
