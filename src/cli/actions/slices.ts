/**
 * `gpu-dra slices` / `gpu-dra demo`: render the ResourceSlices this node would publish, as a
 * multi-document YAML string (no apiserver needed).
 */
import { stringify } from 'yaml';
import { discoverInventory } from '../../nvml/discover.js';
import type { NodeInventory } from '../../nvml/types.js';
import { buildSlices, type ModelOptions } from '../../resourceslice/model.js';
import { readHostPaths } from '../hostFlags.js';
import type { SlicesFlags } from '../commands/slices.js';

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
export function runSlices(opts: SlicesFlags): void {
  const inventory = discoverInventory({ nvmlLib: opts.nvmlLib, hostPaths: readHostPaths(opts) });
  process.stdout.write(renderSlicesYaml(inventory, { nodeName: opts.nodeName, driverName: opts.driverName }));
}
