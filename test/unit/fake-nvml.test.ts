/**
 * Tests of the fake NVML itself (src/sim/fake-nvml/fake_nvml.c), loaded with koffi exactly as the
 * driver loads the real libnvidia-ml.so.1, plus its bundled profiles and the simulated host tree.
 * Discovery on top of it is tested elsewhere.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import koffi from 'koffi';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { migCapMinor, type SimulatedNode } from '../../src/sim/fakeHost.js';
import {
  buildFakeNvml,
  gpuProfiles,
  listProfiles,
  loadProfile,
  profilesDir,
  readFakeMigInstances,
  setFakeMigInstanceBusy,
  type FakeGiProfile,
  type FakeNvmlConfig,
} from '../../src/sim/fakeNvml.js';
import {
  fakeUuid,
  generateProfiles,
  H100_REAL_UUID,
  MIB,
  serializeProfile,
} from '../support/fakeNvmlProfiles.js';
import { fakeNvmlLib, withSimulatedNode } from '../support/sim.js';

const NVML = {
  SUCCESS: 0,
  UNINITIALIZED: 1,
  INVALID_ARGUMENT: 2,
  NOT_SUPPORTED: 3,
  NOT_FOUND: 6,
  INSUFFICIENT_SIZE: 7,
  DRIVER_NOT_LOADED: 9,
  LIBRARY_NOT_FOUND: 12,
  FUNCTION_NOT_FOUND: 13,
  GPU_IS_LOST: 15,
  IN_USE: 19,
  INSUFFICIENT_RESOURCES: 23,
  ARGUMENT_VERSION_MISMATCH: 25,
  UNKNOWN: 999,
} as const;

// ---- koffi bindings (anonymous types: no clash with the driver's named ones) ----

type Handle = unknown;
type Out<T> = [T];

const Device = koffi.pointer(koffi.opaque());
const GpuInstance = koffi.pointer(koffi.opaque());
const Memory = koffi.struct({
  total: 'unsigned long long',
  free: 'unsigned long long',
  used: 'unsigned long long',
});
const PciInfo = koffi.struct({
  busIdLegacy: koffi.array('char', 16, 'String'),
  domain: 'unsigned int',
  bus: 'unsigned int',
  device: 'unsigned int',
  pciDeviceId: 'unsigned int',
  pciSubSystemId: 'unsigned int',
  busId: koffi.array('char', 32, 'String'),
});
const ProfileInfoV2 = koffi.struct({
  version: 'unsigned int',
  id: 'unsigned int',
  isP2pSupported: 'unsigned int',
  sliceCount: 'unsigned int',
  instanceCount: 'unsigned int',
  multiprocessorCount: 'unsigned int',
  copyEngineCount: 'unsigned int',
  decoderCount: 'unsigned int',
  encoderCount: 'unsigned int',
  jpegCount: 'unsigned int',
  ofaCount: 'unsigned int',
  memorySizeMB: 'unsigned long long',
  name: koffi.array('char', 96, 'String'),
});
const ProfileInfoV3 = koffi.struct({
  version: 'unsigned int',
  id: 'unsigned int',
  sliceCount: 'unsigned int',
  instanceCount: 'unsigned int',
  multiprocessorCount: 'unsigned int',
  copyEngineCount: 'unsigned int',
  decoderCount: 'unsigned int',
  encoderCount: 'unsigned int',
  jpegCount: 'unsigned int',
  ofaCount: 'unsigned int',
  memorySizeMB: 'unsigned long long',
  name: koffi.array('char', 96, 'String'),
  capabilities: 'unsigned int',
});
const Placement = koffi.struct({ start: 'unsigned int', size: 'unsigned int' });
const GpuInstanceInfo = koffi.struct({
  device: Device,
  id: 'unsigned int',
  profileId: 'unsigned int',
  placement: Placement,
});
const AddressingMode = koffi.struct({ version: 'unsigned int', value: 'unsigned int' });
const ComputeInstance = koffi.pointer(koffi.opaque());
const CI_PROFILE_FIELDS = {
  id: 'unsigned int',
  sliceCount: 'unsigned int',
  instanceCount: 'unsigned int',
  multiprocessorCount: 'unsigned int',
  sharedCopyEngineCount: 'unsigned int',
  sharedDecoderCount: 'unsigned int',
  sharedEncoderCount: 'unsigned int',
  sharedJpegCount: 'unsigned int',
  sharedOfaCount: 'unsigned int',
} as const;
const CiProfileInfo = koffi.struct(CI_PROFILE_FIELDS);
const CiProfileInfoV2 = koffi.struct({
  version: 'unsigned int',
  ...CI_PROFILE_FIELDS,
  name: koffi.array('char', 96, 'String'),
});
const CiInfo = koffi.struct({
  device: Device,
  gpuInstance: GpuInstance,
  id: 'unsigned int',
  profileId: 'unsigned int',
  placement: Placement,
});

const PROFILE_V2_VERSION = (koffi.sizeof(ProfileInfoV2) | (2 << 24)) >>> 0;
const PROFILE_V3_VERSION = (koffi.sizeof(ProfileInfoV3) | (3 << 24)) >>> 0;
const ADDRESSING_V1_VERSION = (koffi.sizeof(AddressingMode) | (1 << 24)) >>> 0;
const CI_PROFILE_V2_VERSION = (koffi.sizeof(CiProfileInfoV2) | (2 << 24)) >>> 0;

interface PciInfoT {
  busIdLegacy: string;
  domain: number;
  bus: number;
  device: number;
  pciDeviceId: number;
  pciSubSystemId: number;
  busId: string;
}
interface MemoryT {
  total: number | bigint;
  free: number | bigint;
  used: number | bigint;
}
interface ProfileInfoT {
  version: number;
  id: number;
  sliceCount: number;
  instanceCount: number;
  multiprocessorCount: number;
  copyEngineCount: number;
  decoderCount: number;
  jpegCount: number;
  ofaCount: number;
  memorySizeMB: number | bigint;
  name: string;
}
interface CiProfileInfoT {
  version?: number;
  id: number;
  sliceCount: number;
  instanceCount: number;
  multiprocessorCount: number;
  sharedCopyEngineCount: number;
  sharedDecoderCount: number;
  name?: string;
}
interface CiInfoT {
  device: Handle;
  gpuInstance: Handle;
  id: number;
  profileId: number;
  placement: { start: number; size: number };
}
interface GpuInstanceInfoT {
  device: Handle;
  id: number;
  profileId: number;
  placement: { start: number; size: number };
}

type TypeSpec = Parameters<typeof koffi.sizeof>[0];

function bind(lib: ReturnType<typeof koffi.load>) {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- typed view of a koffi function
  const f = <T>(name: string, ret: TypeSpec, args: TypeSpec[]) => lib.func(name, ret, args) as T;
  const outU = koffi.out(koffi.pointer('unsigned int'));
  const outI = koffi.out(koffi.pointer('int'));
  const outDev = koffi.out(koffi.pointer(Device));
  return {
    init: f<() => number>('nvmlInit_v2', 'int', []),
    initWithFlags: f<(flags: number) => number>('nvmlInitWithFlags', 'int', ['unsigned int']),
    shutdown: f<() => number>('nvmlShutdown', 'int', []),
    errorString: f<(code: number) => string>('nvmlErrorString', 'const char *', ['int']),
    driverVersion: f<(buf: Buffer, len: number) => number>('nvmlSystemGetDriverVersion', 'int', [
      'char *',
      'unsigned int',
    ]),
    cudaVersion: f<(out: Out<number>) => number>('nvmlSystemGetCudaDriverVersion', 'int', [outI]),
    cudaVersionV2: f<(out: Out<number>) => number>('nvmlSystemGetCudaDriverVersion_v2', 'int', [outI]),
    count: f<(out: Out<number>) => number>('nvmlDeviceGetCount_v2', 'int', [outU]),
    handleByIndex: f<(i: number, out: Out<Handle>) => number>('nvmlDeviceGetHandleByIndex_v2', 'int', [
      'unsigned int',
      outDev,
    ]),
    handleByUuid: f<(uuid: string, out: Out<Handle>) => number>('nvmlDeviceGetHandleByUUID', 'int', [
      'const char *',
      outDev,
    ]),
    name: f<(d: Handle, buf: Buffer, len: number) => number>('nvmlDeviceGetName', 'int', [
      Device,
      'char *',
      'unsigned int',
    ]),
    uuid: f<(d: Handle, buf: Buffer, len: number) => number>('nvmlDeviceGetUUID', 'int', [
      Device,
      'char *',
      'unsigned int',
    ]),
    brand: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetBrand', 'int', [Device, outU]),
    arch: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetArchitecture', 'int', [Device, outU]),
    cc: f<(d: Handle, major: Out<number>, minor: Out<number>) => number>(
      'nvmlDeviceGetCudaComputeCapability',
      'int',
      [Device, outI, outI],
    ),
    memory: f<(d: Handle, out: MemoryT) => number>('nvmlDeviceGetMemoryInfo', 'int', [
      Device,
      koffi.out(koffi.pointer(Memory)),
    ]),
    minor: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetMinorNumber', 'int', [Device, outU]),
    pci: f<(d: Handle, out: PciInfoT) => number>('nvmlDeviceGetPciInfo_v3', 'int', [
      Device,
      koffi.out(koffi.pointer(PciInfo)),
    ]),
    numa: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetNumaNodeId', 'int', [Device, outU]),
    migMode: f<(d: Handle, cur: Out<number>, pend: Out<number>) => number>('nvmlDeviceGetMigMode', 'int', [
      Device,
      outU,
      outU,
    ]),
    setMigMode: f<(d: Handle, mode: number, status: Out<number>) => number>('nvmlDeviceSetMigMode', 'int', [
      Device,
      'unsigned int',
      outU,
    ]),
    maxMig: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetMaxMigDeviceCount', 'int', [
      Device,
      outU,
    ]),
    migByIndex: f<(d: Handle, i: number, out: Out<Handle>) => number>(
      'nvmlDeviceGetMigDeviceHandleByIndex',
      'int',
      [Device, 'unsigned int', outDev],
    ),
    isMig: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceIsMigDeviceHandle', 'int', [Device, outU]),
    parentOf: f<(d: Handle, out: Out<Handle>) => number>(
      'nvmlDeviceGetDeviceHandleFromMigDeviceHandle',
      'int',
      [Device, outDev],
    ),
    giId: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetGpuInstanceId', 'int', [Device, outU]),
    ciId: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetComputeInstanceId', 'int', [Device, outU]),
    giById: f<(d: Handle, id: number, out: Out<Handle>) => number>('nvmlDeviceGetGpuInstanceById', 'int', [
      Device,
      'unsigned int',
      koffi.out(koffi.pointer(GpuInstance)),
    ]),
    giInfo: f<(gi: Handle, out: GpuInstanceInfoT) => number>('nvmlGpuInstanceGetInfo', 'int', [
      GpuInstance,
      koffi.out(koffi.pointer(GpuInstanceInfo)),
    ]),
    profileV2: f<(d: Handle, index: number, info: Partial<ProfileInfoT>) => number>(
      'nvmlDeviceGetGpuInstanceProfileInfoV',
      'int',
      [Device, 'unsigned int', koffi.inout(koffi.pointer(ProfileInfoV2))],
    ),
    profileV3: f<(d: Handle, index: number, info: Partial<ProfileInfoT>) => number>(
      'nvmlDeviceGetGpuInstanceProfileInfoV',
      'int',
      [Device, 'unsigned int', koffi.inout(koffi.pointer(ProfileInfoV3))],
    ),
    placements: f<
      (d: Handle, profileId: number, out: { start: number; size: number }[], n: Out<number>) => number
    >('nvmlDeviceGetGpuInstancePossiblePlacements_v2', 'int', [
      Device,
      'unsigned int',
      koffi.out(koffi.pointer(Placement)),
      koffi.inout(koffi.pointer('unsigned int')),
    ]),
    createGi: f<
      (d: Handle, profileId: number, pl: { start: number; size: number } | null, out: Out<Handle>) => number
    >('nvmlDeviceCreateGpuInstanceWithPlacement', 'int', [
      Device,
      'unsigned int',
      koffi.pointer(Placement),
      koffi.out(koffi.pointer(GpuInstance)),
    ]),
    createGiAnywhere: f<(d: Handle, profileId: number, out: Out<Handle>) => number>(
      'nvmlDeviceCreateGpuInstance',
      'int',
      [Device, 'unsigned int', koffi.out(koffi.pointer(GpuInstance))],
    ),
    giDestroy: f<(gi: Handle) => number>('nvmlGpuInstanceDestroy', 'int', [GpuInstance]),
    ciProfile: f<(gi: Handle, profile: number, eng: number, out: CiProfileInfoT) => number>(
      'nvmlGpuInstanceGetComputeInstanceProfileInfo',
      'int',
      [GpuInstance, 'unsigned int', 'unsigned int', koffi.out(koffi.pointer(CiProfileInfo))],
    ),
    ciProfileV: f<(gi: Handle, profile: number, eng: number, info: Partial<CiProfileInfoT>) => number>(
      'nvmlGpuInstanceGetComputeInstanceProfileInfoV',
      'int',
      [GpuInstance, 'unsigned int', 'unsigned int', koffi.inout(koffi.pointer(CiProfileInfoV2))],
    ),
    createCi: f<(gi: Handle, profileId: number, out: Out<Handle>) => number>(
      'nvmlGpuInstanceCreateComputeInstance',
      'int',
      [GpuInstance, 'unsigned int', koffi.out(koffi.pointer(ComputeInstance))],
    ),
    ciDestroy: f<(ci: Handle) => number>('nvmlComputeInstanceDestroy', 'int', [ComputeInstance]),
    ciById: f<(gi: Handle, id: number, out: Out<Handle>) => number>(
      'nvmlGpuInstanceGetComputeInstanceById',
      'int',
      [GpuInstance, 'unsigned int', koffi.out(koffi.pointer(ComputeInstance))],
    ),
    ciInfo: f<(ci: Handle, out: CiInfoT) => number>('nvmlComputeInstanceGetInfo_v2', 'int', [
      ComputeInstance,
      koffi.out(koffi.pointer(CiInfo)),
    ]),
    virtMode: f<(d: Handle, out: Out<number>) => number>('nvmlDeviceGetVirtualizationMode', 'int', [
      Device,
      outU,
    ]),
    addressingMode: f<(d: Handle, mode: { version: number; value?: number }) => number>(
      'nvmlDeviceGetAddressingMode',
      'int',
      [Device, koffi.inout(koffi.pointer(AddressingMode))],
    ),
  };
}

type Nvml = ReturnType<typeof bind>;

function str(call: (buf: Buffer, len: number) => number, len = 96): string | number {
  const buf = Buffer.alloc(len);
  const rc = call(buf, len);
  if (rc !== NVML.SUCCESS) return rc;
  return buf.toString('utf8', 0, buf.indexOf(0));
}

function u32(call: (out: Out<number>) => number): number | { rc: number } {
  const out: Out<number> = [0];
  const rc = call(out);
  return rc === NVML.SUCCESS ? out[0] : { rc };
}

function handle(call: (out: Out<Handle>) => number): Handle {
  const out: Out<Handle> = [null];
  expect(call(out)).toBe(NVML.SUCCESS);
  return out[0];
}

function addr(h: Handle): bigint {
  return koffi.address(h);
}

let nvml: Nvml;

beforeAll(() => {
  nvml = bind(koffi.load(fakeNvmlLib()));
});

/** Leaves the library uninitialized after every test, whatever the test did. */
afterEach(() => {
  while (nvml.shutdown() === NVML.SUCCESS) {
    /* drain the reference count */
  }
});

