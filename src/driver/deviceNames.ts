/**
 * Maps allocation results' device names to discovered devices. The names themselves are owned
 * by the ResourceSlice side (`src/resourceslice/names.ts`), so what we publish and what we look
 * up can never drift:
 * - full GPU: `gpu-<minor>`
 * - MIG device: `gpu-<parentMinor>-mig-<profile, alphanumerics only>-<profileId>-<placementStart>`
 */
import { deviceName } from '../resourceslice/names.js';
import type { GpuDevice, MigDevice, NodeInventory } from '../nvml/types.js';

export type AllocatableDevice = GpuDevice | MigDevice;

/** Every allocatable device of the node by name (full GPUs and existing MIG devices). */
export function indexInventory(inventory: Pick<NodeInventory, 'gpus'>): Map<string, AllocatableDevice> {
  const byName = new Map<string, AllocatableDevice>();
  for (const gpu of inventory.gpus) {
    byName.set(deviceName(gpu), gpu);
    for (const mig of gpu.migDevices) byName.set(deviceName(mig), mig);
  }
  return byName;
}
