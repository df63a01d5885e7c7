import { errorMessage } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { NvmlError } from './errors.js';
import { DEFAULT_HOST_PATHS, type HostPaths } from '../util/hostPaths.js';
import {
  migAccessCaps,
  normalizeBusId,
  readMigMinors,
  readNumaNode,
  readPcieRoot,
  type MigMinors,
} from './host.js';
import { GPU_INSTANCE_PROFILE_INDEX_COUNT, loadNvml, type DeviceHandle, type NvmlApi } from './library.js';
import {
  addressingModeName,
  architectureName,
  brandName,
  cudaVersionString,
  migProfileName,
} from './names.js';
import { NvmlReturn } from './returnCodes.js';
import type {
  GpuDevice,
  GpuFailure,
  MigDevice,
  MigPlacement,
  MigProfileInfo,
  MigResources,
  NodeInventory,
} from './types.js';

const MIB = 1024 * 1024;

export interface DiscoverOptions {
  /** Explicit libnvidia-ml path (`--nvml-lib`). */
  readonly nvmlLib?: string | undefined;
  readonly hostPaths?: HostPaths;
  readonly logger?: Logger;
}

/**
 * Reads every GPU and MIG device through NVML. Read-only: never changes MIG mode, clocks or
 * any other GPU state. A GPU that fails (e.g. GPU_IS_LOST) is reported in `failures` and the
 * others are still discovered; a field NVML does not support is left out.
 */
export function discoverInventory(options: DiscoverOptions = {}): NodeInventory {
  const host = options.hostPaths ?? DEFAULT_HOST_PATHS;
  const logger = options.logger ?? silentLogger();
  const nvml = loadNvml({
    nvmlLib: options.nvmlLib,
    driverRoot: host.driverRoot === '/' ? undefined : host.driverRoot,
  });
  nvml.init();
  try {
    const driverVersion = nvml.systemGetDriverVersion();
    const cudaDriverVersion = cudaVersionString(nvml.systemGetCudaDriverVersion());
    const count = nvml.deviceGetCount();
    const migMinors = readMigMinors(host);
    const gpus: GpuDevice[] = [];
    const failures: GpuFailure[] = [];
    for (let index = 0; index < count; index++) {
      try {
        gpus.push(readGpu(nvml, index, host, migMinors));
      } catch (err) {
        const failure: GpuFailure = {
          index,
          error: errorMessage(err),
          ...(err instanceof NvmlError ? { code: err.returnName } : {}),
        };
        logger.error({ gpuIndex: index, err }, 'GPU could not be read; it is left out of this node');
        failures.push(failure);
      }
    }
    return { driverVersion, cudaDriverVersion, gpus, failures };
  } finally {
    try {
      nvml.shutdown();
    } catch (err) {
      logger.warn({ err }, 'nvmlShutdown failed');
    }
  }
}

/** Runs an NVML read; NOT_SUPPORTED means "this GPU has no such field", anything else throws. */
function optional<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (err instanceof NvmlError && err.returnCode === NvmlReturn.NOT_SUPPORTED) return undefined;
    throw err;
  }
}

function readGpu(nvml: NvmlApi, index: number, host: HostPaths, migMinors: MigMinors): GpuDevice {
  const dev = nvml.deviceGetHandleByIndex(index);
  const uuid = nvml.deviceGetUUID(dev);
  const minor = nvml.deviceGetMinorNumber(dev);
  const pciRaw = nvml.deviceGetPciInfo(dev);
  const busId = normalizeBusId(pciRaw.busId);
  const pcieRoot = readPcieRoot(host, busId);
  const brand = optional(() => nvml.deviceGetBrand(dev));
  const arch = optional(() => nvml.deviceGetArchitecture(dev));
  const cc = optional(() => nvml.deviceGetCudaComputeCapability(dev));
  const memory = optional(() => nvml.deviceGetMemoryInfo(dev));
  // The PCI device's NUMA node from sysfs, as NVIDIA's driver reads it (go-nvlib nvpci), not
  // nvmlDeviceGetNumaNodeId: that one is the GPU memory's own node on platforms where the GPU is a
  // NUMA node (Grace Hopper), not the CPU node the GPU hangs off.
  const numaNode = readNumaNode(host, busId);
  const mig = optional(() => nvml.deviceGetMigMode(dev));
  // Per GPU: NOT_SUPPORTED (or an NVML too old to have the call) leaves it out, NONE is `None`.
  const getAddressingMode = nvml.deviceGetAddressingMode;
  const mode = getAddressingMode && optional(() => getAddressingMode(dev));
  const addressingMode = mode === undefined ? undefined : addressingModeName(mode);

  const migProfiles = mig ? readMigProfiles(nvml, dev) : [];
  const migDevices =
    mig?.current === 1 ? readMigDevices(nvml, dev, { uuid, minor }, migProfiles, migMinors) : [];

  return {
    kind: 'gpu',
    index,
    minor,
    uuid,
    productName: nvml.deviceGetName(dev),
    ...(brand === undefined ? {} : { brand: brandName(brand) }),
    ...(arch === undefined ? {} : { architecture: architectureName(arch) }),
    ...(cc === undefined ? {} : { cudaComputeCapability: `${cc.major}.${cc.minor}` }),
    ...(memory === undefined ? {} : { memoryBytes: memory.total }),
    pci: {
      busId,
      deviceId: pciRaw.pciDeviceId >>> 0,
      subsystemId: pciRaw.pciSubSystemId >>> 0,
      ...(pcieRoot === undefined ? {} : { pcieRoot }),
    },
    ...(numaNode === undefined ? {} : { numaNode }),
    ...(mig === undefined ? {} : { migMode: { current: mig.current === 1, pending: mig.pending === 1 } }),
    migProfiles,
    migDevices,
    ...(addressingMode === undefined ? {} : { addressingMode }),
  };
}

