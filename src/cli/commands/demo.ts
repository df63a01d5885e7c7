import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { discoverInventory } from '../../nvml/discover.js';
import { createSimulatedNode } from '../../sim/fakeHost.js';
import { buildSlices, DEFAULT_DRIVER_NAME } from '../../resourceslice/model.js';
import { renderInventoryTable } from './discover.js';
import { renderSlicesYaml } from './slices.js';

/** Node name of the simulated node (and so its ResourceSlice pool). */
const DEMO_NODE = 'demo-node';

export interface DemoOptions {
  readonly profile: string;
  readonly driverName: string;
  readonly json?: boolean;
  readonly keep?: boolean;
}

/**
 * The embedded default: a simulated node (fake NVML + fake host tree in a temp dir) run
 * through the same discovery code a real node uses. No GPU, no cluster.
 */
export async function runDemo(
  options: DemoOptions,
  out: NodeJS.WritableStream = process.stdout,
): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-demo-'));
  try {
    const node = await createSimulatedNode(options.profile, dir);
    process.env['FAKE_NVML_CONFIG'] = node.configPath;
    const inventory = discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
    if (options.json) {
      const { slices } = buildSlices(inventory, { nodeName: DEMO_NODE, driverName: options.driverName });
      out.write(JSON.stringify({ profile: options.profile, inventory, slices }, null, 2) + '\n');
      return;
    }
    out.write(`# Simulated node (fake NVML profile "${options.profile}", files under ${dir})\n\n`);
    out.write(renderInventoryTable(inventory));
    out.write(`\n# The ResourceSlices node "${DEMO_NODE}" publishes for driver ${options.driverName}:\n`);
    out.write(renderSlicesYaml(inventory, { nodeName: DEMO_NODE, driverName: options.driverName }));
  } finally {
    if (!options.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run the driver on a simulated node with fake GPUs (no GPU, no cluster needed)')
    .option('--profile <name>', 'fake NVML profile (h100-8x, a100-mig, mixed, ...)', 'h100-8x')
    .option('--driver-name <name>', 'DRA driver name', DEFAULT_DRIVER_NAME)
    .option('--json', 'print machine-readable output')
    .option('--keep', 'keep the simulated node directory for inspection')
    .action(async (opts: DemoOptions) => {
      await runDemo(opts);
    });
}
