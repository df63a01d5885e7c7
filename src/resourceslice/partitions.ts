import type { GpuDevice } from '../nvml/types.js';

/**
 * Dynamic MIG (KEP-4815 partitionable devices): a MIG-capable GPU with MIG mode on publishes a
 * counter set and every (profile, placement) its GPU instances can take; the driver creates the
 * instance when a claim for one is prepared.
 */

/** `--mig-partitioning`: static publishes the MIG devices that exist, dynamic every possible one. */
export const MIG_PARTITIONING_MODES = ['static', 'dynamic'] as const;
export type MigPartitioning = (typeof MIG_PARTITIONING_MODES)[number];

/**
 * Does this GPU publish slots (every profile and placement) rather than its MIG devices? Only in
 * dynamic mode, and only while MIG mode is on: the driver never turns it on itself.
 */
export function isDynamicMigGpu(
  gpu: Pick<GpuDevice, 'migMode' | 'migProfiles'>,
  mode: MigPartitioning,
): boolean {
  return (
    mode === 'dynamic' &&
    gpu.migMode?.current === true &&
    gpu.migProfiles.some((p) => p.placements.length > 0)
  );
}
