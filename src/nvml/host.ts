import fs from 'node:fs';
import path from 'node:path';
import { underRoot, type HostPaths } from '../util/hostPaths.js';

/**
 * Read-only facts from procfs and sysfs that NVML does not give: MIG access-cap minors, the
 * PCIe root complex and the NUMA node of a GPU. Missing files are normal (no MIG, containers
 * without sysfs) and yield empty results rather than errors.
 */

/** `gpu<minor>/gi<id>/access` and `gpu<minor>/gi<id>/ci<id>/access` → cap minor. */
export type MigMinors = ReadonlyMap<string, number>;

export function parseMigMinors(text: string): MigMinors {
  const minors = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\S+)\s+(\d+)\s*$/.exec(line.trim());
    if (match?.[1] && match[2]) minors.set(match[1], Number(match[2]));
  }
  return minors;
}

export function readMigMinors(host: HostPaths): MigMinors {
  try {
    return parseMigMinors(fs.readFileSync(underRoot(host.procRoot, 'driver/nvidia-caps/mig-minors'), 'utf8'));
  } catch {
    return new Map();
  }
}

export function migAccessCaps(
  minors: MigMinors,
  parentMinor: number,
  gi: number,
  ci: number,
): { gi: number; ci: number } | undefined {
  const giCap = minors.get(`gpu${parentMinor}/gi${gi}/access`);
  const ciCap = minors.get(`gpu${parentMinor}/gi${gi}/ci${ci}/access`);
  return giCap === undefined || ciCap === undefined ? undefined : { gi: giCap, ci: ciCap };
}

/**
 * `/sys/bus/pci/devices/<busId>` links to `../../../devices/pci0000:00/.../<busId>`: the first
 * `pciDDDD:BB` component of the resolved path is the root complex.
 */
export function readPcieRoot(host: HostPaths, busId: string): string | undefined {
  try {
    const link = underRoot(host.sysRoot, 'bus/pci/devices', busId);
    const target = path.resolve(path.dirname(link), fs.readlinkSync(link));
    return target.split(path.sep).find((part) => /^pci[0-9a-f]{4}:[0-9a-f]{2}$/i.test(part));
  } catch {
    return undefined;
  }
}

/**
 * `/sys/bus/pci/devices/<busId>/numa_node`: the NUMA node the GPU is attached to. The kernel
 * writes -1 for "no NUMA affinity"; that, a missing file or garbage all mean "unknown".
 */
export function readNumaNode(host: HostPaths, busId: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(underRoot(host.sysRoot, 'bus/pci/devices', busId, 'numa_node'), 'utf8');
  } catch {
    return undefined;
  }
  const node = /^\s*(-?\d+)\s*$/.exec(text);
  const n = node?.[1] === undefined ? Number.NaN : Number(node[1]);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** NVML writes `00000000:00:06.0`; sysfs and Kubernetes use `0000:00:06.0`. */
export function normalizeBusId(busId: string): string {
  const match = /^([0-9a-f]+):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i.exec(busId.trim());
  if (!match) return busId.trim().toLowerCase();
  const [, domain = '0', bus = '', device = '', fn = ''] = match;
  return `${domain.slice(-4).padStart(4, '0')}:${bus}:${device}.${fn}`.toLowerCase();
}
