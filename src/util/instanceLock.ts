/**
 * Mutual exclusion between the plugin instances of one node (the old and the new pod of a
 * rolling update share the checkpoint and the CDI directory), with no loss of parallelism
 * inside an instance.
 *
 * An instance's work runs in epochs: the first work of an idle instance takes the node-wide lock
 * and runs `onAcquired` (re-reading what the other instance may have written); more work joins
 * the epoch while it lasts; the last work to finish releases the lock. So while one instance
 * works, the other waits, and within one instance claims still prepare in parallel (sharing
 * checkpoint writes), exactly as with a single instance.
 *
 * Fairness: a waiting instance first takes a second, "queue" lock and holds it until it has the
 * main one. The holder admits new work into its epoch only while the queue lock is free; once
 * another instance queues, the holder lets its epoch drain and hands over. Without this, an
 * instance that is never idle (one pod after another being prepared) would keep the lock
 * forever; with it, the instances alternate. A lone instance pays two flock calls per join.
 */

/** What the lock needs of a file lock (FileLock). */
export interface ExclusiveLock {
  tryLock(): boolean;
  lock(options?: { readonly signal?: AbortSignal }): Promise<void>;
  unlock(): void;
  close(): void;
}

export interface InstanceLockOptions {
  /** The node-wide lock that serializes the instances. */
  readonly main: ExclusiveLock;
  /** Taken by an instance waiting for `main`; see the module comment. */
  readonly queue: ExclusiveLock;
  /** Runs each time this instance takes `main`, before any of the epoch's work. */
  readonly onAcquired: () => Promise<void>;
}

type State = 'idle' | 'acquiring' | 'held' | 'draining';

export class InstanceLock {
  private state: State = 'idle';
  /** Works admitted to the current (or coming) epoch and not finished. */
  private active = 0;
  private acquiring: Promise<void> = Promise.resolve();
  private drained: { promise: Promise<void>; resolve: () => void } | undefined;
  private epochs = 0;

  constructor(private readonly opts: InstanceLockOptions) {}

  /** How many times this instance took the node-wide lock (tests, logs). */
  get acquisitions(): number {
    return this.epochs;
  }

  /** Runs `work` while this instance holds the node-wide lock. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.enter();
    try {
      return await work();
    } finally {
      this.leave();
    }
  }

  /** Closes the lock files; only when no work runs (stop). */
  close(): void {
    this.opts.main.close();
    this.opts.queue.close();
  }

  private async enter(): Promise<void> {
    for (;;) {
      if (this.state === 'held') {
        if (!this.othersQueued()) {
          this.active++;
          return;
        }
        this.state = 'draining';
        let resolve = (): void => undefined;
        const promise = new Promise<void>((r) => (resolve = r));
        this.drained = { promise, resolve };
        if (this.active === 0) this.release();
        continue;
      }
      if (this.state === 'draining') {
        await this.drained?.promise;
        continue;
      }
      // Idle or acquiring: this work is part of the coming epoch, whatever queues meanwhile.
      // (Checking the queue for it too would let two busy instances hand the lock back and forth
      // with no work done.)
      if (this.state === 'idle') this.acquiring = this.acquire();
      this.active++;
      try {
        await this.acquiring;
      } catch (err) {
        this.active--;
        throw err;
      }
      return;
    }
  }

  private othersQueued(): boolean {
    if (!this.opts.queue.tryLock()) return true;
    this.opts.queue.unlock();
    return false;
  }

  private async acquire(): Promise<void> {
    this.state = 'acquiring';
    try {
      await this.opts.queue.lock();
      try {
        await this.opts.main.lock();
      } finally {
        this.opts.queue.unlock();
      }
      try {
        await this.opts.onAcquired();
      } catch (err) {
        this.opts.main.unlock();
        throw err;
      }
    } catch (err) {
      this.state = 'idle';
      throw err;
    }
    this.epochs++;
    this.state = 'held';
  }

  private leave(): void {
    this.active--;
    if (this.active === 0 && (this.state === 'held' || this.state === 'draining')) this.release();
  }

  private release(): void {
    this.opts.main.unlock();
    this.state = 'idle';
    const drained = this.drained;
    this.drained = undefined;
    drained?.resolve();
  }
}
