/**
 * Dynamic MIG (KEP-4815 partitionable devices): a MIG-capable GPU with MIG mode on publishes a
 * counter set and every (profile, placement) its GPU instances can take; the driver creates the
 * instance when a claim for one is prepared. Pure: discovery's GPU in, counter sets and
 * consumptions out; the model (model.ts) turns them into devices and slices.
 *
 * Counters follow NVIDIA's driver (partitions.go), so pools look the same under either driver:
 * one set per GPU, `gpu-<minor>-counter-set`, holding one counter per MIG capacity in DNS form
 * (`multiprocessors`, `copy-engines`, `decoders`, `encoders`, `jpeg-engines`, `ofa-engines`,
 * `memory`), each the largest any profile gets, plus `memory-slice-<i>` = 1 per memory slice.
 * A partition consumes its profile's capacities and the memory slices its placement spans; the
 * whole GPU consumes everything, so it and any partition exclude each other.
 */
import type { CounterSet, DeviceCounterConsumption, Counter } from '../api/resource.js';
import type { GpuDevice, MigPlacement, MigProfileInfo, MigResources } from '../nvml/types.js';
import { migDeviceName } from './names.js';
import { naturalCompare } from '../util/naturalCompare.js';
import { formatQuantity } from './values.js';

/** `--mig-partitioning`: static publishes the MIG devices that exist, dynamic every possible one. */
export const MIG_PARTITIONING_MODES = ['static', 'dynamic'] as const;
export type MigPartitioning = (typeof MIG_PARTITIONING_MODES)[number];

/**
 * Where counter sets go. `separate` (Kubernetes >= 1.35): slices of their own, since a slice
 * may hold either counter sets or devices. `combined` (1.34): in the slice of the devices that
 * consume them, the only place 1.34 looks for them.
 */
export const COUNTER_LAYOUTS = ['separate', 'combined'] as const;
export type CounterLayout = (typeof COUNTER_LAYOUTS)[number];

/** `ResourceSliceMaxCounterSets`: counter sets in one slice. */
export const MAX_COUNTER_SETS_PER_SLICE = 8;
/** `ResourceSliceMaxCountersPerCounterSet`, also the most counters one consumption may name. */
export const MAX_COUNTERS_PER_SET = 32;
/** `ResourceSliceMaxDeviceCounterConsumptionsPerDevice`. */
export const MAX_CONSUMPTIONS_PER_DEVICE = 2;

/**
 * MIG capacities and their counters: the capacity name a device publishes, the counter name
 * (NVIDIA's camelCase-to-DNS form) and the field of discovery's profile that holds the value.
 */
export const MIG_CAPACITY_COUNTERS: readonly (readonly [
  capacity: string,
  counter: string,
  field: keyof MigResources,
])[] = [
  ['multiprocessors', 'multiprocessors', 'multiprocessors'],
  ['copyEngines', 'copy-engines', 'copyEngines'],
  ['decoders', 'decoders', 'decoders'],
  ['encoders', 'encoders', 'encoders'],
  ['jpegEngines', 'jpeg-engines', 'jpegEngines'],
  ['ofaEngines', 'ofa-engines', 'ofaEngines'],
  ['memory', 'memory', 'memoryBytes'],
];

/** The counter set of GPU `minor`: `gpu-<minor>-counter-set`, as NVIDIA names it. */
export function counterSetName(minor: number): string {
  return `gpu-${minor}-counter-set`;
}

/** Counter of memory slice `i` (counters may hold hyphens; capacities may not). */
export function memorySliceCounter(i: number): string {
  return `memory-slice-${i}`;
}

/** Capacity a static MIG device publishes per memory slice it spans, as NVIDIA does. */
export function memorySliceCapacity(i: number): string {
  return `memorySlice${i}`;
}

/** Matches {@link memorySliceCapacity} names: per placement, so not the same on every device. */
export const MEMORY_SLICE_CAPACITY = /^memorySlice\d+$/;

/** One possible GPU instance: a profile at a placement, published under `name`. */
export interface MigPartition {
  readonly name: string;
  readonly profile: MigProfileInfo;
  readonly placement: MigPlacement;
}

/** A GPU's counter set and what its devices consume of it. */
export interface GpuPartitioning {
  readonly counterSet: CounterSet;
  /** The whole GPU's consumption: every counter, in full. */
  readonly wholeGpu: DeviceCounterConsumption;
  /**
   * What the whole GPU publishes as its capacities: each the largest any profile has, as NVIDIA
   * publishes it (in MIG mode the whole GPU is the instance spanning it, not the bare card).
   */
  readonly wholeGpuResources: MigResources;
  /** In natural name order. */
  readonly partitions: readonly MigPartition[];
}

function count(n: number): Counter {
  return { value: formatQuantity(n) };
}

/**
 * Every (profile, placement) of the GPU, in natural name order. All GPU-instance profiles
 * discovery lists count: each takes the full compute instance, as NVIDIA publishes them.
 */
export function migPartitions(gpu: GpuDevice): MigPartition[] {
  const out = gpu.migProfiles.flatMap((profile) =>
    profile.placements.map((placement) => ({
      name: migDeviceName(gpu.minor, profile.name, profile.id, placement.start),
      profile,
      placement,
    })),
  );
  return out.sort((a, b) => naturalCompare(a.name, b.name));
}

