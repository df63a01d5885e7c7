import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import { NvmlError, NvmlLibraryNotFoundError } from './errors.js';
import { NvmlReturn } from './returnCodes.js';

/**
 * The only module that touches NVML through koffi (util/fileLock.ts binds libc's flock). It loads libnvidia-ml, binds the handful of NVML entry
 * points discovery uses with their nvml.h signatures, and turns every non-success return into
 * an `NvmlError` carrying nvmlErrorString. Nothing koffi-typed leaks out: callers see `NvmlApi`.
 */

/** Opaque NVML handles: koffi external pointers, only ever passed back to NVML. */
export type DeviceHandle = { readonly __brand: 'nvmlDevice_t' };
export type GpuInstanceHandle = { readonly __brand: 'nvmlGpuInstance_t' };
export type EventSetHandle = { readonly __brand: 'nvmlEventSet_t' };
export type ComputeInstanceHandle = { readonly __brand: 'nvmlComputeInstance_t' };

/** nvmlEventData_t. `gpuInstanceId`/`computeInstanceId` are 0xFFFFFFFF unless MIG-scoped. */
export interface EventDataRaw {
  device: DeviceHandle;
  eventType: number;
  eventData: number;
  gpuInstanceId: number;
  computeInstanceId: number;
}

/** nvmlEventType* bits the driver listens for. */
export const NvmlEventType = {
  XID_CRITICAL_ERROR: 0x8,
  MIG_CONFIG_CHANGE: 0x100,
} as const;

export interface PciInfoRaw {
  busId: string;
  busIdLegacy: string;
  domain: number;
  bus: number;
  device: number;
  pciDeviceId: number;
  pciSubSystemId: number;
}

export interface MemoryInfoRaw {
  total: number;
  free: number;
  used: number;
}

export interface PlacementRaw {
  start: number;
  size: number;
}

export interface GpuInstanceInfoRaw {
  id: number;
  profileId: number;
  placement: PlacementRaw;
}

/** nvmlComputeInstanceProfileInfo_t. */
export interface ComputeInstanceProfileInfoRaw {
  id: number;
  sliceCount: number;
  instanceCount: number;
  multiprocessorCount: number;
  sharedCopyEngineCount: number;
  sharedDecoderCount: number;
  sharedEncoderCount: number;
  sharedJpegCount: number;
  sharedOfaCount: number;
}

/** nvmlComputeInstanceInfo_t. `device` is the compute instance's MIG device (see README of the fake). */
export interface ComputeInstanceInfoRaw {
  device: DeviceHandle;
  gpuInstance: GpuInstanceHandle;
  id: number;
  profileId: number;
  /** In compute slices of the GPU instance. */
  placement: PlacementRaw;
}

export interface GpuInstanceProfileInfoRaw {
  id: number;
  isP2pSupported: number;
  sliceCount: number;
  instanceCount: number;
  multiprocessorCount: number;
  copyEngineCount: number;
  decoderCount: number;
  encoderCount: number;
  jpegCount: number;
  ofaCount: number;
  memorySizeMB: number;
  name: string;
}

