// Our NVML code against an NVML we did not write (issue 12): NVIDIA's own mock NVML (k8s-test-infra
// pkg/gpu/mocknvml, the one their CI uses), built by `test/anchors/build.sh mocknvml`. For every
// profile in its configs/ (listed, so a new profile is covered), the real CLI runs
// `gpu-dra discover --json` and `gpu-dra slices` with MOCK_NVML_CONFIG set and a /sys rendered by
// the mock's render-pci-sysfs, and each field must follow from the profile's YAML: discovery's
// fields as the mock's engine derives them, the ResourceSlice attributes by the rules NVIDIA's
// driver applies (go-nvlib names, semver versions, BinarySI memory, sysfs NUMA node). No cluster:
// a few seconds once the mock is built (about a minute cold).
//
// The mock's limits: no profile has MIG (every GPU/compute-instance call is NOT_SUPPORTED) and
// nvmlDeviceGetAddressingMode is always NOT_SUPPORTED, so neither MIG devices nor addressingMode
// are exercised here; the gb200 profile reuses the H100's PCI device id (0x233010de).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { z } from 'zod';

import type { NodeInventory } from '../../src/nvml/types.js';
import type { ResourceSliceObject } from '../../src/resourceslice/model.js';
import { ensureMockNvml } from './support/anchors.js';
import { repoRoot } from './support/peers.js';

const run = promisify(execFile);

/** The profiles the pinned archive ships; the test covers whatever configs/ holds, these at least. */
const SHIPPED = ['a100', 'b200', 'gb200', 'gb300', 'h100', 'l40s', 't4'];

/** YAML `architecture` → the mock's nvmlDeviceArchitecture_t (engine parseArchitecture) → go-nvlib's name. */
const ARCHITECTURE_FROM_YAML: Readonly<Record<string, string>> = {
  kepler: 'Kepler',
  maxwell: 'Maxwell',
  pascal: 'Pascal',
  volta: 'Volta',
  turing: 'Turing',
  ampere: 'Ampere',
  ada: 'Ada Lovelace',
  ada_lovelace: 'Ada Lovelace',
  hopper: 'Hopper',
  blackwell: 'Blackwell',
};
/** YAML `brand` → nvmlBrandType_t (engine parseBrand) → go-nvlib's name. */
const BRAND_FROM_YAML: Readonly<Record<string, string>> = {
  nvidia: 'Nvidia',
  tesla: 'Tesla',
  quadro: 'Quadro',
  geforce: 'GeForce',
  titan: 'Titan',
  nvidia_rtx: 'NvidiaRTX',
};

// The subset of a profile that discovery can see (engine/config_types.go names).
const Pci = z.object({
  bus_id: z.string().optional(),
  device_id: z.number().int().optional(),
  subsystem_id: z.number().int().optional(),
});
const DeviceFields = {
  name: z.string().optional(),
  brand: z.string().optional(),
  architecture: z.string().optional(),
  pci: Pci.optional(),
  memory: z.object({ total_bytes: z.number().int() }).optional(),
};
const Profile = z.object({
  system: z.object({
    driver_version: z.string(),
    cuda_version_major: z.number().int(),
    cuda_version_minor: z.number().int(),
  }),
  device_defaults: z.object({
    ...DeviceFields,
    compute_capability: z.object({ major: z.number().int(), minor: z.number().int() }),
  }),
  devices: z.array(
    z.object({
      index: z.number().int(),
      uuid: z.string(),
      minor_number: z.number().int().optional(),
      ...DeviceFields,
    }),
  ),
  pcie_topology: z
    .object({
      root_complexes: z.array(
        z.object({ id: z.string(), numa_node: z.number().int().optional(), devices: z.array(z.string()) }),
      ),
    })
    .optional(),
});
type Profile = z.infer<typeof Profile>;

