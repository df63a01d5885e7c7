/**
 * What a claim's sharing settings change on the host, and what undoing them takes. Pure: the
 * claim's devices and what the other recorded claims hold in, commands and daemons out; the
 * applier (apply.ts) runs them.
 *
 * - Time-slicing (full GPUs): `nvidia-smi -i <uuid> -c DEFAULT`, then
 *   `nvidia-smi compute-policy -i <uuid> --set-timeslice <0-3>`, as NVIDIA's driver runs them. The
 *   slice is the GPU's, not the claim's: claims that share a GPU must agree on it (conflicts.ts),
 *   and it goes back to Default only when the last of them is unprepared.
 * - MPS: one control daemon per group of the claim's devices with the same MPS settings (a claim
 *   whose requests configure MPS differently gets one daemon each), and the full GPUs among them
 *   in EXCLUSIVE_PROCESS compute mode, so only the daemon's server runs work on them; back to
 *   DEFAULT when the daemon goes. A claim holding a share of a GPU (consumable capacity) leaves
 *   it in DEFAULT mode: each share's claim runs its own daemon there, and each daemon's pinned
 *   memory limit (at most the share, driver/state.ts) is what keeps the shares apart.
 * - MIG devices: the time slice is not settable per MIG device (NVIDIA's driver ignores it too)
 *   and compute mode belongs to the parent, so only MPS applies to them.
 */
import { createHash } from 'node:crypto';
import type { SharingSettings } from './settings.js';

/** `nvidia-smi compute-policy --set-timeslice` values. */
export const TIMESLICE_VALUE = { Default: 0, Short: 1, Medium: 2, Long: 3 } as const;
export type TimeSliceInterval = keyof typeof TIMESLICE_VALUE;

/** A device of a claim as the sharing plan needs it (planned, or read back from the checkpoint). */
export interface SharedDevice {
  readonly deviceName: string;
  readonly uuid: string;
  readonly kind: 'gpu' | 'mig';
  readonly sharing?: SharingSettings | undefined;
  /** Set when the claim holds a share of the device (consumable capacity), not all of it. */
  readonly shareId?: string | undefined;
}

/** One MPS control daemon: its identity and the devices it serves. */
export interface MpsGroup {
  /** `<claimUID>-<5 hex of sha256(uuids)>`: stable for the same claim and devices. */
  readonly id: string;
  readonly deviceNames: readonly string[];
  readonly uuids: readonly string[];
  /**
   * Full GPUs among them held whole: these go to EXCLUSIVE_PROCESS. A share's GPU stays in
   * DEFAULT mode, where the daemons of the other shares' claims run beside this one.
   */
  readonly gpuUuids: readonly string[];
  readonly mps: NonNullable<SharingSettings['mps']>;
}

export function mpsDaemonId(claimUid: string, uuids: readonly string[]): string {
  return `${claimUid}-${createHash('sha256').update(uuids.join(',')).digest('hex').slice(0, 5)}`;
}

/** The claim's devices whose sharing is MPS, grouped by identical settings, in device order. */
export function mpsGroups(claimUid: string, devices: readonly SharedDevice[]): MpsGroup[] {
  const groups = new Map<string, SharedDevice[]>();
  for (const d of devices) {
    if (d.sharing?.strategy !== 'MPS') continue;
    const key = JSON.stringify(d.sharing.mps ?? {});
    const list = groups.get(key) ?? [];
    if (!list.some((x) => x.uuid === d.uuid)) list.push(d);
    groups.set(key, list);
  }
  return [...groups.entries()].map(([key, list]) => {
    const uuids = list.map((d) => d.uuid);
    return {
      id: mpsDaemonId(claimUid, uuids),
      deviceNames: list.map((d) => d.deviceName),
      uuids,
      gpuUuids: exclusiveMpsGpus(list),
      mps: JSON.parse(key) as MpsGroup['mps'],
    };
  });
}

/** Full GPUs held whole with MPS, which go to EXCLUSIVE_PROCESS (one entry per GPU). */
export function exclusiveMpsGpus(devices: readonly SharedDevice[]): string[] {
  const out = new Set<string>();
  for (const d of devices)
    if (d.kind === 'gpu' && !d.shareId && d.sharing?.strategy === 'MPS') out.add(d.uuid);
  return [...out];
}

/** Full GPUs of the claim that are time-sliced, with their interval (one entry per GPU). */
export function timeSlicedGpus(
  devices: readonly SharedDevice[],
): { readonly uuid: string; readonly interval: TimeSliceInterval }[] {
  const out = new Map<string, TimeSliceInterval>();
  for (const d of devices) {
    if (d.kind !== 'gpu' || d.sharing?.strategy !== 'TimeSlicing') continue;
    out.set(d.uuid, d.sharing.interval ?? 'Default');
  }
  return [...out].map(([uuid, interval]) => ({ uuid, interval }));
}

/** The nvidia-smi calls that give a GPU this time slice. */
export function setTimeSliceCommands(uuid: string, interval: TimeSliceInterval): string[][] {
  return [
    ['-i', uuid, '-c', 'DEFAULT'],
    ['compute-policy', '-i', uuid, '--set-timeslice', String(TIMESLICE_VALUE[interval])],
  ];
}

export function resetTimeSliceCommands(uuid: string): string[][] {
  return [['compute-policy', '-i', uuid, '--set-timeslice', String(TIMESLICE_VALUE.Default)]];
}

export function computeModeCommand(uuid: string, mode: 'DEFAULT' | 'EXCLUSIVE_PROCESS'): string[] {
  return ['-i', uuid, '-c', mode];
}

/** Does the claim change anything on the host beyond its CDI spec? */
export function changesHost(devices: readonly SharedDevice[]): boolean {
  return devices.some(
    (d) => d.sharing?.strategy === 'MPS' || (d.kind === 'gpu' && d.sharing?.strategy === 'TimeSlicing'),
  );
}

/**
 * The nvidia-smi calls that undo a claim's sharing once it is gone: a GPU's time slice returns to
 * Default, and an MPS GPU's compute mode to DEFAULT, unless another claim in `others` still uses
 * that setting on that GPU.
 */
export function undoCommands(
  devices: readonly SharedDevice[],
  others: readonly (readonly SharedDevice[])[],
): string[][] {
  const stillSliced = new Set(others.flatMap((o) => timeSlicedGpus(o).map((g) => g.uuid)));
  const stillMps = new Set(others.flatMap((o) => exclusiveMpsGpus(o)));
  const commands: string[][] = [];
  for (const uuid of exclusiveMpsGpus(devices)) {
    if (!stillMps.has(uuid)) commands.push(computeModeCommand(uuid, 'DEFAULT'));
  }
  for (const { uuid } of timeSlicedGpus(devices)) {
    if (!stillSliced.has(uuid)) commands.push(...resetTimeSliceCommands(uuid));
  }
  return commands;
}