/** Typed NVML surface. Each method throws `NvmlError` on a non-success return. */
export interface NvmlApi {
  readonly path: string;
  init(): void;
  shutdown(): void;
  systemGetDriverVersion(): string;
  systemGetCudaDriverVersion(): number;
  deviceGetCount(): number;
  deviceGetHandleByIndex(index: number): DeviceHandle;
  /** A GPU's or a MIG device's handle. */
  deviceGetHandleByUUID(uuid: string): DeviceHandle;
  deviceGetName(dev: DeviceHandle): string;
  deviceGetUUID(dev: DeviceHandle): string;
  deviceGetBrand(dev: DeviceHandle): number;
  deviceGetArchitecture(dev: DeviceHandle): number;
  deviceGetCudaComputeCapability(dev: DeviceHandle): { major: number; minor: number };
  deviceGetMemoryInfo(dev: DeviceHandle): MemoryInfoRaw;
  deviceGetMinorNumber(dev: DeviceHandle): number;
  deviceGetPciInfo(dev: DeviceHandle): PciInfoRaw;
  deviceGetNumaNodeId(dev: DeviceHandle): number;
  deviceGetMigMode(dev: DeviceHandle): { current: number; pending: number };
  deviceGetMaxMigDeviceCount(dev: DeviceHandle): number;
  deviceGetMigDeviceHandleByIndex(dev: DeviceHandle, index: number): DeviceHandle;
  deviceGetGpuInstanceId(mig: DeviceHandle): number;
  deviceGetComputeInstanceId(mig: DeviceHandle): number;
  deviceGetGpuInstanceById(dev: DeviceHandle, id: number): GpuInstanceHandle;
  gpuInstanceGetInfo(gi: GpuInstanceHandle): GpuInstanceInfoRaw;
  deviceGetGpuInstanceProfileInfo(dev: DeviceHandle, profileIndex: number): GpuInstanceProfileInfoRaw;
  /** Where GPU instances of a profile may go, whatever exists now (MIG mode on or off). */
  deviceGetGpuInstancePossiblePlacements(dev: DeviceHandle, profileId: number): PlacementRaw[];
  /** nvmlGpuVirtualizationMode_t; undefined when this NVML lacks the call. */
  readonly deviceGetVirtualizationMode: ((dev: DeviceHandle) => number) | undefined;
  /** MIG GPU/compute instance control; undefined when this NVML lacks it. */
  readonly mig: NvmlMigApi | undefined;
  /** Undefined when the driver's NVML predates nvmlDeviceGetAddressingMode. */
  readonly deviceGetAddressingMode: ((dev: DeviceHandle) => number) | undefined;
  /** Device events; undefined when this NVML lacks nvmlEventSetWait_v2. */
  readonly events: NvmlEventsApi | undefined;
  errorString(code: number): string;
}

export interface NvmlEventsApi {
  setCreate(): EventSetHandle;
  setFree(set: EventSetHandle): void;
  deviceGetSupportedEventTypes(dev: DeviceHandle): number;
  deviceRegisterEvents(dev: DeviceHandle, eventTypes: number, set: EventSetHandle): void;
  /**
   * nvmlEventSetWait_v2 on a libuv worker thread (it blocks up to `timeoutMs`), so the event
   * loop keeps serving meanwhile. Resolves undefined on NVML_ERROR_TIMEOUT.
   */
  setWait(set: EventSetHandle, timeoutMs: number): Promise<EventDataRaw | undefined>;
}

/**
 * Creating, finding and destroying MIG GPU and compute instances. Creates and destroys run on a
 * libuv worker thread (`fn.async`): real NVML takes about a second for each.
 */
export interface NvmlMigApi {
  deviceCreateGpuInstanceWithPlacement(
    dev: DeviceHandle,
    profileId: number,
    placement: PlacementRaw,
  ): Promise<GpuInstanceHandle>;
  gpuInstanceDestroy(gi: GpuInstanceHandle): Promise<void>;
  /** The GPU instances of one profile; `instanceCount` is that profile's (the buffer NVML fills). */
  deviceGetGpuInstances(dev: DeviceHandle, profileId: number, instanceCount: number): GpuInstanceHandle[];
  /** `profile`: NVML_COMPUTE_INSTANCE_PROFILE_*; `engProfile`: NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_* (0). */
  gpuInstanceGetComputeInstanceProfileInfo(
    gi: GpuInstanceHandle,
    profile: number,
    engProfile: number,
  ): ComputeInstanceProfileInfoRaw;
  gpuInstanceCreateComputeInstance(gi: GpuInstanceHandle, profileId: number): Promise<ComputeInstanceHandle>;
  computeInstanceDestroy(ci: ComputeInstanceHandle): Promise<void>;
  gpuInstanceGetComputeInstanceById(gi: GpuInstanceHandle, id: number): ComputeInstanceHandle;
  /** The compute instances of one CI profile; `instanceCount` is that CI profile's. */
  gpuInstanceGetComputeInstances(
    gi: GpuInstanceHandle,
    profileId: number,
    instanceCount: number,
  ): ComputeInstanceHandle[];
  computeInstanceGetInfo(ci: ComputeInstanceHandle): ComputeInstanceInfoRaw;
}

