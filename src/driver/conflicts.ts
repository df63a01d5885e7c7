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
  readonly sharing?: { readonly strategy: string; readonly interval?: string | undefined } | undefined;
  /** The scheduler's share of a device that allows multiple allocations. */
  readonly shareId?: string | undefined;
  /** Bytes of the device's memory the share holds. */
  readonly consumedMemoryBytes?: number | undefined;
  /** Dynamic MIG: the memory slices of its GPU the device is (to be) made on. */
  readonly migInstance?:
    { readonly placement: { readonly start: number; readonly size: number } } | undefined;
}

type Sharing = Pick<HeldDevice, 'adminAccess' | 'sharing'> &
  Partial<Pick<HeldDevice, 'deviceName' | 'shareId'>>;

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
  /** Why they cannot share, for the error. */
  readonly reason: string;
}

/**
 * May `holder`'s use of a device coexist with `candidate`'s? Only when sharing says so: either
 * side has admin access (monitoring); both time-slice it with the same interval (the slice is the
 * GPU's, one value for all); or both hold a share of it (consumable capacity: the scheduler
 * counted both against its capacity) without asking for different strategies, which are set on
 * the whole GPU. MPS is not shared across whole-GPU claims: each claim's daemon takes its GPUs in
 * EXCLUSIVE_PROCESS mode, so a second daemon could not start; pods share an MPS GPU by sharing
 * one claim. Shares are the exception: their daemons leave the GPU in DEFAULT mode (sharing/plan.ts).
 */
export function mayShare(holder: Sharing, candidate: Sharing): boolean {
  return whyNotShared(holder, candidate) === undefined;
}

/** Both are shares of the same device. */
function bothShares(holder: Sharing, candidate: Sharing): boolean {
  return (
    holder.shareId !== undefined &&
    holder.shareId !== '' &&
    candidate.shareId !== undefined &&
    candidate.shareId !== '' &&
    holder.deviceName === candidate.deviceName
  );
}

/** Why two uses of one device cannot coexist, in words for the error; undefined when they can. */
export function whyNotShared(holder: Sharing, candidate: Sharing): string | undefined {
  if (holder.adminAccess || candidate.adminAccess) return undefined;
  const held = holder.sharing;
  const wanted = candidate.sharing;
  if (held?.strategy === 'TimeSlicing' && wanted?.strategy === 'TimeSlicing') {
    if ((held.interval ?? 'Default') === (wanted.interval ?? 'Default')) return undefined;
    return `it is time-sliced with interval ${held.interval ?? 'Default'} and this claim asks for ${wanted.interval ?? 'Default'}; a GPU has one time slice`;
  }
  if (bothShares(holder, candidate)) {
    if (held === undefined || wanted === undefined || held.strategy === wanted.strategy) return undefined;
    return `its share is used with ${held.strategy} and this claim's share asks for ${wanted.strategy}; a strategy is set on the whole GPU`;
  }
  if (held?.strategy === 'MPS' && wanted?.strategy === 'MPS') {
    return "it runs that claim's MPS daemon; pods share an MPS GPU by sharing one claim";
  }
  if (held === undefined) return 'no sharing allows both';
  return `it is shared by ${held.strategy} and this claim asks for ${wanted?.strategy ?? 'exclusive use'}`;
}

/** Consumable capacity: may two shares of one device coexist? (See {@link mayShare}.) */
export function sharesMayCoexist(
  holder: Pick<HeldDevice, 'deviceName' | 'shareId' | 'sharing'>,
  candidate: Pick<HeldDevice, 'deviceName' | 'shareId' | 'sharing'>,
): boolean {
  const h = { ...holder, adminAccess: false };
  const c = { ...candidate, adminAccess: false };
  return bothShares(h, c) && whyNotShared(h, c) === undefined;
}

/** The GPU minor a device name lives on (its own, or its MIG parent's); undefined if not ours. */
function gpuMinorOf(name: string): number | undefined {
  const parsed = parseDeviceName(name);
  if (!parsed) return undefined;
  return parsed.kind === 'gpu' ? parsed.minor : parsed.parentMinor;
}

type Placed = Pick<HeldDevice, 'deviceName' | 'migInstance'>;

/**
 * Do two devices denote overlapping hardware? The same name does; so do a full GPU and a MIG
 * device carved from it (`gpu-0` and `gpu-0-mig-…`), and two MIG devices of one GPU made (dynamic
 * MIG) on overlapping memory slices. Two existing MIG devices do not.
 */
export function devicesOverlap(a: Placed | string, b: Placed | string): boolean {
  const [da, db] = [
    typeof a === 'string' ? { deviceName: a } : a,
    typeof b === 'string' ? { deviceName: b } : b,
  ];
  if (da.deviceName === db.deviceName) return true;
  const kindA = parseDeviceName(da.deviceName)?.kind;
  const kindB = parseDeviceName(db.deviceName)?.kind;
  if (kindA === undefined || kindB === undefined) return false;
  if (gpuMinorOf(da.deviceName) !== gpuMinorOf(db.deviceName)) return false;
  if (kindA !== kindB) return true;
  const [pa, pb] = [da.migInstance?.placement, db.migInstance?.placement];
  return (
    pa !== undefined && pb !== undefined && pa.start < pb.start + pb.size && pb.start < pa.start + pa.size
  );
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
        if (!devicesOverlap(held, want)) continue;
        const reason = whyNotShared(held, want);
        if (reason !== undefined) {
          found = { wanted: want.deviceName, held: held.deviceName, holderUid, holder, reason };
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