describe('profiles', () => {
  it('the committed JSON files are what test/support/fakeNvmlProfiles.ts produces', async () => {
    const generated = generateProfiles();
    const stale: string[] = [];
    for (const [name, cfg] of Object.entries(generated)) {
      const file = path.join(profilesDir(), `${name}.json`);
      const text = await serializeProfile(cfg, file);
      if (process.env.UPDATE_FAKE_NVML_PROFILES === '1') await writeFile(file, text);
      else if (!existsSync(file) || readFileSync(file, 'utf8') !== text) stale.push(name);
    }
    expect(
      stale,
      'regenerate: UPDATE_FAKE_NVML_PROFILES=1 npx vitest run test/unit/fake-nvml.test.ts',
    ).toEqual([]);
    expect(await listProfiles()).toEqual(Object.keys(generated).sort());
  });

  it('every bundled profile validates and keeps MIG placements inside its profile table', async () => {
    for (const name of await listProfiles()) {
      const cfg = await loadProfile(name);
      for (const gpu of cfg.gpus) {
        const table =
          typeof gpu.giProfiles === 'string' ? cfg.giProfileTables?.[gpu.giProfiles] : gpu.giProfiles;
        for (const mig of gpu.migDevices ?? []) {
          const p = table?.find((x) => x.id === mig.profileId);
          expect(p, `${name}: ${mig.uuid}`).toBeDefined();
          expect(p?.placements).toContainEqual(mig.placement);
        }
      }
    }
  });

  it('unknown profile names are a clear error', async () => {
    await expect(loadProfile('nope')).rejects.toMatchObject({ code: 'FAKE_NVML_PROFILE_NOT_FOUND' });
    await expect(loadProfile('../etc/passwd')).rejects.toMatchObject({ code: 'FAKE_NVML_PROFILE_NOT_FOUND' });
  });
});

