/**
 * MIG devices made and destroyed on demand (dynamic MIG), the way NVIDIA's DRA driver does it
 * (cmd/gpu-kubelet-plugin/nvlib.go): a GPU instance at a chosen placement, then one compute
 * instance spanning it, whose MIG device is the result; destroyed compute instance first.
 *
 * Holds one nvmlInit for its life, so handles stay valid between calls, and discovery's own
 * init/shutdown pairs nest inside it. Calls on one GPU run one at a time (NVML is not safe for
 * concurrent creates on one GPU); creates and destroys run on libuv worker threads, as real
 * NVML takes about a second for each. No policy here: what to make where is the caller's.
 */
import { KeyedMutex } from '../util/keyedMutex.js';
import { MigCreateError, NvmlError } from './errors.js';
import {
  COMPUTE_INSTANCE_PROFILE_INDEX_COUNT,
  GPU_INSTANCE_PROFILE_INDEX_COUNT,
  loadNvml,
  type ComputeInstanceHandle,
  type ComputeInstanceProfileInfoRaw,
  type DeviceHandle,
  type GpuInstanceHandle,
  type NvmlApi,
  type NvmlMigApi,
} from './library.js';
import { NvmlReturn } from './returnCodes.js';
import type { MigPlacement } from './types.js';

/** Names one MIG device: its GPU, GPU instance and compute instance. */
export interface MigInstanceRef {
  readonly parentUuid: string;
  readonly gpuInstanceId: number;
  readonly computeInstanceId: number;
}

/** A MIG device that exists: a compute instance and its GPU instance. */
export interface LiveMigInstance extends MigInstanceRef {
  /** `MIG-...`. */
  readonly uuid: string;
  /** GPU-instance profile id (e.g. 14 for 2g.20gb). */
  readonly profileId: number;
  /** The GPU instance's memory slices. */
  readonly placement: MigPlacement;
}

/** A GPU instance without a compute instance: what a create cut short leaves behind. */
export interface BareGpuInstance {
  readonly parentUuid: string;
  readonly gpuInstanceId: number;
  readonly profileId: number;
  readonly placement: MigPlacement;
}

export interface MigInstanceControl {
  /**
   * Makes a GPU instance of `profileId` at `placement` and one compute instance spanning it.
   * Throws NvmlError (INSUFFICIENT_RESOURCES when the placement is taken or the GPU is full,
   * INVALID_ARGUMENT for a placement the profile does not have, NOT_SUPPORTED with MIG off). A
   * failure after the GPU instance was made destroys it again and throws MigCreateError, which
   * says whether that worked.
   */
  create(parentUuid: string, profileId: number, placement: MigPlacement): Promise<LiveMigInstance>;
  /**
   * Destroys the compute instance, then its GPU instance. Either already gone counts as done;
   * 'absent' when neither was there (or MIG mode is off). With `uuid` (a LiveMigInstance), a
   * compute instance of another UUID at those ids is someone else's: nothing is touched and the
   * answer is 'absent'. Throws NvmlError otherwise, e.g. IN_USE while a process runs on it.
   */
  destroy(ref: MigInstanceRef & { readonly uuid?: string }): Promise<'destroyed' | 'absent'>;
  /** Every MIG device (GPU instance with compute instance) on the GPU; [] with MIG off. */
  list(parentUuid: string): Promise<LiveMigInstance[]>;
  /** GPU instances on the GPU that have no compute instance. */
  listBareGpuInstances(parentUuid: string): Promise<BareGpuInstance[]>;
  /** Releases the NVML reference. Operations after it fail with UNINITIALIZED. */
  close(): void;
}

export interface MigInstanceControlOptions {
  /** Explicit libnvidia-ml path (`--nvml-lib`). */
  readonly nvmlLib?: string | undefined;
  /** Driver install root searched for libnvidia-ml (`--driver-root`); '/' or absent: the host's. */
  readonly driverRoot?: string | undefined;
}

/** Loads NVML and takes a reference; throws NvmlError when this NVML cannot create MIG devices. */
export function openMigInstanceControl(options: MigInstanceControlOptions = {}): MigInstanceControl {
  const nvml = loadNvml({
    nvmlLib: options.nvmlLib,
    driverRoot: options.driverRoot === '/' ? undefined : options.driverRoot,
  });
  const mig = nvml.mig;
  if (!mig) {
    throw new NvmlError(
      'nvmlDeviceCreateGpuInstanceWithPlacement',
      NvmlReturn.FUNCTION_NOT_FOUND,
      `${nvml.path} has no MIG instance calls`,
    );
  }
  nvml.init();
  return new Control(nvml, mig);
}

class Control implements MigInstanceControl {
  private closed = false;
  /** Each GPU's operations, one at a time. */
  private readonly perGpu = new KeyedMutex();

