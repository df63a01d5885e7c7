/**
 * Keeps the driver's view of its GPUs true after start-up: re-discovers every `intervalMs`
 * (and on demand, when a claim names a device the driver does not know), merges the result
 * with what was published (src/resourceslice/health.ts: failed GPUs stay, tainted) and hands
 * every change to `onChange`, which republishes. MIG devices created or destroyed by an admin,
 * a GPU that fell off the bus and one that came back all reach the ResourceSlices this way.
 *
 * A discovery that fails outright (NVML not loadable, nvmlInit failing while the driver is
 * reloaded) or enumerates no GPU at all changes nothing: an empty pool would strand every
 * claim, and either condition is far more often transient than real. (GPUs that are
 * enumerated but each fail are carried and tainted like any other unhealthy GPU.)
 */
import type { NodeInventory } from '../nvml/types.js';
import { carryUnhealthyGpus, type HealthView } from '../resourceslice/health.js';
import type { TaintMap } from '../resourceslice/model.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { InventorySource } from './state.js';

export interface DeviceMonitorOptions {
  readonly initial: NodeInventory;
  /** Synchronous NVML discovery (what start-up used). */
  readonly discover: () => NodeInventory;
  readonly driverName: string;
  /** Periodic re-discovery; 0 = only on demand. */
  readonly intervalMs: number;
  /** On-demand re-discoveries (refresh()) are at least this far apart. */
  readonly minRefreshIntervalMs: number;
  readonly onChange: (view: HealthView) => void;
  readonly logger: Logger;
  /** Counts each check by outcome: `unchanged`, `changed`, `failed`. */
  readonly onCheck?: (result: 'unchanged' | 'changed' | 'failed') => void;
}

export class DeviceMonitor implements InventorySource {
  private view: HealthView;
  private key: string;
  private lastCheck = Date.now();
  private timer?: NodeJS.Timeout;

  constructor(private readonly opts: DeviceMonitorOptions) {
    this.view = { inventory: opts.initial, taints: {}, unhealthy: [] };
    this.key = viewKey(this.view);
  }

  current(): NodeInventory {
    return this.view.inventory;
  }

  taints(): TaintMap {
    return this.view.taints;
  }

  /** Re-discovers now unless the last check was under `minRefreshIntervalMs` ago. */
  refresh(): NodeInventory {
    if (Date.now() - this.lastCheck >= this.opts.minRefreshIntervalMs) this.check();
    return this.view.inventory;
  }

  start(): void {
    if (this.opts.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.check();
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One re-discovery; returns whether the published view changed. */
  check(): boolean {
    this.lastCheck = Date.now();
    const log = this.opts.logger;
    let next: NodeInventory;
    try {
      next = this.opts.discover();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'device re-discovery failed; keeping the published devices');
      this.opts.onCheck?.('failed');
      return false;
    }
    if (next.gpus.length === 0 && next.failures.length === 0 && this.view.inventory.gpus.length > 0) {
      log.warn('device re-discovery found no GPU; keeping the published devices');
      this.opts.onCheck?.('failed');
      return false;
    }
    const view = carryUnhealthyGpus(this.view.inventory, next, this.opts.driverName);
    const key = viewKey(view);
    if (key === this.key) {
      this.opts.onCheck?.('unchanged');
      return false;
    }
    const before = new Set(this.view.unhealthy.map((u) => u.gpu.uuid));
    for (const u of view.unhealthy) {
      if (!before.has(u.gpu.uuid))
        log.warn(
          { uuid: u.gpu.uuid, minor: u.gpu.minor, error: u.failure.error, devices: u.devices },
          'GPU unhealthy: its devices stay published with a NoSchedule taint',
        );
    }
    const after = new Set(view.unhealthy.map((u) => u.gpu.uuid));
    for (const u of this.view.unhealthy) {
      if (!after.has(u.gpu.uuid)) log.info({ uuid: u.gpu.uuid, minor: u.gpu.minor }, 'GPU healthy again');
    }
    log.info(
      { gpus: view.inventory.gpus.length, unhealthy: view.unhealthy.length },
      'devices changed; republishing',
    );
    this.view = view;
    this.key = key;
    this.opts.onCheck?.('changed');
    this.opts.onChange(view);
    return true;
  }
}

function viewKey(view: HealthView): string {
  return JSON.stringify([view.inventory, view.taints]);
}
