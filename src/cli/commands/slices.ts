/**
 * `gpu-dra slices` / `gpu-dra demo`: render the ResourceSlices this node would publish, as a
 * multi-document YAML string (no apiserver needed). The caller wires it into commander.
 */
import { stringify } from 'yaml';
import type { NodeInventory } from '../../nvml/types.js';
import { buildSlices, type ModelOptions } from '../../resourceslice/model.js';

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
