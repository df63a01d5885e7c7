/**
 * `gpu-dra slices` / `gpu-dra demo`: render the ResourceSlices this node would publish, as a
 * multi-document YAML string (no apiserver needed).
 */
import { stringify } from 'yaml';
import { discoverInventory } from '../../nvml/discover.js';
import type { NodeInventory } from '../../nvml/types.js';
import { buildSlices, type ModelOptions, type ResourceSliceObject } from '../../resourceslice/model.js';
import {
  COUNTER_LAYOUTS,
  MIG_PARTITIONING_MODES,
  type CounterLayout,
  type MigPartitioning,
} from '../../resourceslice/partitions.js';
import { ConfigError } from '../../util/errors.js';
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
  const docs = model.slices.map((s) =>
    stringify(asApplied(s), { lineWidth: 0, version: '1.1', singleQuote: true }),
  );
  return header + docs.map((d) => `---\n${d}`).join('');
}

/** As `kubectl apply` must see it: a counter-set slice without `devices` (>= 1.35 rejects both). */
function asApplied(s: ResourceSliceObject): unknown {
  if (!s.spec.sharedCounters || s.spec.devices.length > 0) return s;
  const spec: Record<string, unknown> = { ...s.spec };
  delete spec['devices'];
  return { ...s, spec };
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  const v = allowed.find((a) => a === value);
  if (v === undefined) throw new ConfigError(flag, `"${value}" is not one of ${allowed.join(', ')}`);
  return v;
}

/** `gpu-dra slices`: what this node would publish, from live NVML discovery, without an apiserver. */
export function runSlices(opts: SlicesFlags): void {
  const migPartitioning: MigPartitioning = oneOf(
    '--mig-partitioning',
    opts.migPartitioning ?? 'static',
    MIG_PARTITIONING_MODES,
  );
  const counterLayout: CounterLayout = oneOf('--counter-layout', opts.counterLayout, COUNTER_LAYOUTS);
  const inventory = discoverInventory({ nvmlLib: opts.nvmlLib, hostPaths: readHostPaths(opts) });
  process.stdout.write(
    renderSlicesYaml(inventory, {
      nodeName: opts.nodeName,
      driverName: opts.driverName,
      migPartitioning,
      counterLayout,
    }),
  );
}
