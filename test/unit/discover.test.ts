import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

import { discoverInventory } from '../../src/nvml/discover.js';
import { NvmlError, NvmlLibraryNotFoundError } from '../../src/nvml/errors.js';
import { normalizeBusId, parseMigMinors } from '../../src/nvml/host.js';
import { libraryCandidates, loadNvml } from '../../src/nvml/library.js';
import {
  addressingModeName,
  ARCHITECTURES,
  architectureName,
  BRANDS,
  brandName,
  cudaVersionString,
  migProfileName,
} from '../../src/nvml/names.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { loadProfile, type FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { withSimulatedNode } from '../support/sim.js';

const repo = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);

function discover(profile: string): Promise<NodeInventory> {
  return withSimulatedNode(profile, (node) =>
    discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }),
  );
}

interface RealH100 {
  driverVersion: string;
  cudaDriverVersion: string;
  gpu: {
    uuid: string;
    productName: string;
    brand: string;
    architecture: string;
    cudaComputeCapability: string;
    memoryBytes: number;
    memoryMiB: number;
    minor: number;
    pci: { busId: string; deviceId: number; subsystemId: number };
    migMode: { current: boolean; pending: boolean };
    migProfiles: Record<string, unknown>[];
  };
}

function readRealH100(): RealH100 {
  const raw = JSON.parse(
    fs.readFileSync(path.join(repo, 'test/fixtures/h100-real.json'), 'utf8'),
  ) as RealH100;
  return raw;
}

