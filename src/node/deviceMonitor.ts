/**
 * Keeps the driver's view of its GPUs true after start-up: re-discovers every `intervalMs`
 * (and on demand, when a claim names a device the driver does not know), merges the result
 * with what was published (src/resourceslice/gpuHealth.ts: failed GPUs stay, tainted) and hands
 * every change to `onChange`, which republishes. MIG devices created or destroyed by an admin,
 * a GPU that fell off the bus and one that came back all reach the ResourceSlices this way.
 *
 * A discovery that fails outright (NVML not loadable, nvmlInit failing while the driver is
 * reloaded) or enumerates no GPU at all changes nothing: an empty pool would strand every
 * claim, and either condition is far more often transient than real. (GPUs that are
 * enumerated but each fail are carried and tainted like any other unhealthy GPU.)
 *
 * NVML events (src/nvml/events.ts) arrive through recordEvent(): a MIG configuration change
 * triggers a re-discovery at once; an XID taints the device it concerns NoSchedule
 * (`<driver>/xid=<n>`; application XIDs are only logged). NVML reports no recovery, so an XID
 * taint stays until an admin clears it after resetting the GPU (clearXidTaints, reached through
 * `gpu-dra taints clear` and the plugin's admin socket, ./adminSocket.ts) or the plugin restarts;
 * a new XID taints the device again.
 *
 * The same state gives each device's health for the kubelet (src/resourceslice/healthReport.ts):
 * health() computes it, onHealthChange() listeners hear of every change at once.
 */
import type { DeviceEvent } from '../nvml/events.js';
import type { NodeInventory } from '../nvml/types.js';
import {
  carryUnhealthyGpus,
  devicesForXid,
  mergeTaints,
  publishedDeviceNames,
  xidTaint,
  type HealthView,
} from '../resourceslice/gpuHealth.js';
import { deviceHealth, type DeviceHealthEntry, type XidRecord } from '../resourceslice/healthReport.js';
import type { DeviceTaint, TaintMap } from '../resourceslice/model.js';
import { deviceName } from '../resourceslice/names.js';
import type { MigPartitioning } from '../resourceslice/partitions.js';
import type { Logger } from '../util/log.js';
import type { InventorySource } from '../driver/state.js';

export interface DeviceMonitorOptions {
  readonly initial: NodeInventory;
  /** Synchronous NVML discovery (what start-up used). */
  readonly discover: () => NodeInventory;
  readonly driverName: string;
  /** Which devices a GPU is published as, so a GPU-wide taint covers them all; default static. */
  readonly migPartitioning?: MigPartitioning;
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
  /** The last re-discovery merged with lost-GPU handling; XID taints are kept apart. */
  private view: HealthView;
  /** By device name: the XID that taints it (the taints are derived from these). */
  private xids: Record<string, XidRecord> = {};
  /** Set while re-discovery fails; cleared by the next one that succeeds. */
  private discoveryFailure: { error: string; since: number } | undefined;
  private readonly healthListeners = new Set<() => void>();
  private healthKey: string;
  private key: string;
  private lastCheck = Date.now();
  private pendingRefresh: Promise<NodeInventory> | undefined;
  private timer?: NodeJS.Timeout;

  constructor(private readonly opts: DeviceMonitorOptions) {
    this.view = { inventory: opts.initial, taints: {}, unhealthy: [] };
    this.key = viewKey(this.published());
    this.healthKey = JSON.stringify(this.health());
  }

  /** What the node publishes: the view with the XID taints added. */
  private published(): HealthView {
    return { ...this.view, taints: mergeTaints(this.view.taints, this.xidTaintMap()) };
  }

  /** Each published device's health, as the kubelet's health stream reports it. */
  health(): DeviceHealthEntry[] {
    return deviceHealth({
      view: this.view,
      xids: this.xids,
      ...(this.discoveryFailure ? { discoveryFailure: this.discoveryFailure } : {}),
      ...(this.opts.migPartitioning ? { migPartitioning: this.opts.migPartitioning } : {}),
    });
  }

  /** Calls `listener` after every change of health(); returns an unsubscribe function. */
  onHealthChange(listener: () => void): () => void {
    this.healthListeners.add(listener);
    return () => this.healthListeners.delete(listener);
  }

  private notifyHealth(): void {
    const key = JSON.stringify(this.health());
    if (key === this.healthKey) return;
    this.healthKey = key;
    for (const listener of this.healthListeners) listener();
  }

  /** Hands the published view to onChange if it differs from the last one handed over. */
  private emit(): boolean {
    const view = this.published();
    const key = viewKey(view);
    if (key === this.key) return false;
    this.key = key;
    this.opts.onChange(view);
    return true;
  }

