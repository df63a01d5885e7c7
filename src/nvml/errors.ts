import { errorMessage, GpuDraError } from '../util/errors.js';
import { nvmlReturnName } from './returnCodes.js';

/** An NVML call returned something other than NVML_SUCCESS. */
export class NvmlError extends GpuDraError {
  /** The raw nvmlReturn_t. */
  readonly returnCode: number;
  /** e.g. `GPU_IS_LOST`. */
  readonly returnName: string;
  readonly nvmlFunction: string;

  constructor(nvmlFunction: string, returnCode: number, description: string) {
    const returnName = nvmlReturnName(returnCode);
    // Real NVML describes codes in words ("GPU is lost"); some builds answer with the code's
    // own name ("ERROR_GPU_IS_LOST"), which would only say the code twice.
    const words = description && !/^[A-Z0-9_]+$/.test(description) ? `${description} ` : '';
    super('NVML_CALL_FAILED', `${nvmlFunction} failed: ${words}(NVML_ERROR_${returnName})`);
    this.returnCode = returnCode;
    this.returnName = returnName;
    this.nvmlFunction = nvmlFunction;
  }
}

/** libnvidia-ml.so.1 could not be found or loaded anywhere we looked. */
export class NvmlLibraryNotFoundError extends GpuDraError {
  readonly searched: readonly string[];

  constructor(searched: readonly string[], options?: { cause?: unknown }) {
    super(
      'NVML_LIBRARY_NOT_FOUND',
      [
        'cannot load libnvidia-ml.so.1 (the NVIDIA driver library).',
        `Looked in: ${searched.join(', ')}.`,
        'Point at it with --nvml-lib /path/to/libnvidia-ml.so.1, or set NVIDIA_DRIVER_ROOT to the',
        "driver's install root (e.g. /run/nvidia/driver); without a GPU, try `gpu-dra demo`.",
      ].join(' '),
      options,
    );
    this.searched = searched;
  }
}

/** What undoing a half-made MIG device gave: its GPU instance destroyed, or why not. */
export type MigRollback =
  | { readonly gpuInstanceId: number; readonly destroyed: true }
  | { readonly gpuInstanceId: number; readonly destroyed: false; readonly error: unknown };

/**
 * Making a MIG device failed after its GPU instance was made (typically the compute instance:
 * a known NVIDIA failure), and the GPU instance was destroyed again, or could not be. The NVML
 * call and code are those of the failure; `rollback` says what became of the GPU instance.
 */
export class MigCreateError extends NvmlError {
  readonly rollback: MigRollback;

  constructor(failure: NvmlError, rollback: MigRollback) {
    super(failure.nvmlFunction, failure.returnCode, '');
    this.rollback = rollback;
    this.cause = failure;
    const undo = rollback.destroyed
      ? `its GPU instance ${rollback.gpuInstanceId} was destroyed again`
      : `destroying its GPU instance ${rollback.gpuInstanceId} failed too (${errorMessage(rollback.error)}): it is left on the GPU`;
    this.message = `${failure.message}; ${undo}`;
  }
}
