import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { discoverInventory } from '../../nvml/discover.js';
import { exampleClaim, runPreparedClaimDemo, type PreparedClaimDemo } from '../../sim/demoNode.js';
import { createSimulatedNode } from '../../sim/fakeHost.js';
import { buildSlices, type SliceModel } from '../../resourceslice/model.js';
import type { GpuDevice, NodeInventory } from '../../nvml/types.js';
import { renderInventoryTable } from './discover.js';
import { renderSlicesYaml } from './slices.js';
import type { DemoOptions } from '../commands/demo.js';

/** Node name of the simulated node (and so its ResourceSlice pool). */
const DEMO_NODE = 'demo-node';

function yaml(value: unknown): string {
  return stringify(value, { lineWidth: 0, singleQuote: true });
}

function indent(text: string, prefix = '  '): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => prefix + l)
    .join('\n');
}

/** The prepared-claim section of the text output. */
export function renderPreparedClaim(p: PreparedClaimDemo): string {
  const out: string[] = [];
  const meta = p.claim.metadata ?? {};
  const results = p.claim.status?.allocation?.devices?.results ?? [];
  const nodeWidth = Math.max(0, ...p.container.deviceNodes.map((n) => n.path.length));
  const mountWidth = Math.max(0, ...p.container.mounts.map((m) => m.containerPath.length));
  out.push(
    `# The kubelet plugin, running in-process on the simulated node:`,
    `#   registration socket ${p.registrationSocket}`,
    `#   GetInfo → ${p.pluginInfo.type} ${p.pluginInfo.name}, endpoint ${p.pluginInfo.endpoint}, versions ${p.pluginInfo.supported_versions.join(', ')}`,
    `#`,
    `# ResourceClaim ${meta.namespace ?? ''}/${meta.name ?? ''} (uid ${meta.uid ?? ''}) as the scheduler allocated it:`,
    ...results.map((r) => `#   request ${r.request} → device ${r.device} (pool ${r.pool})`),
    `#`,
    `# NodePrepareResources over ${p.draSocket}, as the kubelet calls it (${p.prepareMs.toFixed(1)} ms):`,
    indent(yaml({ request: p.request }), ''),
    indent(yaml({ response: p.response }), ''),
    '',
    `# The CDI spec the driver wrote: ${p.cdiSpecFile}`,
    p.cdiSpecText.trimEnd(),
    '',
    `# What a container using the claim receives (the response's CDI ids applied from that spec):`,
    'device nodes:',
    ...p.container.deviceNodes.map(
      (n) =>
        `  ${n.path.padEnd(nodeWidth)}  ${`${n.type ?? '?'} ${n.major ?? '?'}:${n.minor ?? '?'}`.padEnd(9)}  ← ${n.hostPath ?? n.path}`,
    ),
    'env:',
    ...p.container.env.map((e) => `  ${e}`),
    `mounts (${[...new Set(p.container.mounts.map((m) => (m.options ?? []).join(',')))].join(' | ')}):`,
    ...p.container.mounts.map((m) => `  ${m.containerPath.padEnd(mountWidth)}  ← ${m.hostPath}`),
    ...(p.container.hooks.length > 0
      ? ['hooks:', ...p.container.hooks.map((h) => `  ${h.hookName}: ${h.path} ${(h.args ?? []).join(' ')}`)]
      : []),
    '',
    `# NodeUnprepareResources: ${p.unprepare.error === '' ? 'ok' : `error: ${p.unprepare.error}`}; ` +
      `CDI spec removed: ${p.unprepare.cdiSpecRemoved ? 'yes' : 'NO'}; ` +
      `claims left in the checkpoint: ${p.unprepare.checkpointClaims}`,
  );
  return out.join('\n') + '\n';
}

/** GPUs listed one per line on the first screen; the rest are counted (big-mig has 29). */
const MAX_GPU_LINES = 8;
/** Mounts named on the first screen; `--verbose` lists them all. */
const MAX_MOUNT_NAMES = 3;
const GIB = 1024 ** 3;