describe('build', () => {
  it('is cached by source hash', async () => {
    const lib = await buildFakeNvml();
    expect(lib).toBe(fakeNvmlLib());
    expect(lib).toMatch(/fake-nvml\/[0-9a-f]{16}\/libnvidia-ml\.so\.1$/);
    expect(await buildFakeNvml()).toBe(lib);
  });

  it('reports a missing compiler and a missing source as GpuDraError', async () => {
    const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'gpu-dra-nocc-'));
    try {
      await expect(buildFakeNvml({ compiler: 'no-such-cc-xyz', cacheDir })).rejects.toMatchObject({
        code: 'FAKE_NVML_NO_COMPILER',
      });
      await expect(buildFakeNvml({ source: '/nonexistent/fake_nvml.c', cacheDir })).rejects.toMatchObject({
        code: 'FAKE_NVML_SOURCE_NOT_FOUND',
      });
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});

describe('init and errors', () => {
  it('answers UNINITIALIZED before nvmlInit and after the last nvmlShutdown', async () => {
    expect(u32((o) => nvml.count(o))).toEqual({ rc: NVML.UNINITIALIZED });
    expect(nvml.shutdown()).toBe(NVML.UNINITIALIZED);
    await withSimulatedNode('h100', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(nvml.initWithFlags(0)).toBe(NVML.SUCCESS);
      expect(nvml.shutdown()).toBe(NVML.SUCCESS);
      expect(u32((o) => nvml.count(o))).toBe(1); // still one reference
      expect(nvml.shutdown()).toBe(NVML.SUCCESS);
      expect(u32((o) => nvml.count(o))).toEqual({ rc: NVML.UNINITIALIZED });
      expect(nvml.shutdown()).toBe(NVML.UNINITIALIZED);
    });
  });

  it('has real-style error strings', () => {
    expect(nvml.errorString(0)).toBe('Success');
    expect(nvml.errorString(1)).toBe('Uninitialized');
    expect(nvml.errorString(3)).toBe('Not Supported');
    expect(nvml.errorString(9)).toBe('Driver Not Loaded');
    expect(nvml.errorString(15)).toBe('GPU is lost');
    expect(nvml.errorString(25)).toBe('Argument version mismatch');
    expect(nvml.errorString(999)).toBe('Unknown Error');
    expect(nvml.errorString(12345)).toBe('Unknown Error');
  });

  it('fails nvmlInit without a readable config', async () => {
    const saved = process.env.FAKE_NVML_CONFIG;
    try {
      delete process.env.FAKE_NVML_CONFIG;
      expect(nvml.init()).toBe(NVML.LIBRARY_NOT_FOUND);
      process.env.FAKE_NVML_CONFIG = '/nonexistent/fake-nvml.json';
      expect(nvml.init()).toBe(NVML.LIBRARY_NOT_FOUND);
      await withSimulatedNode('h100', async (node) => {
        await writeFile(node.configPath, '{"driverVersion": ');
        expect(nvml.init()).toBe(NVML.UNKNOWN);
      });
      expect(u32((o) => nvml.count(o))).toEqual({ rc: NVML.UNINITIALIZED });
    } finally {
      if (saved === undefined) delete process.env.FAKE_NVML_CONFIG;
      else process.env.FAKE_NVML_CONFIG = saved;
    }
  });

  it('fault-init: nvmlInit fails with DRIVER_NOT_LOADED and nothing is initialized', async () => {
    await withSimulatedNode('fault-init', () => {
      expect(nvml.init()).toBe(NVML.DRIVER_NOT_LOADED);
      expect(nvml.errorString(nvml.init())).toBe('Driver Not Loaded');
      expect(u32((o) => nvml.count(o))).toEqual({ rc: NVML.UNINITIALIZED });
    });
  });
});

describe('h100-8x', () => {
  it('GPU 0 reports the real H100 reading', async () => {
    await withSimulatedNode('h100-8x', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(str((b, l) => nvml.driverVersion(b, l), 80)).toBe('580.159.04');
      expect(str((b, l) => nvml.driverVersion(b, l), 10)).toBe(NVML.INSUFFICIENT_SIZE);
      expect(u32((o) => nvml.cudaVersion(o))).toBe(13000);
      expect(u32((o) => nvml.cudaVersionV2(o))).toBe(13000);
      expect(u32((o) => nvml.count(o))).toBe(8);

      const d = handle((o) => nvml.handleByIndex(0, o));
      expect(str((b, l) => nvml.name(d, b, l))).toBe('NVIDIA H100 80GB HBM3');
      expect(str((b, l) => nvml.uuid(d, b, l))).toBe(H100_REAL_UUID);
      expect(str((b, l) => nvml.uuid(d, b, l), 20)).toBe(NVML.INSUFFICIENT_SIZE);
      expect(u32((o) => nvml.brand(d, o))).toBe(14);
      expect(u32((o) => nvml.arch(d, o))).toBe(9);
      const major: Out<number> = [-1];
      const minor: Out<number> = [-1];
      expect(nvml.cc(d, major, minor)).toBe(NVML.SUCCESS);
      expect([major[0], minor[0]]).toEqual([9, 0]);
      const mem = {} as MemoryT;
      expect(nvml.memory(d, mem)).toBe(NVML.SUCCESS);
      expect(Number(mem.total)).toBe(85520809984);
      expect(Number(mem.free) + Number(mem.used)).toBe(85520809984);
      expect(u32((o) => nvml.minor(d, o))).toBe(0);
      const pci = {} as PciInfoT;
      expect(nvml.pci(d, pci)).toBe(NVML.SUCCESS);
      expect(pci).toMatchObject({
        busId: '00000000:00:06.0',
        busIdLegacy: '0000:00:06.0',
        domain: 0,
        bus: 0,
        device: 6,
        pciDeviceId: 0x233010de,
        pciSubSystemId: 0x16c110de,
      });
      expect(u32((o) => nvml.numa(d, o))).toEqual({ rc: NVML.NOT_SUPPORTED });
      const cur: Out<number> = [9];
      const pend: Out<number> = [9];
      expect(nvml.migMode(d, cur, pend)).toBe(NVML.SUCCESS);
      expect([cur[0], pend[0]]).toEqual([0, 0]);
      expect(u32((o) => nvml.maxMig(d, o))).toBe(7);
      expect(nvml.migByIndex(d, 0, [null])).toBe(NVML.NOT_FOUND);
      expect(nvml.addressingMode(d, { version: ADDRESSING_V1_VERSION })).toBe(NVML.NOT_SUPPORTED);
    });
  });

  it('GPUs 1..7 are distinct H100s over two PCIe roots', async () => {
    await withSimulatedNode('h100-8x', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const uuids = new Set<string | number>();
      const buses: string[] = [];
      for (let i = 0; i < 8; i++) {
        const d = handle((o) => nvml.handleByIndex(i, o));
        uuids.add(str((b, l) => nvml.uuid(d, b, l)));
        expect(u32((o) => nvml.minor(d, o))).toBe(i);
        const pci = {} as PciInfoT;
        expect(nvml.pci(d, pci)).toBe(NVML.SUCCESS);
        buses.push(pci.busId);
      }
      expect(uuids.size).toBe(8);
      expect(buses).toEqual([
        '00000000:00:06.0',
        '00000000:18:00.0',
        '00000000:2A:00.0',
        '00000000:3A:00.0',
        '00000000:9A:00.0',
        '00000000:AB:00.0',
        '00000000:BA:00.0',
        '00000000:DB:00.0',
      ]);
      expect(nvml.handleByIndex(8, [null])).toBe(NVML.INVALID_ARGUMENT);
    });
  });

  it('reports the H100 GPU-instance profiles, versioned like the real struct', async () => {
    await withSimulatedNode('h100-8x', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const d = handle((o) => nvml.handleByIndex(0, o));
      expect(koffi.sizeof(ProfileInfoV2)).toBe(152);
      const info: Partial<ProfileInfoT> = { version: PROFILE_V2_VERSION };
      expect(nvml.profileV2(d, 0, info)).toBe(NVML.SUCCESS);
      expect(info).toMatchObject({
        version: PROFILE_V2_VERSION,
        id: 19,
        name: 'MIG 1g.10gb',
        sliceCount: 1,
        instanceCount: 7,
        multiprocessorCount: 16,
      });
      expect(Number(info.memorySizeMB)).toBe(9984);

      const byIndex = (index: number) => {
        const x: Partial<ProfileInfoT> = { version: PROFILE_V2_VERSION };
        const rc = nvml.profileV2(d, index, x);
        return rc === NVML.SUCCESS ? `${x.name ?? ''}/${x.id ?? ''}/${Number(x.memorySizeMB)}` : rc;
      };
      expect(byIndex(1)).toBe('MIG 2g.20gb/14/20096');
      expect(byIndex(2)).toBe('MIG 3g.40gb/9/40448');
      expect(byIndex(3)).toBe('MIG 4g.40gb/5/40448');
      expect(byIndex(4)).toBe('MIG 7g.80gb/0/81152');
      expect(byIndex(5)).toBe(NVML.NOT_SUPPORTED); // 8_SLICE
      expect(byIndex(6)).toBe(NVML.NOT_SUPPORTED); // 6_SLICE
      expect(byIndex(7)).toBe('MIG 1g.10gb+me/20/9984');
      expect(byIndex(8)).toBe(NVML.NOT_SUPPORTED); // 2_SLICE_REV1
      expect(byIndex(9)).toBe('MIG 1g.20gb/15/20096');
      expect(byIndex(17)).toBe(NVML.INVALID_ARGUMENT); // COUNT

      expect(nvml.profileV2(d, 0, { version: 152 })).toBe(NVML.ARGUMENT_VERSION_MISMATCH);
      expect(nvml.profileV2(d, 0, { version: (148 | (2 << 24)) >>> 0 })).toBe(NVML.ARGUMENT_VERSION_MISMATCH);
      const v3: Partial<ProfileInfoT> = { version: PROFILE_V3_VERSION };
      expect(nvml.profileV3(d, 2, v3)).toBe(NVML.SUCCESS);
      expect(v3).toMatchObject({
        id: 9,
        name: 'MIG 3g.40gb',
        sliceCount: 3,
        instanceCount: 2,
        copyEngineCount: 3,
      });

      const out = Array.from({ length: 8 }, () => ({ start: 0, size: 0 }));
      const n: Out<number> = [8];
      expect(nvml.placements(d, 14, out, n)).toBe(NVML.SUCCESS);
      expect(out.slice(0, n[0])).toEqual([
        { start: 0, size: 2 },
        { start: 2, size: 2 },
        { start: 4, size: 2 },
      ]);
    });
  });
});

