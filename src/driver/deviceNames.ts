/**
 * Maps allocation results' device names to the node's devices. The names themselves are owned
 * by the ResourceSlice side (`src/resourceslice/names.ts`), so what we publish and what we look
 * up can never drift:
 * - full GPU: `gpu-<minor>`
 * - MIG device: `gpu-<parentMinor>-mig-<profile part>-<profileId>-<placementStart>` (names.ts)
 *   (an existing one in static mode; a slot that prepare creates in dynamic mode)
 */
import { deviceName, migDeviceName } from '../resourceslice/names.js';
import { isDynamicMigGpu, type MigPartitioning } from '../resourceslice/partitions.js';
import type { GpuDevice, MigDevice, MigPlacement, MigResources, NodeInventory } from '../nvml/types.js';

export type AllocatableDevice = GpuDevice | MigDevice;

/**
 * Dynamic MIG: a (profile, placement) of a GPU where a MIG device can be created. It becomes a
 * MigDevice (with a UUID and instance ids) only when a prepare creates it.
 */
export interface MigSlot extends MigResources {
  readonly kind: 'mig-slot';
  /** None until a MIG device is made in the slot. */
  readonly uuid?: undefined;
  /** Its published name, which is also the name of the MIG device made in it. */
  readonly name: string;
  readonly parentUuid: string;
  readonly parentMinor: number;
  /** Profile name, e.g. `2g.20gb`. */
  readonly profile: string;
  readonly profileId: number;
  readonly placement: MigPlacement;
}

/** What an allocation result may name: a device that exists, or a slot to create one in. */
export type PlanDevice = AllocatableDevice | MigSlot;

/** A device as messages name it: its UUID, or for a slot its name (it has no UUID yet). */
export function deviceLabel(device: PlanDevice): string {
  return device.kind === 'mig-slot' ? `${device.name} (created at prepare)` : device.uuid;
}

/** Every slot of a GPU in dynamic mode: each placement of each GPU-instance profile. */
export function migSlots(gpu: GpuDevice): MigSlot[] {
  return gpu.migProfiles.flatMap((profile) =>
    profile.placements.map((placement): MigSlot => ({
      kind: 'mig-slot',
      name: migDeviceName(gpu.minor, profile.name, profile.id, placement.start),
      parentUuid: gpu.uuid,
      parentMinor: gpu.minor,
      profile: profile.name,
      profileId: profile.id,
      placement,
      memoryBytes: profile.memoryBytes,
      multiprocessors: profile.multiprocessors,
      copyEngines: profile.copyEngines,
      decoders: profile.decoders,
      encoders: profile.encoders,
      jpegEngines: profile.jpegEngines,
      ofaEngines: profile.ofaEngines,
    })),
  );
}

/**
 * The slot a prepare makes a MIG device in for `device`: a slot's own; for a whole GPU in
 * dynamic mode, the slot of the profile spanning all its memory slices (7g on an A100 or H100),
 * since with MIG mode on nothing can compute on the GPU outside a MIG device. None for admin
 * access (monitoring needs no instance and must not take the GPU) or a device that exists.
 */
export function slotToMake(
  device: PlanDevice,
  adminAccess: boolean,
  mode: MigPartitioning,
): MigSlot | undefined {
  if (device.kind === 'mig-slot') return device;
  if (device.kind !== 'gpu' || adminAccess || !isDynamicMigGpu(device, mode)) return undefined;
  const slots = migSlots(device);
  const end = Math.max(...slots.map((s) => s.placement.start + s.placement.size));
  return slots.find((s) => s.placement.start === 0 && s.placement.size === end);
}

/** A (profile, placement): what tells one slot, and the MIG device made in it, from another. */
type SlotKey = { readonly profileId: number; readonly placement: MigPlacement };

/** Is `b` in the same slot of its GPU as `a`? (Callers compare the GPUs themselves.) */
export function inSameSlot(a: SlotKey): (b: SlotKey) => boolean {
  return (b) =>
    a.profileId === b.profileId &&
    a.placement.start === b.placement.start &&
    a.placement.size === b.placement.size;
}

/** The slot a recorded MIG device was made in, on today's GPU; undefined if it has no such slot. */
export function recordedSlot(
  inventory: Pick<NodeInventory, 'gpus'>,
  made: { readonly parentUuid: string; readonly profileId: number; readonly placement: MigPlacement },
): MigSlot | undefined {
  const gpu = inventory.gpus.find((g) => g.uuid === made.parentUuid);
  return gpu ? migSlots(gpu).find(inSameSlot(made)) : undefined;
}

/**
 * Every device of the node by name: full GPUs, and per GPU either its existing MIG devices
 * (static) or its slots (a GPU in dynamic MIG mode, whose existing MIG devices are ours and
 * share their slots' names).
 */
export function indexInventory(
  inventory: Pick<NodeInventory, 'gpus'>,
  migPartitioning: MigPartitioning = 'static',
): Map<string, PlanDevice> {
  const byName = new Map<string, PlanDevice>();
  for (const gpu of inventory.gpus) {
    byName.set(deviceName(gpu), gpu);
    if (isDynamicMigGpu(gpu, migPartitioning)) {
      for (const slot of migSlots(gpu)) byName.set(slot.name, slot);
    } else {
      for (const mig of gpu.migDevices) byName.set(deviceName(mig), mig);
    }
  }
  return byName;
}

/** The existing devices of the node by name (full GPUs and MIG devices, whatever the mode). */
export function indexExistingDevices(inventory: Pick<NodeInventory, 'gpus'>): Map<string, AllocatableDevice> {
  const byName = new Map<string, AllocatableDevice>();
  for (const gpu of inventory.gpus) {
    byName.set(deviceName(gpu), gpu);
    for (const mig of gpu.migDevices) byName.set(deviceName(mig), mig);
  }
  return byName;
}
