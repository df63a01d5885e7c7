/**
 * Test helpers for the kubelet plugin: hand-built devices, a temporary host tree (device nodes
 * as plain files, a driver install, a boot id) and ResourceClaim builders. Used by unit tests,
 * e2e tests and demos; never by the driver itself.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HostPaths } from '../../src/util/hostPaths.js';
import { CdiStore } from '../../src/cdi/store.js';
import { CheckpointStore } from '../../src/checkpoint/store.js';
import { DeviceState, type DeviceStateOptions } from '../../src/driver/state.js';
import { silentLogger } from '../../src/util/log.js';
import type { GpuDevice, GpuFailure, MigDevice, NodeInventory } from '../../src/nvml/types.js';
import type {
  DeviceAllocationConfiguration,
  DeviceRequestAllocationResult,
  ResourceClaim,
} from '../../src/api/resource.js';

export const TEST_DRIVER = 'gpu.dra.dev';
export const TEST_DRIVER_VERSION = '580.105.08';
export const TEST_NODE = 'node-a';

export function testGpu(minor: number, overrides: Partial<GpuDevice> = {}): GpuDevice {
  const hex = minor.toString(16).padStart(2, '0');
  return {
    kind: 'gpu',
    index: minor,
    minor,
    uuid: `GPU-${hex}000000-0000-4000-8000-0000000000${hex}`,
    productName: 'NVIDIA H100 80GB HBM3',
    brand: 'Nvidia',
    architecture: 'Hopper',
    cudaComputeCapability: '9.0',
    memoryBytes: 85_520_809_984,
    pci: { busId: `0000:${hex}:00.0`, deviceId: 0x233010de, subsystemId: 0x16c110de },
    migProfiles: [],
    migDevices: [],
    ...overrides,
  };
}

export function testMig(parentMinor: number, gi: number, overrides: Partial<MigDevice> = {}): MigDevice {
  const parent = testGpu(parentMinor);
  return {
    kind: 'mig',
    uuid: `MIG-${parentMinor}${gi}000000-0000-4000-8000-000000000000`,
    parentUuid: parent.uuid,
    parentMinor,
    index: gi,
    gpuInstanceId: gi,
    computeInstanceId: 0,
    profile: '1g.10gb',
    profileId: 19,
    placement: { start: gi, size: 1 },
    memoryBytes: 10_200_547_328,
    multiprocessors: 16,
    copyEngines: 1,
    decoders: 1,
    encoders: 0,
    jpegEngines: 1,
    ofaEngines: 0,
    accessCaps: { gi: 100 + gi * 2, ci: 101 + gi * 2 },
    ...overrides,
  };
}

/** gpu-0 (full GPU) and gpu-1 in MIG mode with two 1g.10gb devices (placements 0 and 1). */
export function testInventory(): NodeInventory {
  const migParent = testGpu(1, {
    migMode: { current: true, pending: true },
    migDevices: [testMig(1, 0), testMig(1, 1)],
  });
  return {
    driverVersion: TEST_DRIVER_VERSION,
    cudaDriverVersion: '13.0',
    gpus: [testGpu(0), migParent],
    failures: [],
  };
}

export interface TestHost {
  readonly root: string;
  readonly hostPaths: HostPaths;
  readonly registryDir: string;
  readonly pluginsDir: string;
  readonly cdiRoot: string;
  setBootId(id: string): void;
  cleanup(): void;
}

function touch(file: string, content = ''): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

/**
 * A temporary host: `dev/` with nodes for `inventory` (plain files), `proc/` with a boot id,
 * `driver/` with a small NVIDIA user-space install, and empty kubelet and CDI directories.
 * Socket paths must stay under 108 bytes, so the tree lives directly under the OS temp dir.
 */