describe('discovery on h100-8x (values read on a real H100 node)', () => {
  it('reports GPU 0 exactly as the real H100 did', async () => {
    const real = readRealH100();
    const inventory = await discover('h100-8x');
    expect(inventory.driverVersion).toBe(real.driverVersion);
    expect(inventory.cudaDriverVersion).toBe(real.cudaDriverVersion);
    const gpu0 = inventory.gpus.find((g) => g.minor === 0);
    expect(gpu0).toBeDefined();
    expect(gpu0).toMatchObject({
      uuid: real.gpu.uuid,
      productName: real.gpu.productName,
      brand: real.gpu.brand,
      architecture: real.gpu.architecture,
      cudaComputeCapability: real.gpu.cudaComputeCapability,
      memoryBytes: real.gpu.memoryBytes,
      minor: real.gpu.minor,
      pci: {
        busId: real.gpu.pci.busId,
        deviceId: real.gpu.pci.deviceId,
        subsystemId: real.gpu.pci.subsystemId,
      },
      migMode: real.gpu.migMode,
    });
    expect(Math.floor((gpu0?.memoryBytes ?? 0) / 2 ** 20)).toBe(real.gpu.memoryMiB);
    // The VM's NVML answered NOT_SUPPORTED for the NUMA node: the field is left out, not an error.
    expect(gpu0).not.toHaveProperty('numaNode');
    expect(inventory.failures).toEqual([]);
  });

  it('finds 8 distinct GPUs with stable identities and well-formed UUIDs and bus ids', async () => {
    const inventory = await discover('h100-8x');
    expect(inventory.gpus.map((g) => g.minor)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(inventory.gpus.map((g) => g.uuid)).size).toBe(8);
    expect(new Set(inventory.gpus.map((g) => g.pci.busId)).size).toBe(8);
    for (const gpu of inventory.gpus) {
      expect(gpu.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(gpu.pci.busId).toMatch(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/);
      expect(gpu.pci.pcieRoot).toMatch(/^pci[0-9a-f]{4}:[0-9a-f]{2}$/);
      expect(gpu.migDevices).toEqual([]);
    }
  });

  it('lists the H100 MIG GPU-instance profiles of `nvidia-smi mig -lgip`', async () => {
    const real = readRealH100();
    const inventory = await discover('h100-8x');
    const profiles = inventory.gpus[0]?.migProfiles ?? [];
    // Same profiles, same ids, counts and engine numbers, in NVML profile-index order.
    expect(profiles).toEqual(real.gpu.migProfiles);
    // 9.75 GiB per 1g.10gb slice, as nvidia-smi prints it.
    expect(profiles.find((p) => p.name === '1g.10gb')?.memoryBytes).toBe(9.75 * 2 ** 30);
  });
});

describe('discovery of MIG devices (a100-mig)', () => {
  it('reports every MIG device with parent, ids, profile, placement and access caps', async () => {
    const inventory = await discover('a100-mig');
    expect(inventory.gpus).toHaveLength(2);
    for (const gpu of inventory.gpus) {
      expect(gpu.migMode).toEqual({ current: true, pending: true });
      expect(gpu.migDevices.length).toBeGreaterThan(0);
      const profileNames = new Set(gpu.migProfiles.map((p) => p.name));
      for (const mig of gpu.migDevices) {
        expect(mig.uuid).toMatch(/^MIG-[0-9a-f-]{36}$/);
        expect(mig.parentUuid).toBe(gpu.uuid);
        expect(mig.parentMinor).toBe(gpu.minor);
        expect(profileNames.has(mig.profile)).toBe(true);
        const profile = gpu.migProfiles.find((p) => p.id === mig.profileId);
        expect(profile?.name).toBe(mig.profile);
        expect(mig.memoryBytes).toBe(profile?.memoryBytes);
        expect(mig.multiprocessors).toBe(profile?.multiprocessors);
        expect(mig.accessCaps).toBeDefined();
        expect(mig.accessCaps?.gi).not.toBe(mig.accessCaps?.ci);
      }
      // Placements of one GPU never overlap.
      const slices = gpu.migDevices.flatMap((m) =>
        Array.from({ length: m.placement.size }, (_, i) => m.placement.start + i),
      );
      expect(new Set(slices).size).toBe(slices.length);
    }
    const profiles = inventory.gpus.flatMap((g) => g.migDevices.map((m) => m.profile)).sort();
    expect(profiles).toEqual(['1g.5gb', '1g.5gb', '2g.10gb', '3g.20gb', '3g.20gb', '3g.20gb']);
  });

  it('reads access-cap minors from /proc/driver/nvidia-caps/mig-minors', async () => {
    await withSimulatedNode('a100-mig', (node) => {
      const text = fs.readFileSync(
        path.join(node.hostPaths.procRoot, 'driver/nvidia-caps/mig-minors'),
        'utf8',
      );
      const minors = parseMigMinors(text);
      const inventory = discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
      for (const mig of inventory.gpus.flatMap((g) => g.migDevices)) {
        const base = `gpu${mig.parentMinor}/gi${mig.gpuInstanceId}`;
        expect(mig.accessCaps).toEqual({
          gi: minors.get(`${base}/access`),
          ci: minors.get(`${base}/ci${mig.computeInstanceId}/access`),
        });
      }
    });
  });
});

describe('MIG profile placements', () => {
  it('lists where each A100 profile may go, with MIG on and with MIG off', async () => {
    for (const [profile, gpu] of [
      ['a100-mig', 0],
      ['mixed', 2],
    ] as const) {
      const inventory = await discover(profile);
      const placements = Object.fromEntries(
        (inventory.gpus[gpu]?.migProfiles ?? []).map((p) => [
          p.name,
          p.placements.map((x) => `${x.start}:${x.size}`),
        ]),
      );
      expect(placements, profile).toEqual({
        '1g.5gb': ['0:1', '1:1', '2:1', '3:1', '4:1', '5:1', '6:1'],
        '2g.10gb': ['0:2', '2:2', '4:2'],
        '3g.20gb': ['0:4', '4:4'],
        '4g.20gb': ['0:4'],
        '7g.40gb': ['0:8'],
        '1g.5gb+me': ['0:1', '1:1', '2:1', '3:1', '4:1', '5:1', '6:1'],
        '1g.10gb': ['0:2', '2:2', '4:2', '6:2'],
      });
    }
  });

  it('gives no placements where NVML refuses them (unprivileged), and keeps the profiles', async () => {
    const cfg = await loadProfile('h100');
    const refused: FakeNvmlConfig = {
      ...cfg,
      gpus: cfg.gpus.map((g) => ({
        ...g,
        errors: { nvmlDeviceGetGpuInstancePossiblePlacements_v2: 'NO_PERMISSION' },
      })),
    };
    const inventory = await withSimulatedNode(refused, (node) =>
      discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }),
    );
    const profiles = inventory.gpus[0]?.migProfiles ?? [];
    expect(profiles).toHaveLength(7);
    expect(profiles.every((p) => p.placements.length === 0)).toBe(true);
  });
});

describe('discovery on a mixed node', () => {
  it('reads each model with its own architecture and MIG capability', async () => {
    const inventory = await discover('mixed');
    const byName = new Map(inventory.gpus.map((g) => [g.productName, g]));
    expect(byName.get('NVIDIA H100 80GB HBM3')).toMatchObject({
      architecture: 'Hopper',
      cudaComputeCapability: '9.0',
    });
    const l4 = byName.get('NVIDIA L4');
    expect(l4).toMatchObject({ architecture: 'Ada Lovelace', cudaComputeCapability: '8.9', migProfiles: [] });
    expect(l4).not.toHaveProperty('migMode'); // not MIG capable: NVML says NOT_SUPPORTED
    expect(byName.get('NVIDIA A100-SXM4-40GB')).toMatchObject({
      architecture: 'Ampere',
      migMode: { current: false, pending: false },
    });
  });
});

