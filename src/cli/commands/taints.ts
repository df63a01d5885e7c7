/**
 * `gpu-dra taints list|clear`: the XID taints of the plugin running on this node, through its
 * admin socket (src/node/adminSocket.ts). NVML reports no recovery from an XID, so after
 * resetting a GPU an admin clears its taint here instead of restarting the plugin.
 */
import type { Command } from 'commander';
import { addDriverFlag } from '../hostFlags.js';
import type { DriverFlags } from '../../node/flags.js';

export type TaintsFlags = Pick<DriverFlags, 'kubeletPluginsDir' | 'driverName'>;
export type TaintsListFlags = TaintsFlags & { json?: boolean };
export type TaintsClearFlags = TaintsFlags & { device?: string[]; all?: boolean };

function withSocketFlags(cmd: Command): Command {
  addDriverFlag(cmd, 'kubeletPluginsDir');
  return addDriverFlag(cmd, 'driverName');
}

export function registerTaintsCommand(program: Command): void {
  const taints = program
    .command('taints')
    .description(
      "list or clear the device taints of this node's plugin (run on the node or in the plugin pod)",
    );
  withSocketFlags(
    taints
      .command('list')
      .description('the taints the plugin publishes, by device')
      .option('--json', 'print JSON'),
  ).action(async (opts: TaintsListFlags) => {
    const { runTaintsList } = await import('../actions/taints.js');
    await runTaintsList(opts);
  });
  withSocketFlags(
    taints
      .command('clear')
      .description("clear XID taints after the GPU was reset; a GPU's name covers its MIG devices")
      .option('--device <name...>', 'device(s) to clear, e.g. gpu-0')
      .option('--all', 'clear every XID taint'),
  ).action(async (opts: TaintsClearFlags) => {
    const { runTaintsClear } = await import('../actions/taints.js');
    await runTaintsClear(opts);
  });
}
