/**
 * Step 2 of a prepare, pure: may these devices be prepared for this claim, given what the
 * checkpoint says other claims hold? A device conflicts with a held one when they denote
 * overlapping hardware (the same device, or a full GPU and a MIG device carved from it) and no
 * sharing lets both claims use it. Shares of one GPU (consumable capacity) may coexist, as long
 * as together they hold no more of its memory than it has.
 */
import { parseDeviceName } from '../resourceslice/names.js';

export interface HeldDevice {
  readonly deviceName: string;
  readonly adminAccess: boolean;
  readonly sharing?: { readonly strategy: string } | undefined;
  /** The scheduler's share of a device that allows multiple allocations. */
  readonly shareId?: string | undefined;
  /** Bytes of the device's memory the share holds. */
  readonly consumedMemoryBytes?: number | undefined;
}

type Sharing = Pick<HeldDevice, 'adminAccess' | 'sharing'>;

export interface ClaimHolding {
  readonly namespace: string;
  readonly name: string;
  readonly devices: readonly HeldDevice[];
}

export interface Conflict {
  readonly wanted: string;
  readonly held: string;
  readonly holderUid: string;
  readonly holder: ClaimHolding;
}

/**
 * May `holder`'s use of a device coexist with `candidate`'s? Only when sharing says so: either
 * side has admin access (monitoring), or both configured the same sharing strategy.
 */
export function mayShare(holder: Sharing, candidate: Sharing): boolean {
  if (holder.adminAccess || candidate.adminAccess) return true;
  return holder.sharing !== undefined && holder.sharing.strategy === candidate.sharing?.strategy;
}

/**
 * Consumable capacity: two claims that each hold a share of the same device (each has a share
 * ID from the scheduler, which counted both against the device's capacity) may coexist. A share
 * next to a whole-device use may not. Their sharing configs must not name different strategies:
 * a strategy is set on the whole GPU.
 */
export function sharesMayCoexist(
  holder: Pick<HeldDevice, 'deviceName' | 'shareId' | 'sharing'>,
  candidate: Pick<HeldDevice, 'deviceName' | 'shareId' | 'sharing'>,
): boolean {
  if (!holder.shareId || !candidate.shareId || holder.deviceName !== candidate.deviceName) return false;
  return (
    holder.sharing === undefined ||
    candidate.sharing === undefined ||
    holder.sharing.strategy === candidate.sharing.strategy
  );
}

/** The GPU minor a device name lives on (its own, or its MIG parent's); undefined if not ours. */
function gpuMinorOf(name: string): number | undefined {
  const parsed = parseDeviceName(name);
  if (!parsed) return undefined;
  return parsed.kind === 'gpu' ? parsed.minor : parsed.parentMinor;
}

/**
 * Do two device names denote overlapping hardware? The same name does; so do a full GPU and a
 * MIG device carved from it (`gpu-0` and `gpu-0-mig-…`). Two different MIG devices do not.
 */
export function devicesOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  const kindA = parseDeviceName(a)?.kind;
  const kindB = parseDeviceName(b)?.kind;
  if (kindA === undefined || kindB === undefined || kindA === kindB) return false;
  return gpuMinorOf(a) === gpuMinorOf(b);
}

/**
 * The conflict between `wanted` and what other claims hold with the lowest holder UID (so the
 * answer does not depend on map order); undefined if none. One pass, no sort: it runs on every
 * prepare against every held claim.
 */
export function findConflict(
  claims: Readonly<Record<string, ClaimHolding>>,
  claimUid: string,
  wanted: readonly HeldDevice[],
): Conflict | undefined {
  let found: Conflict | undefined;
  for (const holderUid in claims) {
    if (holderUid === claimUid || (found !== undefined && holderUid >= found.holderUid)) continue;
    const holder = claims[holderUid] as ClaimHolding;
    held: for (const held of holder.devices) {
      for (const want of wanted) {
        if (
          devicesOverlap(held.deviceName, want.deviceName) &&
          !mayShare(held, want) &&
          !sharesMayCoexist(held, want)
        ) {
          found = { wanted: want.deviceName, held: held.deviceName, holderUid, holder };
          break held;
        }
      }
    }
  }
  return found;
}

export interface MemoryHolder {
  readonly uid: string;
  readonly holder: ClaimHolding;
  readonly bytes: number;
}

export interface MemoryOvercommit {
  readonly device: string;
  readonly capacityBytes: number;
  /** What the claim being prepared asks of the device (all its shares of it). */
  readonly wantedBytes: number;
  /** Other claims' shares of the device, in UID order. */
  readonly holders: readonly MemoryHolder[];
}

function memoryOn(devices: readonly HeldDevice[], device: string): number | undefined {
  let sum: number | undefined;
  for (const d of devices)
    if (d.deviceName === device && d.consumedMemoryBytes !== undefined)
      sum = (sum ?? 0) + d.consumedMemoryBytes;
  return sum;
}

/**
 * Would the wanted shares, with the shares other claims hold, take more of a device's memory
 * than it has? The scheduler never allocates that; this catches a stale record or a race with
 * it, since a share's memory limit is only a promise if the shares fit. Devices whose capacity
 * `capacityOf` does not know are not checked. Returns the first such device in name order.
 */
export function findMemoryOvercommit(
  claims: Readonly<Record<string, ClaimHolding>>,
  claimUid: string,
  wanted: readonly HeldDevice[],
  capacityOf: (device: string) => number | undefined,
): MemoryOvercommit | undefined {
  const devices = [
    ...new Set(wanted.filter((w) => w.consumedMemoryBytes !== undefined).map((w) => w.deviceName)),
  ];
  for (const device of devices.sort()) {
    const capacityBytes = capacityOf(device);
    const wantedBytes = memoryOn(wanted, device) ?? 0;
    if (capacityBytes === undefined) continue;
    const holders: MemoryHolder[] = [];
    let total = wantedBytes;
    for (const uid in claims) {
      if (uid === claimUid) continue;
      const holder = claims[uid] as ClaimHolding;
      const bytes = memoryOn(holder.devices, device);
      if (bytes === undefined) continue;
      holders.push({ uid, holder, bytes });
      total += bytes;
    }
    if (total > capacityBytes) {
      holders.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
      return { device, capacityBytes, wantedBytes, holders };
    }
  }
  return undefined;
}
