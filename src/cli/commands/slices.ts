/**
 * `gpu-dra slices` / `gpu-dra demo`: render the ResourceSlices this node would publish, as a
 * multi-document YAML string (no apiserver needed). The caller wires it into commander.
 */
import os from 'node:os';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { discoverInventory } from '../../nvml/discover.js';
import type { NodeInventory } from '../../nvml/types.js';
import { buildSlices, DEFAULT_DRIVER_NAME, type ModelOptions } from '../../resourceslice/model.js';
import { hostPathOptions, readHostPaths, type HostPathFlags } from '../hostFlags.js';

export interface RenderSlicesOptions extends ModelOptions {
  /** Append the model's warnings as YAML comments at the top (default true). */
  readonly includeWarnings?: boolean;
}

export function renderSlicesYaml(inventory: NodeInventory, opts: RenderSlicesOptions): string {
  const model = buildSlices(inventory, opts);
  const header =
    opts.includeWarnings === false || model.warnings.length === 0
      ? ''
      : model.warnings.map((w) => `# warning: ${w}`).join('\n') + '\n';
  // YAML 1.1 quoting: strings a 1.1 reader would take for something else (`0000:07:00.0` is a
  // base-60 float there) come out quoted; the text stays plain YAML 1.2 as well.
  const docs = model.slices.map((s) => stringify(s, { lineWidth: 0, version: '1.1', singleQuote: true }));
  return header + docs.map((d) => `---\n${d}`).join('');
}

/** `gpu-dra slices`: what this node would publish, from live NVML discovery, without an apiserver. */
export function registerSlicesCommand(program: Command): void {
  hostPathOptions(
    program
      .command('slices')
      .description('print the ResourceSlices this node would publish (discovery only, no apiserver)')
      .option('--node-name <name>', 'node (and pool) name', process.env['NODE_NAME'] ?? os.hostname())
      .option('--driver-name <name>', 'DRA driver name', process.env['DRIVER_NAME'] ?? DEFAULT_DRIVER_NAME)
      .option('--nvml-lib <path>', 'path to libnvidia-ml.so.1'),
  ).action((opts: { nodeName: string; driverName: string; nvmlLib?: string } & HostPathFlags) => {
    const inventory = discoverInventory({ nvmlLib: opts.nvmlLib, hostPaths: readHostPaths(opts) });
    process.stdout.write(
      renderSlicesYaml(inventory, { nodeName: opts.nodeName, driverName: opts.driverName }),
    );
  });
}
