import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * Crash-safe file replacement: write a temp file in the same directory, rename it over the
 * target. Readers see the old content or the new, never a torn file. Temp names start with `.`
 * and end in `.tmp` so that directory watchers (the kubelet's, CDI's) ignore them.
 *
 * `fsync` (the default) flushes the temp file before the rename, so that after a power loss the
 * target holds the old content or the new, never an empty or torn file. The directory is not
 * fsynced: the rename reaches the disk with the filesystem's next commit (seconds), and a power
 * loss before it brings back the previous file, which callers must tolerate (the checkpoint
 * does; see checkpoint/store.ts). A process crash loses nothing either way: the page cache
 * outlives the process.
 *
 * Open, write, rename and close touch only the page cache and are called synchronously: each
 * asynchronous call is a thread-pool round trip that cost more CPU than the call itself. Only
 * the fsync, which waits for the disk, leaves the event loop.
 */
export interface AtomicWriteOptions {
  /** File mode of the new file (default 0o600). */
  readonly mode?: number;
  /** Flush the data before the rename (default true). */
  readonly fsync?: boolean;
  /**
   * Create the target's directory with this mode when it is missing, on first use and again if
   * someone removed it since. Checked only when the write fails, so it costs nothing per write.
   */
  readonly dirMode?: number;
}

const fsyncFd = promisify(fs.fsync);

let tempSeq = 0;

/** Unique within this process (pid + counter); `wx` refuses a leftover of another with our pid. */
function tempName(target: string): string {
  tempSeq = (tempSeq + 1) % Number.MAX_SAFE_INTEGER;
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}-${tempSeq}.tmp`);
}

export async function atomicWriteFile(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  try {
    await writeViaTemp(target, data, options);
  } catch (err) {
    if (options.dirMode === undefined || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    fs.mkdirSync(path.dirname(target), { recursive: true, mode: options.dirMode });
    await writeViaTemp(target, data, options);
  }
}

async function writeViaTemp(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions,
): Promise<void> {
  let tmp = tempName(target);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx', options.mode ?? 0o600);
  } catch (err) {
    // A temp file a crashed process with the same pid left behind: take the next name.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    tmp = tempName(target);
    fd = fs.openSync(tmp, 'wx', options.mode ?? 0o600);
  }
  try {
    try {
      fs.writeFileSync(fd, data);
      if (options.fsync ?? true) await fsyncFd(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Removes a file; a missing file is not an error. Returns whether it existed. */
export function removeFile(target: string): boolean {
  try {
    fs.unlinkSync(target);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** A directory's entries; a missing directory has none. */
export async function readDirIfExists(dir: string): Promise<string[]> {
  try {
    return await fs.promises.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