interface H100Fixture {
  driverVersion: string;
  cudaDriverVersion: string;
  gpu: {
    uuid: string;
    productName: string;
    memoryBytes: number;
    minor: number;
    pci: { busId: string; deviceId: number; subsystemId: number };
    migProfiles: {
      name: string;
      id: number;
      memoryBytes: number;
      multiprocessors: number;
      instanceCount: number;
    }[];
  };
}

describe('test/fixtures/h100-real.json', () => {
  it('agrees with what the fake answers for the h100 and h100-8x profiles (GPU 0)', async () => {
    const fx = JSON.parse(
      readFileSync(path.join(import.meta.dirname, '../fixtures/h100-real.json'), 'utf8'),
    ) as H100Fixture;
    for (const profile of ['h100', 'h100-8x']) {
      await withSimulatedNode(profile, () => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        expect(str((b, l) => nvml.driverVersion(b, l), 80)).toBe(fx.driverVersion);
        const cuda = u32((o) => nvml.cudaVersion(o));
        expect(typeof cuda === 'number' ? `${Math.floor(cuda / 1000)}.${(cuda % 1000) / 10}` : cuda).toBe(
          fx.cudaDriverVersion,
        );
        const d = handle((o) => nvml.handleByIndex(0, o));
        expect(str((b, l) => nvml.uuid(d, b, l))).toBe(fx.gpu.uuid);
        expect(str((b, l) => nvml.name(d, b, l))).toBe(fx.gpu.productName);
        expect(u32((o) => nvml.minor(d, o))).toBe(fx.gpu.minor);
        const mem = {} as MemoryT;
        expect(nvml.memory(d, mem)).toBe(NVML.SUCCESS);
        expect(Number(mem.total)).toBe(fx.gpu.memoryBytes);
        const pci = {} as PciInfoT;
        expect(nvml.pci(d, pci)).toBe(NVML.SUCCESS);
        expect(pci.busId.slice(4).toLowerCase()).toBe(fx.gpu.pci.busId);
        expect(pci.pciDeviceId).toBe(fx.gpu.pci.deviceId);
        expect(pci.pciSubSystemId).toBe(fx.gpu.pci.subsystemId);
        const seen = [];
        for (let index = 0; index < 17; index++) {
          const info: Partial<ProfileInfoT> = { version: PROFILE_V2_VERSION };
          if (nvml.profileV2(d, index, info) !== NVML.SUCCESS) continue;
          seen.push({
            name: (info.name ?? '').replace(/^MIG /, ''),
            id: info.id,
            memoryBytes: Number(info.memorySizeMB) * 1024 * 1024,
            multiprocessors: info.multiprocessorCount,
            instanceCount: info.instanceCount,
          });
        }
        expect(seen).toEqual(
          fx.gpu.migProfiles.map(({ name, id, memoryBytes, multiprocessors, instanceCount }) => ({
            name,
            id,
            memoryBytes,
            multiprocessors,
            instanceCount,
          })),
        );
        expect(nvml.shutdown()).toBe(NVML.SUCCESS);
      });
    }
  });
});

describe('a100-mig', () => {
  it('enumerates MIG devices with GI/CI ids, placements and parent links', async () => {
    await withSimulatedNode('a100-mig', async (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const cfg: FakeNvmlConfig = await loadProfile('a100-mig');
      const gpu0 = handle((o) => nvml.handleByIndex(0, o));
      const cur: Out<number> = [0];
      expect(nvml.migMode(gpu0, cur, [0])).toBe(NVML.SUCCESS);
      expect(cur[0]).toBe(1);
      expect(u32((o) => nvml.maxMig(gpu0, o))).toBe(7);
      const want = cfg.gpus[0]?.migDevices ?? [];
      expect(want.map((m) => m.gpuInstanceId)).toEqual([2, 3, 9, 10]);
      for (const [i, w] of want.entries()) {
        const mig = handle((o) => nvml.migByIndex(gpu0, i, o));
        expect(u32((o) => nvml.isMig(mig, o))).toBe(1);
        expect(str((b, l) => nvml.uuid(mig, b, l))).toBe(w.uuid);
        expect(u32((o) => nvml.giId(mig, o))).toBe(w.gpuInstanceId);
        expect(u32((o) => nvml.ciId(mig, o))).toBe(0);
        expect(addr(handle((o) => nvml.parentOf(mig, o)))).toBe(addr(gpu0));
        const gi = handle((o) => nvml.giById(gpu0, w.gpuInstanceId, o));
        const info = {} as GpuInstanceInfoT;
        expect(nvml.giInfo(gi, info)).toBe(NVML.SUCCESS);
        expect(addr(info.device)).toBe(addr(gpu0));
        expect(info).toMatchObject({ id: w.gpuInstanceId, profileId: w.profileId, placement: w.placement });
        expect(u32((o) => nvml.minor(mig, o))).toEqual({ rc: NVML.INVALID_ARGUMENT });
        expect(nvml.pci(mig, {} as PciInfoT)).toBe(NVML.INVALID_ARGUMENT);
      }
      const first = handle((o) => nvml.migByIndex(gpu0, 0, o));
      expect(str((b, l) => nvml.name(first, b, l))).toBe('NVIDIA A100-SXM4-40GB MIG 3g.20gb');
      const mem = {} as MemoryT;
      expect(nvml.memory(first, mem)).toBe(NVML.SUCCESS);
      expect(Number(mem.total)).toBe(19968 * 1024 * 1024);
      expect(u32((o) => nvml.isMig(gpu0, o))).toBe(0);
      expect(u32((o) => nvml.giId(gpu0, o))).toEqual({ rc: NVML.INVALID_ARGUMENT });
      expect(nvml.parentOf(gpu0, [null])).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.migByIndex(gpu0, 4, [null])).toBe(NVML.NOT_FOUND);
      expect(nvml.migByIndex(gpu0, 7, [null])).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.giById(gpu0, 5, [null])).toBe(NVML.NOT_FOUND);

      // MIG UUIDs resolve to the MIG handle.
      const byUuid = handle((o) => nvml.handleByUuid(want[0]?.uuid ?? '', o));
      expect(addr(byUuid)).toBe(addr(first));

      const gpu1 = handle((o) => nvml.handleByIndex(1, o));
      expect(nvml.migByIndex(gpu1, 1, [null])).toBe(NVML.SUCCESS);
      expect(nvml.migByIndex(gpu1, 2, [null])).toBe(NVML.NOT_FOUND);

      // The simulated host has the matching access caps, and the kernel module's entries for them.
      expect(
        readFileSync(
          path.join(node.hostPaths.procRoot, 'driver/nvidia/capabilities/gpu0/mig/gi2/ci0/access'),
          'utf8',
        ),
      ).toContain(`DeviceFileMinor: ${String(migCapMinor(0, 2, 0))}`);
      expect(
        existsSync(path.join(node.hostPaths.devRoot, 'nvidia-caps', `nvidia-cap${migCapMinor(0, 2)}`)),
      ).toBe(true);
      expect(
        existsSync(path.join(node.hostPaths.devRoot, 'nvidia-caps', `nvidia-cap${migCapMinor(0, 2, 0)}`)),
      ).toBe(true);
    });
  });
});