/** NVML_COMPUTE_INSTANCE_PROFILE_COUNT: CI profile indexes 0..8. */
export const COMPUTE_INSTANCE_PROFILE_INDEX_COUNT = 9;

/** NVML_GPU_INSTANCE_PROFILE_COUNT in current nvml.h: indexes 0..16. */
export const GPU_INSTANCE_PROFILE_INDEX_COUNT = 17;

const NVML_DEVICE_NAME_V2_BUFFER_SIZE = 96;
const NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE = 80;
const NVML_DEVICE_UUID_V2_BUFFER_SIZE = 96;

// koffi types are registered once per process: the names are global to koffi.
const types = (() => {
  const device = koffi.pointer('nvmlDevice_t', koffi.opaque('nvmlDevice_st'));
  const gpuInstance = koffi.pointer('nvmlGpuInstance_t', koffi.opaque('nvmlGpuInstance_st'));
  const memory = koffi.struct('nvmlMemory_t', {
    total: 'unsigned long long',
    free: 'unsigned long long',
    used: 'unsigned long long',
  });
  const pciInfo = koffi.struct('nvmlPciInfo_t', {
    busIdLegacy: koffi.array('char', 16),
    domain: 'unsigned int',
    bus: 'unsigned int',
    device: 'unsigned int',
    pciDeviceId: 'unsigned int',
    pciSubSystemId: 'unsigned int',
    busId: koffi.array('char', 32),
  });
  const placement = koffi.struct('nvmlGpuInstancePlacement_t', {
    start: 'unsigned int',
    size: 'unsigned int',
  });
  const gpuInstanceInfo = koffi.struct('nvmlGpuInstanceInfo_t', {
    device: 'nvmlDevice_t',
    id: 'unsigned int',
    profileId: 'unsigned int',
    placement,
  });
  const profileInfoV2 = koffi.struct('nvmlGpuInstanceProfileInfo_v2_t', {
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
    name: koffi.array('char', NVML_DEVICE_NAME_V2_BUFFER_SIZE),
  });
  const addressingMode = koffi.struct('nvmlDeviceAddressingMode_v1_t', {
    version: 'unsigned int',
    value: 'unsigned int',
  });
  const computeInstance = koffi.pointer('nvmlComputeInstance_t', koffi.opaque('nvmlComputeInstance_st'));
  const ciProfileInfo = koffi.struct('nvmlComputeInstanceProfileInfo_t', {
    id: 'unsigned int',
    sliceCount: 'unsigned int',
    instanceCount: 'unsigned int',
    multiprocessorCount: 'unsigned int',
    sharedCopyEngineCount: 'unsigned int',
    sharedDecoderCount: 'unsigned int',
    sharedEncoderCount: 'unsigned int',
    sharedJpegCount: 'unsigned int',
    sharedOfaCount: 'unsigned int',
  });
  const ciPlacement = koffi.struct('nvmlComputeInstancePlacement_t', {
    start: 'unsigned int',
    size: 'unsigned int',
  });
  const ciInfo = koffi.struct('nvmlComputeInstanceInfo_t', {
    device: 'nvmlDevice_t',
    gpuInstance: 'nvmlGpuInstance_t',
    id: 'unsigned int',
    profileId: 'unsigned int',
    placement: ciPlacement,
  });
  const eventSet = koffi.pointer('nvmlEventSet_t', koffi.opaque('nvmlEventSet_st'));
  const eventData = koffi.struct('nvmlEventData_t', {
    device: 'nvmlDevice_t',
    eventType: 'unsigned long long',
    eventData: 'unsigned long long',
    gpuInstanceId: 'unsigned int',
    computeInstanceId: 'unsigned int',
  });
  return {
    device,
    gpuInstance,
    memory,
    pciInfo,
    gpuInstanceInfo,
    profileInfoV2,
    addressingMode,
    computeInstance,
    ciProfileInfo,
    ciInfo,
    eventSet,
    eventData,
  };
})();

/** NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2) = sizeof | 2 << 24. */
const PROFILE_INFO_V2_VERSION = (koffi.sizeof(types.profileInfoV2) | (2 << 24)) >>> 0;
const ADDRESSING_MODE_V1_VERSION = (koffi.sizeof(types.addressingMode) | (1 << 24)) >>> 0;