  /** An NVML event (src/nvml/events.ts). */
  recordEvent(event: DeviceEvent): void {
    const log = this.opts.logger;
    if (event.kind === 'migConfigChange') {
      log.info({ uuid: event.gpuUuid }, 'MIG configuration changed; re-discovering');
      this.check();
      return;
    }
    const devices = devicesForXid(this.view.inventory, event.gpuUuid, event, this.opts.migPartitioning);
    const taint = xidTaint(this.opts.driverName, event.xid);
    if (!taint) {
      log.info(
        { uuid: event.gpuUuid, xid: event.xid, devices },
        'XID reported (an application error); no taint',
      );
      return;
    }
    log.warn(
      { uuid: event.gpuUuid, xid: event.xid, devices },
      'XID critical error; devices tainted NoSchedule until cleared (`gpu-dra taints clear`) or the plugin restarts',
    );
    const record: XidRecord = {
      xid: event.xid,
      gpuUuid: event.gpuUuid,
      ...(event.gpuInstanceId !== undefined ? { gpuInstanceId: event.gpuInstanceId } : {}),
      ...(event.computeInstanceId !== undefined ? { computeInstanceId: event.computeInstanceId } : {}),
      at: Date.now(),
    };
    for (const name of devices) this.xids[name] = record;
    this.emit();
    this.notifyHealth();
  }

  /** The XID taints by device (what clearXidTaints can remove). */
  xidTaintMap(): TaintMap {
    const taints: Record<string, DeviceTaint[]> = {};
    for (const [device, r] of Object.entries(this.xids)) {
      const taint = xidTaint(this.opts.driverName, r.xid);
      if (taint) taints[device] = [taint];
    }
    return taints;
  }

  /**
   * Removes the XID taints of the named devices, a GPU's name covering every device it is
   * published as (its MIG devices, its partitions); `'all'` removes every XID taint. Health
   * taints (gpu-lost, gpu-unavailable) are not touched: they follow discovery. Republishes when
   * something was removed and returns the devices that lost a taint.
   */
  clearXidTaints(names: readonly string[] | 'all'): string[] {
    const tainted = Object.keys(this.xids);
    const targets = names === 'all' ? new Set(tainted) : this.expandDeviceNames(names);
    const cleared = tainted.filter((d) => targets.has(d)).sort();
    if (cleared.length === 0) return [];
    this.xids = Object.fromEntries(Object.entries(this.xids).filter(([d]) => !targets.has(d)));
    this.opts.logger.info({ devices: cleared }, 'XID taints cleared by an admin; republishing');
    this.emit();
    this.notifyHealth();
    return cleared;
  }

  /** The names plus, for a GPU's name, every device that GPU is published as. */
  private expandDeviceNames(names: readonly string[]): Set<string> {
    const out = new Set(names);
    for (const gpu of this.view.inventory.gpus) {
      const published = publishedDeviceNames(gpu, this.opts.migPartitioning);
      if (names.includes(deviceName(gpu))) for (const d of published) out.add(d);
    }
    return out;
  }

  current(): NodeInventory {
    return this.view.inventory;
  }

  taints(): TaintMap {
    return this.published().taints;
  }

  /**
   * Re-discovers soon unless the last check was under `minRefreshIntervalMs` ago. Callers that
   * arrive while one is pending share it: a burst of claims naming a new MIG device costs one
   * discovery, and it runs on its own turn of the event loop, not inside a caller's step.
   */
  refresh(): Promise<NodeInventory> {
    if (Date.now() - this.lastCheck < this.opts.minRefreshIntervalMs)
      return Promise.resolve(this.view.inventory);
    this.pendingRefresh ??= new Promise<NodeInventory>((resolve) => {
      setImmediate(() => {
        this.pendingRefresh = undefined;
        this.check();
        resolve(this.view.inventory);
      });
    });
    return this.pendingRefresh;
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
      log.warn({ err }, 'device re-discovery failed; keeping the published devices');
      this.discoveryFailed(err instanceof Error ? err.message : String(err));
      return false;
    }
    if (next.gpus.length === 0 && next.failures.length === 0 && this.view.inventory.gpus.length > 0) {
      log.warn('device re-discovery found no GPU; keeping the published devices');
      this.discoveryFailed('no GPU enumerated');
      return false;
    }
    this.discoveryFailure = undefined;
    const view = carryUnhealthyGpus(
      this.view.inventory,
      next,
      this.opts.driverName,
      this.opts.migPartitioning,
    );
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
    this.view = view;
    const changed = this.emit();
    if (changed)
      log.info(
        { gpus: view.inventory.gpus.length, unhealthy: view.unhealthy.length },
        'devices changed; republished',
      );
    this.opts.onCheck?.(changed ? 'changed' : 'unchanged');
    this.notifyHealth();
    return changed;
  }

  /** A failed check: health turns UNKNOWN (known faults stay), since the first failure in a row. */
  private discoveryFailed(error: string): void {
    this.discoveryFailure = { error, since: this.discoveryFailure?.since ?? this.lastCheck };
    this.opts.onCheck?.('failed');
    this.notifyHealth();
  }
}

function viewKey(view: HealthView): string {
  return JSON.stringify([view.inventory, view.taints]);
}
