/**
 * GPU health → what the node publishes. A GPU that NVML stops answering for (GPU_IS_LOST after
 * it fell off the bus, or any other per-GPU error) keeps its last-known devices in the pool,
 * tainted NoSchedule (KEP-5055), instead of vanishing: the scheduler stops placing new claims
 * on it, claims that already hold it stay visible against a device that exists, and when NVML
 * answers again the taint goes. GPUs never seen healthy are only left out (the model warns).
 *
 * Pure: the device monitor (src/node/deviceMonitor.ts) feeds it each re-discovery.
 */
import type { GpuDevice, GpuFailure, NodeInventory } from '../nvml/types.js';
import type { DeviceTaint, TaintMap } from './model.js';
import { naturalCompare } from '../util/naturalCompare.js';
import { deviceName } from './names.js';
import { gpuPublication, migPartitions, type MigPartitioning } from './partitions.js';

/** Taint keys, prefixed by the driver name as NVIDIA's driver does (`gpu.nvidia.com/gpu-lost`). */
export const GPU_LOST_TAINT = 'gpu-lost';
export const GPU_UNAVAILABLE_TAINT = 'gpu-unavailable';
export const XID_TAINT = 'xid';

/**
 * XIDs that report an application's fault rather than the GPU's (NVIDIA's driver uses the same
 * list). They taint nothing: NVIDIA's driver gives them effect None, which apiservers before
 * 1.35 reject, failing the whole slice.
 */
export const APPLICATION_XIDS: readonly number[] = [13, 31, 43, 45, 68, 109];

export interface UnhealthyGpu {
  /** The GPU as last discovered healthy. */
  readonly gpu: GpuDevice;
  readonly failure: GpuFailure;
  /** Its published device names (the GPU, its MIG devices, or itself and its partitions). */
  readonly devices: readonly string[];
}

export interface HealthView {
  /** `next` plus the last-known form of each unhealthy GPU (whose failures it drops). */
  readonly inventory: NodeInventory;
  readonly taints: TaintMap;
  readonly unhealthy: readonly UnhealthyGpu[];
}

/** Kubernetes label values: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends. */
function labelValue(s: string): string {
  const v = s
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return v === '' ? 'unknown' : v;
}

export function healthTaint(driverName: string, failure: GpuFailure): DeviceTaint {
  return failure.code === 'GPU_IS_LOST'
    ? { key: `${driverName}/${GPU_LOST_TAINT}`, effect: 'NoSchedule' }
    : {
        key: `${driverName}/${GPU_UNAVAILABLE_TAINT}`,
        value: labelValue(failure.code ?? 'unknown'),
        effect: 'NoSchedule',
      };
}

/**
 * Merges a fresh discovery with what was published before. A failed GPU is matched to a
 * previous one by NVML index (all NVML has for a GPU it cannot open), and only while the
 * number of enumerated GPUs is unchanged and no healthy GPU now has its identity.
 */
export function carryUnhealthyGpus(
  previous: NodeInventory | undefined,
  next: NodeInventory,
  driverName: string,
  migPartitioning: MigPartitioning = 'static',
): HealthView {
  const enumerated = (inv: NodeInventory): number => inv.gpus.length + inv.failures.length;
  if (!previous || next.failures.length === 0 || enumerated(previous) !== enumerated(next)) {
    return { inventory: next, taints: {}, unhealthy: [] };
  }
  const healthyUuids = new Set(next.gpus.map((g) => g.uuid));
  const healthyMinors = new Set(next.gpus.map((g) => g.minor));
  const unhealthy: UnhealthyGpu[] = [];
  for (const failure of next.failures) {
    const gpu = previous.gpus.find((g) => g.index === failure.index);
    if (!gpu || healthyUuids.has(gpu.uuid) || healthyMinors.has(gpu.minor)) continue;
    unhealthy.push({ gpu, failure, devices: publishedDeviceNames(gpu, migPartitioning) });
  }
  if (unhealthy.length === 0) return { inventory: next, taints: {}, unhealthy };
  const carried = new Set(unhealthy.map((u) => u.failure.index));
  const taints: Record<string, DeviceTaint[]> = {};
  for (const u of unhealthy)
    for (const name of u.devices) taints[name] = [healthTaint(driverName, u.failure)];
  return {
    inventory: {
      ...next,
      gpus: [...next.gpus, ...unhealthy.map((u) => u.gpu)].sort((a, b) => a.index - b.index),
      failures: next.failures.filter((f) => !carried.has(f.index)),
    },
    taints,
    unhealthy,
  };
}

/** `<driver>/xid=<xid>`, NoSchedule; undefined for an application XID. */
export function xidTaint(driverName: string, xid: number): DeviceTaint | undefined {
  if (APPLICATION_XIDS.includes(xid)) return undefined;
  return { key: `${driverName}/${XID_TAINT}`, value: String(xid), effect: 'NoSchedule' };
}

/**
 * The published devices an XID concerns: the MIG device it is scoped to when that one is
 * published, else every device of the GPU (in dynamic mode: the GPU and all its partitions).
 * Empty for a GPU this node does not publish.
 */
export function devicesForXid(
  inventory: NodeInventory,
  gpuUuid: string,
  scope: { readonly gpuInstanceId?: number; readonly computeInstanceId?: number } = {},
  migPartitioning: MigPartitioning = 'static',
): string[] {
  const gpu = inventory.gpus.find((g) => g.uuid === gpuUuid);
  if (!gpu) return [];
  const published = publishedDeviceNames(gpu, migPartitioning);
  if (gpu.migMode?.current === true && scope.gpuInstanceId !== undefined) {
    const hit = gpu.migDevices.find(
      (m) =>
        m.gpuInstanceId === scope.gpuInstanceId &&
        (scope.computeInstanceId === undefined || m.computeInstanceId === scope.computeInstanceId),
    );
    // A dynamic partition has the name of the instance created for it. The instance spanning
    // the whole GPU is also what a claim for the GPU itself gets in dynamic mode.
    if (hit && published.includes(deviceName(hit))) {
      const spansGpu =
        gpuPublication(gpu, migPartitioning) === 'partitions' &&
        migPartitions(gpu).every(
          (p) => p.placement.start + p.placement.size <= hit.placement.start + hit.placement.size,
        );
      return spansGpu && hit.placement.start === 0 ? [deviceName(gpu), deviceName(hit)] : [deviceName(hit)];
    }
  }
  return published;
}

/**
 * The names a GPU is published under (model.ts): its MIG devices, itself, or in dynamic mode
 * itself and every possible partition.
 */
export function publishedDeviceNames(gpu: GpuDevice, migPartitioning: MigPartitioning = 'static'): string[] {
  switch (gpuPublication(gpu, migPartitioning)) {
    case 'mig':
      return gpu.migDevices.map(deviceName).sort(naturalCompare);
    case 'partitions':
      return [deviceName(gpu), ...migPartitions(gpu).map((p) => p.name)].sort(naturalCompare);
    case 'whole':
      return [deviceName(gpu)];
    case 'none':
      return [];
  }
}

/** Per-device union of taint maps; a later taint replaces an earlier one with the same key. */
export function mergeTaints(...maps: readonly TaintMap[]): TaintMap {
  const out: Record<string, DeviceTaint[]> = {};
  for (const map of maps) {
    for (const [device, taints] of Object.entries(map)) {
      const list = (out[device] ??= []);
      for (const t of taints) {
        const i = list.findIndex((x) => x.key === t.key);
        if (i >= 0) list[i] = t;
        else list.push(t);
      }
    }
  }
  return out;
}