const LIBRARY_NAME = 'libnvidia-ml.so.1';
const LIBRARY_DIRS = [
  'usr/lib64',
  'usr/lib/x86_64-linux-gnu',
  'usr/lib/aarch64-linux-gnu',
  'usr/lib',
  'lib64',
  'lib/x86_64-linux-gnu',
  'lib/aarch64-linux-gnu',
  'usr/local/nvidia/lib64',
  'usr/local/nvidia/lib',
];

export interface LocateOptions {
  /** An explicit path from `--nvml-lib`: used alone, never second-guessed. */
  readonly nvmlLib?: string | undefined;
  /** --driver-root (env NVIDIA_DRIVER_ROOT, read by the CLI): searched before the host's own directories. */
  readonly driverRoot?: string | undefined;
}

/** Candidate library paths in search order; the last entry is the bare name for the loader. */
export function libraryCandidates(options: LocateOptions): string[] {
  if (options.nvmlLib) return [path.resolve(options.nvmlLib)];
  const roots = [options.driverRoot, '/'].filter((r): r is string => typeof r === 'string' && r !== '');
  const seen = new Set<string>();
  for (const root of roots) {
    for (const dir of LIBRARY_DIRS) seen.add(path.join(root, dir, LIBRARY_NAME));
  }
  return [...seen, LIBRARY_NAME];
}

const loaded = new Map<string, NvmlApi>();

/** Finds and loads libnvidia-ml; throws `NvmlLibraryNotFoundError` naming every place tried. */
export function loadNvml(options: LocateOptions = {}): NvmlApi {
  const candidates = libraryCandidates(options);
  const errors: unknown[] = [];
  for (const candidate of candidates) {
    const cached = loaded.get(candidate);
    if (cached) return cached;
    const isBareName = !candidate.includes('/');
    if (!isBareName && !fs.existsSync(candidate)) continue;
    try {
      const api = bind(koffi.load(candidate), candidate);
      loaded.set(candidate, api);
      return api;
    } catch (err) {
      errors.push(err);
    }
  }
  const searched = candidates.map((c) => (c.includes('/') ? c : `${c} (dynamic loader)`));
  throw new NvmlLibraryNotFoundError(searched, errors.length > 0 ? { cause: errors.at(-1) } : undefined);
}

type Lib = ReturnType<typeof koffi.load>;
type NvmlCall = (...args: unknown[]) => number;

