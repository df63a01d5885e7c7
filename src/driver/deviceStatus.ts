/**
 * Pure: what a prepared claim tells the world about its devices. Two readers, one description:
 *
 * - the claim's `status.devices[]` (DRAResourceClaimDeviceStatus, KEP-4817): per device the
 *   driver writes a `data` object a user or tool needs to find the hardware (UUID, product, for
 *   a MIG device its parent GPU and profile) and a Ready condition; statusWriter.ts sends it;
 * - the device metadata file (KEP-5304, deviceMetadata.ts): every attribute the ResourceSlice
 *   publishes for the device.
 *
 * Both start from the attributes the node publishes (resourceslice/model.ts), looked up by
 * device name, with the UUID of the device actually prepared: a MIG device made at prepare
 * (dynamic MIG) is published as a slot without one.
 */
import type { AttributeValue } from '../resourceslice/model.js';

/** A prepared device with what the node publishes about it. */
export interface DescribedDevice {
  /** Base request names (`req` for `req/sub`). */
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly shareId?: string | undefined;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
}

/** A prepared device as the checkpoint records it: enough to describe it again later. */
export interface RecordedDevice {
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly shareId?: string | undefined;
  readonly uuid?: string | undefined;
}

/**
 * Pure: each device with its published attributes (`published`, by device name) and its own
 * UUID. A device the model does not know (a model that failed to build) keeps its UUID alone.
 */
export function describeDevices(
  published: ReadonlyMap<string, Readonly<Record<string, AttributeValue>>>,
  devices: readonly RecordedDevice[],
): DescribedDevice[] {
  return devices.map((d) => {
    const attributes = { ...(published.get(d.deviceName) ?? {}) };
    if (d.uuid !== undefined) attributes['uuid'] = { string: d.uuid };
    return {
      requestNames: [...d.requestNames],
      poolName: d.poolName,
      deviceName: d.deviceName,
      ...(d.shareId ? { shareId: d.shareId } : {}),
      attributes,
    };
  });
}

/** `metav1.Condition` as the apiserver validates it. */
export interface StatusCondition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
  readonly lastTransitionTime: string;
}

/** One `status.devices[]` entry (`AllocatedDeviceStatus`); driver, pool, device, shareID key it. */
export interface DeviceStatusEntry {
  readonly driver: string;
  readonly pool: string;
  readonly device: string;
  readonly shareID?: string;
  readonly conditions: readonly StatusCondition[];
  readonly data: Readonly<Record<string, string>>;
}

/**
 * The attributes copied into `data`, under their attribute names: what `nvidia-smi -L`, DCGM
 * and a user reading `kubectl get resourceclaim -o yaml` identify a device by. The rest (driver
 * and CUDA versions, PCI address) is in the ResourceSlice and the metadata file; `data` is
 * limited to 10 KiB per entry.
 */
const STATUS_DATA_ATTRIBUTES = ['uuid', 'productName', 'parentUUID', 'profile'] as const;

function statusData(attributes: Readonly<Record<string, AttributeValue>>): Record<string, string> {
  const data: Record<string, string> = {};
  for (const key of STATUS_DATA_ATTRIBUTES) {
    const v = attributes[key];
    if (v && 'string' in v) data[key] = v.string;
  }
  return data;
}

/** The key the apiserver's list-map uses for an entry. */
export function statusEntryKey(e: Pick<DeviceStatusEntry, 'driver' | 'pool' | 'device' | 'shareID'>): string {
  return `${e.driver}/${e.pool}/${e.device}/${e.shareID ?? ''}`;
}

/**
 * Pure: the claim's `status.devices[]` entries for its prepared devices, one per (pool, device,
 * share), sorted by key so the same claim always gives the same patch. `now` stamps the Ready
 * condition (metav1.Condition requires a transition time).
 */
export function deviceStatusEntries(
  driverName: string,
  devices: readonly DescribedDevice[],
  now: Date,
): DeviceStatusEntry[] {
  const byKey = new Map<string, DeviceStatusEntry>();
  for (const d of devices) {
    const entry: DeviceStatusEntry = {
      driver: driverName,
      pool: d.poolName,
      device: d.deviceName,
      ...(d.shareId ? { shareID: d.shareId } : {}),
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Prepared',
          message: 'the device is prepared on the node: its CDI spec is written',
          lastTransitionTime: now.toISOString().replace(/\.\d+Z$/, 'Z'),
        },
      ],
      data: statusData(d.attributes),
    };
    byKey.set(statusEntryKey(entry), entry);
  }
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
}

export interface ClaimRef {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

/**
 * Pure: the server-side apply body for the claim's `status` subresource. Only the entries it
 * lists belong to our field manager, so other drivers' entries stay; applying an empty list
 * removes ours. The UID makes the apply fail (422: uid is immutable) rather than write to a
 * claim of the same name created since.
 */
export function statusApplyBody(claim: ClaimRef, entries: readonly DeviceStatusEntry[]): unknown {
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceClaim',
    metadata: { namespace: claim.namespace, name: claim.name, uid: claim.uid },
    status: { devices: entries },
  };
}

/**
 * Pure: are all `entries` in the claim the apiserver answered with? When not, it dropped the
 * field (DRAResourceClaimDeviceStatus off on that apiserver).
 */
export function statusKept(answer: unknown, entries: readonly DeviceStatusEntry[]): boolean {
  const devices = (answer as { status?: { devices?: unknown } } | undefined)?.status?.devices;
  const kept = new Set(
    Array.isArray(devices)
      ? devices.map((d) => statusEntryKey(d as Pick<DeviceStatusEntry, 'driver' | 'pool' | 'device'>))
      : [],
  );
  return entries.every((e) => kept.has(statusEntryKey(e)));
}
