/**
 * Pure and deterministic: an allocated ResourceClaim plus the node's devices → what must be
 * prepared. It runs again on every repeated prepare and on restart recovery, so it must not
 * touch files, the clock or the API server. Side effects live in state.ts.
 */
import { GpuDraError } from '../util/errors.js';
import type { DeviceRequestAllocationResult, ResourceClaim } from './claims.js';
import type { AllocatableDevice } from './deviceNames.js';
import {
  baseRequestName,
  configForResult,
  sharingOf,
  validateClaimConfigs,
  type SharingSettings,
} from './opaqueConfig.js';

export interface PlannedDevice {
  /** Base request name (`req` for `req/sub`). */
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly device: AllocatableDevice;
  readonly adminAccess: boolean;
  readonly shareId?: string;
  readonly sharing?: SharingSettings;
}

export interface PlanInput {
  readonly driverName: string;
  readonly poolName: string;
  readonly claim: ResourceClaim;
  readonly devices: ReadonlyMap<string, AllocatableDevice>;
}

/**
 * This driver's results on this node's pool. A claim with none of this driver's devices is an
 * error, not an empty success: there is nothing to inject, and a CDI spec without devices is
 * invalid (the CDI library rejects the file: "invalid spec, no devices").
 */
export function ourResults(input: Omit<PlanInput, 'devices'>): DeviceRequestAllocationResult[] {
  const all = input.claim.status?.allocation?.devices?.results ?? [];
  const mine = all.filter((r) => r.driver === input.driverName);
  if (mine.length === 0) {
    const drivers = [...new Set(all.map((r) => r.driver))].sort();
    throw new GpuDraError(
      'CLAIM_NO_DEVICES',
      `claim has no devices of driver ${input.driverName}` +
        (drivers.length > 0 ? ` (allocated from ${drivers.join(', ')})` : ' (no devices allocated)'),
    );
  }
  const here = mine.filter((r) => r.pool === input.poolName);
  if (here.length === 0) {
    const pools = [...new Set(mine.map((r) => r.pool))].sort().join(', ');
    throw new GpuDraError(
      'CLAIM_WRONG_POOL',
      `claim's ${input.driverName} devices are in pool(s) ${pools}, not this node's pool ${input.poolName}`,
    );
  }
  return here;
}

export function planClaim(input: PlanInput): PlannedDevice[] {
  const results = ourResults(input);
  const configs = validateClaimConfigs(input.driverName, input.claim.status?.allocation?.devices?.config);
  return results.map((result) => {
    const device = input.devices.get(result.device);
    if (!device) {
      throw new GpuDraError(
        'DEVICE_UNKNOWN',
        `allocated device ${result.device} (request ${result.request}) does not exist on this node`,
      );
    }
    const sharing = sharingOf(configForResult(configs, result, device));
    return {
      requestNames: [baseRequestName(result.request)],
      poolName: result.pool,
      deviceName: result.device,
      device,
      adminAccess: result.adminAccess === true,
      ...(result.shareID ? { shareId: result.shareID } : {}),
      ...(sharing ? { sharing } : {}),
    };
  });
}

/**
 * May `holder`'s use of a device coexist with `candidate`'s? Only when sharing says so: either
 * side has admin access (monitoring), or both configured the same sharing strategy.
 */
export function mayShare(
  holder: { readonly adminAccess: boolean; readonly sharing?: { readonly strategy: string } | undefined },
  candidate: { readonly adminAccess: boolean; readonly sharing?: { readonly strategy: string } | undefined },
): boolean {
  if (holder.adminAccess || candidate.adminAccess) return true;
  return holder.sharing !== undefined && holder.sharing.strategy === candidate.sharing?.strategy;
}

const MIG_NAME = /^gpu-(\d+)-mig-.+-\d+-\d+$/;

/**
 * Do two device names denote overlapping hardware? The same name does; so do a full GPU and a
 * MIG device carved from it (`gpu-0` and `gpu-0-mig-…`). Two different MIG devices do not.
 */
export function devicesOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  const parentA = MIG_NAME.exec(a)?.[1];
  const parentB = MIG_NAME.exec(b)?.[1];
  if (parentA !== undefined && parentB === undefined) return b === `gpu-${parentA}`;
  if (parentB !== undefined && parentA === undefined) return a === `gpu-${parentB}`;
  return false;
}
