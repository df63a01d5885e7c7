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
  readonly sharing?: { readonly strategy: string } | undefined;
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
        if (devicesOverlap(held.deviceName, want.deviceName) && !mayShare(held, want)) {
          found = { wanted: want.deviceName, held: held.deviceName, holderUid, holder };
          break held;
        }
      }
    }
  }
  return found;
}