/** One GPU as the profile describes it, after the engine's merge of device_defaults and the device entry. */
interface ExpectedGpu {
  readonly index: number;
  readonly minor: number;
  readonly uuid: string;
  readonly name: string;
  readonly brand: string;
  readonly architecture: string;
  readonly computeCapability: string;
  readonly memoryBytes: number;
  readonly busId: string;
  readonly deviceId: number;
  readonly subsystemId: number;
  readonly pcieRoot: string;
  readonly numaNode: number;
}

function expectedGpus(p: Profile): ExpectedGpu[] {
  const d = p.device_defaults;
  // render-pci-sysfs without pcie_topology: one root complex pci0000:00 on NUMA node 0.
  const roots = p.pcie_topology?.root_complexes ?? [
    { id: 'pci0000:00', numa_node: 0, devices: p.devices.flatMap((g) => g.pci?.bus_id ?? []) },
  ];
  return [...p.devices]
    .sort((a, b) => a.index - b.index)
    .map((g) => {
      const busId = (g.pci?.bus_id ?? '').toLowerCase();
      const root = roots.find((r) => r.devices.some((b) => b.toLowerCase() === busId));
      if (!root) throw new Error(`profile puts GPU ${g.index} (${busId}) under no root complex`);
      const arch = g.architecture ?? d.architecture ?? '';
      const brand = g.brand ?? d.brand ?? '';
      return {
        index: g.index,
        // Go's zero value when the profile leaves minor_number out.
        minor: g.minor_number ?? 0,
        uuid: g.uuid,
        name: g.name ?? d.name ?? '',
        brand: BRAND_FROM_YAML[brand] ?? 'Unknown',
        architecture: ARCHITECTURE_FROM_YAML[arch] ?? 'Unknown',
        computeCapability: `${d.compute_capability.major}.${d.compute_capability.minor}`,
        memoryBytes: (g.memory ?? d.memory)?.total_bytes ?? 0,
        busId,
        deviceId: g.pci?.device_id || d.pci?.device_id || 0,
        subsystemId: g.pci?.subsystem_id || d.pci?.subsystem_id || 0,
        pcieRoot: root.id,
        numaNode: root.numa_node ?? 0,
      };
    });
}

/** Masterminds semver's String(): numeric parts without leading zeros, padded to three. */
function semver(v: string): string {
  const parts = v.split('.').map((n) => String(Number(n)));
  while (parts.length < 3) parts.push('0');
  return parts.join('.');
}

