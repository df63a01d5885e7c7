/**
 * Step 2 of a prepare, pure: may these devices be prepared for this claim, given what the
 * checkpoint says other claims hold? A device conflicts with a held one when they denote
 * overlapping hardware (the same device, or a full GPU and a MIG device carved from it) and no
 * sharing lets both claims use it.
 */
import { parseDeviceName } from '../resourceslice/names.js';

export interface HeldDevice {
  readonly deviceName: string;
  readonly adminAccess: boolean;
  readonly sharing?: { readonly strategy: string; readonly interval?: string | undefined } | undefined;
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
  /** Why they cannot share, for the error. */
  readonly reason: string;
}

/**
 * May `holder`'s use of a device coexist with `candidate`'s? Only when sharing says so: either
 * side has admin access (monitoring), or both time-slice it with the same interval (the slice is
 * the GPU's, one value for all). MPS does not share across claims: each claim's daemon takes its
 * GPUs in EXCLUSIVE_PROCESS mode, so a second daemon could not start; pods share an MPS GPU by
 * sharing one claim.
 */
export function mayShare(holder: Sharing, candidate: Sharing): boolean {
  return whyNotShared(holder, candidate) === undefined;
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
  if (held?.strategy === 'MPS' && wanted?.strategy === 'MPS') {
    return "it runs that claim's MPS daemon; pods share an MPS GPU by sharing one claim";
  }
  if (held === undefined) return 'no sharing allows both';
  return `it is shared by ${held.strategy} and this claim asks for ${wanted?.strategy ?? 'exclusive use'}`;
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
        if (!devicesOverlap(held.deviceName, want.deviceName)) continue;
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
