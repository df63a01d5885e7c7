/**
 * Pure parts of rebuilding the prepared claims after the checkpoint was lost (corrupt, torn, or
 * written by a newer driver): what a spec file no claim could be matched to still holds, and
 * the words of the Event and log line that report the rebuild. The I/O (reading specs, asking
 * the API, writing the new entries) is DeviceState's.
 */
import { cdiDeviceName } from '../cdi/spec.js';
import type { CheckpointClaim, RebuildMarker } from '../checkpoint/schema.js';
import { parseDeviceName } from '../resourceslice/names.js';
import { shorten } from '../util/shorten.js';

/** How one spec file fared in a rebuild. */
export type RebuildOutcome = 'rebuilt' | 'dropped' | 'kept' | 'pending';

/** What a rebuild did, claim UIDs per outcome (over every attempt). */
export interface RebuildTally {
  readonly rebuilt: readonly string[];
  readonly dropped: readonly string[];
  readonly kept: readonly string[];
  readonly pending: readonly string[];
}

/** The facts an Event and the log line report once a rebuild is done. */
export interface RebuildSummary extends RebuildTally {
  readonly file: string;
  readonly marker: Readonly<RebuildMarker>;
  readonly attempts: number;
}

/**
 * A checkpoint entry for a spec file whose claim could not be rebuilt (no identity in it, as in
 * specs of older versions; a plan that no longer works): it holds the devices the spec names,
 * exclusively (sharing is unknown), so that no other claim is handed them while the pod that
 * may use them runs. The kubelet's unprepare of the claim, or (with a namespace/name) a claim
 * that wants the devices and finds through the API that this one is gone, releases them; its
 * next prepare, which names the claim, rebuilds its record from the API.
 */
export function heldFromSpec(
  uid: string,
  raw: unknown,
  poolName: string,
  identity: { readonly namespace: string; readonly name: string } | undefined,
  cdiSpecFile: string,
): CheckpointClaim {
  const names = new Set<string>();
  const devices =
    typeof raw === 'object' && raw !== null ? (raw as { devices?: unknown }).devices : undefined;
  for (const d of Array.isArray(devices) ? (devices as unknown[]) : []) {
    const name = typeof d === 'object' && d !== null ? (d as { name?: unknown }).name : undefined;
    const prefix = cdiDeviceName(uid, '');
    if (typeof name !== 'string' || !name.startsWith(prefix)) continue;
    // A share's CDI device is `<uid>-<device>-share-<id>`: the device is what it holds.
    const device = name.slice(prefix.length).replace(/-share-[a-z0-9]+$/, '');
    if (parseDeviceName(device)) names.add(device);
  }
  return {
    state: 'PrepareCompleted',
    heldFromSpec: true,
    namespace: identity?.namespace ?? '',
    name: identity?.name ?? '',
    cdiSpecFile,
    devices: [...names].sort().map((deviceName) => ({
      requestNames: [],
      poolName,
      deviceName,
      cdiDeviceIds: [],
      adminAccess: false,
    })),
    updated: new Date().toISOString(),
  };
}

/** Event notes are limited to 1 kB by the API. */
const NOTE_MAX = 1024;

/** What happened, in one sentence set: the Event's note and the log line's message. */
export function rebuildNote(s: RebuildSummary): string {
  const what =
    s.marker.reason === 'tooNew'
      ? `checkpoint ${s.file} was written by a newer gpu-dra (${s.marker.problem})`
      : `checkpoint ${s.file} was unreadable (${shorten(s.marker.problem, 200)})`;
  const back =
    s.marker.reason === 'tooNew'
      ? ' To go back to the newer version, upgrade again: it reads the rebuilt checkpoint.'
      : '';
  const kept =
    s.kept.length > 0
      ? ` Kept ${String(s.kept.length)} spec(s) it could not match to a claim; their devices stay held until unprepared.`
      : '';
  return shorten(
    `The ${what}; it was kept as ${s.marker.movedTo}. Rebuilt ${String(s.rebuilt.length)} prepared claim(s) from the API, ` +
      `dropped ${String(s.dropped.length)} no longer allocated here.${kept}${back}`,
    NOTE_MAX,
  );
}