  constructor(
    private readonly nvml: NvmlApi,
    private readonly mig: NvmlMigApi,
  ) {}

  create(parentUuid: string, profileId: number, placement: MigPlacement): Promise<LiveMigInstance> {
    return this.serialize(parentUuid, 'nvmlDeviceCreateGpuInstanceWithPlacement', async () => {
      const dev = this.nvml.deviceGetHandleByUUID(parentUuid);
      const gi = await this.mig.deviceCreateGpuInstanceWithPlacement(dev, profileId, {
        start: placement.start,
        size: placement.size,
      });
      const giInfo = this.nvml.gpuInstanceGetInfo(gi);
      let ci: ComputeInstanceHandle | undefined;
      try {
        const ciProfile = this.fullComputeInstanceProfile(gi);
        ci = await this.mig.gpuInstanceCreateComputeInstance(gi, ciProfile.id);
        const ciInfo = this.mig.computeInstanceGetInfo(ci);
        return {
          parentUuid,
          gpuInstanceId: giInfo.id,
          computeInstanceId: ciInfo.id,
          uuid: this.nvml.deviceGetUUID(ciInfo.device),
          profileId: giInfo.profileId,
          placement: { start: giInfo.placement.start, size: giInfo.placement.size },
        };
      } catch (err) {
        throw new MigCreateError(asNvmlError(err), await this.rollBack(giInfo.id, gi, ci));
      }
    });
  }

  destroy(ref: MigInstanceRef & { readonly uuid?: string }): Promise<'destroyed' | 'absent'> {
    return this.serialize(ref.parentUuid, 'nvmlGpuInstanceDestroy', async () => {
      const dev = this.nvml.deviceGetHandleByUUID(ref.parentUuid);
      let gi: GpuInstanceHandle;
      try {
        gi = this.nvml.deviceGetGpuInstanceById(dev, ref.gpuInstanceId);
      } catch (err) {
        // NOT_SUPPORTED: MIG mode is off, so no instance exists (NVIDIA's driver reads it so too).
        if (hasCode(err, NvmlReturn.NOT_FOUND, NvmlReturn.NOT_SUPPORTED)) return 'absent';
        throw err;
      }
      let ci: ComputeInstanceHandle | undefined;
      try {
        ci = this.mig.gpuInstanceGetComputeInstanceById(gi, ref.computeInstanceId);
      } catch (err) {
        if (!hasCode(err, NvmlReturn.NOT_FOUND)) throw err;
      }
      if (ci !== undefined && ref.uuid !== undefined) {
        const uuid = this.nvml.deviceGetUUID(this.mig.computeInstanceGetInfo(ci).device);
        if (uuid !== ref.uuid) return 'absent';
      }
      let destroyed = false;
      if (ci !== undefined) destroyed = await ignoreNotFound(this.mig.computeInstanceDestroy(ci));
      return (await ignoreNotFound(this.mig.gpuInstanceDestroy(gi))) || destroyed ? 'destroyed' : 'absent';
    });
  }

  list(parentUuid: string): Promise<LiveMigInstance[]> {
    return this.serialize(parentUuid, 'nvmlDeviceGetGpuInstances', () =>
      Promise.resolve(this.scan(parentUuid).instances),
    );
  }

