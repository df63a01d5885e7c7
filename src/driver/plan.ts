/**
 * Step 1 of a prepare, pure and deterministic: an allocated ResourceClaim plus the node's
 * devices → the devices to prepare, with their request names and sharing settings. It may run
 * again on a repeated prepare, so it must not touch files, the clock or the API server; side
 * effects live in state.ts.
 */
import { GpuDraError } from '../util/errors.js';
import type { DeviceRequestAllocationResult, ResourceClaim } from '../api/resource.js';
import type { AllocatableDevice, PlanDevice } from './deviceNames.js';
import { quantityKey } from '../resourceslice/values.js';
import type { RecordedMigInstance } from './migDevices.js';
import {
  baseRequestName,
  configEntryForResult,
  sharingOf,
  checkConfigsAgainstDevices,
  validateClaimConfigs,
  type SharingSettings,
} from './opaqueConfig.js';

/**
 * One device of the claim. Planning may name a dynamic-MIG slot (`PlanDevice`); once prepare
 * has made the MIG device in it, the device exists (`AllocatableDevice`, the default).
 */
export interface PlannedDevice<D extends PlanDevice = AllocatableDevice> {
  /** Base request name (`req` for `req/sub`). */
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly device: D;
  readonly adminAccess: boolean;
  readonly shareId?: string;
  /** Bytes of the GPU's memory this share holds (`consumedCapacity.memory`), when recorded. */
  readonly consumedMemoryBytes?: number;
  readonly sharing?: SharingSettings;
  /**
   * Index in the claim's `config` list of the opaque config that applies, if any. Devices with
   * the same one share its MPS settings, whose per-device keys count them in this order.
   */
  readonly configIndex?: number;
  /** Dynamic MIG: made by this prepare; what the checkpoint records of it (ids once made). */
  readonly migInstance?: RecordedMigInstance;
}

export interface PlanInput {
  readonly claimUid: string;
  readonly driverName: string;
  readonly poolName: string;
  readonly claim: ResourceClaim;
  readonly devices: ReadonlyMap<string, PlanDevice>;
}

/**
 * This driver's results on this node's pool. A claim with none of this driver's devices is an
 * error, not an empty success: there is nothing to inject, and a CDI spec without devices is
 * invalid (the CDI library rejects the file: "invalid spec, no devices").
 */
function ourResults(input: Omit<PlanInput, 'devices'>): DeviceRequestAllocationResult[] {
  const all = input.claim.status?.allocation?.devices?.results ?? [];
  const mine = all.filter((r) => r.driver === input.driverName);
  if (mine.length === 0) {
    const drivers = [...new Set(all.map((r) => r.driver))].sort();
    throw new GpuDraError(
      'CLAIM_NO_DEVICES',
      `claim has no devices of driver ${input.driverName}` +
        (drivers.length > 0 ? ` (allocated from ${drivers.join(', ')})` : ' (no devices allocated)'),
      { claimUid: input.claimUid },
    );
  }
  const here = mine.filter((r) => r.pool === input.poolName);
  if (here.length === 0) {
    const pools = [...new Set(mine.map((r) => r.pool))].sort().join(', ');
    throw new GpuDraError(
      'CLAIM_WRONG_POOL',
      `claim's ${input.driverName} devices are in pool(s) ${pools}, not this node's pool ${input.poolName}`,
      { claimUid: input.claimUid },
    );
  }
  return here;
}

/**
 * The memory a share consumes, in bytes. The scheduler records it as a Quantity under the
 * device's capacity name (`memory`; qualified names are accepted too).
 */
function consumedMemory(
  input: Pick<PlanInput, 'claimUid' | 'driverName'>,
  result: DeviceRequestAllocationResult,
  index: number,
): number | undefined {
  const consumed = result.consumedCapacity;
  if (consumed === undefined) return undefined;
  const key = 'memory' in consumed ? 'memory' : `${input.driverName}/memory`;
  const raw = consumed[key];
  if (raw === undefined) return undefined;
  const exact = quantityKey(raw);
  const bytes = exact !== undefined && /^\d+$/.test(exact) ? Number(exact) : NaN;
  if (!Number.isSafeInteger(bytes)) {
    throw new GpuDraError(
      'CLAIM_ALLOCATION_INVALID',
      `status.allocation.devices.results[${String(index)}].consumedCapacity.${key}: ${JSON.stringify(raw)} is not a whole number of bytes`,
      { claimUid: input.claimUid },
    );
  }
  return bytes;
}

export function planClaim(input: PlanInput): PlannedDevice<PlanDevice>[] {
  const results = ourResults(input);
  const configs = validateClaimConfigs(input.driverName, input.claim.status?.allocation?.devices?.config);
  const all = input.claim.status?.allocation?.devices?.results ?? [];
  const planned = results.map((result): PlannedDevice<PlanDevice> => {
    const device = input.devices.get(result.device);
    if (!device) {
      throw new GpuDraError(
        'DEVICE_UNKNOWN',
        `allocated device ${result.device} (request ${result.request}) does not exist on this node`,
        { claimUid: input.claimUid },
      );
    }
    const entry = configEntryForResult(configs, result, device);
    const sharing = sharingOf(entry?.config);
    const consumedMemoryBytes = consumedMemory(input, result, all.indexOf(result));
    return {
      requestNames: [baseRequestName(result.request)],
      poolName: result.pool,
      deviceName: result.device,
      device,
      adminAccess: result.adminAccess === true,
      ...(result.shareID ? { shareId: result.shareID } : {}),
      ...(consumedMemoryBytes !== undefined ? { consumedMemoryBytes } : {}),
      ...(sharing ? { sharing } : {}),
      ...(entry ? { configIndex: entry.index } : {}),
    };
  });
  checkConfigsAgainstDevices(configs, planned);
  return planned;
}