/** The GPU-instance profiles this GPU supports, in NVML profile-index order, one per id. */
function readMigProfiles(nvml: NvmlApi, dev: DeviceHandle): MigProfileInfo[] {
  const profiles = new Map<number, MigProfileInfo>();
  for (let profileIndex = 0; profileIndex < GPU_INSTANCE_PROFILE_INDEX_COUNT; profileIndex++) {
    let info;
    try {
      info = nvml.deviceGetGpuInstanceProfileInfo(dev, profileIndex);
    } catch (err) {
      const unsupported =
        err instanceof NvmlError &&
        (err.returnCode === NvmlReturn.NOT_SUPPORTED || err.returnCode === NvmlReturn.INVALID_ARGUMENT);
      if (unsupported) continue;
      throw err;
    }
    if (profiles.has(info.id)) continue;
    profiles.set(info.id, {
      name: migProfileName(info.name),
      id: info.id,
      instanceCount: info.instanceCount,
      placements: readPlacements(nvml, dev, info.id),
      sliceCount: info.sliceCount,
      memoryBytes: info.memorySizeMB * MIB,
      multiprocessors: info.multiprocessorCount,
      copyEngines: info.copyEngineCount,
      decoders: info.decoderCount,
      encoders: info.encoderCount,
      jpegEngines: info.jpegCount,
      ofaEngines: info.ofaCount,
    });
  }
  return [...profiles.values()];
}

/**
 * Where GPU instances of a profile may go (MIG mode on or off); [] where NVML gives none. nvml.h
 * says the call needs a privileged user: unprivileged (`gpu-dra discover` by hand) gets [] too.
 */
function readPlacements(nvml: NvmlApi, dev: DeviceHandle, profileId: number): MigPlacement[] {
  try {
    return nvml
      .deviceGetGpuInstancePossiblePlacements(dev, profileId)
      .map(({ start, size }) => ({ start, size }));
  } catch (err) {
    const none =
      err instanceof NvmlError &&
      [NvmlReturn.NOT_SUPPORTED, NvmlReturn.INVALID_ARGUMENT, NvmlReturn.NO_PERMISSION].some(
        (code) => code === err.returnCode,
      );
    if (none) return [];
    throw err;
  }
}

/** The capacities a GPU instance of this profile has (a MIG device is exactly that). */
function migResources(profile: MigResources): MigResources {
  const { memoryBytes, multiprocessors, copyEngines, decoders, encoders, jpegEngines, ofaEngines } = profile;
  return { memoryBytes, multiprocessors, copyEngines, decoders, encoders, jpegEngines, ofaEngines };
}

function readMigDevices(
  nvml: NvmlApi,
  dev: DeviceHandle,
  parent: { uuid: string; minor: number },
  profiles: readonly MigProfileInfo[],
  migMinors: MigMinors,
): MigDevice[] {
  const devices: MigDevice[] = [];
  const max = nvml.deviceGetMaxMigDeviceCount(dev);
  for (let index = 0; index < max; index++) {
    let mig: DeviceHandle;
    try {
      mig = nvml.deviceGetMigDeviceHandleByIndex(dev, index);
    } catch (err) {
      if (err instanceof NvmlError && err.returnCode === NvmlReturn.NOT_FOUND) continue; // unused slot
      throw err;
    }
    const gpuInstanceId = nvml.deviceGetGpuInstanceId(mig);
    const computeInstanceId = nvml.deviceGetComputeInstanceId(mig);
    const gi = nvml.gpuInstanceGetInfo(nvml.deviceGetGpuInstanceById(dev, gpuInstanceId));
    const profile = profiles.find((p) => p.id === gi.profileId);
    if (!profile) {
      throw new NvmlError(
        'nvmlGpuInstanceGetInfo',
        NvmlReturn.NOT_FOUND,
        `GPU instance ${gpuInstanceId} of ${parent.uuid} uses profile id ${gi.profileId}, which the GPU does not list`,
      );
    }
    const accessCaps = migAccessCaps(migMinors, parent.minor, gpuInstanceId, computeInstanceId);
    devices.push({
      kind: 'mig',
      uuid: nvml.deviceGetUUID(mig),
      parentUuid: parent.uuid,
      parentMinor: parent.minor,
      index,
      gpuInstanceId,
      computeInstanceId,
      profile: profile.name,
      profileId: profile.id,
      placement: { start: gi.placement.start, size: gi.placement.size },
      ...migResources(profile),
      ...(accessCaps === undefined ? {} : { accessCaps }),
    });
  }
  return devices;
}