export function createTestHost(
  inventory: NodeInventory = testInventory(),
  options: { driverFiles?: boolean } = {},
): TestHost {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-'));
  const dev = path.join(root, 'dev');
  for (const n of ['nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools']) touch(path.join(dev, n));
  for (const gpu of inventory.gpus) {
    touch(path.join(dev, `nvidia${gpu.minor}`));
    for (const mig of gpu.migDevices) {
      if (!mig.accessCaps) continue;
      touch(path.join(dev, 'nvidia-caps', `nvidia-cap${mig.accessCaps.gi}`));
      touch(path.join(dev, 'nvidia-caps', `nvidia-cap${mig.accessCaps.ci}`));
    }
  }
  const proc = path.join(root, 'proc');
  const setBootId = (id: string): void => {
    touch(path.join(proc, 'sys/kernel/random/boot_id'), `${id}\n`);
  };
  setBootId('11111111-2222-3333-4444-555555555555');
  touch(
    path.join(proc, 'devices'),
    'Character devices:\n  1 mem\n195 nvidia-frontend\n238 nvidia-uvm\n241 nvidia-caps\n\nBlock devices:\n  8 sd\n',
  );
  const driver = path.join(root, 'driver');
  fs.mkdirSync(driver, { recursive: true });
  if (options.driverFiles !== false) {
    const lib = path.join(driver, 'usr/lib/x86_64-linux-gnu');
    for (const name of ['libcuda', 'libnvidia-ml', 'libnvidia-ptxjitcompiler', 'libnvidia-nvvm']) {
      touch(path.join(lib, `${name}.so.${inventory.driverVersion}`), 'ELF');
      fs.symlinkSync(`${name}.so.${inventory.driverVersion}`, path.join(lib, `${name}.so.1`));
      fs.symlinkSync(`${name}.so.1`, path.join(lib, `${name}.so`));
    }
    touch(path.join(lib, 'libunrelated.so.1'));
    for (const bin of ['nvidia-smi', 'nvidia-debugdump', 'nvidia-cdi-hook'])
      touch(path.join(driver, 'usr/bin', bin), '#!');
    touch(path.join(driver, 'lib/firmware/nvidia', inventory.driverVersion, 'gsp_ga10x.bin'));
  }
  const sys = path.join(root, 'sys');
  fs.mkdirSync(sys, { recursive: true });
  const registryDir = path.join(root, 'reg');
  const pluginsDir = path.join(root, 'plugins');
  const cdiRoot = path.join(root, 'cdi');
  for (const d of [registryDir, pluginsDir, cdiRoot]) fs.mkdirSync(d, { recursive: true });
  return {
    root,
    hostPaths: { devRoot: dev, procRoot: proc, sysRoot: sys, driverRoot: driver },
    registryDir,
    pluginsDir,
    cdiRoot,
    setBootId,
    cleanup: () => {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface ClaimSpec {
  readonly uid: string;
  readonly name?: string;
  readonly namespace?: string;
  /** `request:device` pairs or full results; pool and driver default to the test node's. */
  readonly devices: readonly (string | Partial<DeviceRequestAllocationResult>)[];
  readonly config?: readonly DeviceAllocationConfiguration[];
  readonly allocated?: boolean;
}

export function testClaim(spec: ClaimSpec): ResourceClaim {
  const results = spec.devices.map((d): DeviceRequestAllocationResult => {
    if (typeof d === 'string') {
      const [request = 'gpu', device = d] = d.includes(':') ? d.split(':') : ['gpu', d];
      return { request, device, driver: TEST_DRIVER, pool: TEST_NODE };
    }
    return { request: 'gpu', device: 'gpu-0', driver: TEST_DRIVER, pool: TEST_NODE, ...d };
  });
  return {
    metadata: {
      uid: spec.uid,
      name: spec.name ?? `claim-${spec.uid}`,
      namespace: spec.namespace ?? 'default',
    },
    status:
      spec.allocated === false
        ? {}
        : { allocation: { devices: { results, ...(spec.config ? { config: spec.config } : {}) } } },
  };
}

/** An opaque config entry for this driver. */
export function opaque(
  parameters: unknown,
  requests?: readonly string[],
  source = 'FromClaim',
): DeviceAllocationConfiguration {
  return { source, ...(requests ? { requests } : {}), opaque: { driver: TEST_DRIVER, parameters } };
}

/**
 * A DeviceState on a test host: specs in its CDI root, the checkpoint in its plugin directory,
 * `testInventory()` unless given; any option replaces its default.
 */
export function testDeviceState(host: TestHost, options: Partial<DeviceStateOptions> = {}): DeviceState {
  const inventory = testInventory();
  const logger = options.logger ?? silentLogger();
  return new DeviceState({
    driverName: TEST_DRIVER,
    poolName: TEST_NODE,
    hostPaths: host.hostPaths,
    cdi: new CdiStore(host.cdiRoot, TEST_DRIVER),
    checkpoint: new CheckpointStore(path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json'), logger),
    inventory: { current: () => inventory },
    logger,
    ...options,
  });
}

/** `inv` with GPU `failure.index` replaced by the failure, as discovery reports a lost GPU. */
export function withFailure(inv: NodeInventory, failure: GpuFailure): NodeInventory {
  return {
    ...inv,
    gpus: inv.gpus.filter((g) => g.index !== failure.index),
    failures: [...inv.failures, failure],
  };
}

/** A `discover` that answers from `queue` in order (an Error is thrown), then fails. */
export function discoverFrom(queue: (NodeInventory | Error)[]): () => NodeInventory {
  return () => {
    const next = queue.shift();
    if (!next) throw new Error('no more discoveries');
    if (next instanceof Error) throw next;
    return next;
  };
}
