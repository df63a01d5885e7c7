/**
 * `gpu-dra explain -f claim.yaml`: which devices a claim's requests match, and why the others
 * do not (a Pod asking for an extended resource that a DeviceClass backs counts as the claim the
 * scheduler would make for it), evaluated with the scheduler's CEL semantics (src/cel/). Devices come from a file of
 * ResourceSlices (`--slices`), from a cluster (`--kubeconfig`), or from a simulated node
 * (`--profile`, the fake NVML profiles of `gpu-dra demo`).
 *
 * Exit status: 0 when every claim in the file can be satisfied by the devices given (ignoring
 * other claims' allocations), 1 when one cannot, 2 on bad input.
 */
import fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { defaultDeviceClasses } from '../../cel/classes.js';
import {
  explainClaim,
  type ClaimObject,
  type DeviceExplanation,
  type ExplainReport,
  type RequestExplanation,
  type TopRequestExplanation,
} from '../../cel/explain.js';
import { extendedResourceClaim, type PodObject } from '../../cel/extendedResources.js';
import { ConfigError } from '../../util/errors.js';
import type { ExplainOptions } from '../commands/explain.js';
import type { DeviceClass, ResourceSlice } from '../../api/resource.js';
import type { DeviceInput } from '../../cel/device.js';

type KubeObject = { readonly kind?: string; readonly items?: unknown[] } & Record<string, unknown>;

/** Every object in a YAML/JSON stream, with `List` kinds flattened. */
export function parseObjects(text: string, source: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new ConfigError(source, `invalid YAML: ${doc.errors[0]?.message ?? ''}`);
    const value: unknown = doc.toJS({ intAsBigInt: false });
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value))
      throw new ConfigError(source, 'expected Kubernetes objects');
    const obj = value as KubeObject;
    if (Array.isArray(obj.items) && (obj.kind === undefined || obj.kind.endsWith('List'))) {
      for (const item of obj.items) if (item && typeof item === 'object') out.push(item as KubeObject);
    } else {
      out.push(obj);
    }
  }
  return out;
}

