/**
 * One publisher of a node's ResourceSlices at a time. During a rolling update two plugin
 * instances run on the node; if both reconciled the same pool, an upgrade that changes what is
 * published (a new attribute, say) would have them overwrite each other, each seeing the other's
 * write as drift to correct, until the old one exits.
 *
 * The instance holding `<plugin dir>/publisher.lock` (a flock, dropped by the kernel however its
 * holder ends) publishes; the other stands by, keeping the latest inventory, and polls the lock.
 * The handover: the old instance, stopping (SIGTERM), stops publishing without deleting anything
 * and lets the lock go; the new one takes it within a poll and reconciles, which writes nothing
 * when its slices equal the stored ones. The slices stay on the apiserver throughout, and the
 * kubelet, with the new instance registered, never wipes them.
 *
 * A standby instance counts as published for readiness: its node's slices are there, kept by
 * the other instance. (The DaemonSet's surge waits for the new pod to be ready before it stops
 * the old one, so requiring our own publish would never let the old one go.)
 */
import type { NodeInventory } from '../nvml/types.js';
import type { TaintMap } from '../resourceslice/model.js';
import type { ExclusiveLock } from '../util/instanceLock.js';
import type { Logger } from '../util/log.js';
import type { SlicePublisher } from './run.js';

export const PUBLISHER_LOCK_FILE = 'publisher.lock';

export interface PublisherRoleOptions {
  readonly publisher: SlicePublisher;
  /** The node-wide publisher lock (FileLock on PUBLISHER_LOCK_FILE). */
  readonly lock: ExclusiveLock;
  readonly logger: Logger;
  /** How often a standby instance tries the lock; default 500 ms. */
  readonly pollMs?: number;
}

export class PublisherRole implements SlicePublisher {
  private active = false;
  private started = false;
  private stopped = false;
  private released = false;
  /** What to publish on taking over: the latest inventory, and taints when any were given. */
  private inventory: NodeInventory | undefined;
  private taints: TaintMap | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: PublisherRoleOptions) {}

  /** Whether this instance is the node's publisher now. */
  get publishing(): boolean {
    return this.active;
  }

  start(inventory: NodeInventory): void {
    this.started = true;
    this.inventory = inventory;
    if (this.opts.lock.tryLock()) {
      this.active = true;
      this.opts.publisher.start(inventory);
      return;
    }
    this.opts.logger.info(
      'another plugin instance on this node publishes the ResourceSlices; standing by until it stops',
    );
    this.timer = setInterval(() => {
      this.poll();
    }, this.opts.pollMs ?? 500);
    this.timer.unref();
  }

  private poll(): void {
    if (this.stopped || this.active || !this.inventory || !this.opts.lock.tryLock()) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.active = true;
    this.opts.logger.info('the other plugin instance stopped publishing; taking over the ResourceSlices');
    this.opts.publisher.update(this.inventory, this.taints).catch((err: unknown) => {
      this.opts.logger.warn({ err }, 'first publish after taking over failed; retrying in the background');
    });
  }

  update(inventory: NodeInventory, taints?: TaintMap): Promise<void> {
    // Taints given once stay until replaced, as in the publisher.
    if (taints) this.taints = taints;
    if (!this.started && !this.stopped) this.start(inventory);
    this.inventory = inventory;
    if (this.active) return this.opts.publisher.update(inventory, taints);
    // Standing by: the other instance publishes; ours goes out when we take over.
    return Promise.resolve();
  }

  isReady(): boolean {
    return this.active ? this.opts.publisher.isReady() : !this.stopped;
  }

  whenReady(): Promise<void> {
    return this.active ? this.opts.publisher.whenReady() : Promise.resolve();
  }

  /** Stops publishing (the slices stay) and lets another instance take over. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    try {
      if (this.active) await this.opts.publisher.stop();
    } finally {
      this.release();
    }
  }

  /**
   * `--cleanup-on-exit`, called only when no other instance runs: deletes the slices. A standby
   * instance takes the lock first (its publisher was never started; deleting needs no start).
   */
  async deleteAll(): Promise<number> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    if (!this.active && !this.released && this.opts.lock.tryLock()) this.active = true;
    try {
      return this.active ? await this.opts.publisher.deleteAll() : 0;
    } finally {
      this.release();
    }
  }

  private release(): void {
    this.active = false;
    if (this.released) return;
    this.released = true;
    this.opts.lock.unlock();
    this.opts.lock.close();
  }
}
