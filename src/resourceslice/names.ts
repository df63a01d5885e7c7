import { createHash } from 'node:crypto';
import type { GpuDevice, MigDevice } from '../nvml/types.js';
import { DNS_SUBDOMAIN_MAX } from '../util/kubeNames.js';

/**
 * Names: device names (DNS labels, stable across restarts), slice names (DNS subdomains,
 * deterministic per node, driver and index) and the natural order devices are listed in.
 */

/** A full GPU: `gpu-<minor>`. The minor (/dev/nvidia<minor>) survives re-enumeration; the index does not. */
export function gpuDeviceName(minor: number): string {
  return `gpu-${minor}`;
}

/**
 * `1g.10gb` -> `1g10gb`, `1g.10gb+me` -> `1g10gb-me`: the profile as it appears in a device name,
 * as NVIDIA's driver writes it (dots dropped, anything else not a DNS-label character a hyphen).
 */
export function profileNamePart(profile: string): string {
  return profile
    .toLowerCase()
    .replaceAll('.', '')
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '');
}

/**
 * A MIG device: `gpu-<parentMinor>-mig-<profile part>-<giProfileId>-<placementStart>`, e.g.
 * `gpu-0-mig-1g10gb-19-0`, `gpu-0-mig-1g10gb-me-20-0` (see {@link profileNamePart}). Same scheme as NVIDIA's driver, so claims and tooling that know
 * one know the other. Parse it back with {@link parseDeviceName}.
 */
export function migDeviceName(
  parentMinor: number,
  profile: string,
  profileId: number,
  placementStart: number,
): string {
  return `gpu-${parentMinor}-mig-${profileNamePart(profile)}-${profileId}-${placementStart}`;
}

/** The device name a discovered GPU or MIG device is published under. */
export function deviceName(device: GpuDevice | MigDevice): string {
  return device.kind === 'gpu'
    ? gpuDeviceName(device.minor)
    : migDeviceName(device.parentMinor, device.profile, device.profileId, device.placement.start);
}

export type ParsedDeviceName =
  | { readonly kind: 'gpu'; readonly minor: number }
  | {
      readonly kind: 'mig';
      readonly parentMinor: number;
      readonly profile: string;
      readonly profileId: number;
      readonly placementStart: number;
    };

/** Inverse of {@link gpuDeviceName} / {@link migDeviceName}; undefined for other names. */
export function parseDeviceName(name: string): ParsedDeviceName | undefined {
  let m = /^gpu-(\d+)$/.exec(name);
  if (m) return { kind: 'gpu', minor: Number(m[1]) };
  m = /^gpu-(\d+)-mig-([a-z0-9][a-z0-9-]*?)-(\d+)-(\d+)$/.exec(name);
  if (m) {
    return {
      kind: 'mig',
      parentMinor: Number(m[1]),
      profile: m[2] ?? '',
      profileId: Number(m[3]),
      placementStart: Number(m[4]),
    };
  }
  return undefined;
}

/**
 * Deterministic name of slice `index` of this node's pool: `<node>-<driver>-<hash>-<index>`, with
 * `<hash>` = first 8 hex digits of sha256(`<node>\0<driver>`). The readable prefix is cut so the
 * name stays a DNS subdomain of <= 253 characters (Kubernetes checks no per-label length for
 * object names); the hash keeps names collision-free even when the prefix is cut or two
 * (node, driver) pairs concatenate to the same text (`a-b` + `c.io` vs `a` + `b-c.io`).
 */
export function sliceName(nodeName: string, driverName: string, index: number): string {
  const hash = createHash('sha256').update(`${nodeName}\0${driverName}`).digest('hex').slice(0, 8);
  const tail = `${hash}-${index}`;
  const prefix = `${nodeName}-${driverName}`
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .slice(0, DNS_SUBDOMAIN_MAX - tail.length - 1)
    .split('.')
    .map((l) => l.replace(/^-+|-+$/g, ''))
    .filter((l) => l.length > 0)
    .join('.');
  return prefix.length > 0 ? `${prefix}-${tail}` : tail;
}
