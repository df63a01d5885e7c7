/**
 * An exclusive flock(2) on a file, shared by the plugin instances of one node (the old and the
 * new pod of a rolling update see the same host directory).
 *
 * Why flock through libc (koffi, already loaded for NVML) rather than an O_EXCL lock file: the
 * kernel drops a flock when its holder dies, however it dies. A lock file left by a SIGKILLed
 * or OOM-killed plugin would need a liveness check to break, and the two instances live in
 * different pid namespaces, where a recorded pid means nothing. A flock needs neither.
 *
 * Acquisition polls with LOCK_NB rather than blocking in a worker thread: a poll can be given
 * up (shutdown, a start-up abort) and occupies no thread of the libuv pool, which the
 * checkpoint's fsyncs need. Holds are short (one claim operation), so the poll delay stays
 * small.
 */
import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import { GpuDraError } from './errors.js';
import { sleep } from './backoff.js';

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

type FlockFn = (fd: number, operation: number) => number;

let flockFn: FlockFn | undefined;

/** libc's flock, bound once per process. */
function libcFlock(): FlockFn {
  if (flockFn) return flockFn;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('libc.so.6');
  } catch (err) {
    throw new GpuDraError('FILE_LOCK_FAILED', `cannot load libc.so.6 for flock(2): ${String(err)}`, {
      cause: err,
    });
  }
  flockFn = lib.func('int flock(int fd, int operation)') as FlockFn;
  return flockFn;
}

function lockError(file: string, what: string): GpuDraError {
  const errno = koffi.errno();
  const name = Object.entries(koffi.os.errno).find(([, v]) => v === errno)?.[0] ?? String(errno);
  return new GpuDraError('FILE_LOCK_FAILED', `flock ${what} on ${file} failed: ${name}`);
}

export interface LockWaitOptions {
  /** Gives up waiting (rejects with the signal's reason). */
  readonly signal?: AbortSignal;
  /** First poll delay, doubling up to `maxPollMs`; default 1 ms. */
  readonly minPollMs?: number;
  /** Default 20 ms. */
  readonly maxPollMs?: number;
}

export class FileLock {
  private held = false;

  private constructor(
    readonly file: string,
    private readonly fd: number,
    private readonly flock: FlockFn,
  ) {}

  /** Opens (creating) the lock file; nothing is locked yet. */
  static open(file: string): FileLock {
    const flock = libcFlock();
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // O_CLOEXEC is Node's default: children (nvidia-smi) must not inherit the lock.
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    return new FileLock(file, fd, flock);
  }

  get isHeld(): boolean {
    return this.held;
  }

  /** Takes the lock if it is free; never waits. */
  tryLock(): boolean {
    if (this.held) throw new GpuDraError('FILE_LOCK_FAILED', `${this.file} is already locked by us`);
    return this.tryFlock(LOCK_EX, 'LOCK_EX');
  }

  /**
   * Takes a shared hold if no one holds the lock exclusively; never waits. Many processes may
   * hold it shared at once, which an exclusive `tryLock` then finds: a count of the living.
   */
  tryLockShared(): boolean {
    if (this.held) throw new GpuDraError('FILE_LOCK_FAILED', `${this.file} is already locked by us`);
    return this.tryFlock(LOCK_SH, 'LOCK_SH');
  }

  private tryFlock(mode: number, what: string): boolean {
    if (this.flock(this.fd, mode | LOCK_NB) === 0) {
      this.held = true;
      return true;
    }
    if (koffi.errno() === koffi.os.errno['EWOULDBLOCK']) return false;
    throw lockError(this.file, what);
  }

  /** Waits for the lock, polling. */
  async lock(options: LockWaitOptions = {}): Promise<void> {
    let delay = options.minPollMs ?? 1;
    const max = options.maxPollMs ?? 20;
    while (!this.tryLock()) {
      await sleep(delay, options.signal);
      delay = Math.min(delay * 2, max);
    }
  }

  unlock(): void {
    if (!this.held) return;
    this.held = false;
    if (this.flock(this.fd, LOCK_UN) !== 0) throw lockError(this.file, 'LOCK_UN');
  }

  /** Releases the lock (closing drops it) and the descriptor. */
  close(): void {
    this.held = false;
    fs.closeSync(this.fd);
  }
}