/** What one partition takes from its GPU's counter set. */
export function partitionConsumption(gpu: GpuDevice, p: MigPartition): DeviceCounterConsumption {
  const counters: Record<string, Counter> = {};
  for (const [, counter, field] of MIG_CAPACITY_COUNTERS) counters[counter] = count(p.profile[field]);
  for (let i = p.placement.start; i < p.placement.start + p.placement.size; i++) {
    counters[memorySliceCounter(i)] = count(1);
  }
  return { counterSet: counterSetName(gpu.minor), counters };
}

/**
 * The GPU's counter set and partitions; undefined when discovery knows no placement (nothing
 * to partition). Each capacity counter is the largest value any profile has (NVIDIA's rule;
 * the full-GPU profile's on real GPUs). Memory slices run up to the furthest end of any
 * placement: NVIDIA counts the largest placement's size, the same on every real GPU, and this
 * way no partition can name a slice the set lacks.
 */
export function gpuPartitioning(gpu: GpuDevice): GpuPartitioning | undefined {
  const partitions = migPartitions(gpu);
  if (partitions.length === 0) return undefined;
  const counters: Record<string, Counter> = {};
  const most = {} as Record<keyof MigResources, number>;
  for (const [, counter, field] of MIG_CAPACITY_COUNTERS) {
    most[field] = Math.max(...partitions.map((p) => p.profile[field]));
    counters[counter] = count(most[field]);
  }
  const memorySlices = Math.max(...partitions.map((p) => p.placement.start + p.placement.size));
  for (let i = 0; i < memorySlices; i++) counters[memorySliceCounter(i)] = count(1);
  const name = counterSetName(gpu.minor);
  return {
    counterSet: { name, counters },
    wholeGpu: { counterSet: name, counters },
    wholeGpuResources: most,
    partitions,
  };
}

/** How a GPU is published. */
export type GpuPublication =
  /** The GPU itself (no MIG mode, or not MIG capable). */
  | 'whole'
  /** The MIG devices that exist (static mode, MIG mode on). */
  | 'mig'
  /** The GPU plus every possible partition, with a counter set (dynamic mode, MIG mode on). */
  | 'partitions'
  /** Nothing: dynamic mode with MIG mode on but no placements known. */
  | 'none';

export function gpuPublication(gpu: GpuDevice, mode: MigPartitioning = 'static'): GpuPublication {
  if (gpu.migMode?.current !== true) return 'whole';
  if (mode === 'static') return 'mig';
  return gpu.migProfiles.some((p) => p.placements.length > 0) ? 'partitions' : 'none';
}

/**
 * What an operator should know about a GPU in dynamic mode: why it is not partitioned, or a
 * MIG mode change waiting for a GPU reset. Empty for a GPU that is partitioned as asked or is
 * not MIG capable.
 */
export function dynamicMigWarnings(gpu: GpuDevice, gpuName: string): string[] {
  const mode = gpu.migMode;
  if (!mode) return [];
  const out: string[] = [];
  if (!mode.current) {
    out.push(
      `${gpuName} (${gpu.uuid}) is published whole: --mig-partitioning=dynamic needs MIG mode on, and ` +
        `the driver never switches it. Run \`nvidia-smi -i ${gpu.uuid} -mig 1\`, then reset the GPU ` +
        `(\`nvidia-smi -i ${gpu.uuid} -r\`, or reboot)` +
        (mode.pending ? '; MIG mode is already set to turn on at the next reset' : ''),
    );
  } else if (!mode.pending) {
    out.push(
      `${gpuName} (${gpu.uuid}) has MIG mode on but set to turn off at the next GPU reset; after ` +
        `that it is published whole. Run \`nvidia-smi -i ${gpu.uuid} -mig 1\` to keep it partitionable`,
    );
  }
  if (mode.current && gpuPublication(gpu, 'dynamic') === 'none') {
    out.push(
      `${gpuName} (${gpu.uuid}) has MIG mode on but NVML reported no MIG placements: nothing ` +
        'published for it (try --mig-partitioning=static)',
    );
  }
  return out;
}

/** What `GET /version` answers (the fields read here). */
export interface ServerVersion {
  readonly gitVersion?: string;
  readonly major?: string;
  readonly minor?: string;
}

/**
 * The counter layout an apiserver accepts, from its `/version`: `separate` from 1.35 on,
 * `combined` before. Reads `gitVersion` (`v1.34.4`, `v1.35.0-rc.1+k3s1`), else `major`/`minor`
 * (`1`, `35+`); undefined when neither says.
 */
export function counterLayoutFor(version: ServerVersion): CounterLayout | undefined {
  const git = /^v?(\d+)\.(\d+)(?:\.|$|-|\+)/.exec(version.gitVersion?.trim() ?? '');
  const major = Number(git?.[1] ?? /^\d+/.exec(version.major ?? '')?.[0] ?? NaN);
  const minor = Number(git?.[2] ?? /^\d+/.exec(version.minor ?? '')?.[0] ?? NaN);
  if (!Number.isInteger(major) || !Number.isInteger(minor)) return undefined;
  return major > 1 || (major === 1 && minor >= 35) ? 'separate' : 'combined';
}

/**
 * Does this GPU publish slots (every profile and placement) rather than its MIG devices? Only in
 * dynamic mode, and only while MIG mode is on: the driver never turns it on itself.
 */
export function isDynamicMigGpu(gpu: GpuDevice, mode: MigPartitioning): boolean {
  return gpuPublication(gpu, mode) === 'partitions';
}