/** resource.NewQuantity(n, BinarySI).String() for a whole number of bytes. */
function binarySI(n: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  let i = 0;
  while (n !== 0 && n % 1024 === 0 && i < suffixes.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n}${suffixes[i] ?? ''}`;
}

let mockDir = '';
let profiles: string[] = [];
const tmpDirs: string[] = [];

beforeAll(async () => {
  mockDir = await ensureMockNvml();
  profiles = (await readdir(path.join(mockDir, 'configs')))
    .map((f) => /^mock-nvml-config-(.+)\.yaml$/.exec(f)?.[1])
    .filter((n): n is string => n !== undefined)
    .sort();
});

afterAll(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Runs a gpu-dra command on the mock with `profile`'s YAML and a /sys rendered from it. */
async function onMock(profile: string, args: readonly string[]): Promise<string> {
  const config = path.join(mockDir, 'configs', `mock-nvml-config-${profile}.yaml`);
  const root = await mkdtemp(path.join(os.tmpdir(), `gpu-dra-mock-${profile}-`));
  tmpDirs.push(root);
  await run(path.join(mockDir, 'render-pci-sysfs'), ['--config', config, '--output', root]);
  const { stdout } = await run(
    process.execPath,
    [
      path.join(repoRoot, 'dist/gpu-dra.mjs'),
      ...args,
      '--nvml-lib',
      path.join(mockDir, 'libnvidia-ml.so.1'),
      '--sys-root',
      path.join(root, 'sys'),
    ],
    { env: { ...process.env, MOCK_NVML_CONFIG: config }, maxBuffer: 16 * 1024 * 1024 },
  );
  return stdout;
}

async function readProfile(profile: string): Promise<Profile> {
  const text = await readFile(path.join(mockDir, 'configs', `mock-nvml-config-${profile}.yaml`), 'utf8');
  return Profile.parse(parseYaml(text));
}

describe("NVIDIA's mock NVML: discovery and slices follow each profile's YAML", () => {
  it('lists every profile the pinned archive ships', () => {
    expect(fs.existsSync(path.join(mockDir, 'libnvidia-ml.so.1'))).toBe(true);
    expect(profiles).toEqual(expect.arrayContaining(SHIPPED));
  });

  it('discover --json reports every GPU field as the profile sets it', async () => {
    for (const profile of profiles) {
      const yaml = await readProfile(profile);
      const want = expectedGpus(yaml);
      const inv = JSON.parse(await onMock(profile, ['discover', '--json'])) as NodeInventory;
      const first = inv.gpus[0]?.productName;
      // A missing or unreadable MOCK_NVML_CONFIG only warns and yields 8 "Mock A100" GPUs.
      expect(
        first === want[0]?.name || !/^Mock /.test(first ?? ''),
        `${profile}: the mock ignored MOCK_NVML_CONFIG and fell back to its defaults ("${first}")`,
      ).toBe(true);
      expect(inv.failures, profile).toEqual([]);
      expect(inv.driverVersion, profile).toBe(yaml.system.driver_version);
      expect(inv.cudaDriverVersion, profile).toBe(
        `${yaml.system.cuda_version_major}.${yaml.system.cuda_version_minor}`,
      );
      expect(inv.gpus.length, `${profile}: GPU count`).toBe(want.length);
      for (const [i, w] of want.entries()) {
        const g = inv.gpus[i];
        expect(g, `${profile} GPU ${w.index}`).toMatchObject({
          index: w.index,
          minor: w.minor,
          uuid: w.uuid,
          productName: w.name,
          brand: w.brand,
          architecture: w.architecture,
          cudaComputeCapability: w.computeCapability,
          memoryBytes: w.memoryBytes,
          pci: { busId: w.busId, deviceId: w.deviceId, subsystemId: w.subsystemId, pcieRoot: w.pcieRoot },
          numaNode: w.numaNode,
          migProfiles: [],
          migDevices: [],
        });
        // The mock answers NOT_SUPPORTED for the addressing mode: a GPU without one has no field.
        expect(g, `${profile} GPU ${w.index}`).not.toHaveProperty('addressingMode');
      }
    }
  });

  it("slices publish each GPU with the attributes and capacity NVIDIA's driver derives", async () => {
    for (const profile of profiles) {
      const yaml = await readProfile(profile);
      const want = expectedGpus(yaml);
      const out = await onMock(profile, ['slices', '--node-name', 'mock', '--driver-name', 'gpu.nvidia.com']);
      const docs = parseAllDocuments(out).map((d) => d.toJS() as ResourceSliceObject);
      const devices = docs.flatMap((s) => s.spec.devices);
      expect(devices.map((d) => d.name).sort(), profile).toEqual(want.map((w) => `gpu-${w.minor}`).sort());
      for (const w of want) {
        const d = devices.find((x) => x.name === `gpu-${w.minor}`);
        expect(d?.attributes, `${profile} gpu-${w.minor}`).toEqual({
          type: { string: 'gpu' },
          uuid: { string: w.uuid },
          productName: { string: w.name },
          brand: { string: w.brand },
          architecture: { string: w.architecture },
          cudaComputeCapability: { version: semver(w.computeCapability) },
          driverVersion: { version: semver(yaml.system.driver_version) },
          cudaDriverVersion: {
            version: semver(`${yaml.system.cuda_version_major}.${yaml.system.cuda_version_minor}`),
          },
          'resource.kubernetes.io/pciBusID': { string: w.busId },
          'resource.kubernetes.io/pcieRoot': { string: w.pcieRoot },
          'resource.kubernetes.io/numaNode': { int: w.numaNode },
        });
        expect(d?.capacity, `${profile} gpu-${w.minor}`).toEqual({
          memory: { value: binarySI(w.memoryBytes) },
        });
      }
    }
  });
});