function bind(lib: Lib, libPath: string): NvmlApi {
  const fn = (decl: string): NvmlCall => lib.func(decl) as NvmlCall;
  const optionalFn = (decl: string): NvmlCall | undefined => {
    try {
      return fn(decl);
    } catch {
      return undefined; // symbol absent from this driver version
    }
  };

  const errorStringFn = lib.func('const char *nvmlErrorString(int result)') as (code: number) => string;
  const errorString = (code: number): string => {
    try {
      return errorStringFn(code);
    } catch {
      return `NVML error ${code}`;
    }
  };
  const check = (name: string, rc: number): void => {
    if (rc !== NvmlReturn.SUCCESS) throw new NvmlError(name, rc, errorString(rc));
  };
  /** Calls an NVML function with one trailing `_Out_` scalar and returns it. */
  // Callers name the C out-type they declared in the prototype; koffi has already decoded it.
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
  const outScalar = <T>(name: string, call: NvmlCall, ...args: unknown[]): T => {
    const out: unknown[] = [null];
    check(name, call(...args, out));
    return out[0] as T;
  };
  const outString = (name: string, call: NvmlCall, size: number, ...args: unknown[]): string => {
    const buf = Buffer.alloc(size);
    check(name, call(...args, buf, size));
    const end = buf.indexOf(0);
    return buf.toString('utf8', 0, end === -1 ? size : end);
  };

  const init = fn('int nvmlInit_v2()');
  const shutdown = fn('int nvmlShutdown()');
  const getDriverVersion = fn('int nvmlSystemGetDriverVersion(_Out_ char *version, unsigned int length)');
  const getCudaDriverVersion = fn('int nvmlSystemGetCudaDriverVersion(_Out_ int *version)');
  const getCount = fn('int nvmlDeviceGetCount_v2(_Out_ unsigned int *count)');
  const getHandleByIndex = fn(
    'int nvmlDeviceGetHandleByIndex_v2(unsigned int index, _Out_ nvmlDevice_t *device)',
  );
  const getHandleByUuid = fn('int nvmlDeviceGetHandleByUUID(const char *uuid, _Out_ nvmlDevice_t *device)');
  const getName = fn('int nvmlDeviceGetName(nvmlDevice_t device, _Out_ char *name, unsigned int length)');
  const getUuid = fn('int nvmlDeviceGetUUID(nvmlDevice_t device, _Out_ char *uuid, unsigned int length)');
  const getBrand = fn('int nvmlDeviceGetBrand(nvmlDevice_t device, _Out_ int *type)');
  const getArchitecture = fn('int nvmlDeviceGetArchitecture(nvmlDevice_t device, _Out_ unsigned int *arch)');
  const getComputeCapability = fn(
    'int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, _Out_ int *major, _Out_ int *minor)',
  );
  const getMemoryInfo = fn('int nvmlDeviceGetMemoryInfo(nvmlDevice_t device, _Out_ nvmlMemory_t *memory)');
  const getMinorNumber = fn('int nvmlDeviceGetMinorNumber(nvmlDevice_t device, _Out_ unsigned int *minor)');
  const getPciInfo = fn('int nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, _Out_ nvmlPciInfo_t *pci)');
  const getNumaNodeId = fn('int nvmlDeviceGetNumaNodeId(nvmlDevice_t device, _Out_ unsigned int *node)');
  const getMigMode = fn(
    'int nvmlDeviceGetMigMode(nvmlDevice_t device, _Out_ unsigned int *current, _Out_ unsigned int *pending)',
  );
  const getMaxMigDeviceCount = fn(
    'int nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, _Out_ unsigned int *count)',
  );
  const getMigDeviceHandleByIndex = fn(
    'int nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, _Out_ nvmlDevice_t *mig)',
  );
  const getGpuInstanceId = fn('int nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, _Out_ unsigned int *id)');
  const getComputeInstanceId = fn(
    'int nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, _Out_ unsigned int *id)',
  );
  const getGpuInstanceById = fn(
    'int nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id, _Out_ nvmlGpuInstance_t *gi)',
  );
  const gpuInstanceGetInfo = fn(
    'int nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gi, _Out_ nvmlGpuInstanceInfo_t *info)',
  );
  const getProfileInfoV = fn(
    'int nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile, _Inout_ nvmlGpuInstanceProfileInfo_v2_t *info)',
  );
  const getPossiblePlacements = fn(
    'int nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t device, unsigned int profileId, void *placements, _Inout_ unsigned int *count)',
  );
  const getVirtualizationMode = optionalFn(
    'int nvmlDeviceGetVirtualizationMode(nvmlDevice_t device, _Out_ unsigned int *mode)',
  );
  const getAddressingMode = optionalFn(
    'int nvmlDeviceGetAddressingMode(nvmlDevice_t device, _Inout_ nvmlDeviceAddressingMode_v1_t *mode)',
  );
  const events = bindEvents(fn, optionalFn, check, outScalar);
  const mig = bindMig(optionalFn, check, outScalar);

  return {
    path: libPath,
    init: () => {
      check('nvmlInit_v2', init());
    },
    shutdown: () => {
      check('nvmlShutdown', shutdown());
    },
    systemGetDriverVersion: () =>
      outString('nvmlSystemGetDriverVersion', getDriverVersion, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE),
    systemGetCudaDriverVersion: () =>
      outScalar<number>('nvmlSystemGetCudaDriverVersion', getCudaDriverVersion),
    deviceGetCount: () => outScalar<number>('nvmlDeviceGetCount_v2', getCount),
    deviceGetHandleByIndex: (index) =>
      outScalar<DeviceHandle>('nvmlDeviceGetHandleByIndex_v2', getHandleByIndex, index),
    deviceGetHandleByUUID: (uuid) =>
      outScalar<DeviceHandle>('nvmlDeviceGetHandleByUUID', getHandleByUuid, uuid),
    deviceGetName: (dev) => outString('nvmlDeviceGetName', getName, NVML_DEVICE_NAME_V2_BUFFER_SIZE, dev),
    deviceGetUUID: (dev) => outString('nvmlDeviceGetUUID', getUuid, NVML_DEVICE_UUID_V2_BUFFER_SIZE, dev),
    deviceGetBrand: (dev) => outScalar<number>('nvmlDeviceGetBrand', getBrand, dev),
    deviceGetArchitecture: (dev) => outScalar<number>('nvmlDeviceGetArchitecture', getArchitecture, dev),
    deviceGetCudaComputeCapability: (dev) => {
      const major: number[] = [0];
      const minor: number[] = [0];
      check('nvmlDeviceGetCudaComputeCapability', getComputeCapability(dev, major, minor));
      return { major: major[0] ?? 0, minor: minor[0] ?? 0 };
    },
    deviceGetMemoryInfo: (dev) => outScalar<MemoryInfoRaw>('nvmlDeviceGetMemoryInfo', getMemoryInfo, dev),
    deviceGetMinorNumber: (dev) => outScalar<number>('nvmlDeviceGetMinorNumber', getMinorNumber, dev),
    deviceGetPciInfo: (dev) => outScalar<PciInfoRaw>('nvmlDeviceGetPciInfo_v3', getPciInfo, dev),
    deviceGetNumaNodeId: (dev) => outScalar<number>('nvmlDeviceGetNumaNodeId', getNumaNodeId, dev),
    deviceGetMigMode: (dev) => {
      const current: number[] = [0];
      const pending: number[] = [0];
      check('nvmlDeviceGetMigMode', getMigMode(dev, current, pending));
      return { current: current[0] ?? 0, pending: pending[0] ?? 0 };
    },
    deviceGetMaxMigDeviceCount: (dev) =>
      outScalar<number>('nvmlDeviceGetMaxMigDeviceCount', getMaxMigDeviceCount, dev),
    deviceGetMigDeviceHandleByIndex: (dev, index) =>
      outScalar<DeviceHandle>('nvmlDeviceGetMigDeviceHandleByIndex', getMigDeviceHandleByIndex, dev, index),
    deviceGetGpuInstanceId: (mig) => outScalar<number>('nvmlDeviceGetGpuInstanceId', getGpuInstanceId, mig),
    deviceGetComputeInstanceId: (mig) =>
      outScalar<number>('nvmlDeviceGetComputeInstanceId', getComputeInstanceId, mig),
    deviceGetGpuInstanceById: (dev, id) =>
      outScalar<GpuInstanceHandle>('nvmlDeviceGetGpuInstanceById', getGpuInstanceById, dev, id),
    gpuInstanceGetInfo: (gi) =>
      outScalar<GpuInstanceInfoRaw>('nvmlGpuInstanceGetInfo', gpuInstanceGetInfo, gi),
    deviceGetGpuInstanceProfileInfo: (dev, profileIndex) => {
      const info = { version: PROFILE_INFO_V2_VERSION } as GpuInstanceProfileInfoRaw & { version: number };
      check('nvmlDeviceGetGpuInstanceProfileInfoV', getProfileInfoV(dev, profileIndex, info));
      return info;
    },
    deviceGetGpuInstancePossiblePlacements: (dev, profileId) => {
      const count = [0];
      check(
        'nvmlDeviceGetGpuInstancePossiblePlacements_v2',
        getPossiblePlacements(dev, profileId, null, count),
      );
      const n = count[0] ?? 0;
      if (n === 0) return [];
      const buf = Buffer.alloc(n * koffi.sizeof('nvmlGpuInstancePlacement_t'));
      check(
        'nvmlDeviceGetGpuInstancePossiblePlacements_v2',
        getPossiblePlacements(dev, profileId, buf, count),
      );
      return Array.from({ length: Math.min(n, count[0] ?? 0) }, (_, i) => ({
        start: buf.readUInt32LE(i * 8),
        size: buf.readUInt32LE(i * 8 + 4),
      }));
    },
    deviceGetVirtualizationMode: getVirtualizationMode
      ? (dev) => outScalar<number>('nvmlDeviceGetVirtualizationMode', getVirtualizationMode, dev)
      : undefined,
    mig,
    deviceGetAddressingMode: getAddressingMode
      ? (dev) => {
          const mode = { version: ADDRESSING_MODE_V1_VERSION, value: 0 };
          check('nvmlDeviceGetAddressingMode', getAddressingMode(dev, mode));
          return mode.value;
        }
      : undefined,
    events,
    errorString,
  };
}