describe('faults', () => {
  it('turns an init failure into a typed NvmlError carrying nvmlErrorString', async () => {
    const error = await discover('fault-init').catch((err: unknown) => err);
    expect(error).toBeInstanceOf(NvmlError);
    expect(error).toMatchObject({ nvmlFunction: 'nvmlInit_v2', returnName: 'DRIVER_NOT_LOADED' });
    expect((error as Error).message).toContain('Driver Not Loaded');
  });

  it('reports a lost GPU and still discovers the others', async () => {
    const inventory = await discover('fault-gpu-lost');
    expect(inventory.gpus.map((g) => g.minor)).toEqual([0, 1, 2, 4, 5, 6, 7]);
    expect(inventory.failures).toHaveLength(1);
    expect(inventory.failures[0]).toMatchObject({ index: 3, code: 'GPU_IS_LOST' });
    expect(inventory.failures[0]?.error).toContain('GPU is lost');
  });

  it('leaves out fields NVML does not support instead of failing', async () => {
    const inventory = await discover('fault-not-supported');
    expect(inventory.failures).toEqual([]);
    expect(inventory.gpus.length).toBeGreaterThan(0);
    const missing = inventory.gpus.filter((g) => g.brand === undefined || g.numaNode === undefined);
    expect(missing.length).toBeGreaterThan(0);
    for (const gpu of inventory.gpus) expect(gpu.uuid).toMatch(/^GPU-/);
  });

  it('names every place it looked when the library is missing', () => {
    expect(() => loadNvml({ nvmlLib: '/nonexistent/libnvidia-ml.so.1' })).toThrow(NvmlLibraryNotFoundError);
    expect(libraryCandidates({ driverRoot: '/run/nvidia/driver' })).toContain(
      '/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1',
    );
    expect(libraryCandidates({}).at(-1)).toBe('libnvidia-ml.so.1');
  });

  it('`gpu-dra discover` without a library exits 2 with a message saying how to point at it', async () => {
    const error = (await run('node', [
      path.join(repo, 'dist/gpu-dra.mjs'),
      'discover',
      '--nvml-lib',
      '/nope/libnvidia-ml.so.1',
    ]).catch((err: unknown) => err)) as { code: number; stderr: string };
    expect(error.code).toBe(2);
    expect(error.stderr).toContain('/nope/libnvidia-ml.so.1');
    expect(error.stderr).toContain('--nvml-lib');
    expect(error.stderr).toContain('NVIDIA_DRIVER_ROOT');
  });
});

describe('gpu-dra discover through the CLI', () => {
  it('prints JSON equal to in-process discovery', async () => {
    await withSimulatedNode('h100-8x', async (node) => {
      const { stdout } = await run(
        'node',
        [
          path.join(repo, 'dist/gpu-dra.mjs'),
          'discover',
          '--json',
          '--nvml-lib',
          node.libPath,
          '--sys-root',
          node.hostPaths.sysRoot,
          '--proc-root',
          node.hostPaths.procRoot,
        ],
        { env: { ...process.env, ...node.env } },
      );
      expect(JSON.parse(stdout)).toEqual(
        discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }),
      );
    });
  });

  it('prints a readable table', async () => {
    await withSimulatedNode('a100-mig', async (node) => {
      const { stdout } = await run(
        'node',
        [path.join(repo, 'dist/gpu-dra.mjs'), 'discover', '--nvml-lib', node.libPath],
        {
          env: { ...process.env, ...node.env },
        },
      );
      expect(stdout).toMatch(/driver 580\.159\.04, CUDA 13\.0, 2 GPU\(s\)/);
      expect(stdout).toMatch(/NVIDIA A100-SXM4-40GB\s+Ampere\s+8\.0/);
      expect(stdout).toMatch(/MIG-[0-9a-f-]+\s+3g\.20gb/);
    });
  });
});

