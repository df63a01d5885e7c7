/**
 * Applies and undoes a claim's sharing on the host: nvidia-smi calls for time slices and compute
 * modes, MPS daemons. Every step is idempotent, so a retried prepare, an unprepare after a
 * crash, or recovery at start-up may run it again.
 */
import { GpuDraError } from '../util/errors.js';
import { failpoint } from '../util/failpoint.js';
import type { Logger } from '../util/log.js';
import { KeyedMutex } from '../util/keyedMutex.js';
import type { CdiContainerEdits } from '../cdi/spec.js';
import type { NvidiaSmi } from './driverTools.js';
import { mpsContainerEdits, type MpsDaemons } from './mps.js';
import {
  computeModeCommand,
  exclusiveMpsGpus,
  mpsGroups,
  setTimeSliceCommands,
  timeSlicedGpus,
  undoCommands,
  type SharedDevice,
} from './plan.js';

/** What the applier needs of the MPS daemons (mps.ts's MpsDaemons; a recorder in unit tests). */
export type MpsDaemonControl = Pick<MpsDaemons, 'settings' | 'start' | 'stop' | 'sweep'>;

export interface SharingApplierOptions {
  readonly nvidiaSmi: NvidiaSmi;
  /** Absent when MPS is not configured (no namespace/image): MPS claims are refused. */
  readonly mps?: MpsDaemonControl;
}

/** A claim's device with its MPS pinned-memory limit, resolved from its config (driver/opaqueConfig.ts). */
export interface ApplyDevice extends SharedDevice {
  readonly pinnedMemLimitMiB?: number | undefined;
}

export class SharingApplier {
  /**
   * GPU settings are decided from what other claims hold, then changed: one claim's decision
   * and commands must not interleave with another's, or an unprepare could reset a slice a new
   * claim has just set.
   */
  private readonly gpuSettings = new KeyedMutex();

  constructor(private readonly opts: SharingApplierOptions) {}

  /** The MPS daemons, when configured (for the start-up sweep). */
  get mpsDaemons(): MpsDaemonControl | undefined {
    return this.opts.mps;
  }

  /** Per device name, what the workload needs to reach the claim's MPS daemon. */
  cdiEdits(claimUid: string, devices: readonly SharedDevice[]): Map<string, CdiContainerEdits> {
    const edits = new Map<string, CdiContainerEdits>();
    const pluginDir = this.opts.mps?.settings.pluginDir;
    if (pluginDir === undefined) return edits;
    for (const g of mpsGroups(claimUid, devices)) {
      for (const name of g.deviceNames) edits.set(name, mpsContainerEdits(pluginDir, g.id));
    }
    return edits;
  }

  /** MPS daemon ids the claim's devices need (recorded before anything is started). */
  mpsDaemonIds(claimUid: string, devices: readonly SharedDevice[]): string[] {
    return mpsGroups(claimUid, devices).map((g) => g.id);
  }

  /**
   * Sets what the claim's sharing asks for: the GPUs' time slices and compute modes, then its
   * MPS daemons (ready when this returns). On failure the caller undoes (see `undo`).
   */
  async apply(claimUid: string, devices: readonly ApplyDevice[], logger: Logger): Promise<void> {
    const groups = mpsGroups(claimUid, devices);
    const mps = this.opts.mps;
    if (groups.length > 0 && !mps) {
      throw new GpuDraError(
        'MPS_DAEMON_FAILED',
        'the claim asks for MPS, but this plugin runs no MPS daemons: start it with --namespace and --image (the Helm chart and deploy/ set both)',
        { claimUid },
      );
    }
    await this.applyGpuSettings(devices, logger);
    if (!mps) return;
    for (const group of groups) {
      const limits: Record<string, number> = {};
      for (const uuid of group.uuids) {
        const mib = devices.find((d) => d.uuid === uuid)?.pinnedMemLimitMiB;
        if (mib !== undefined) limits[uuid] = mib;
      }
      await mps.start(claimUid, group, limits, logger);
      failpoint('mps-daemon-ready');
    }
  }

  /**
   * Time slices, and EXCLUSIVE_PROCESS for the GPUs of MPS daemons: what a GPU keeps until the
   * driver reloads, so recovery after a reboot runs this again (the daemons' pods come back by
   * themselves).
   */
  async applyGpuSettings(devices: readonly SharedDevice[], logger: Logger): Promise<void> {
    const sliced = timeSlicedGpus(devices);
    const exclusive = exclusiveMpsGpus(devices);
    if (sliced.length === 0 && exclusive.length === 0) return;
    await this.gpuSettings.run('gpus', async () => {
      for (const { uuid, interval } of sliced) {
        for (const args of setTimeSliceCommands(uuid, interval)) {
          await this.opts.nvidiaSmi.run(args);
          failpoint('gpu-setting-applied');
        }
        logger.info({ gpu: uuid, interval }, 'time slice set');
      }
      for (const uuid of exclusive) {
        await this.opts.nvidiaSmi.run(computeModeCommand(uuid, 'EXCLUSIVE_PROCESS'));
        failpoint('gpu-setting-applied');
      }
    });
  }

  /**
   * Undoes the claim's sharing: stops its MPS daemons, then restores the GPU settings no other
   * claim still needs. `others` is asked under the settings lock, so it sees every claim that
   * has decided to use a setting.
   */
  async undo(
    claimUid: string,
    devices: readonly SharedDevice[],
    others: () => readonly (readonly SharedDevice[])[],
    logger: Logger,
    recordedMpsIds: readonly string[] = [],
  ): Promise<void> {
    const ids = new Set([...recordedMpsIds, ...this.mpsDaemonIds(claimUid, devices)]);
    if (ids.size > 0) {
      if (!this.opts.mps) {
        logger.warn(
          { mpsDaemons: [...ids] },
          'MPS daemons recorded but MPS is not configured: left in place',
        );
      } else {
        for (const id of ids) {
          await this.opts.mps.stop(id, logger);
          failpoint('mps-daemon-stopped');
        }
      }
    }
    await this.gpuSettings.run('gpus', async () => {
      for (const args of undoCommands(devices, others())) {
        await this.opts.nvidiaSmi.run(args);
        failpoint('gpu-setting-reset');
      }
    });
  }
}