/** The `outScalar` helper of bind(): one trailing `_Out_` scalar, returned. */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
type OutScalar = <T>(name: string, call: NvmlCall, ...args: unknown[]) => T;

type AsyncNvmlCall = NvmlCall & {
  async: (...args: [...unknown[], (err: unknown, rc: number) => void]) => void;
};

function bindEvents(
  fn: (decl: string) => NvmlCall,
  optionalFn: (decl: string) => NvmlCall | undefined,
  check: (name: string, rc: number) => void,
  outScalar: OutScalar,
): NvmlEventsApi | undefined {
  const wait = optionalFn(
    'int nvmlEventSetWait_v2(nvmlEventSet_t set, _Out_ nvmlEventData_t *data, unsigned int timeoutms)',
  ) as AsyncNvmlCall | undefined;
  if (!wait) return undefined;
  const create = fn('int nvmlEventSetCreate(_Out_ nvmlEventSet_t *set)');
  const free = fn('int nvmlEventSetFree(nvmlEventSet_t set)');
  const supported = fn(
    'int nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, _Out_ unsigned long long *eventTypes)',
  );
  const register = fn(
    'int nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set)',
  );
  return {
    setCreate: () => outScalar<EventSetHandle>('nvmlEventSetCreate', create),
    setFree: (set) => {
      check('nvmlEventSetFree', free(set));
    },
    deviceGetSupportedEventTypes: (dev) =>
      Number(outScalar<number | bigint>('nvmlDeviceGetSupportedEventTypes', supported, dev)),
    deviceRegisterEvents: (dev, eventTypes, set) => {
      check('nvmlDeviceRegisterEvents', register(dev, eventTypes, set));
    },
    setWait: (set, timeoutMs) =>
      new Promise((resolve, reject) => {
        const data = {} as Record<string, unknown>;
        wait.async(set, data, timeoutMs, (err: unknown, rc: number) => {
          if (err) {
            reject(err instanceof Error ? err : new Error('nvmlEventSetWait_v2 failed', { cause: err }));
            return;
          }
          if (rc === NvmlReturn.TIMEOUT) {
            resolve(undefined);
            return;
          }
          try {
            check('nvmlEventSetWait_v2', rc);
            resolve({
              device: data['device'] as DeviceHandle,
              eventType: Number(data['eventType']),
              eventData: Number(data['eventData']),
              gpuInstanceId: Number(data['gpuInstanceId']),
              computeInstanceId: Number(data['computeInstanceId']),
            });
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        });
      }),
  };
}

/** Runs an NVML call on a libuv worker thread and resolves with its return code checked. */
function callAsync(
  name: string,
  call: AsyncNvmlCall,
  check: (name: string, rc: number) => void,
  ...args: unknown[]
) {
  return new Promise<void>((resolve, reject) => {
    call.async(...args, (err: unknown, rc: number) => {
      if (err) {
        reject(err instanceof Error ? err : new Error(`${name} failed`, { cause: err }));
        return;
      }
      try {
        check(name, rc);
        resolve();
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}

/** Handles NVML wrote into `buf` (an array of `count` pointers). */
function decodeHandles<T>(buf: Buffer, count: number, type: string): T[] {
  return Array.from({ length: count }, (_, i) => koffi.decode(buf, i * 8, type) as T);
}

function bindMig(
  optionalFn: (decl: string) => NvmlCall | undefined,
  check: (name: string, rc: number) => void,
  outScalar: OutScalar,
): NvmlMigApi | undefined {
  const createGi = optionalFn(
    'int nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t device, unsigned int profileId, const nvmlGpuInstancePlacement_t *placement, _Out_ nvmlGpuInstance_t *gi)',
  ) as AsyncNvmlCall | undefined;
  const destroyGi = optionalFn('int nvmlGpuInstanceDestroy(nvmlGpuInstance_t gi)') as
    AsyncNvmlCall | undefined;
  const getGis = optionalFn(
    'int nvmlDeviceGetGpuInstances(nvmlDevice_t device, unsigned int profileId, void *gis, _Out_ unsigned int *count)',
  );
  const ciProfile = optionalFn(
    'int nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gi, unsigned int profile, unsigned int engProfile, _Out_ nvmlComputeInstanceProfileInfo_t *info)',
  );
  const createCi = optionalFn(
    'int nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gi, unsigned int profileId, _Out_ nvmlComputeInstance_t *ci)',
  ) as AsyncNvmlCall | undefined;
  const destroyCi = optionalFn('int nvmlComputeInstanceDestroy(nvmlComputeInstance_t ci)') as
    AsyncNvmlCall | undefined;
  const ciById = optionalFn(
    'int nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gi, unsigned int id, _Out_ nvmlComputeInstance_t *ci)',
  );
  const getCis = optionalFn(
    'int nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gi, unsigned int profileId, void *cis, _Out_ unsigned int *count)',
  );
  // _v2 since R470; the older name takes the same struct.
  const ciInfoName = optionalFn(
    'int nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t ci, _Out_ nvmlComputeInstanceInfo_t *info)',
  )
    ? 'nvmlComputeInstanceGetInfo_v2'
    : 'nvmlComputeInstanceGetInfo';
  const ciInfo = optionalFn(
    `int ${ciInfoName}(nvmlComputeInstance_t ci, _Out_ nvmlComputeInstanceInfo_t *info)`,
  );
  if (
    !createGi ||
    !destroyGi ||
    !getGis ||
    !ciProfile ||
    !createCi ||
    !destroyCi ||
    !ciById ||
    !getCis ||
    !ciInfo
  )
    return undefined;

  return {
    deviceCreateGpuInstanceWithPlacement: async (dev, profileId, placement) => {
      const out: unknown[] = [null];
      await callAsync(
        'nvmlDeviceCreateGpuInstanceWithPlacement',
        createGi,
        check,
        dev,
        profileId,
        placement,
        out,
      );
      return out[0] as GpuInstanceHandle;
    },
    gpuInstanceDestroy: (gi) => callAsync('nvmlGpuInstanceDestroy', destroyGi, check, gi),
    deviceGetGpuInstances: (dev, profileId, instanceCount) => {
      const buf = Buffer.alloc(Math.max(1, instanceCount) * 8);
      const count = outScalar<number>('nvmlDeviceGetGpuInstances', getGis, dev, profileId, buf);
      return decodeHandles<GpuInstanceHandle>(buf, Math.min(count, instanceCount), 'nvmlGpuInstance_t');
    },
    gpuInstanceGetComputeInstanceProfileInfo: (gi, profile, engProfile) =>
      outScalar<ComputeInstanceProfileInfoRaw>(
        'nvmlGpuInstanceGetComputeInstanceProfileInfo',
        ciProfile,
        gi,
        profile,
        engProfile,
      ),
    gpuInstanceCreateComputeInstance: async (gi, profileId) => {
      const out: unknown[] = [null];
      await callAsync('nvmlGpuInstanceCreateComputeInstance', createCi, check, gi, profileId, out);
      return out[0] as ComputeInstanceHandle;
    },
    computeInstanceDestroy: (ci) => callAsync('nvmlComputeInstanceDestroy', destroyCi, check, ci),
    gpuInstanceGetComputeInstanceById: (gi, id) =>
      outScalar<ComputeInstanceHandle>('nvmlGpuInstanceGetComputeInstanceById', ciById, gi, id),
    gpuInstanceGetComputeInstances: (gi, profileId, instanceCount) => {
      const buf = Buffer.alloc(Math.max(1, instanceCount) * 8);
      const count = outScalar<number>('nvmlGpuInstanceGetComputeInstances', getCis, gi, profileId, buf);
      return decodeHandles<ComputeInstanceHandle>(
        buf,
        Math.min(count, instanceCount),
        'nvmlComputeInstance_t',
      );
    },
    computeInstanceGetInfo: (ci) => outScalar<ComputeInstanceInfoRaw>(ciInfoName, ciInfo, ci),
  };
}
