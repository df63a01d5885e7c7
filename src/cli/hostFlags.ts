import type { Command } from 'commander';
import type { HostPaths } from '../util/hostPaths.js';
import {
  DRIVER_FLAGS,
  describeDefault,
  flagName,
  type DriverFlagName,
  type DriverFlags,
} from '../node/flags.js';

const HOST_PATH_FLAGS = ['devRoot', 'procRoot', 'sysRoot', 'driverRoot'] as const;

export type HostPathFlags = Pick<DriverFlags, (typeof HOST_PATH_FLAGS)[number]>;

/**
 * Adds one flag of the driver's table (src/node/flags.ts) to a command: its help names the
 * environment twin, whose value (read now) becomes commander's default, so a given flag wins.
 * `unset` says what leaving it unset means for this command, when that differs from the
 * driver's (a flag the driver requires may be optional elsewhere).
 */
export function addDriverFlag(
  cmd: Command,
  name: DriverFlagName,
  env = process.env,
  unset?: string,
): Command {
  const spec = DRIVER_FLAGS[name];
  const flag = 'value' in spec ? `${flagName(name)} ${spec.value}` : flagName(name);
  const dflt = unset === undefined ? describeDefault(spec) : `unset: ${unset}`;
  return cmd.option(flag, `${spec.help} (env ${spec.env}, ${dflt})`, env[spec.env]);
}

/** Adds the flags that relocate /dev, /proc, /sys and the NVIDIA driver root. */
export function hostPathOptions(cmd: Command): Command {
  for (const name of HOST_PATH_FLAGS) addDriverFlag(cmd, name);
  return cmd;
}

export function readHostPaths(flags: HostPathFlags): HostPaths {
  return Object.freeze({
    devRoot: flags.devRoot ?? DRIVER_FLAGS.devRoot.default,
    procRoot: flags.procRoot ?? DRIVER_FLAGS.procRoot.default,
    sysRoot: flags.sysRoot ?? DRIVER_FLAGS.sysRoot.default,
    driverRoot: flags.driverRoot ?? DRIVER_FLAGS.driverRoot.default,
  });
}