function readText(file: string): string {
  try {
    return file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, `cannot read: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
}

function isClaim(o: KubeObject): boolean {
  return o.kind === 'ResourceClaim' || o.kind === 'ResourceClaimTemplate';
}

function asSlices(objects: readonly KubeObject[], source: string): ResourceSlice<DeviceInput>[] {
  const slices = objects.filter((o) => o.kind === 'ResourceSlice' || (o.kind === undefined && 'spec' in o));
  for (const s of slices) {
    const spec = (s as { spec?: { driver?: unknown; pool?: { name?: unknown } } }).spec;
    if (typeof spec?.driver !== 'string' || typeof spec.pool?.name !== 'string') {
      throw new ConfigError(source, 'a ResourceSlice needs spec.driver and spec.pool.name');
    }
  }
  return slices as unknown as ResourceSlice<DeviceInput>[];
}

async function fromCluster(
  kubeconfig: string,
): Promise<{ slices: ResourceSlice<DeviceInput>[]; classes: DeviceClass[] }> {
  const { loadKubeconfigClient } = await import('../../kube/kubeconfig.js');
  const client = await loadKubeconfigClient(kubeconfig);
  try {
    const [slices, classes] = await Promise.all([
      client.request<{ items?: ResourceSlice<DeviceInput>[] | null }>(
        'GET',
        '/apis/resource.k8s.io/v1/resourceslices',
      ),
      client.request<{ items?: DeviceClass[] | null }>('GET', '/apis/resource.k8s.io/v1/deviceclasses'),
    ]);
    return { slices: slices.items ?? [], classes: classes.items ?? [] };
  } finally {
    client.close();
  }
}

async function fromProfile(profile: string, driverName: string): Promise<ResourceSlice<DeviceInput>[]> {
  const os = await import('node:os');
  const path = await import('node:path');
  const { createSimulatedNode } = await import('../../sim/fakeHost.js');
  const { discoverInventory } = await import('../../nvml/discover.js');
  const { buildSlices } = await import('../../resourceslice/model.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-explain-'));
  const previous = process.env['FAKE_NVML_CONFIG'];
  try {
    const node = await createSimulatedNode(profile, dir);
    process.env['FAKE_NVML_CONFIG'] = node.configPath;
    const inventory = discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
    return [...buildSlices(inventory, { driverName, nodeName: `sim-${profile}` }).slices];
  } finally {
    if (previous === undefined) delete process.env['FAKE_NVML_CONFIG'];
    else process.env['FAKE_NVML_CONFIG'] = previous;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Human output

function failureText(d: DeviceExplanation): string {
  const f = d.failure;
  if (!f) return '';
  const where = `${f.source}[${f.index}]`;
  const clause = f.clause ? ` at \`${f.clause}\`` : '';
  const values = f.values.map((v) => `${v.expression} = ${v.value ?? `<${v.error ?? 'error'}>`}`).join('; ');
  const head = f.error ? `${where}${clause}: ${f.error}` : `${where} is false${clause}`;
  return values ? `${head} (saw ${values})` : head;
}

function renderRequest(r: RequestExplanation, indent: string, all: boolean, lines: string[]): void {
  const mode = r.allocationMode === 'All' ? 'all devices' : `${r.count} device(s)`;
  const admin = r.adminAccess ? ', adminAccess' : '';
  const verdict = r.satisfiable ? 'OK' : `NOT SATISFIABLE: ${r.reason ?? ''}`;
  lines.push(
    `${indent}request ${r.name}: class ${r.deviceClassName}, ${mode}${admin}: ${r.matching.length} match, ${r.errors} error(s) -> ${verdict}`,
  );
  for (const s of r.selectors) {
    lines.push(
      `${indent}  ${s.source}[${s.index}]: ${s.expression}${s.compileError ? `  !! ${s.compileError}` : ''}`,
    );
  }
  const limit = all ? Infinity : 10;
  const names = (list: readonly DeviceExplanation[]): string => {
    const shown = list
      .slice(0, limit)
      .map((d) => `${d.pool}/${d.device}${d.node && d.node !== d.pool ? ` (node ${d.node})` : ''}`);
    return (
      shown.join(', ') + (list.length > limit ? `, ... ${list.length - limit} more (--all lists them)` : '')
    );
  };
  const matches = r.devices.filter((d) => d.outcome === 'match');
  if (matches.length > 0) lines.push(`${indent}  match: ${names(matches)}`);
  // Devices failing for the same reason are listed together.
  const groups = new Map<string, DeviceExplanation[]>();
  for (const d of r.devices) {
    if (d.outcome === 'match') continue;
    const key = `${d.outcome === 'error' ? 'error' : 'no-match'}: ${failureText(d)}`;
    const g = groups.get(key) ?? [];
    g.push(d);
    groups.set(key, g);
  }
  for (const [why, list] of groups)
    lines.push(`${indent}  ${why}`, `${indent}    ${list.length} device(s): ${names(list)}`);
}

/** The report as text for people. */
export function renderExplainReport(report: ExplainReport, all = false): string {
  const lines: string[] = [];
  const c = report.claim;
  const name = c.namespace ? `${c.namespace}/${c.name}` : c.name;
  lines.push(
    `${c.kind} ${name}: ${report.satisfiable ? 'satisfiable' : 'NOT satisfiable'} (${report.devicesConsidered} device(s) considered)`,
  );
  for (const r of report.requests as TopRequestExplanation[]) {
    lines.push('');
    if (r.subrequests) {
      lines.push(
        `request ${r.name}: firstAvailable, ${r.chosen ? `would use ${r.chosen}` : `NOT SATISFIABLE: ${r.reason ?? ''}`}`,
      );
      for (const s of r.subrequests) renderRequest(s, '  ', all, lines);
    } else {
      renderRequest(r, '', all, lines);
    }
  }
  for (const k of report.constraints) {
    lines.push('');
    const groups = k.groups
      .map(
        (g) =>
          `${g.value}: ${Object.entries(g.perRequest)
            .map(([r, n]) => `${r}=${n}`)
            .join(' ')}`,
      )
      .join('; ');
    lines.push(
      `constraint matchAttribute ${k.matchAttribute} over ${k.requests.join(', ')}: ${k.satisfiable ? 'OK' : 'NOT SATISFIABLE'}${groups ? ` (${groups})` : ''}`,
    );
  }
  if (report.warnings.length > 0) {
    lines.push('');
    for (const w of report.warnings) lines.push(`warning: ${w}`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

/** Loads the inputs the options name and explains every claim in the file. */
export async function runExplain(options: ExplainOptions): Promise<ExplainReport[]> {
  const objects = parseObjects(readText(options.filename), options.filename);
  const claims = objects.filter(isClaim) as ClaimObject[];
  // Device-plugin-style pods (extended resources, KEP-5004) are checked once the classes are known.
  const pods = objects.filter((o) => o.kind === 'Pod') as PodObject[];
  if (claims.length === 0 && pods.length === 0)
    throw new ConfigError(options.filename, 'no ResourceClaim, ResourceClaimTemplate or Pod in the file');
  const sources = [options.slices, options.kubeconfig, options.profile].filter((s) => s !== undefined);
  if (sources.length !== 1)
    throw new ConfigError('--slices', 'give exactly one of --slices FILE, --kubeconfig PATH, --profile NAME');

  let slices: ResourceSlice<DeviceInput>[];
  let classes: DeviceClass[] | undefined;
  if (options.slices !== undefined) {
    slices = asSlices(parseObjects(readText(options.slices), options.slices), options.slices);
  } else if (options.kubeconfig !== undefined) {
    const cluster = await fromCluster(options.kubeconfig);
    slices = cluster.slices;
    classes = cluster.classes;
  } else {
    slices = await fromProfile(options.profile ?? '', options.driverName);
  }
  if (options.deviceClasses !== undefined) {
    classes = parseObjects(readText(options.deviceClasses), options.deviceClasses).filter(
      (o) => o.kind === 'DeviceClass',
    );
  }
  classes ??= defaultDeviceClasses(options.driverName);
  const resolved = classes;
  // The claim the scheduler would make for each pod's DRA-backed extended resources; pods that
  // only use the file's claims add nothing.
  for (const pod of pods) {
    const claim = extendedResourceClaim(pod, resolved);
    if (claim !== undefined) claims.push(claim);
  }
  if (claims.length === 0)
    throw new ConfigError(
      options.filename,
      'no ResourceClaim or ResourceClaimTemplate in the file, and no Pod asking for an extended resource a DeviceClass backs',
    );
  return claims.map((claim) => explainClaim(claim, resolved, slices));
}

/** `gpu-dra explain`: prints the reports; exit 1 when a claim cannot be satisfied. */
export async function runExplainCommand(opts: ExplainOptions): Promise<void> {
  const reports = await runExplain(opts);
  if (opts.json) {
    process.stdout.write(JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 2) + '\n');
  } else {
    process.stdout.write(reports.map((r) => renderExplainReport(r, opts.all)).join('\n'));
  }
  if (reports.some((r) => !r.satisfiable)) process.exitCode = 1;
}
