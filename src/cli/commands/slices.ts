/** `gpu-dra slices`: its flags; the implementation (src/cli/actions/slices.ts) loads on use. */
import os from 'node:os';
import type { Command } from 'commander';
import { DRIVER_FLAGS } from '../../node/flags.js';
import { addDriverFlag, hostPathOptions, type HostPathFlags } from '../hostFlags.js';

export type SlicesFlags = {
  nodeName: string;
  driverName: string;
  nvmlLib?: string;
  migPartitioning?: string;
  counterLayout: string;
} & HostPathFlags;

export function registerSlicesCommand(program: Command): void {
  const cmd = hostPathOptions(
    program
      .command('slices')
      .description('print the ResourceSlices this node would publish (discovery only, no apiserver)')
      .option(
        '--node-name <name>',
        'node (and pool) name',
        process.env[DRIVER_FLAGS.nodeName.env] ?? os.hostname(),
      )
      .option(
        '--driver-name <name>',
        'DRA driver name',
        process.env[DRIVER_FLAGS.driverName.env] ?? DRIVER_FLAGS.driverName.default,
      )
      .option('--nvml-lib <path>', 'path to libnvidia-ml.so.1'),
  );
  addDriverFlag(cmd, 'migPartitioning')
    .option(
      '--counter-layout <layout>',
      'with --mig-partitioning=dynamic, where counter sets go: separate (Kubernetes >= 1.35) or ' +
        'combined (1.34); the driver reads it from the apiserver',
      'separate',
    )
    .action(async (opts: SlicesFlags) => {
      const { runSlices } = await import('../actions/slices.js');
      runSlices(opts);
    });
}