  listBareGpuInstances(parentUuid: string): Promise<BareGpuInstance[]> {
    return this.serialize(parentUuid, 'nvmlDeviceGetGpuInstances', () =>
      Promise.resolve(this.scan(parentUuid).bare),
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.nvml.shutdown();
  }

  /** Runs `op` after every earlier operation on the same GPU has settled. */
  private serialize<T>(parentUuid: string, nvmlFunction: string, op: () => Promise<T>): Promise<T> {
    const run = (): Promise<T> => {
      if (this.closed) {
        return Promise.reject(
          new NvmlError(nvmlFunction, NvmlReturn.UNINITIALIZED, 'the MIG instance control was closed'),
        );
      }
      return op();
    };
    return this.perGpu.run(parentUuid, run);
  }

  /**
   * The compute-instance profile that spans the whole GPU instance: the most slices, and of
   * equal ones the lowest index (7_SLICE before 7_SLICE_NVL).
   */
  private fullComputeInstanceProfile(gi: GpuInstanceHandle): ComputeInstanceProfileInfoRaw {
    let best: ComputeInstanceProfileInfoRaw | undefined;
    for (const info of this.computeInstanceProfiles(gi)) {
      if (best === undefined || info.sliceCount > best.sliceCount) best = info;
    }
    if (best === undefined) {
      throw new NvmlError(
        'nvmlGpuInstanceGetComputeInstanceProfileInfo',
        NvmlReturn.NOT_SUPPORTED,
        'the GPU instance offers no compute-instance profile',
      );
    }
    return best;
  }

  /** The CI profiles a GPU instance offers, in index order. */
  private computeInstanceProfiles(gi: GpuInstanceHandle): ComputeInstanceProfileInfoRaw[] {
    const out: ComputeInstanceProfileInfoRaw[] = [];
    for (let profile = 0; profile < COMPUTE_INSTANCE_PROFILE_INDEX_COUNT; profile++) {
      try {
        out.push(this.mig.gpuInstanceGetComputeInstanceProfileInfo(gi, profile, 0));
      } catch (err) {
        if (!hasCode(err, NvmlReturn.NOT_SUPPORTED, NvmlReturn.INVALID_ARGUMENT)) throw err;
      }
    }
    return out;
  }

  /** Undoes a half-made MIG device: its compute instance if one was made, then its GPU instance. */
  private async rollBack(
    gpuInstanceId: number,
    gi: GpuInstanceHandle,
    ci: ComputeInstanceHandle | undefined,
  ): Promise<MigCreateError['rollback']> {
    try {
      if (ci !== undefined) await ignoreNotFound(this.mig.computeInstanceDestroy(ci));
      await ignoreNotFound(this.mig.gpuInstanceDestroy(gi));
      return { gpuInstanceId, destroyed: true };
    } catch (error) {
      return { gpuInstanceId, destroyed: false, error };
    }
  }

  /** Every GPU instance on the GPU, each with its compute instances; sorted by ids. */
  private scan(parentUuid: string): { instances: LiveMigInstance[]; bare: BareGpuInstance[] } {
    const dev = this.nvml.deviceGetHandleByUUID(parentUuid);
    const instances: LiveMigInstance[] = [];
    const bare: BareGpuInstance[] = [];
    for (const profile of this.gpuInstanceProfiles(dev)) {
      let gis: GpuInstanceHandle[];
      try {
        gis = this.mig.deviceGetGpuInstances(dev, profile.id, profile.instanceCount);
      } catch (err) {
        if (hasCode(err, NvmlReturn.NOT_SUPPORTED)) return { instances: [], bare: [] }; // MIG off
        throw err;
      }
      for (const gi of gis) {
        const info = this.nvml.gpuInstanceGetInfo(gi);
        const base = {
          parentUuid,
          gpuInstanceId: info.id,
          profileId: info.profileId,
          placement: { start: info.placement.start, size: info.placement.size },
        };
        let found = 0;
        for (const ciProfile of this.computeInstanceProfiles(gi)) {
          for (const ci of this.mig.gpuInstanceGetComputeInstances(
            gi,
            ciProfile.id,
            ciProfile.instanceCount,
          )) {
            const ciInfo = this.mig.computeInstanceGetInfo(ci);
            instances.push({
              ...base,
              computeInstanceId: ciInfo.id,
              uuid: this.nvml.deviceGetUUID(ciInfo.device),
            });
            found++;
          }
        }
        if (found === 0) bare.push(base);
      }
    }
    instances.sort((a, b) => a.gpuInstanceId - b.gpuInstanceId || a.computeInstanceId - b.computeInstanceId);
    bare.sort((a, b) => a.gpuInstanceId - b.gpuInstanceId);
    return { instances, bare };
  }

  /** Id and instance count of each GI profile the GPU supports, one per id. */
  private gpuInstanceProfiles(dev: DeviceHandle): { id: number; instanceCount: number }[] {
    const byId = new Map<number, number>();
    for (let index = 0; index < GPU_INSTANCE_PROFILE_INDEX_COUNT; index++) {
      try {
        const info = this.nvml.deviceGetGpuInstanceProfileInfo(dev, index);
        if (!byId.has(info.id)) byId.set(info.id, info.instanceCount);
      } catch (err) {
        if (!hasCode(err, NvmlReturn.NOT_SUPPORTED, NvmlReturn.INVALID_ARGUMENT)) throw err;
      }
    }
    return [...byId].map(([id, instanceCount]) => ({ id, instanceCount }));
  }
}

function hasCode(err: unknown, ...codes: number[]): boolean {
  return err instanceof NvmlError && codes.includes(err.returnCode);
}

/** True when the destroy happened, false when NVML says the instance was already gone. */
async function ignoreNotFound(destroy: Promise<void>): Promise<boolean> {
  try {
    await destroy;
    return true;
  } catch (err) {
    if (hasCode(err, NvmlReturn.NOT_FOUND)) return false;
    throw err;
  }
}

function asNvmlError(err: unknown): NvmlError {
  if (err instanceof NvmlError) return err;
  const wrapped = new NvmlError('nvmlGpuInstanceCreateComputeInstance', NvmlReturn.UNKNOWN, String(err));
  wrapped.cause = err;
  return wrapped;
}