describe('NUMA node and addressing mode', () => {
  it("reads the NUMA node from the PCI device's sysfs numa_node, as NVIDIA's driver does", async () => {
    const inventory = await withSimulatedNode('mixed', (node) => {
      const numaFile = (busId: string) =>
        path.join(node.hostPaths.sysRoot, 'bus/pci/devices', busId, 'numa_node');
      const [first, second] = discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }).gpus;
      if (!first || !second) throw new Error('mixed has fewer than 2 GPUs');
      // The kernel's -1 ("no affinity") means unknown; another node number is taken as is, whatever
      // nvmlDeviceGetNumaNodeId says (the fake still answers the profile's value there).
      fs.writeFileSync(numaFile(first.pci.busId), '-1\n');
      fs.writeFileSync(numaFile(second.pci.busId), '3\n');
      return discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
    });
    const [first, second] = inventory.gpus;
    expect(first).not.toHaveProperty('numaNode');
    expect(second?.numaNode).toBe(3);
  });

  it('reports the addressing mode per GPU and leaves it out where NVML says NOT_SUPPORTED', async () => {
    const inventory = await discover('mixed');
    const modes = Object.fromEntries(inventory.gpus.map((g) => [g.productName, g.addressingMode]));
    expect(modes).toEqual({
      'NVIDIA H100 80GB HBM3': 'HMM',
      'NVIDIA L4': undefined,
      'NVIDIA A100-SXM4-40GB': undefined,
    });
  });
});

describe('pure helpers', () => {
  it('normalizes NVML bus ids to the sysfs form', () => {
    expect(normalizeBusId('00000000:00:06.0')).toBe('0000:00:06.0');
    expect(normalizeBusId('00000000:3B:00.0')).toBe('0000:3b:00.0');
    expect(normalizeBusId('0001:c1:00.1')).toBe('0001:c1:00.1');
  });

  // Every value nvml.h defines, with the name go-nvlib (hence NVIDIA's DRA driver) publishes.
  it.each([
    [2, 'Kepler'],
    [3, 'Maxwell'],
    [4, 'Pascal'],
    [5, 'Volta'],
    [6, 'Turing'],
    [7, 'Ampere'],
    [8, 'Ada Lovelace'],
    [9, 'Hopper'],
    [10, 'Blackwell'],
    [13, 'Rubin'],
    [0xffffffff, 'Unknown'],
  ])('names NVML architecture %i as %s', (value, name) => {
    expect(architectureName(value)).toBe(name);
  });

  it.each([
    [0, 'Unknown'],
    [1, 'Quadro'],
    [2, 'Tesla'],
    [3, 'NVS'],
    [4, 'Grid'],
    [5, 'GeForce'],
    [6, 'Titan'],
    [7, 'NvidiaVApps'],
    [8, 'NvidiaVPC'],
    [9, 'NvidiaVCS'],
    [10, 'NvidiaVWS'],
    [11, 'NvidiaCloudGaming'],
    [12, 'QuadroRTX'],
    [13, 'NvidiaRTX'],
    [14, 'Nvidia'],
    [15, 'GeForceRTX'],
    [16, 'TitanRTX'],
  ])('names NVML brand %i as %s', (value, name) => {
    expect(brandName(value)).toBe(name);
  });

  it('has a name for every architecture and brand it maps, and Unknown for values nvml.h lacks', () => {
    // The tables above are the whole of the maps: a value added to one must be added here too.
    expect(
      Object.keys(ARCHITECTURES)
        .map(Number)
        .sort((a, b) => a - b),
    ).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 0xffffffff]);
    expect(Object.keys(BRANDS).map(Number)).toEqual([...Array(17).keys()]);
    for (const unassigned of [0, 1, 11, 12, 14]) expect(architectureName(unassigned)).toBe('Unknown');
    expect(brandName(17)).toBe('Unknown');
  });

  it('names addressing modes as go-nvlib does, None included', () => {
    expect(addressingModeName(0)).toBe('None');
    expect(addressingModeName(1)).toBe('HMM');
    expect(addressingModeName(2)).toBe('ATS');
    expect(addressingModeName(3)).toBeUndefined();
  });

  it('names versions as NVIDIA tools do', () => {
    expect(cudaVersionString(13000)).toBe('13.0');
    expect(cudaVersionString(12080)).toBe('12.8');
    expect(migProfileName('MIG 1g.10gb')).toBe('1g.10gb');
    expect(migProfileName('MIG 1g.10gb+me')).toBe('1g.10gb+me');
  });

  it('parses mig-minors lines and ignores junk', () => {
    const minors = parseMigMinors(
      'config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n\ngarbage\n',
    );
    expect(minors.get('gpu0/gi1/access')).toBe(12);
    expect(minors.get('gpu0/gi1/ci0/access')).toBe(13);
    expect(minors.get('config')).toBe(1);
    expect(minors.size).toBe(4);
  });
});
