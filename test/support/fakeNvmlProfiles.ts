/**
 * Source of the committed profiles in src/sim/fake-nvml/profiles/. The JSON files are what the
 * fake NVML, `gpu-dra demo` and the tests read; this module only produces them. It is a dev tool
 * (it needs prettier), so it lives here rather than in the shipped package.
 * test/unit/fake-nvml.test.ts fails when a JSON file and this generator disagree; regenerate with
 *
 *   UPDATE_FAKE_NVML_PROFILES=1 npx vitest run --project unit test/unit/fake-nvml.test.ts
 *
 * Values for the H100 come from shared/facts/h100.md (a real H100 80GB HBM3, driver 580.159.04).
 */
import { createHash } from 'node:crypto';

import { format, resolveConfig } from 'prettier';

import type { FakeGiProfile, FakeGpu, FakeMigDevice, FakeNvmlConfig } from '../../src/sim/fakeNvml.js';

export const BRAND_NVIDIA = 14;
export const ARCH_AMPERE = 7;
export const ARCH_ADA = 8;
export const ARCH_HOPPER = 9;
export const MIB = 1024 * 1024;

const DRIVER = { driverVersion: '580.159.04', cudaDriverVersion: 13000 } as const;

/** Deterministic, realistic-looking UUID (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`). */
export function fakeUuid(prefix: 'GPU' | 'MIG', seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${prefix}-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function placements(starts: number[], size: number): { start: number; size: number }[] {
  return starts.map((start) => ({ start, size }));
}

const SEVEN = [0, 1, 2, 3, 4, 5, 6];

/** `nvidia-smi mig -lgip` on an H100 80GB (shared/facts/h100.md); memorySizeMB is MiB as NVML reports it. */
export const H100_80GB_PROFILES: FakeGiProfile[] = [
  gip(0, 19, '1g.10gb', 1, 7, 16, [1, 1, 0, 1, 0], 9984, placements(SEVEN, 1)),
  gip(7, 20, '1g.10gb+me', 1, 1, 16, [1, 1, 0, 1, 1], 9984, placements(SEVEN, 1)),
  gip(9, 15, '1g.20gb', 1, 4, 26, [1, 1, 0, 1, 0], 20096, placements([0, 2, 4, 6], 2)),
  gip(1, 14, '2g.20gb', 2, 3, 32, [2, 2, 0, 2, 0], 20096, placements([0, 2, 4], 2)),
  gip(2, 9, '3g.40gb', 3, 2, 60, [3, 3, 0, 3, 0], 40448, placements([0, 4], 4)),
  gip(3, 5, '4g.40gb', 4, 1, 64, [4, 4, 0, 4, 0], 40448, placements([0], 4)),
  gip(4, 0, '7g.80gb', 7, 1, 132, [8, 7, 0, 7, 1], 81152, placements([0], 8)),
];

/** The same shape for the A100 40GB (NVIDIA's published `-lgip` output). */
export const A100_40GB_PROFILES: FakeGiProfile[] = [
  gip(0, 19, '1g.5gb', 1, 7, 14, [1, 0, 0, 0, 0], 4864, placements(SEVEN, 1)),
  gip(7, 20, '1g.5gb+me', 1, 1, 14, [1, 1, 0, 1, 1], 4864, placements(SEVEN, 1)),
  gip(9, 15, '1g.10gb', 1, 4, 14, [1, 1, 0, 0, 0], 9856, placements([0, 2, 4, 6], 2)),
  gip(1, 14, '2g.10gb', 2, 3, 28, [2, 1, 0, 0, 0], 9856, placements([0, 2, 4], 2)),
  gip(2, 9, '3g.20gb', 3, 2, 42, [3, 2, 0, 0, 0], 19968, placements([0, 4], 4)),
  gip(3, 5, '4g.20gb', 4, 1, 56, [4, 2, 0, 0, 0], 19968, placements([0], 4)),
  gip(4, 0, '7g.40gb', 7, 1, 98, [7, 5, 0, 1, 1], 40192, placements([0], 8)),
];

function gip(
  index: number,
  id: number,
  shortName: string,
  sliceCount: number,
  instanceCount: number,
  multiprocessorCount: number,
  [copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount]: [
    number,
    number,
    number,
    number,
    number,
  ],
  memorySizeMB: number,
  placementList: { start: number; size: number }[],
): FakeGiProfile {
  return {
    index,
    id,
    name: `MIG ${shortName}`,
    sliceCount,
    instanceCount,
    multiprocessorCount,
    copyEngineCount,
    decoderCount,
    encoderCount,
    jpegCount,
    ofaCount,
    memorySizeMB,
    placements: placementList,
  };
}

interface Pci {
  bus: number;
  device?: number;
  root: string;
}

/** The real H100 (shared/facts/h100.md); `pci`/`uuid`/`minor` vary per GPU. */
function h100(minor: number, uuid: string, pci: Pci, extra: Partial<FakeGpu> = {}): FakeGpu {
  return {
    name: 'NVIDIA H100 80GB HBM3',
    uuid,
    brand: BRAND_NVIDIA,
    architecture: ARCH_HOPPER,
    computeCapability: { major: 9, minor: 0 },
    memory: { total: 85520809984, used: 481 * MIB },
    minor,
    pci: {
      domain: 0,
      bus: pci.bus,
      device: pci.device ?? 0,
      pciDeviceId: '0x233010DE',
      pciSubSystemId: '0x16C110DE',
      pcieRoot: pci.root,
    },
    multiprocessorCount: 132,
    migCapable: true,
    migMode: { current: 0, pending: 0 },
    giProfiles: 'h100-80gb',
    ...extra,
  };
}

function a100(minor: number, uuid: string, pci: Pci, extra: Partial<FakeGpu> = {}): FakeGpu {
  return {
    name: 'NVIDIA A100-SXM4-40GB',
    uuid,
    brand: BRAND_NVIDIA,
    architecture: ARCH_AMPERE,
    computeCapability: { major: 8, minor: 0 },
    memory: { total: 42949672960, used: 425 * MIB },
    minor,
    pci: {
      domain: 0,
      bus: pci.bus,
      device: pci.device ?? 0,
      pciDeviceId: '0x20B010DE',
      pciSubSystemId: '0x134F10DE',
      pcieRoot: pci.root,
    },
    multiprocessorCount: 108,
    migCapable: true,
    migMode: { current: 0, pending: 0 },
    giProfiles: 'a100-40gb',
    ...extra,
  };
}

function l4(minor: number, uuid: string, pci: Pci, extra: Partial<FakeGpu> = {}): FakeGpu {
  return {
    name: 'NVIDIA L4',
    uuid,
    brand: BRAND_NVIDIA,
    architecture: ARCH_ADA,
    computeCapability: { major: 8, minor: 9 },
    memory: { total: 24152899584, used: 265 * MIB },
    minor,
    pci: {
      domain: 0,
      bus: pci.bus,
      device: pci.device ?? 0,
      pciDeviceId: '0x27B810DE',
      pciSubSystemId: '0x16CA10DE',
      pcieRoot: pci.root,
    },
    multiprocessorCount: 58,
    migCapable: false,
    ...extra,
  };
}

/**
 * GPU-instance id NVML assigns for a placement (A100/H100 pattern): 7g → 0, 4g/3g → 1 + start/4,
 * 2-memory-slice profiles → 3 + start/2, 1-slice → 7 + start. Distinct for any valid layout.
 */
export function giIdFor(placement: { start: number; size: number }): number {
  switch (placement.size) {
    case 8:
      return 0;
    case 4:
      return 1 + placement.start / 4;
    case 2:
      return 3 + placement.start / 2;
    default:
      return 7 + placement.start;
  }
}

/** MIG devices (one full-size compute instance each), enumerated in GPU-instance-id order. */
function migDevices(
  seed: string,
  table: FakeGiProfile[],
  layout: { profile: string; start: number }[],
): FakeMigDevice[] {
  const devs = layout.map(({ profile, start }) => {
    const p = table.find((x) => x.name === `MIG ${profile}`);
    if (p === undefined) throw new Error(`no profile ${profile}`);
    const size = p.placements[0]?.size ?? 1;
    if (!p.placements.some((pl) => pl.start === start)) throw new Error(`bad placement ${profile}@${start}`);
    const placement = { start, size };
    const gpuInstanceId = giIdFor(placement);
    return {
      uuid: fakeUuid('MIG', `${seed}/gi${gpuInstanceId}/ci0`),
      gpuInstanceId,
      computeInstanceId: 0,
      profileId: p.id,
      placement,
    };
  });
  // Memory slices must not overlap and compute slices must fit in 7.
  const used = new Set<number>();
  for (const d of devs) {
    for (let s = d.placement.start; s < d.placement.start + d.placement.size; s++) {
      if (used.has(s)) throw new Error(`${seed}: overlapping MIG placements`);
      used.add(s);
    }
  }
  const slices = layout.reduce(
    (n, l) => n + (table.find((x) => x.name === `MIG ${l.profile}`)?.sliceCount ?? 0),
    0,
  );
  if (slices > 7) throw new Error(`${seed}: more than 7 compute slices`);
  return devs.sort((a, b) => a.gpuInstanceId - b.gpuInstanceId);
}

/** The real single-GPU H100 reading: GPU 0 of every H100 profile. */
export const H100_REAL_UUID = 'GPU-6a5915e5-c913-b8b9-41dc-75d55806210b';

/** Eight H100s over two PCIe roots; GPU 0 is the real reading (bus 0000:00:06.0). */
const H100_8X_PCI: Pci[] = [
  { bus: 0x00, device: 6, root: 'pci0000:00' },
  { bus: 0x18, root: 'pci0000:00' },
  { bus: 0x2a, root: 'pci0000:00' },
  { bus: 0x3a, root: 'pci0000:00' },
  { bus: 0x9a, root: 'pci0000:80' },
  { bus: 0xab, root: 'pci0000:80' },
  { bus: 0xba, root: 'pci0000:80' },
  { bus: 0xdb, root: 'pci0000:80' },
];

function h100x8(seed: string, extra: (i: number) => Partial<FakeGpu> = () => ({})): FakeGpu[] {
  return H100_8X_PCI.map((pci, i) =>
    h100(i, i === 0 ? H100_REAL_UUID : fakeUuid('GPU', `${seed}/${i}`), pci, extra(i)),
  );
}

const TABLES = { 'h100-80gb': H100_80GB_PROFILES, 'a100-40gb': A100_40GB_PROFILES };

export function generateProfiles(): Record<string, FakeNvmlConfig> {
  return {
    h100: {
      description:
        'The real H100 node of shared/facts/h100.md: one H100 80GB HBM3 in a VM, MIG capable, MIG off.',
      ...DRIVER,
      giProfileTables: { 'h100-80gb': H100_80GB_PROFILES },
      gpus: [h100(0, H100_REAL_UUID, H100_8X_PCI[0] ?? { bus: 0, device: 6, root: 'pci0000:00' })],
    },
    'h100-8x': {
      description: 'Eight H100 80GB HBM3 over two PCIe roots (pci0000:00, pci0000:80), MIG capable, MIG off.',
      ...DRIVER,
      giProfileTables: { 'h100-80gb': H100_80GB_PROFILES },
      gpus: h100x8('h100-8x'),
    },
    'a100-mig': {
      description: 'Two A100-SXM4-40GB with MIG on: GPU0 3g.20gb + 2g.10gb + 2x 1g.5gb; GPU1 2x 3g.20gb.',
      ...DRIVER,
      giProfileTables: { 'a100-40gb': A100_40GB_PROFILES },
      gpus: [
        a100(
          0,
          fakeUuid('GPU', 'a100-mig/0'),
          { bus: 0x07, root: 'pci0000:00' },
          {
            numaNode: 0,
            migMode: { current: 1, pending: 1 },
            migDevices: migDevices('a100-mig/0', A100_40GB_PROFILES, [
              { profile: '3g.20gb', start: 4 },
              { profile: '2g.10gb', start: 0 },
              { profile: '1g.5gb', start: 2 },
              { profile: '1g.5gb', start: 3 },
            ]),
          },
        ),
        a100(
          1,
          fakeUuid('GPU', 'a100-mig/1'),
          { bus: 0x87, root: 'pci0000:80' },
          {
            numaNode: 1,
            migMode: { current: 1, pending: 1 },
            migDevices: migDevices('a100-mig/1', A100_40GB_PROFILES, [
              { profile: '3g.20gb', start: 0 },
              { profile: '3g.20gb', start: 4 },
            ]),
          },
        ),
      ],
    },
    'mig-dynamic': {
      description:
        'MIG on, no instances yet, for MIG devices made at prepare: GPU0 an H100 80GB (the h100 reading), ' +
        'GPU1 an A100-SXM4-40GB.',
      ...DRIVER,
      giProfileTables: TABLES,
      gpus: [
        h100(0, H100_REAL_UUID, H100_8X_PCI[0] ?? { bus: 0, device: 6, root: 'pci0000:00' }, {
          migMode: { current: 1, pending: 1 },
        }),
        a100(
          1,
          fakeUuid('GPU', 'mig-dynamic/1'),
          { bus: 0x87, root: 'pci0000:80' },
          {
            migMode: { current: 1, pending: 1 },
          },
        ),
      ],
    },
    'h100-8x-mig': {
      description: 'The h100-8x node with MIG on and no instances on all eight GPUs.',
      ...DRIVER,
      giProfileTables: { 'h100-80gb': H100_80GB_PROFILES },
      gpus: h100x8('h100-8x', () => ({ migMode: { current: 1, pending: 1 } })),
    },
    mixed: {
      description: 'One H100 (HMM addressing), one L4 (not MIG capable), one A100-SXM4-40GB with MIG off.',
      ...DRIVER,
      giProfileTables: TABLES,
      gpus: [
        h100(
          0,
          fakeUuid('GPU', 'mixed/0'),
          { bus: 0x1b, root: 'pci0000:00' },
          { numaNode: 0, addressingMode: 1 },
        ),
        l4(1, fakeUuid('GPU', 'mixed/1'), { bus: 0x41, root: 'pci0000:00' }, { numaNode: 0 }),
        a100(2, fakeUuid('GPU', 'mixed/2'), { bus: 0xc1, root: 'pci0000:80' }, { numaNode: 1 }),
      ],
    },
    'fault-init': {
      description: 'nvmlInit fails with DRIVER_NOT_LOADED (kernel module not loaded).',
      ...DRIVER,
      initError: 'DRIVER_NOT_LOADED',
      gpus: [],
    },
    'fault-gpu-lost': {
      description:
        'Eight H100s; GPU 3 (bus 0000:3a:00.0) fell off the bus: every call on it answers GPU_IS_LOST.',
      ...DRIVER,
      giProfileTables: { 'h100-80gb': H100_80GB_PROFILES },
      gpus: h100x8('fault-gpu-lost', (i) => (i === 3 ? { lost: true } : {})),
    },
    'fault-not-supported': {
      description:
        'Optional queries answer NOT_SUPPORTED: brand (GPU0), architecture + MIG profiles (GPU1), ' +
        'NUMA/addressing everywhere, MIG mode on the L4, CUDA driver version v2 (system).',
      ...DRIVER,
      errors: { nvmlSystemGetCudaDriverVersion_v2: 'FUNCTION_NOT_FOUND' },
      giProfileTables: TABLES,
      gpus: [
        h100(
          0,
          fakeUuid('GPU', 'fault-not-supported/0'),
          { bus: 0x18, root: 'pci0000:00' },
          {
            brand: undefined,
            multiprocessorCount: undefined,
          },
        ),
        a100(
          1,
          fakeUuid('GPU', 'fault-not-supported/1'),
          { bus: 0x3b, root: 'pci0000:00' },
          {
            architecture: undefined,
            errors: {
              nvmlDeviceGetGpuInstanceProfileInfoV: 'NOT_SUPPORTED',
              nvmlDeviceGetGpuInstanceProfileInfo: 'NOT_SUPPORTED',
            },
          },
        ),
        l4(
          2,
          fakeUuid('GPU', 'fault-not-supported/2'),
          { bus: 0x86, root: 'pci0000:80' },
          {
            errors: { nvmlDeviceGetNumaNodeId: 'NOT_SUPPORTED', nvmlDeviceGetAttributes_v2: 'NOT_SUPPORTED' },
          },
        ),
      ],
    },
    'big-mig': {
      description: '29 A100-SXM4-40GB, each with MIG on and 7x 1g.5gb: 29 GPUs + 203 MIG devices.',
      ...DRIVER,
      giProfileTables: { 'a100-40gb': A100_40GB_PROFILES },
      gpus: Array.from({ length: 29 }, (_, i) => {
        const bus = 0x14 + i * 8;
        return a100(
          i,
          fakeUuid('GPU', `big-mig/${i}`),
          { bus, root: bus < 0x80 ? 'pci0000:00' : 'pci0000:80' },
          {
            numaNode: bus < 0x80 ? 0 : 1,
            migMode: { current: 1, pending: 1 },
            migDevices: migDevices(
              `big-mig/${i}`,
              A100_40GB_PROFILES,
              SEVEN.map((start) => ({ profile: '1g.5gb', start })),
            ),
          },
        );
      }),
    },
  };
}

/** Serialized as committed: JSON (keys with `undefined` dropped) formatted by the repo's prettier. */
export async function serializeProfile(cfg: FakeNvmlConfig, file: string): Promise<string> {
  const options = (await resolveConfig(file)) ?? {};
  return format(JSON.stringify(cfg, null, 2), { ...options, parser: 'json', filepath: file });
}