export interface DemoStory {
  readonly profile: string;
  readonly driverName: string;
  /** Where the simulated node's files are (removed afterwards unless `--keep`). */
  readonly dir: string;
  readonly inventory: NodeInventory;
  readonly model: SliceModel;
  readonly prepared: PreparedClaimDemo | undefined;
}

/** `first, second, …, last` for long lists, so a name list stays on one line. */
function sample(names: readonly string[], max = 4): string {
  if (names.length <= max) return names.join(', ');
  return `${names.slice(0, max - 1).join(', ')}, …, ${names[names.length - 1] ?? ''}`;
}

function migSummary(gpu: GpuDevice): string {
  if (!gpu.migMode) return 'no MIG';
  if (!gpu.migMode.current) return 'MIG off';
  const counts = new Map<string, number>();
  for (const d of gpu.migDevices) counts.set(d.profile, (counts.get(d.profile) ?? 0) + 1);
  const parts = [...counts].map(([profile, n]) => `${n}× ${profile}`);
  return `MIG on: ${parts.length > 0 ? parts.join(', ') : 'no MIG devices'}`;
}

/**
 * The first screen of `gpu-dra demo`: the story in one page (the GPUs, what the node publishes,
 * a claim prepared, what its container receives). The full documents are `--verbose`'s.
 */
export function renderDemoSummary(story: DemoStory): string {
  const { inventory, model, prepared } = story;
  const out: string[] = [
    `gpu-dra demo: the driver on a simulated node (fake NVML profile "${story.profile}"; no GPU, no cluster)`,
    '',
    `1. The GPUs, as NVML reports them (driver ${inventory.driverVersion}, CUDA ${inventory.cudaDriverVersion}):`,
  ];
  const shown = inventory.gpus.slice(0, MAX_GPU_LINES);
  const nameWidth = Math.max(0, ...shown.map((g) => g.productName.length));
  for (const gpu of shown) {
    const mem = gpu.memoryBytes === undefined ? '-' : `${(gpu.memoryBytes / GIB).toFixed(1)} GiB`;
    out.push(
      `   gpu ${String(gpu.minor).padEnd(2)} ${gpu.productName.padEnd(nameWidth)}  ${mem.padStart(8)}  ${gpu.pci.busId}  ${migSummary(gpu)}`,
    );
  }
  if (inventory.gpus.length > shown.length)
    out.push(`   … and ${inventory.gpus.length - shown.length} more GPUs like these`);
  for (const f of inventory.failures) out.push(`   GPU index ${f.index} unavailable: ${f.error}`);
  if (inventory.gpus.length === 0 && inventory.failures.length === 0) out.push('   (none)');

  const { slices, devices } = model;
  out.push(
    '',
    `2. What node "${DEMO_NODE}" publishes for driver ${story.driverName}: ` +
      `${devices.length} devices in ${slices.length} ResourceSlice(s) of pool ${DEMO_NODE}`,
  );
  for (const s of slices) {
    out.push(`   ${s.metadata.name}: ${sample(s.spec.devices.map((d) => d.name))}`);
  }
  const first = devices[0];
  if (first) {
    const attrs = Object.keys(first.attributes);
    out.push(
      `   each with ${attrs.length} attributes (${sample(attrs, 5)}) and capacity ${sample(Object.keys(first.capacity))}`,
    );
  }
  for (const w of model.warnings) out.push(`   warning: ${w}`);

  out.push('');
  if (!prepared) {
    out.push('3. No device to prepare a claim for.');
  } else {
    const meta = prepared.claim.metadata ?? {};
    const results = prepared.claim.status?.allocation?.devices?.results ?? [];
    const ids = prepared.response.devices.flatMap((d) => d.cdi_device_ids);
    out.push(
      `3. A claim the scheduler allocated: ResourceClaim ${meta.namespace ?? ''}/${meta.name ?? ''}`,
      ...results.map((r) => `   request "${r.request}" → device ${r.device}`),
      `   the kubelet calls NodePrepareResources on the plugin's socket: ${prepared.response.error === '' ? 'ok' : prepared.response.error} ` +
        `(${prepared.prepareMs.toFixed(1)} ms)`,
      `   → CDI device ${ids.join(', ')}`,
    );
    const c = prepared.container;
    const mountNames = c.mounts.map((m) => path.basename(m.containerPath));
    const preferred = mountNames.filter((n) => /^(nvidia-smi|libcuda\.so\.1|libnvidia-ml\.so\.1)$/.test(n));
    const named = (preferred.length > 0 ? preferred : mountNames).slice(0, MAX_MOUNT_NAMES);
    out.push(
      '',
      '4. What the container using the claim receives (from the CDI spec the driver wrote):',
      `   device nodes  ${c.deviceNodes.map((n) => n.path).join(', ')}`,
      ...c.env.map((e, i) => `   ${i === 0 ? 'env          ' : '             '} ${e}`),
      `   mounts        ${c.mounts.length} driver files, read-only` +
        (named.length > 0 ? ` (${named.join(', ')}${c.mounts.length > named.length ? ', …' : ''})` : ''),
      ...(c.hooks.length > 0 ? [`   hooks         ${c.hooks.map((h) => h.hookName).join(', ')}`] : []),
      `   then NodeUnprepareResources: ${prepared.unprepare.error === '' ? 'ok' : prepared.unprepare.error}, ` +
        `CDI spec ${prepared.unprepare.cdiSpecRemoved ? 'removed' : 'NOT removed'}`,
    );
  }
  out.push(
    '',
    'More: --verbose (every ResourceSlice as YAML, the CDI spec, the gRPC exchange), --json (all of it,',
    "machine-readable), --profile NAME (a100-mig, mixed, ...), --keep (keep the node's files).",
  );
  return out.join('\n') + '\n';
}