describe('mixed and fault profiles', () => {
  it('mixed: the L4 is not MIG capable; the H100 reports HMM addressing', async () => {
    await withSimulatedNode('mixed', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(u32((o) => nvml.count(o))).toBe(3);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const l4 = handle((o) => nvml.handleByIndex(1, o));
      expect(str((b, l) => nvml.name(l4, b, l))).toBe('NVIDIA L4');
      expect(u32((o) => nvml.arch(l4, o))).toBe(8);
      expect(nvml.migMode(l4, [0], [0])).toBe(NVML.NOT_SUPPORTED);
      expect(nvml.profileV2(l4, 0, { version: PROFILE_V2_VERSION })).toBe(NVML.NOT_SUPPORTED);
      expect(u32((o) => nvml.maxMig(l4, o))).toBe(0);
      expect(u32((o) => nvml.numa(l4, o))).toBe(0);
      const mode = { version: ADDRESSING_V1_VERSION, value: 0 };
      expect(nvml.addressingMode(h100, mode)).toBe(NVML.SUCCESS);
      expect(mode.value).toBe(1);
      expect(nvml.addressingMode(h100, { version: 8 })).toBe(NVML.ARGUMENT_VERSION_MISMATCH);
    });
  });

  it('fault-gpu-lost: every call on GPU 3 after GetHandleByIndex answers GPU_IS_LOST', async () => {
    await withSimulatedNode('fault-gpu-lost', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(u32((o) => nvml.count(o))).toBe(8);
      const lost = handle((o) => nvml.handleByIndex(3, o));
      expect(str((b, l) => nvml.name(lost, b, l))).toBe(NVML.GPU_IS_LOST);
      expect(str((b, l) => nvml.uuid(lost, b, l))).toBe(NVML.GPU_IS_LOST);
      expect(u32((o) => nvml.minor(lost, o))).toEqual({ rc: NVML.GPU_IS_LOST });
      expect(nvml.memory(lost, {} as MemoryT)).toBe(NVML.GPU_IS_LOST);
      expect(nvml.errorString(NVML.GPU_IS_LOST)).toBe('GPU is lost');
      const ok = handle((o) => nvml.handleByIndex(4, o));
      expect(u32((o) => nvml.minor(ok, o))).toBe(4);
    });
  });

  it('fault-not-supported: optional queries answer NOT_SUPPORTED', async () => {
    await withSimulatedNode('fault-not-supported', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(u32((o) => nvml.cudaVersionV2(o))).toEqual({ rc: NVML.FUNCTION_NOT_FOUND });
      expect(u32((o) => nvml.cudaVersion(o))).toBe(13000);
      const [g0, g1, g2] = [0, 1, 2].map((i) => handle((o) => nvml.handleByIndex(i, o)));
      expect(u32((o) => nvml.brand(g0, o))).toEqual({ rc: NVML.NOT_SUPPORTED });
      expect(u32((o) => nvml.arch(g1, o))).toEqual({ rc: NVML.NOT_SUPPORTED });
      expect(nvml.profileV2(g1, 0, { version: PROFILE_V2_VERSION })).toBe(NVML.NOT_SUPPORTED);
      expect(nvml.migMode(g2, [0], [0])).toBe(NVML.NOT_SUPPORTED);
      for (const g of [g0, g1, g2]) {
        expect(u32((o) => nvml.numa(g, o))).toEqual({ rc: NVML.NOT_SUPPORTED });
        expect(nvml.addressingMode(g, { version: ADDRESSING_V1_VERSION })).toBe(NVML.NOT_SUPPORTED);
      }
    });
  });

  it('injects per-function errors from the config', async () => {
    const cfg = await loadProfile('h100');
    const gpu = cfg.gpus[0];
    if (gpu === undefined) throw new Error('no GPU');
    const custom: FakeNvmlConfig = {
      ...cfg,
      gpus: [{ ...gpu, errors: { nvmlDeviceGetUUID: 'GPU_IS_LOST' } }],
    };
    await withSimulatedNode(custom, () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const d = handle((o) => nvml.handleByIndex(0, o));
      expect(str((b, l) => nvml.uuid(d, b, l))).toBe(NVML.GPU_IS_LOST);
      expect(str((b, l) => nvml.name(d, b, l))).toBe('NVIDIA H100 80GB HBM3');
    });
  });

  it('big-mig: 29 GPUs with 7 MIG devices each', async () => {
    await withSimulatedNode('big-mig', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const n = u32((o) => nvml.count(o));
      expect(n).toBe(29);
      let migs = 0;
      for (let i = 0; i < 29; i++) {
        const d = handle((o) => nvml.handleByIndex(i, o));
        for (let j = 0; j < 7; j++) if (nvml.migByIndex(d, j, [null]) === NVML.SUCCESS) migs++;
      }
      expect(migs).toBe(203);
    });
  });
});

describe('simulated host tree', () => {
  it('h100-8x: device nodes, /proc, sysfs PCI links and the driver root', async () => {
    await withSimulatedNode('h100-8x', (node) => {
      const { devRoot, procRoot, sysRoot, driverRoot } = node.hostPaths;
      for (let i = 0; i < 8; i++) expect(existsSync(path.join(devRoot, `nvidia${i}`))).toBe(true);
      for (const f of [
        'nvidiactl',
        'nvidia-uvm',
        'nvidia-uvm-tools',
        'nvidia-caps/nvidia-cap1',
        'nvidia-caps/nvidia-cap2',
      ])
        expect(existsSync(path.join(devRoot, f)), f).toBe(true);
      const devices = readFileSync(path.join(procRoot, 'devices'), 'utf8');
      expect(devices).toMatch(/^195 nvidia-frontend$/m);
      expect(devices).toMatch(/^238 nvidia-uvm$/m);
      expect(devices).toMatch(/^241 nvidia-caps$/m);
      const minors = readFileSync(path.join(procRoot, 'driver/nvidia-caps/mig-minors'), 'utf8');
      expect(minors).toMatch(/^config 1\nmonitor 2\ngpu0\/gi0\/access 3\ngpu0\/gi0\/ci0\/access 4\n/);
      expect(minors).toContain(`gpu7/gi9/ci0/access ${migCapMinor(7, 9, 0)}\n`);

      const link = path.join(sysRoot, 'bus/pci/devices/0000:18:00.0');
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(realpathSync(link)).toBe(path.join(sysRoot, 'devices/pci0000:00/0000:00:01.0/0000:18:00.0'));
      expect(realpathSync(path.join(sysRoot, 'bus/pci/devices/0000:00:06.0'))).toBe(
        path.join(sysRoot, 'devices/pci0000:00/0000:00:06.0'),
      );
      expect(realpathSync(path.join(sysRoot, 'bus/pci/devices/0000:db:00.0'))).toContain('/pci0000:80/');
      expect(readFileSync(path.join(link, 'device'), 'utf8')).toBe('0x2330\n');
      expect(readFileSync(path.join(link, 'numa_node'), 'utf8')).toBe('-1\n');

      const lib = path.join(driverRoot, 'usr/lib/x86_64-linux-gnu');
      expect(readlinkSync(path.join(lib, 'libcuda.so.1'))).toBe('libcuda.so.580.159.04');
      expect(readlinkSync(path.join(lib, 'libnvidia-ml.so.1'))).toBe('libnvidia-ml.so.580.159.04');
      for (const f of [
        'libnvidia-ptxjitcompiler.so.580.159.04',
        'libnvidia-nvvm.so.580.159.04',
        'libcudadebugger.so.580.159.04',
      ])
        expect(existsSync(path.join(lib, f)), f).toBe(true);
      for (const f of ['usr/bin/nvidia-smi', 'usr/bin/nvidia-debugdump', 'usr/bin/nvidia-persistenced'])
        expect(existsSync(path.join(driverRoot, f)), f).toBe(true);
      for (const f of ['gsp_ga10x.bin', 'gsp_tu10x.bin'])
        expect(existsSync(path.join(driverRoot, 'lib/firmware/nvidia/580.159.04', f)), f).toBe(true);
      expect(node.env.FAKE_NVML_CONFIG).toBe(node.configPath);
      expect(process.env.FAKE_NVML_CONFIG).toBe(node.configPath);
    });
  });

  it('the libnvidia-ml.so.1 in the driver root is a loadable fake NVML', async () => {
    await withSimulatedNode('h100', (node) => {
      const own = bind(koffi.load(node.driverLibPath));
      expect(own.init()).toBe(NVML.SUCCESS);
      expect(u32((o) => own.count(o))).toBe(1);
      expect(own.shutdown()).toBe(NVML.SUCCESS);
    });
  });

  it('fault-init: no device nodes and no nvidia majors (driver not loaded)', async () => {
    await withSimulatedNode('fault-init', (node) => {
      expect(existsSync(path.join(node.hostPaths.devRoot, 'nvidiactl'))).toBe(false);
      expect(readFileSync(path.join(node.hostPaths.procRoot, 'devices'), 'utf8')).not.toContain('nvidia');
      expect(existsSync(path.join(node.hostPaths.driverRoot, 'usr/bin/nvidia-smi'))).toBe(true);
    });
  });
});

// ---- MIG GPU and compute instances made and destroyed through NVML ----

const P = (start: number, size: number) => ({ start, size });

/** Profile ids and CI profile indexes used below (H100 80GB and A100 40GB tables). */
const GIP = { g1: 19, g1me: 20, g1x2: 15, g2: 14, g3: 9, g4: 5, g7: 0 } as const;
const CIP = { c1: 0, c2: 1, c3: 2, c4: 3, c7: 4 } as const;

/** The new handle (a koffi pointer object), or the return code. */
function createGi(d: Handle, profileId: number, pl: { start: number; size: number }): object | number {
  const out: Out<Handle> = [null];
  const rc = nvml.createGi(d, profileId, pl, out);
  return rc === NVML.SUCCESS ? (out[0] as object) : rc;
}

