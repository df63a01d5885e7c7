/**
 * `gpu-dra discover`: its flags. The action loads its implementation (src/cli/actions/) only
 * when this command runs, so other commands never evaluate it.
 */
import type { Command } from 'commander';
import { hostPathOptions, type HostPathFlags } from '../hostFlags.js';

export type DiscoverFlags = { json?: boolean; nvmlLib?: string } & HostPathFlags;

export function registerDiscoverCommand(program: Command): void {
  hostPathOptions(
    program
      .command('discover')
      .description('list the GPUs and MIG devices NVML reports on this node (read-only)')
      .option('--json', 'print the inventory as JSON')
      .option(
        '--nvml-lib <path>',
        'path to libnvidia-ml.so.1 (default: search the driver root and system dirs)',
      ),
  ).action(async (opts: DiscoverFlags) => {
    const { runDiscover } = await import('../actions/discover.js');
    runDiscover(opts);
  });
}
