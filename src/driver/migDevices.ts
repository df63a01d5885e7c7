/**
 * Dynamic MIG, the driver's side: MIG devices created for a claim at prepare, destroyed at
 * unprepare, and swept at start-up when no claim owns them. NVML itself sits behind
 * {@link MigInstanceControl} (src/nvml/migInstances.ts implements it), so the order of steps and
 * what is recorded around them can be tested without it.
 *
 * Crash safety comes from the order state.ts keeps: a claim's slots are recorded (the claim
 * PrepareStarted, each device with its `migInstance`) before anything is created, so recovery can
 * find by placement an instance a crash left and destroy it; the instance ids are recorded once
 * they are known.
 */
import { errorMessage, GpuDraError } from '../util/errors.js';
import { failpoint } from '../util/failpoint.js';
import type { Logger } from '../util/log.js';
import type { MigDevice, MigPlacement } from '../nvml/types.js';
import { migAccessCaps, type MigMinors } from '../nvml/host.js';
import type {
  LiveMigInstance,
  MigInstanceControl as NvmlMigControl,
  MigInstanceRef,
} from '../nvml/migInstances.js';
import { inSameSlot, type MigSlot } from './deviceNames.js';

/** What the driver needs of NVML to make and remove MIG devices (src/nvml/migInstances.ts). */
export type MigInstanceControl = Pick<NvmlMigControl, 'create' | 'destroy' | 'list' | 'listBareGpuInstances'>;
export type { LiveMigInstance, MigInstanceRef };

/** What the checkpoint records of a MIG device the driver makes for a claim. */
export interface RecordedMigInstance {
  readonly parentUuid: string;
  readonly profileId: number;
  readonly placement: MigPlacement;
  /** Known once created; until then recovery finds the instance by placement. */
  readonly gpuInstanceId?: number | undefined;
  readonly computeInstanceId?: number | undefined;
  /** The MIG device's UUID once made: a device of another UUID at those ids is not ours. */
  readonly uuid?: string | undefined;
}

export function intendedInstance(slot: MigSlot): RecordedMigInstance {
  return { parentUuid: slot.parentUuid, profileId: slot.profileId, placement: { ...slot.placement } };
}

/** The MIG device made in `slot`, as discovery would report it. */
export function createdMigDevice(slot: MigSlot, live: LiveMigInstance, minors: MigMinors): MigDevice {
  const accessCaps = migAccessCaps(minors, slot.parentMinor, live.gpuInstanceId, live.computeInstanceId);
  return {
    kind: 'mig',
    uuid: live.uuid,
    parentUuid: slot.parentUuid,
    parentMinor: slot.parentMinor,
    index: -1,
    gpuInstanceId: live.gpuInstanceId,
    computeInstanceId: live.computeInstanceId,
    profile: slot.profile,
    profileId: slot.profileId,
    placement: { ...slot.placement },
    memoryBytes: slot.memoryBytes,
    multiprocessors: slot.multiprocessors,
    copyEngines: slot.copyEngines,
    decoders: slot.decoders,
    encoders: slot.encoders,
    jpegEngines: slot.jpegEngines,
    ofaEngines: slot.ofaEngines,
    ...(accessCaps ? { accessCaps } : {}),
  };
}

/**
 * Creates a MIG device in each slot, in order. If one fails, those made so far are destroyed
 * before the error (MIG_CREATE_FAILED) is thrown, so a failed prepare leaves nothing behind.
 */
export async function createInSlots(
  control: MigInstanceControl,
  slots: readonly MigSlot[],
  claimUid: string,
  logger: Logger,
): Promise<LiveMigInstance[]> {
  const made: LiveMigInstance[] = [];
  for (const slot of slots) {
    const started = Date.now();
    try {
      const live = await control.create(slot.parentUuid, slot.profileId, slot.placement);
      made.push(live);
      failpoint('mig-device-created');
      logger.info(
        { device: slot.name, uuid: live.uuid, gpuInstanceId: live.gpuInstanceId, ms: Date.now() - started },
        'MIG device created',
      );
    } catch (err) {
      for (const live of made.reverse()) {
        await control.destroy(live).catch((e: unknown) => {
          logger.error({ err: e, uuid: live.uuid }, 'destroying a MIG device of a failed prepare failed');
        });
      }
      throw new GpuDraError(
        'MIG_CREATE_FAILED',
        `cannot create MIG device ${slot.name} (${slot.profile} at memory slices ${String(slot.placement.start)}..${String(slot.placement.start + slot.placement.size - 1)} of ${slot.parentUuid}): ${errorMessage(err)}`,
        { cause: err, claimUid },
      );
    }
  }
  return made;
}

