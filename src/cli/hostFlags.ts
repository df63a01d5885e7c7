import type { Command } from 'commander';
import { DEFAULT_HOST_PATHS, type HostPaths } from '../util/hostPaths.js';

export interface HostPathFlags {
  devRoot?: string;
  procRoot?: string;
  sysRoot?: string;
  driverRoot?: string;
}

/** Adds the flags that relocate /dev, /proc, /sys and the NVIDIA driver root. */
export function hostPathOptions(cmd: Command): Command {
  return cmd
    .option('--dev-root <dir>', 'host /dev as seen by the driver', process.env['DEV_ROOT'])
    .option('--proc-root <dir>', 'host /proc as seen by the driver', process.env['PROC_ROOT'])
    .option('--sys-root <dir>', 'host /sys as seen by the driver', process.env['SYS_ROOT'])
    .option(
      '--driver-root <dir>',
      "root of the NVIDIA driver's user-space install (env NVIDIA_DRIVER_ROOT)",
      process.env['NVIDIA_DRIVER_ROOT'],
    );
}

export function readHostPaths(flags: HostPathFlags): HostPaths {
  return Object.freeze({
    devRoot: flags.devRoot ?? DEFAULT_HOST_PATHS.devRoot,
    procRoot: flags.procRoot ?? DEFAULT_HOST_PATHS.procRoot,
    sysRoot: flags.sysRoot ?? DEFAULT_HOST_PATHS.sysRoot,
    driverRoot: flags.driverRoot ?? DEFAULT_HOST_PATHS.driverRoot,
  });
}
