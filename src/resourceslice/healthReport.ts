/**
 * What the device monitor knows → one health entry per published device, as the kubelet's
 * resource health stream (KEP-4680) carries it: UNHEALTHY with the reason a person can act on
 * (an XID and what it means, a GPU off the bus, NVML refusing a GPU), UNKNOWN while NVML does
 * not answer re-discovery, HEALTHY otherwise. Pure: src/node/deviceMonitor.ts holds the state,
 * src/kubelet/healthService.ts streams the result.
 */
import type { GpuDevice } from '../nvml/types.js';
import { XID_MEANINGS } from '../nvml/xids.js';
import type { HealthView } from './gpuHealth.js';
import { publishedDeviceNames } from './gpuHealth.js';
import type { MigPartitioning } from './partitions.js';

export type DeviceHealthStatus = 'UNKNOWN' | 'HEALTHY' | 'UNHEALTHY';

/** An XID that made devices unhealthy (application XIDs never get here). */
export interface XidRecord {
  readonly xid: number;
  readonly gpuUuid: string;
  readonly gpuInstanceId?: number;
  readonly computeInstanceId?: number;
  /** When it was reported, ms since the epoch. */
  readonly at: number;
}

export interface HealthInputs {
  /** The last re-discovery merged with lost-GPU handling (gpuHealth.ts). */
  readonly view: HealthView;
  /** By device name: the latest XID that concerns it. */
  readonly xids: Readonly<Record<string, XidRecord>>;
  /** Set while re-discovery fails: what failed, and since when (ms since the epoch). */
  readonly discoveryFailure?: { readonly error: string; readonly since: number };
  readonly migPartitioning?: MigPartitioning;
}

export interface DeviceHealthEntry {
  readonly device: string;
  readonly health: DeviceHealthStatus;
  /** Empty when healthy; at most MAX_HEALTH_MESSAGE characters. */
  readonly message: string;
}

/** The API's limit (ResourceHealthMessageMaxLength); the kubelet would cut a longer one itself. */
export const MAX_HEALTH_MESSAGE = 1024;

/** `XID 48 (double-bit ECC error: uncorrectable memory error)`; unknown XIDs point at NVIDIA's catalog. */
export function describeXid(xid: number): string {
  const known = XID_MEANINGS[xid];
  return known ? `XID ${String(xid)} (${known.meaning})` : `XID ${String(xid)} (see NVIDIA's XID catalog)`;
}

function xidMessage(r: XidRecord): string {
  const scope =
    r.gpuInstanceId === undefined
      ? `GPU ${r.gpuUuid}`
      : `GPU instance ${String(r.gpuInstanceId)}` +
        (r.computeInstanceId === undefined ? '' : `/compute instance ${String(r.computeInstanceId)}`) +
        ` of GPU ${r.gpuUuid}`;
  return `${describeXid(r.xid)} on ${scope} at ${new Date(r.at).toISOString()}; reset the GPU, then clear it with gpu-dra taints clear (or restart the plugin)`;
}

function failureMessage(gpu: GpuDevice, error: string, code: string | undefined): string {
  return code === 'GPU_IS_LOST'
    ? `GPU fell off the bus: NVML reports GPU ${gpu.uuid} (minor ${String(gpu.minor)}) lost (GPU_IS_LOST); it needs a reset or a reboot`
    : `NVML cannot use GPU ${gpu.uuid} (minor ${String(gpu.minor)}): ${code ? `${code}: ` : ''}${error}`;
}

function truncate(message: string): string {
  return message.length <= MAX_HEALTH_MESSAGE ? message : `${message.slice(0, MAX_HEALTH_MESSAGE - 3)}...`;
}

/**
 * One entry per published device, in inventory order. A GPU-wide problem (lost, unusable, an
 * unscoped XID) covers all of the GPU's devices; a MIG-scoped XID only the devices it was
 * recorded for. Known faults stay UNHEALTHY while NVML does not answer; the rest turn UNKNOWN.
 */
export function deviceHealth(inputs: HealthInputs): DeviceHealthEntry[] {
  const { view, xids, discoveryFailure } = inputs;
  const lost = new Map(view.unhealthy.map((u) => [u.gpu.uuid, u]));
  const unknown = discoveryFailure
    ? `NVML not answering: re-discovery failing since ${new Date(discoveryFailure.since).toISOString()} (${discoveryFailure.error}); health unknown`
    : undefined;
  const out: DeviceHealthEntry[] = [];
  for (const gpu of view.inventory.gpus) {
    const failure = lost.get(gpu.uuid)?.failure;
    for (const device of publishedDeviceNames(gpu, inputs.migPartitioning)) {
      const reasons: string[] = [];
      if (failure) reasons.push(failureMessage(gpu, failure.error, failure.code));
      const xid = xids[device];
      if (xid) reasons.push(xidMessage(xid));
      if (reasons.length > 0)
        out.push({ device, health: 'UNHEALTHY', message: truncate(reasons.join('; ')) });
      else if (unknown) out.push({ device, health: 'UNKNOWN', message: truncate(unknown) });
      else out.push({ device, health: 'HEALTHY', message: '' });
    }
  }
  return out;
}
