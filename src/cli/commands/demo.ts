/** `gpu-dra demo`: its flags; the simulated node (src/cli/actions/demo.ts) loads on use. */
import type { Command } from 'commander';
import { DEFAULT_DRIVER_NAME } from '../../util/driverName.js';

export interface DemoOptions {
  readonly profile: string;
  readonly driverName: string;
  readonly json?: boolean;
  readonly verbose?: boolean;
  readonly keep?: boolean;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run the driver on a simulated node with fake GPUs (no GPU, no cluster needed)')
    .option('--profile <name>', 'fake NVML profile (h100-8x, a100-mig, mixed, ...)', 'h100-8x')
    .option('--driver-name <name>', 'DRA driver name', DEFAULT_DRIVER_NAME)
    .option('--verbose', 'print the full documents: every ResourceSlice, the CDI spec, the gRPC exchange')
    .option('--json', 'print everything as one JSON document (machine-readable)')
    .option('--keep', 'keep the simulated node directory for inspection')
    .action(async (opts: DemoOptions) => {
      const { runDemo } = await import('../actions/demo.js');
      await runDemo(opts);
    });
}
