/**
 * `gpu-dra driver`: the DaemonSet entry point. Its flags, each with an environment twin, come
 * from the table in src/node/flags.ts; the action (src/cli/actions/driver.ts) loads the driver
 * only when this command runs.
 */
import type { Command } from 'commander';
import { addDriverFlag } from '../hostFlags.js';
import { driverFlagNames, type DriverFlags } from '../../node/flags.js';

export function registerDriverCommand(program: Command): Command {
  const cmd = program
    .command('driver')
    .description(
      'run the kubelet DRA plugin for this node (registration + DRA gRPC sockets, ResourceSlices, CDI specs)',
    );
  for (const name of driverFlagNames()) addDriverFlag(cmd, name);
  cmd.action(async (opts: DriverFlags) => {
    const { runDriverCommand } = await import('../actions/driver.js');
    await runDriverCommand(opts);
  });
  return cmd;
}