/** `--verbose`: every document behind the summary, in full (the demo's output before the summary). */
function renderDemoVerbose(story: DemoStory): string {
  const { inventory, prepared } = story;
  return [
    `# Simulated node (fake NVML profile "${story.profile}", files under ${story.dir})\n\n`,
    renderInventoryTable(inventory),
    `\n# The ResourceSlices node "${DEMO_NODE}" publishes for driver ${story.driverName}:\n`,
    renderSlicesYaml(inventory, { nodeName: DEMO_NODE, driverName: story.driverName }),
    '\n',
    prepared ? renderPreparedClaim(prepared) : '# No device to prepare a claim for.\n',
  ].join('');
}

/**
 * The embedded default: a simulated node (fake NVML + fake host tree in a temp dir) run
 * through the same discovery code a real node uses, then the kubelet plugin preparing one
 * example claim over its real socket. No GPU, no cluster.
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
    const target = { driverName: options.driverName, nodeName: DEMO_NODE, inventory };
    const claim = exampleClaim(target);
    const prepared = claim
      ? await runPreparedClaimDemo({ ...target, hostPaths: node.hostPaths, dir, claim })
      : undefined;
    const model = buildSlices(inventory, { nodeName: DEMO_NODE, driverName: options.driverName });
    if (options.json) {
      // The spec's text is for humans; JSON readers get it parsed as `cdiSpec`.
      const preparedJson = prepared ? { ...prepared, cdiSpecText: undefined } : null;
      out.write(
        JSON.stringify(
          {
            profile: options.profile,
            driverName: options.driverName,
            nodeName: DEMO_NODE,
            inventory,
            slices: model.slices,
            warnings: model.warnings,
            prepared: preparedJson,
          },
          null,
          2,
        ) + '\n',
      );
      return;
    }
    const story: DemoStory = {
      profile: options.profile,
      driverName: options.driverName,
      dir,
      inventory,
      model,
      prepared,
    };
    out.write(options.verbose ? renderDemoVerbose(story) : renderDemoSummary(story));
  } finally {
    if (!options.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}