function createCi(gi: Handle, profile: number): object | number {
  const out: Out<Handle> = [null];
  const rc = nvml.createCi(gi, profile, out);
  return rc === NVML.SUCCESS ? (out[0] as object) : rc;
}

function ciInfo(ci: Handle): CiInfoT {
  const info = {} as CiInfoT;
  expect(nvml.ciInfo(ci, info)).toBe(NVML.SUCCESS);
  return info;
}

function giInfo(gi: Handle): GpuInstanceInfoT {
  const info = {} as GpuInstanceInfoT;
  expect(nvml.giInfo(gi, info)).toBe(NVML.SUCCESS);
  return info;
}

/** GI + full CI, as NVIDIA's driver makes a MIG device; returns the handles and the MIG UUID. */
function createMig(d: Handle, profileId: number, pl: { start: number; size: number }, ciProfile: number) {
  const gi = createGi(d, profileId, pl);
  if (typeof gi === 'number') throw new Error(`create GI ${profileId}@${pl.start}: ${gi}`);
  const ci = createCi(gi, ciProfile);
  if (typeof ci === 'number') throw new Error(`create CI ${ciProfile}: ${ci}`);
  const info = ciInfo(ci);
  return { gi, ci, info, uuid: str((b, l) => nvml.uuid(info.device, b, l)) as string };
}

async function withCustomNode<T>(
  edit: (cfg: FakeNvmlConfig) => FakeNvmlConfig,
  fn: (node: SimulatedNode) => T,
) {
  return withSimulatedNode(edit(await loadProfile('mig-dynamic')), fn);
}

/** mig-dynamic with a changed H100 profile table (GPU 0 only). */
function h100Table(change: (p: FakeGiProfile) => FakeGiProfile) {
  return (cfg: FakeNvmlConfig): FakeNvmlConfig => {
    const [h100, ...rest] = cfg.gpus;
    if (h100 === undefined) throw new Error('no GPU');
    return { ...cfg, gpus: [{ ...h100, giProfiles: gpuProfiles(cfg, h100).map(change) }, ...rest] };
  };
}

