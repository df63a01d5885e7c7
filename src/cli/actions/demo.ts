import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { discoverInventory } from '../../nvml/discover.js';
import { exampleClaim, runPreparedClaimDemo, type PreparedClaimDemo } from '../../sim/demoNode.js';
import { createSimulatedNode } from '../../sim/fakeHost.js';
import { buildSlices } from '../../resourceslice/model.js';
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
    if (options.json) {
      const { slices } = buildSlices(inventory, { nodeName: DEMO_NODE, driverName: options.driverName });
      // The spec's text is for humans; JSON readers get it parsed as `cdiSpec`.
      const preparedJson = prepared ? { ...prepared, cdiSpecText: undefined } : null;
      out.write(
        JSON.stringify({ profile: options.profile, inventory, slices, prepared: preparedJson }, null, 2) +
          '\n',
      );
      return;
    }
    out.write(`# Simulated node (fake NVML profile "${options.profile}", files under ${dir})\n\n`);
    out.write(renderInventoryTable(inventory));
    out.write(`\n# The ResourceSlices node "${DEMO_NODE}" publishes for driver ${options.driverName}:\n`);
    out.write(renderSlicesYaml(inventory, { nodeName: DEMO_NODE, driverName: options.driverName }));
    out.write('\n');
    out.write(prepared ? renderPreparedClaim(prepared) : '# No device to prepare a claim for.\n');
  } finally {
    if (!options.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}
