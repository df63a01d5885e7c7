/**
 * Sample inventories shaped like discovery's output, for tests, `gpu-dra slices --profile` and
 * the demo on machines without GPUs. Values follow the H100 read on a real node
 * (shared facts h100.md) and the A100 40GB MIG profile table. Everything that builds an
 * inventory by hand lives here, so switching tests to real discovery from the fake NVML means
 * replacing {@link inventoryFixture} only.
 */
import type { GpuDevice, MigDevice, MigProfileInfo, NodeInventory } from '../../src/nvml/types.js';

const MiB = 1024 * 1024;

export const DRIVER_VERSION = '580.159.04';
export const CUDA_DRIVER_VERSION = '13.0';

type ProfileRow = [
  name: string,
  id: number,
  instances: number,
  slices: number,
  memMiB: number,
  sm: number,
  ce: number,
  dec: number,
  enc: number,
  jpeg: number,
  ofa: number,
  starts: readonly number[],
];

const H100_PROFILES: readonly ProfileRow[] = [
  ['1g.10gb', 19, 7, 1, 9984, 16, 1, 1, 0, 1, 0, [0, 1, 2, 3, 4, 5, 6]],
  ['1g.10gb+me', 20, 1, 1, 9984, 16, 1, 1, 0, 1, 1, [0, 1, 2, 3, 4, 5, 6]],
  ['1g.20gb', 15, 4, 2, 20096, 26, 1, 1, 0, 1, 0, [0, 2, 4, 6]],
  ['2g.20gb', 14, 3, 2, 20096, 32, 2, 2, 0, 2, 0, [0, 2, 4]],
  ['3g.40gb', 9, 2, 4, 40448, 60, 3, 3, 0, 3, 0, [0, 4]],
  ['4g.40gb', 5, 1, 4, 40448, 64, 4, 4, 0, 4, 0, [0]],
  ['7g.80gb', 0, 1, 8, 81152, 132, 8, 7, 0, 7, 1, [0]],
];

const A100_40GB_PROFILES: readonly ProfileRow[] = [
  ['1g.5gb', 19, 7, 1, 4864, 14, 1, 0, 0, 0, 0, [0, 1, 2, 3, 4, 5, 6]],
  ['2g.10gb', 14, 3, 2, 9856, 28, 2, 1, 0, 0, 0, [0, 2, 4]],
  ['3g.20gb', 9, 2, 4, 19968, 42, 3, 2, 0, 0, 0, [0, 4]],
  ['4g.20gb', 5, 1, 4, 19968, 56, 4, 2, 0, 0, 0, [0]],
  ['7g.40gb', 0, 1, 8, 40192, 98, 7, 5, 0, 1, 1, [0]],
];

