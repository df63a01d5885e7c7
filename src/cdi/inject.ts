/**
 * What a container receives for a list of fully qualified CDI device ids: the pure part of the
 * CDI library's `Cache.InjectDevices` (tags.cncf.io/container-device-interface v1.1, pkg/cdi),
 * over specs already in memory. No I/O: nodes without type/major/minor stay without them (the
 * library would stat the host path), and nothing is validated beyond resolving the ids.
 *
 * Semantics copied from the library:
 * - For each id in order: the first time a device of a spec is used, that spec's top-level
 *   containerEdits are appended; then the device's own edits.
 * - env: `KEY=value` entries; a later entry for a key replaces the earlier value in place.
 * - deviceNodes: one per container path; a later entry replaces an earlier one (moved last).
 * - mounts: one per container path, likewise; then stably sorted by path depth, so parent
 *   directories are mounted before what goes inside them.
 * - hooks: appended in order.
 */
import type { CdiContainerEdits, CdiDeviceNode, CdiHook, CdiMount, CdiSpec } from './spec.js';

export interface QualifiedCdiName {
  readonly vendor: string;
  readonly class: string;
  readonly name: string;
}

/** `vendor.com/class=name` → parts; undefined when the id is not fully qualified. */
export function parseQualifiedName(id: string): QualifiedCdiName | undefined {
  const m = /^([^/=]+)\/([^/=]+)=(.+)$/.exec(id);
  if (!m?.[1] || !m[2] || !m[3]) return undefined;
  return { vendor: m[1], class: m[2], name: m[3] };
}

/** The edits a container gets, merged as the CDI library merges them. */
export interface InjectedEdits {
  readonly env: string[];
  readonly deviceNodes: CdiDeviceNode[];
  readonly mounts: CdiMount[];
  readonly hooks: CdiHook[];
}

export interface InjectionResult {
  readonly edits: InjectedEdits;
  /** Ids no spec defines (the library fails the whole injection on any). */
  readonly unresolved: string[];
}

function envKey(entry: string): string {
  const eq = entry.indexOf('=');
  return eq < 0 ? entry : entry.slice(0, eq);
}

function depth(containerPath: string): number {
  return containerPath.replace(/\/+$/, '').split('/').length - 1;
}

/** Resolves `ids` against `specs` and merges their edits. */
export function injectCdiDevices(specs: readonly CdiSpec[], ids: readonly string[]): InjectionResult {
  const collected: CdiContainerEdits[] = [];
  const specsUsed = new Set<CdiSpec>();
  const unresolved: string[] = [];
  for (const id of ids) {
    const q = parseQualifiedName(id);
    const kind = q ? `${q.vendor}/${q.class}` : undefined;
    let found = false;
    for (const spec of specs) {
      if (spec.kind !== kind) continue;
      const device = spec.devices.find((d) => d.name === q?.name);
      if (!device) continue;
      if (!specsUsed.has(spec)) {
        specsUsed.add(spec);
        if (spec.containerEdits) collected.push(spec.containerEdits);
      }
      collected.push(device.containerEdits);
      found = true;
      break;
    }
    if (!found) unresolved.push(id);
  }

  const env: string[] = [];
  const nodes = new Map<string, CdiDeviceNode>();
  const mounts = new Map<string, CdiMount>();
  const hooks: CdiHook[] = [];
  for (const edits of collected) {
    for (const entry of edits.env ?? []) {
      const i = env.findIndex((e) => envKey(e) === envKey(entry));
      if (i >= 0) env[i] = entry;
      else env.push(entry);
    }
    for (const n of edits.deviceNodes ?? []) {
      nodes.delete(n.path);
      nodes.set(n.path, { ...n });
    }
    for (const m of edits.mounts ?? []) {
      mounts.delete(m.containerPath);
      mounts.set(m.containerPath, { ...m, ...(m.options ? { options: [...m.options] } : {}) });
    }
    for (const h of edits.hooks ?? []) hooks.push({ ...h, ...(h.args ? { args: [...h.args] } : {}) });
  }
  const sortedMounts = [...mounts.values()]
    .map((m, i) => ({ m, i }))
    .sort((a, b) => depth(a.m.containerPath) - depth(b.m.containerPath) || a.i - b.i)
    .map(({ m }) => m);
  return { edits: { env, deviceNodes: [...nodes.values()], mounts: sortedMounts, hooks }, unresolved };
}
