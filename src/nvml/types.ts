/**
 * Pure domain types produced by discovery and consumed by the rest of the driver.
 * Nothing here knows about NVML handles or koffi; optional fields are those a GPU may not
 * report (NVML answered NOT_SUPPORTED, or sysfs had no answer).
 */

/** What one MIG GPU instance of a profile gets: the capacities a MIG device publishes. */
export interface MigResources {
  readonly memoryBytes: number;
  readonly multiprocessors: number;
  readonly copyEngines: number;
  readonly decoders: number;
  readonly encoders: number;
  readonly jpegEngines: number;
  readonly ofaEngines: number;
}

/** One MIG GPU-instance profile a MIG-capable GPU supports (`nvidia-smi mig -lgip`). */
export interface MigProfileInfo extends MigResources {
  /** Profile name without the "MIG " prefix, e.g. `1g.10gb`. */
  readonly name: string;
  /** NVML GPU-instance profile id, e.g. 19 for 1g.10gb on Hopper/Ampere. */
  readonly id: number;
  readonly instanceCount: number;
  readonly sliceCount: number;
  /**
   * Where a GPU instance of this profile may start and how many memory slices it spans
   * (nvmlDeviceGetGpuInstancePossiblePlacements_v2), whatever exists now; empty when NVML
   * gives none.
   */
  readonly placements: readonly MigPlacement[];
}

export interface MigMode {
  readonly current: boolean;
  readonly pending: boolean;
}

export interface PciInfo {
  /** Normalized bus id `dddd:bb:dd.f`, lower-case, 4-digit domain (e.g. `0000:00:06.0`). */
  readonly busId: string;
  /** PCI device id as NVML reports it: device << 16 | vendor, e.g. 0x233010de. */
  readonly deviceId: number;
  readonly subsystemId: number;
  /** PCIe root complex from sysfs (e.g. `pci0000:00`) when it can be derived. */
  readonly pcieRoot?: string;
}

export interface GpuDevice {
  readonly kind: 'gpu';
  /** NVML enumeration index: informational only, never used for naming (it shifts). */
  readonly index: number;
  /** /dev/nvidia<minor>; the stable identity used in device names. */
  readonly minor: number;
  readonly uuid: string;
  readonly productName: string;
  /** Brand as a name, e.g. `Nvidia`, `Tesla`, `GeForce`. */
  readonly brand?: string;
  /** Architecture as NVIDIA's driver names it, e.g. `Hopper`, `Ampere`, `Ada Lovelace`. */
  readonly architecture?: string;
  /** `major.minor`, e.g. `9.0`. */
  readonly cudaComputeCapability?: string;
  /** Total framebuffer bytes; absent where NVML says NOT_SUPPORTED (some vGPUs). */
  readonly memoryBytes?: number;
  readonly pci: PciInfo;
  /** NUMA node of the PCI device (sysfs `numa_node`); absent when the kernel says -1 or none. */
  readonly numaNode?: number;
  /** Absent when the GPU is not MIG capable. */
  readonly migMode?: MigMode;
  /** GPU-instance profiles this GPU supports; empty unless MIG capable. */
  readonly migProfiles: readonly MigProfileInfo[];
  /** MIG devices that exist now (only when MIG mode is enabled). */
  readonly migDevices: readonly MigDevice[];
  /** `HMM`, `ATS` or `None` where NVML reports a mode (coherent-memory platforms); else absent. */
  readonly addressingMode?: string;
}

export interface MigPlacement {
  readonly start: number;
  readonly size: number;
}

/** A MIG device that exists now; its capacities are its GPU-instance profile's. */
export interface MigDevice extends MigResources {
  readonly kind: 'mig';
  /** `MIG-...` UUID. */
  readonly uuid: string;
  readonly parentUuid: string;
  readonly parentMinor: number;
  /** Index of this MIG device under its parent, as NVML enumerates it. */
  readonly index: number;
  readonly gpuInstanceId: number;
  readonly computeInstanceId: number;
  /** Profile name, e.g. `1g.10gb`. */
  readonly profile: string;
  readonly profileId: number;
  readonly placement: MigPlacement;
  /**
   * Minors of /dev/nvidia-caps/nvidia-cap<N> granting access to this device's GPU instance
   * and compute instance, from /proc/driver/nvidia-caps/mig-minors. Absent when that file
   * does not list them (e.g. the caps are exposed through /proc instead of /dev).
   */
  readonly accessCaps?: { readonly gi: number; readonly ci: number };
}

/** A GPU that NVML listed but could not read (e.g. GPU_IS_LOST): reported, not fatal. */
export interface GpuFailure {
  readonly index: number;
  readonly error: string;
  readonly code?: string;
}

export interface NodeInventory {
  readonly driverVersion: string;
  /** `major.minor`, e.g. `13.0`. */
  readonly cudaDriverVersion: string;
  readonly gpus: readonly GpuDevice[];
  readonly failures: readonly GpuFailure[];
}