/**
 * Where a recorded MIG device is now: by its ids (guarded by its UUID), else, when a crash came
 * before the ids were recorded, by its slot: a MIG device there, or a GPU instance whose compute
 * instance was never made.
 */
async function findRecorded(
  control: MigInstanceControl,
  r: RecordedMigInstance,
): Promise<(MigInstanceRef & { readonly uuid?: string }) | undefined> {
  if (r.gpuInstanceId !== undefined && r.computeInstanceId !== undefined) {
    return {
      parentUuid: r.parentUuid,
      gpuInstanceId: r.gpuInstanceId,
      computeInstanceId: r.computeInstanceId,
      ...(r.uuid ? { uuid: r.uuid } : {}),
    };
  }
  const live = (await control.list(r.parentUuid)).find(inSameSlot(r));
  if (live) return live;
  const bare = (await control.listBareGpuInstances(r.parentUuid)).find(inSameSlot(r));
  return bare
    ? { parentUuid: bare.parentUuid, gpuInstanceId: bare.gpuInstanceId, computeInstanceId: 0 }
    : undefined;
}

/**
 * Destroys the recorded MIG devices of a claim. One without ids (a crash before they were
 * recorded) is found by its placement; one already gone is fine. Throws MIG_DESTROY_FAILED
 * after trying them all.
 */
export async function destroyRecorded(
  control: MigInstanceControl,
  recorded: readonly RecordedMigInstance[],
  claimUid: string,
  logger: Logger,
): Promise<void> {
  const failures: string[] = [];
  let firstError: unknown;
  for (const r of recorded) {
    try {
      const ref = await findRecorded(control, r);
      if (!ref) continue; // never made, or already gone
      const result = await control.destroy(ref);
      failpoint('mig-device-destroyed');
      logger.info(
        { parentUuid: r.parentUuid, gpuInstanceId: ref.gpuInstanceId, result },
        'MIG device destroyed',
      );
    } catch (err) {
      firstError ??= err;
      failures.push(
        `${r.parentUuid} placement ${String(r.placement.start)}:${String(r.placement.size)}: ${errorMessage(err)}`,
      );
    }
  }
  if (failures.length > 0) {
    throw new GpuDraError('MIG_DESTROY_FAILED', `cannot destroy MIG device(s): ${failures.join('; ')}`, {
      cause: firstError,
      claimUid,
    });
  }
}

/**
 * Start-up: MIG devices on GPUs in dynamic mode that no recorded claim owns (a crash between
 * creating one and recording its claim, a lost checkpoint, an instance made by hand) are
 * destroyed, so their slots are free again. A device that cannot be destroyed (a process runs in
 * it) stays, with a warning: the scheduler may then allocate a slot NVML refuses, which the
 * prepare reports (MIG_CREATE_FAILED).
 */
export async function sweepUnowned(
  control: MigInstanceControl,
  dynamicGpuUuids: readonly string[],
  owned: readonly RecordedMigInstance[],
  logger: Logger,
): Promise<string[]> {
  const removed: string[] = [];
  for (const parentUuid of dynamicGpuUuids) {
    let live: (MigInstanceRef & {
      readonly profileId: number;
      readonly placement: MigPlacement;
      readonly uuid?: string;
    })[];
    try {
      const bare = (await control.listBareGpuInstances(parentUuid)).map((b) => ({
        ...b,
        computeInstanceId: 0,
      }));
      live = [...(await control.list(parentUuid)), ...bare];
    } catch (err) {
      logger.warn({ err, gpu: parentUuid }, 'cannot list MIG devices to remove those no claim owns');
      continue;
    }
    for (const instance of live) {
      if (owned.some((o) => o.parentUuid === parentUuid && inSameSlot(o)(instance))) continue;
      try {
        await control.destroy(instance);
        failpoint('orphan-mig-destroyed');
        removed.push(instance.uuid ?? `${parentUuid} GPU instance ${String(instance.gpuInstanceId)}`);
      } catch (err) {
        logger.warn(
          { err, uuid: instance.uuid, gpu: parentUuid },
          'cannot destroy a MIG device no claim owns; its slot stays taken',
        );
      }
    }
  }
  if (removed.length > 0)
    logger.info({ migDevices: removed }, 'destroyed MIG devices no prepared claim owns');
  return removed;
}