function profiles(rows: readonly ProfileRow[]): MigProfileInfo[] {
  return rows.map(([name, id, instanceCount, sliceCount, memMiB, sm, ce, dec, enc, jpeg, ofa, starts]) => ({
    name,
    id,
    instanceCount,
    sliceCount,
    memoryBytes: memMiB * MiB,
    multiprocessors: sm,
    copyEngines: ce,
    decoders: dec,
    encoders: enc,
    jpegEngines: jpeg,
    ofaEngines: ofa,
    // `slices` is the memory-slice span, which is what a placement's size counts.
    placements: starts.map((start) => ({ start, size: sliceCount })),
  }));
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

/** Deterministic fake UUID: GPU-<...> for minor m (the real H100's UUID for minor 0 of `h100`). */
export function fakeGpuUuid(minor: number, seed = 0x6a59): string {
  return `GPU-${hex(seed, 4)}${hex(minor, 4)}-c913-b8b9-41dc-${hex(minor * 7919 + seed, 12)}`;
}

const DGX_BUSES = ['18', '2a', '3a', '5d', '9a', 'ab', 'ba', 'db'];

export function h100Gpu(minor: number, overrides: Partial<GpuDevice> = {}): GpuDevice {
  const bus = DGX_BUSES[minor] ?? hex(0x10 + minor, 2).slice(-2);
  return {
    kind: 'gpu',
    index: minor,
    minor,
    uuid: fakeGpuUuid(minor),
    productName: 'NVIDIA H100 80GB HBM3',
    brand: 'Nvidia',
    architecture: 'Hopper',
    cudaComputeCapability: '9.0',
    memoryBytes: 85520809984,
    pci: {
      busId: `0000:${bus}:00.0`,
      deviceId: 0x233010de,
      subsystemId: 0x16c110de,
      pcieRoot: `pci0000:${hex(Math.floor(minor / 2) * 0x40, 2).slice(-2)}`,
    },
    numaNode: minor < 4 ? 0 : 1,
    migMode: { current: false, pending: false },
    migProfiles: profiles(H100_PROFILES),
    migDevices: [],
    ...overrides,
  };
}

export function a100Gpu(minor: number, overrides: Partial<GpuDevice> = {}): GpuDevice {
  return {
    kind: 'gpu',
    index: minor,
    minor,
    uuid: fakeGpuUuid(minor, 0xa100),
    productName: 'NVIDIA A100-SXM4-40GB',
    brand: 'Nvidia',
    architecture: 'Ampere',
    cudaComputeCapability: '8.0',
    memoryBytes: 40960 * MiB,
    pci: { busId: `0000:${hex(0x07 + minor * 0x10, 2)}:00.0`, deviceId: 0x20b010de, subsystemId: 0x134f10de },
    migMode: { current: false, pending: false },
    migProfiles: profiles(A100_40GB_PROFILES),
    migDevices: [],
    ...overrides,
  };
}

/** A MIG device of `parent` with GPU-instance profile `profileName`, placed at `start`. */
export function migOf(parent: GpuDevice, profileName: string, start: number, index: number): MigDevice {
  const p = parent.migProfiles.find((x) => x.name === profileName);
  if (!p) throw new Error(`${parent.productName} has no MIG profile ${profileName}`);
  return {
    kind: 'mig',
    uuid: `MIG-${hex(parent.minor, 4)}${hex(p.id, 4)}-${hex(start, 4)}-4${hex(index, 3)}-8000-${hex(parent.minor * 1000 + start, 12)}`,
    parentUuid: parent.uuid,
    parentMinor: parent.minor,
    index,
    gpuInstanceId: index + 1,
    computeInstanceId: 0,
    profile: p.name,
    profileId: p.id,
    placement: { start, size: p.sliceCount },
    memoryBytes: p.memoryBytes,
    multiprocessors: p.multiprocessors,
    copyEngines: p.copyEngines,
    decoders: p.decoders,
    encoders: p.encoders,
    jpegEngines: p.jpegEngines,
    ofaEngines: p.ofaEngines,
  };
}

/** Turns MIG mode on for `gpu` with the given (profile, placementStart) layout. */
export function withMig(
  gpu: GpuDevice,
  layout: ReadonlyArray<readonly [profile: string, start: number]>,
): GpuDevice {
  return {
    ...gpu,
    migMode: { current: true, pending: true },
    migDevices: layout.map(([profile, start], i) => migOf(gpu, profile, start, i)),
  };
}

export type InventoryProfile = 'h100' | 'h100-8x' | 'a100-mig' | 'h100-mig-224' | 'h100-8x-mig-on';

export const INVENTORY_PROFILES: readonly InventoryProfile[] = [
  'h100',
  'h100-8x',
  'a100-mig',
  'h100-mig-224',
  'h100-8x-mig-on',
];

/**
 * - `h100`: the one-GPU H100 node of h100.md (real UUID, bus id `0000:00:06.0`, no pcieRoot).
 * - `h100-8x`: 8 × H100 80GB HBM3, MIG capable, MIG off.
 * - `a100-mig`: 2 × A100 40GB; GPU 0 in MIG mode (3g.20gb@4, 2g.10gb@0, 1g.5gb@2, 1g.5gb@3),
 *   GPU 1 MIG capable with MIG off.
 * - `h100-mig-224`: 32 × H100, each split into 7 × 1g.10gb: 224 MIG devices (needs two slices).
 * - `h100-8x-mig-on`: 8 × H100 with MIG mode on and no GPU instance yet: a node ready for
 *   `--mig-partitioning=dynamic` before any claim.
 */
export function inventoryFixture(profile: InventoryProfile): NodeInventory {
  const base = { driverVersion: DRIVER_VERSION, cudaDriverVersion: CUDA_DRIVER_VERSION, failures: [] };
  switch (profile) {
    case 'h100': {
      const gpu = h100Gpu(0, {
        uuid: 'GPU-6a5915e5-c913-b8b9-41dc-75d55806210b',
        pci: { busId: '0000:00:06.0', deviceId: 0x233010de, subsystemId: 0x16c110de },
      });
      return { ...base, gpus: [{ ...gpu, numaNode: undefined }] };
    }
    case 'h100-8x':
      return { ...base, gpus: Array.from({ length: 8 }, (_, m) => h100Gpu(m)) };
    case 'h100-8x-mig-on':
      return { ...base, gpus: Array.from({ length: 8 }, (_, m) => withMig(h100Gpu(m), [])) };
    case 'a100-mig':
      return {
        ...base,
        gpus: [
          withMig(a100Gpu(0), [
            ['3g.20gb', 4],
            ['2g.10gb', 0],
            ['1g.5gb', 2],
            ['1g.5gb', 3],
          ]),
          a100Gpu(1),
        ],
      };
    case 'h100-mig-224':
      return {
        ...base,
        gpus: Array.from({ length: 32 }, (_, m) =>
          withMig(
            h100Gpu(m),
            Array.from({ length: 7 }, (_, s) => ['1g.10gb', s] as const),
          ),
        ),
      };
  }
}