const MIG_UUID = /^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('MIG create and destroy (mig-dynamic)', () => {
  it('makes a MIG device the way NVIDIA`s driver does: GI, CI profile, CI, CI info, UUID', async () => {
    await withSimulatedNode('mig-dynamic', (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      expect(nvml.migByIndex(h100, 0, [null])).toBe(NVML.NOT_FOUND);

      const gi = createGi(h100, GIP.g2, P(2, 2));
      expect(typeof gi).not.toBe('number');
      expect(giInfo(gi)).toMatchObject({ id: 4, profileId: GIP.g2, placement: P(2, 2) });
      expect(addr(giInfo(gi).device)).toBe(addr(h100));
      expect(addr(handle((o) => nvml.giById(h100, 4, o)))).toBe(addr(gi));

      const prof = {} as CiProfileInfoT;
      expect(nvml.ciProfile(gi, CIP.c2, 0, prof)).toBe(NVML.SUCCESS);
      expect(prof).toMatchObject({ id: CIP.c2, sliceCount: 2, instanceCount: 1, multiprocessorCount: 32 });
      const v2: Partial<CiProfileInfoT> = { version: CI_PROFILE_V2_VERSION };
      expect(nvml.ciProfileV(gi, CIP.c2, 0, v2)).toBe(NVML.SUCCESS);
      expect(v2).toMatchObject({ id: CIP.c2, sliceCount: 2, name: 'MIG 2g.20gb' });
      expect(nvml.ciProfileV(gi, CIP.c2, 0, { version: 136 })).toBe(NVML.ARGUMENT_VERSION_MISMATCH);

      const ci = createCi(gi, prof.id);
      expect(typeof ci).not.toBe('number');
      const info = ciInfo(ci);
      expect(info).toMatchObject({ id: 0, profileId: CIP.c2, placement: P(0, 2) });
      expect(addr(info.gpuInstance)).toBe(addr(gi));
      // `device` is the MIG device (nvml.h says "parent device"; NVIDIA's driver relies on this).
      const mig = info.device;
      expect(u32((o) => nvml.isMig(mig, o))).toBe(1);
      const uuid = str((b, l) => nvml.uuid(mig, b, l)) as string;
      expect(uuid).toMatch(MIG_UUID);
      expect(u32((o) => nvml.giId(mig, o))).toBe(4);
      expect(u32((o) => nvml.ciId(mig, o))).toBe(0);
      expect(str((b, l) => nvml.name(mig, b, l))).toBe('NVIDIA H100 80GB HBM3 MIG 2g.20gb');
      const mem = {} as MemoryT;
      expect(nvml.memory(mig, mem)).toBe(NVML.SUCCESS);
      expect(Number(mem.total)).toBe(20096 * MIB);
      expect(addr(handle((o) => nvml.parentOf(mig, o)))).toBe(addr(h100));
      // Enumerated like a configured one.
      expect(addr(handle((o) => nvml.migByIndex(h100, 0, o)))).toBe(addr(mig));
      expect(addr(handle((o) => nvml.handleByUuid(uuid, o)))).toBe(addr(mig));
      expect(addr(handle((o) => nvml.ciById(gi, 0, o)))).toBe(addr(ci));
      // Its access caps appear on the simulated host, as nvidia-modprobe makes them on a real one.
      for (const minor of [migCapMinor(0, 4), migCapMinor(0, 4, 0)])
        expect(existsSync(path.join(node.hostPaths.devRoot, 'nvidia-caps', `nvidia-cap${minor}`))).toBe(true);
      expect(
        existsSync(path.join(node.hostPaths.devRoot, 'nvidia-caps', `nvidia-cap${migCapMinor(0, 3)}`)),
      ).toBe(false);
    });
  });

  it('enforces the placement rules real NVML enforces', async () => {
    await withSimulatedNode('mig-dynamic', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      expect(createGi(h100, GIP.g2, P(1, 2))).toBe(NVML.INVALID_ARGUMENT); // not a listed placement
      expect(createGi(h100, GIP.g2, P(2, 1))).toBe(NVML.INVALID_ARGUMENT);
      expect(createGi(h100, 99, P(0, 2))).toBe(NVML.INVALID_ARGUMENT); // no such profile
      expect(nvml.createGi(h100, GIP.g2, null, [null])).toBe(NVML.INVALID_ARGUMENT);

      expect(typeof createGi(h100, GIP.g3, P(0, 4))).not.toBe('number');
      // Occupied memory slices: INSUFFICIENT_RESOURCES, not ALREADY_EXISTS, even for the same GI.
      expect(createGi(h100, GIP.g3, P(0, 4))).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(createGi(h100, GIP.g2, P(2, 2))).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(createGi(h100, GIP.g4, P(0, 4))).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(createGi(h100, GIP.g7, P(0, 8))).toBe(NVML.INSUFFICIENT_RESOURCES);
      // A profile at its instance count: one 1g.10gb+me at most.
      expect(typeof createGi(h100, GIP.g1me, P(4, 1))).not.toBe('number');
      expect(createGi(h100, GIP.g1me, P(5, 1))).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(typeof createGi(h100, GIP.g1, P(5, 1))).not.toBe('number');
      expect(typeof createGi(h100, GIP.g1, P(6, 1))).not.toBe('number');
      expect(createGi(h100, GIP.g1x2, P(6, 2))).toBe(NVML.INSUFFICIENT_RESOURCES);
      // Without a placement: the first one that fits, here none.
      expect(nvml.createGiAnywhere(h100, GIP.g1, [null])).toBe(NVML.INSUFFICIENT_RESOURCES);

      // A100: 2x 1g.5gb + 2g.10gb + 3g.20gb fill it.
      const a100 = handle((o) => nvml.handleByIndex(1, o));
      for (const [id, pl] of [
        [GIP.g3, P(4, 4)],
        [GIP.g2, P(0, 2)],
        [GIP.g1, P(2, 1)],
        [GIP.g1, P(3, 1)],
      ] as const)
        expect(typeof createGi(a100, id, pl), `${id}@${pl.start}`).not.toBe('number');
      expect(createGi(a100, GIP.g1, P(0, 1))).toBe(NVML.INSUFFICIENT_RESOURCES);
    });
  });

  it('counts media engines and compute slices against the full GPU, apart from instance counts', async () => {
    // Seven 1g.10gb+me allowed by count: the 7g profile's one OFA engine still allows only one.
    await withCustomNode(
      h100Table((p) => (p.id === GIP.g1me ? { ...p, instanceCount: 7 } : p)),
      () => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const h100 = handle((o) => nvml.handleByIndex(0, o));
        expect(typeof createGi(h100, GIP.g1me, P(0, 1))).not.toBe('number');
        expect(createGi(h100, GIP.g1me, P(1, 1))).toBe(NVML.INSUFFICIENT_RESOURCES);
        expect(typeof createGi(h100, GIP.g1, P(1, 1))).not.toBe('number');
      },
    );
    // A 2-memory-slice profile of 3 compute slices: the third fits in memory, not in 7 slices.
    await withCustomNode(
      h100Table((p) => (p.id === GIP.g2 ? { ...p, sliceCount: 3, decoderCount: 0, jpegCount: 0 } : p)),
      () => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const h100 = handle((o) => nvml.handleByIndex(0, o));
        expect(typeof createGi(h100, GIP.g2, P(0, 2))).not.toBe('number');
        expect(typeof createGi(h100, GIP.g2, P(2, 2))).not.toBe('number');
        expect(createGi(h100, GIP.g2, P(4, 2))).toBe(NVML.INSUFFICIENT_RESOURCES);
        expect(typeof createGi(h100, GIP.g1, P(4, 1))).not.toBe('number');
      },
    );
  });

  it('answers NOT_SUPPORTED with MIG off and in a vGPU guest; reports the virtualization mode', async () => {
    await withSimulatedNode('h100', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const d = handle((o) => nvml.handleByIndex(0, o));
      expect(createGi(d, GIP.g7, P(0, 8))).toBe(NVML.NOT_SUPPORTED);
      expect(u32((o) => nvml.virtMode(d, o))).toBe(0);
    });
    await withCustomNode(
      (cfg) => ({ ...cfg, gpus: cfg.gpus.map((g) => ({ ...g, virtualizationMode: 2 })) }),
      () => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const d = handle((o) => nvml.handleByIndex(0, o));
        expect(u32((o) => nvml.virtMode(d, o))).toBe(2);
        expect(createGi(d, GIP.g7, P(0, 8))).toBe(NVML.NOT_SUPPORTED);
      },
    );
  });

  it('numbers GPU instances in the A100/H100 pattern, unique next to configured ones', async () => {
    await withSimulatedNode('mig-dynamic', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const ids = (list: [number, { start: number; size: number }][]) =>
        list.map(([id, pl]) => {
          const gi = createGi(h100, id, pl);
          return typeof gi === 'number' ? `rc ${gi}` : giInfo(gi).id;
        });
      expect(ids([[GIP.g7, P(0, 8)]])).toEqual([0]);
      expect(nvml.giDestroy(handle((o) => nvml.giById(h100, 0, o)))).toBe(NVML.SUCCESS);
      expect(
        ids([
          [GIP.g3, P(4, 4)],
          [GIP.g2, P(2, 2)],
          [GIP.g1, P(0, 1)],
          [GIP.g1, P(1, 1)],
        ]),
      ).toEqual([2, 4, 7, 8]);
    });
    // A configured GI holding id 3 (not where the pattern puts it): a new 2g.20gb@0 takes the lowest free id.
    await withCustomNode(
      (cfg) => ({
        ...cfg,
        gpus: cfg.gpus.map((g, i) =>
          i === 0
            ? {
                ...g,
                migDevices: [
                  {
                    uuid: fakeUuid('MIG', 'odd'),
                    gpuInstanceId: 3,
                    computeInstanceId: 0,
                    profileId: GIP.g1,
                    placement: P(6, 1),
                  },
                ],
              }
            : g,
        ),
      }),
      () => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const h100 = handle((o) => nvml.handleByIndex(0, o));
        const gi = createGi(h100, GIP.g2, P(0, 2));
        expect(giInfo(gi).id).toBe(0);
        expect(createGi(h100, GIP.g1, P(6, 1))).toBe(NVML.INSUFFICIENT_RESOURCES);
      },
    );
  });

  it('compute instances: the full one fills its GI; smaller CI profiles share it', async () => {
    await withSimulatedNode('mig-dynamic', () => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const { gi } = createMig(h100, GIP.g3, P(0, 4), CIP.c3);
      expect(createCi(gi, CIP.c3)).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(createCi(gi, CIP.c1)).toBe(NVML.INSUFFICIENT_RESOURCES);
      expect(createCi(gi, CIP.c4)).toBe(NVML.NOT_SUPPORTED); // 4 slices in a 3-slice GI
      expect(createCi(gi, 9)).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.ciProfile(gi, CIP.c3, 1, {} as CiProfileInfoT)).toBe(NVML.INVALID_ARGUMENT); // engine profile
      expect(nvml.ciProfile(gi, CIP.c7, 0, {} as CiProfileInfoT)).toBe(NVML.NOT_SUPPORTED);

      // Three 1c compute instances in the other 3g.40gb: CI ids 0..2 on slices 0..2.
      const gi2 = createGi(h100, GIP.g3, P(4, 4));
      const prof = {} as CiProfileInfoT;
      expect(nvml.ciProfile(gi2, CIP.c1, 0, prof)).toBe(NVML.SUCCESS);
      expect(prof).toMatchObject({ sliceCount: 1, instanceCount: 3, multiprocessorCount: 20 });
      const cis = [0, 1, 2].map(() => createCi(gi2, CIP.c1));
      expect(cis.map((ci) => ciInfo(ci)).map(({ id, placement }) => ({ id, placement }))).toEqual([
        { id: 0, placement: P(0, 1) },
        { id: 1, placement: P(1, 1) },
        { id: 2, placement: P(2, 1) },
      ]);
      expect(createCi(gi2, CIP.c1)).toBe(NVML.INSUFFICIENT_RESOURCES);
      const mig = ciInfo(cis[1]).device;
      expect(str((b, l) => nvml.name(mig, b, l))).toBe('NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb');
      // MIG devices enumerate in (GI id, CI id) order: GI 1 CI 0, then GI 2 CIs 0..2.
      const order = [0, 1, 2, 3].map((i) => {
        const h = handle((o) => nvml.migByIndex(h100, i, o));
        return [u32((o) => nvml.giId(h, o)), u32((o) => nvml.ciId(h, o))];
      });
      expect(order).toEqual([
        [1, 0],
        [2, 0],
        [2, 1],
        [2, 2],
      ]);
    });
  });

  it('destroys CI before GI (a GI with a CI is IN_USE); stale handles and ids are gone', async () => {
    await withSimulatedNode('mig-dynamic', (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const { gi, ci, info, uuid } = createMig(h100, GIP.g7, P(0, 8), CIP.c7);
      // The kernel module's /proc entries come with the instances and go with them.
      const caps = path.join(node.hostPaths.procRoot, 'driver/nvidia/capabilities/gpu0/mig/gi0');
      expect(readFileSync(path.join(caps, 'access'), 'utf8')).toBe(
        `DeviceFileMinor: ${String(migCapMinor(0, 0))}\nDeviceFileMode: 292\nDeviceFileModify: 1\n`,
      );
      expect(readFileSync(path.join(caps, 'ci0/access'), 'utf8')).toMatch(
        new RegExp(`^DeviceFileMinor: ${String(migCapMinor(0, 0, 0))}\n`),
      );
      expect(nvml.giDestroy(gi)).toBe(NVML.IN_USE);
      expect(nvml.ciDestroy(ci)).toBe(NVML.SUCCESS);
      expect(existsSync(path.join(caps, 'ci0'))).toBe(false);
      expect(existsSync(path.join(caps, 'access'))).toBe(true);
      expect(nvml.ciDestroy(ci)).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.ciInfo(ci, {} as CiInfoT)).toBe(NVML.INVALID_ARGUMENT);
      expect(str((b, l) => nvml.uuid(info.device, b, l))).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.ciById(gi, 0, [null])).toBe(NVML.NOT_FOUND);
      expect(nvml.handleByUuid(uuid, [null])).toBe(NVML.NOT_FOUND);
      expect(nvml.migByIndex(h100, 0, [null])).toBe(NVML.NOT_FOUND);
      expect(nvml.giDestroy(gi)).toBe(NVML.SUCCESS);
      expect(existsSync(caps)).toBe(false);
      expect(nvml.giDestroy(gi)).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.giById(h100, 0, [null])).toBe(NVML.NOT_FOUND);
      // The same placement again: a new MIG UUID.
      const again = createMig(h100, GIP.g7, P(0, 8), CIP.c7);
      expect(again.uuid).toMatch(MIG_UUID);
      expect(again.uuid).not.toBe(uuid);
    });
  });

  it('sets MIG mode as NVML does on bare metal, refuses to turn it off under instances, and keeps it', async () => {
    await withSimulatedNode('mig-dynamic', (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const mode = (): [number, number] => {
        const cur: Out<number> = [0];
        const pend: Out<number> = [0];
        expect(nvml.migMode(h100, cur, pend)).toBe(NVML.SUCCESS);
        return [cur[0], pend[0]];
      };
      const { gi, ci } = createMig(h100, GIP.g2, P(0, 2), CIP.c2);
      const status: Out<number> = [-1];
      expect(nvml.setMigMode(h100, 0, status)).toBe(NVML.IN_USE);
      expect(nvml.setMigMode(h100, 2, status)).toBe(NVML.INVALID_ARGUMENT);
      expect(nvml.ciDestroy(ci)).toBe(NVML.SUCCESS);
      expect(nvml.giDestroy(gi)).toBe(NVML.SUCCESS);
      expect(nvml.setMigMode(h100, 0, status)).toBe(NVML.SUCCESS);
      expect(status[0]).toBe(NVML.SUCCESS);
      expect(mode()).toEqual([0, 0]);
      expect(createGi(h100, GIP.g2, P(0, 2))).toBe(NVML.NOT_SUPPORTED);
      // Kept across a shutdown, as the GPU keeps it.
      expect(nvml.shutdown()).toBe(NVML.SUCCESS);
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(mode()).toEqual([0, 0]);
      expect(readFileSync(`${node.configPath}.mig-state`, 'utf8')).toContain(
        '"migMode": {"current": 0, "pending": 0}',
      );
      expect(nvml.setMigMode(h100, 1, status)).toBe(NVML.SUCCESS);
      expect(mode()).toEqual([1, 1]);
    });
  });

  it('destroys configured instances too; a busy one answers IN_USE', async () => {
    const cfg = await loadProfile('a100-mig');
    const [gpu0, ...rest] = cfg.gpus;
    if (gpu0 === undefined) throw new Error('no GPU');
    const busy: FakeNvmlConfig = {
      ...cfg,
      gpus: [
        {
          ...gpu0,
          migDevices: (gpu0.migDevices ?? []).map((m) => (m.gpuInstanceId === 9 ? { ...m, busy: true } : m)),
        },
        ...rest,
      ],
    };
    await withSimulatedNode(busy, async (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const d = handle((o) => nvml.handleByIndex(0, o));
      for (const [giId, rc] of [
        [2, NVML.SUCCESS],
        [9, NVML.IN_USE],
      ] as const) {
        const gi = handle((o) => nvml.giById(d, giId, o));
        const ci = handle((o) => nvml.ciById(gi, 0, o));
        expect(ciInfo(ci)).toMatchObject({ id: 0, profileId: giId === 2 ? CIP.c3 : CIP.c1 });
        expect(nvml.ciDestroy(ci), `GI ${giId}`).toBe(rc);
        expect(nvml.giDestroy(gi)).toBe(rc === NVML.SUCCESS ? NVML.SUCCESS : NVML.IN_USE);
      }
      expect(
        (await readFakeMigInstances(node.dir)).filter((m) => m.gpuIndex === 0).map((m) => m.gpuInstanceId),
      ).toEqual([3, 9, 10]);
    });
  });

  it('injected errors: a compute instance that fails after its GPU instance was made', async () => {
    await withCustomNode(
      (cfg) => ({
        ...cfg,
        gpus: cfg.gpus.map((g, i) =>
          i === 1 ? { ...g, errors: { nvmlGpuInstanceCreateComputeInstance: 'UNKNOWN' } } : g,
        ),
      }),
      async (node) => {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const a100 = handle((o) => nvml.handleByIndex(1, o));
        const gi = createGi(a100, GIP.g3, P(0, 4));
        expect(createCi(gi, CIP.c3)).toBe(NVML.UNKNOWN);
        // The GI stays until someone destroys it: the leak a caller must roll back.
        expect(await readFakeMigInstances(node.dir)).toEqual([
          {
            gpuIndex: 1,
            parentUuid: node.config.gpus[1]?.uuid,
            gpuInstanceId: 1,
            profileId: GIP.g3,
            placement: P(0, 4),
          },
        ]);
        expect(nvml.giDestroy(gi)).toBe(NVML.SUCCESS);
        expect(await readFakeMigInstances(node.dir)).toEqual([]);
      },
    );
  });

  it('instances outlive nvmlShutdown: the next init sees them, and so does readFakeMigInstances', async () => {
    await withSimulatedNode('mig-dynamic', async (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS);
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const made = createMig(h100, GIP.g4, P(0, 4), CIP.c4);
      createGi(h100, GIP.g1, P(4, 1)); // a bare GI, no CI
      expect(nvml.shutdown()).toBe(NVML.SUCCESS);
      expect(nvml.migByIndex(h100, 0, [null])).toBe(NVML.UNINITIALIZED);

      expect(nvml.init()).toBe(NVML.SUCCESS);
      const again = handle((o) => nvml.handleByIndex(0, o));
      const mig = handle((o) => nvml.migByIndex(again, 0, o));
      expect(str((b, l) => nvml.uuid(mig, b, l))).toBe(made.uuid);
      expect(giInfo(handle((o) => nvml.giById(again, 11, o)))).toMatchObject({
        profileId: GIP.g1,
        placement: P(4, 1),
      });
      const uuid0 = node.config.gpus[0]?.uuid;
      expect(await readFakeMigInstances(node.dir)).toEqual([
        {
          gpuIndex: 0,
          parentUuid: uuid0,
          gpuInstanceId: 1,
          profileId: GIP.g4,
          placement: P(0, 4),
          computeInstanceId: 0,
          uuid: made.uuid,
          busy: false,
        },
        { gpuIndex: 0, parentUuid: uuid0, gpuInstanceId: 11, profileId: GIP.g1, placement: P(4, 1) },
      ]);
      // A busy mark in the state makes the next destroy answer IN_USE.
      await setFakeMigInstanceBusy(node.dir, made.uuid, true);
      const gi = handle((o) => nvml.giById(again, 1, o));
      expect(nvml.ciDestroy(handle((o) => nvml.ciById(gi, 0, o)))).toBe(NVML.IN_USE);
    });
  });

  it('two processes see each other`s instances after their next init; neither loses the other`s', async () => {
    await withSimulatedNode('mig-dynamic', async (node) => {
      expect(nvml.init()).toBe(NVML.SUCCESS); // held across the child's changes, like a long-lived driver
      const h100 = handle((o) => nvml.handleByIndex(0, o));
      const child = path.join(node.dir, 'child.mjs');
      await writeFile(
        child,
        [
          `import koffi from ${JSON.stringify(path.resolve('node_modules/koffi/index.js'))};`,
          `const lib = koffi.load(${JSON.stringify(fakeNvmlLib())});`,
          `const GI = koffi.pointer(koffi.opaque()); const CI = koffi.pointer(koffi.opaque()); const D = koffi.pointer(koffi.opaque());`,
          `const Pl = koffi.struct({ start: 'unsigned int', size: 'unsigned int' });`,
          `const init = lib.func('nvmlInit_v2', 'int', []);`,
          `const byIndex = lib.func('nvmlDeviceGetHandleByIndex_v2', 'int', ['unsigned int', koffi.out(koffi.pointer(D))]);`,
          `const mkGi = lib.func('nvmlDeviceCreateGpuInstanceWithPlacement', 'int', [D, 'unsigned int', koffi.pointer(Pl), koffi.out(koffi.pointer(GI))]);`,
          `const mkCi = lib.func('nvmlGpuInstanceCreateComputeInstance', 'int', [GI, 'unsigned int', koffi.out(koffi.pointer(CI))]);`,
          `if (init() !== 0) process.exit(10);`,
          `const d = [null]; if (byIndex(0, d) !== 0) process.exit(11);`,
          `const gi = [null]; if (mkGi(d[0], ${GIP.g3}, { start: 4, size: 4 }, gi) !== 0) process.exit(12);`,
          `if (mkCi(gi[0], ${CIP.c3}, [null]) !== 0) process.exit(13);`,
        ].join('\n'),
      );
      const run = () => execFileSync(process.execPath, [child], { env: { ...process.env, ...node.env } });
      run();
      // Not seen before this process's next init...
      expect(nvml.giById(h100, 2, [null])).toBe(NVML.NOT_FOUND);
      // ...but seen by it, even nested under the reference held above.
      expect(nvml.init()).toBe(NVML.SUCCESS);
      expect(giInfo(handle((o) => nvml.giById(h100, 2, o)))).toMatchObject({
        profileId: GIP.g3,
        placement: P(4, 4),
      });
      // A change here keeps the child's instance in the shared state.
      createMig(h100, GIP.g2, P(0, 2), CIP.c2);
      expect((await readFakeMigInstances(node.dir)).map((m) => m.gpuInstanceId)).toEqual([2, 3]);
      // And the child's second attempt at the same placement is refused.
      expect(() => run()).toThrow(expect.objectContaining({ status: 12 }));
    });
  });

  it('appends a MIG configuration change event for each create and destroy', async () => {
    await withSimulatedNode('mig-dynamic', (node) => {
      const events = path.join(node.dir, 'events');
      const saved = process.env.FAKE_NVML_EVENTS;
      process.env.FAKE_NVML_EVENTS = events;
      try {
        expect(nvml.init()).toBe(NVML.SUCCESS);
        const a100 = handle((o) => nvml.handleByIndex(1, o));
        const { gi, ci } = createMig(a100, GIP.g7, P(0, 8), CIP.c7);
        expect(createGi(a100, GIP.g1, P(0, 1))).toBe(NVML.INSUFFICIENT_RESOURCES); // no event
        expect(nvml.giDestroy(gi)).toBe(NVML.IN_USE); // no event
        expect(nvml.ciDestroy(ci)).toBe(NVML.SUCCESS);
        expect(nvml.giDestroy(gi)).toBe(NVML.SUCCESS);
        expect(readFileSync(events, 'utf8')).toBe('1 0x100 0\n'.repeat(4));
      } finally {
        if (saved === undefined) delete process.env.FAKE_NVML_EVENTS;
        else process.env.FAKE_NVML_EVENTS = saved;
      }
    });
  });
});
