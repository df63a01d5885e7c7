// The fleet harness's settings (`npm run fleet -- --nodes N ...`, issue 18): parsed once by
// scripts/fleet.mjs, so a bad flag fails before the build, and again by the bench from
// FLEET_ARGS, so both read the same rules. Also the node every simulated GPU host runs.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { gpuProfiles, profilesDir, type FakeNvmlConfig } from '../../../src/sim/fakeNvml.js';

export const FLEET_DRIVERS = ['gpu-dra', 'nvidia'] as const;
export type FleetDriver = (typeof FLEET_DRIVERS)[number];

export interface FleetConfig {
  /** Simulated GPU nodes, each with its own driver process. */
  readonly nodes: number;
  /** Fake NVML profile every node starts from (`h100-8x`). */
  readonly profile: string;
  /** Pods (one claim each) created at once; half ask for a whole GPU, half for a MIG device. */
  readonly pods: number;
  /** Nodes (the first ones) that also run the kubelet-dra harness, where claims get prepared. */
  readonly kubelets: number;
  readonly driver: FleetDriver;
  /** GPUs per node (the last ones) put in MIG mode with seven 1g instances each. */
  readonly migGpus: number;
  /** Length of the steady-state window in seconds. */
  readonly steadySeconds: number;
}

export class FleetArgsError extends Error {
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag}: ${message}`);
    this.name = 'FleetArgsError';
  }
}

export const FLEET_USAGE = `usage: npm run fleet -- --nodes N [--profile h100-8x] [--pods K] [--kubelets S]
                            [--driver gpu-dra|nvidia] [--mig-gpus M] [--steady-s SECONDS]
  --nodes      simulated GPU nodes, one driver process each (1..500; required)
  --profile    fake NVML profile of every node (default h100-8x)
  --pods       pods with one claim each, created at once, half whole GPUs, half MIG (default 4 × nodes)
  --kubelets   nodes that also run the kubelet-dra harness and prepare claims (default min(nodes, 5))
  --driver     gpu-dra (default) or nvidia (NVIDIA's gpu-kubelet-plugin, needs root)
  --mig-gpus   GPUs per node in MIG mode with seven 1g instances each (default 2)
  --steady-s   steady-state window in seconds (default 120)`;

function integer(flag: string, raw: string | undefined, min: number, max: number, fallback?: number): number {
  if (raw === undefined) {
    if (fallback === undefined) throw new FleetArgsError(flag, 'is required');
    return fallback;
  }
  if (!/^\d+$/.test(raw)) throw new FleetArgsError(flag, `expected a whole number, got '${raw}'`);
  const v = Number(raw);
  if (v < min || v > max)
    throw new FleetArgsError(flag, `must be between ${String(min)} and ${String(max)}, got ${raw}`);
  return v;
}

/** Parses the fleet's command line; throws {@link FleetArgsError} naming the flag at fault. */
export function parseFleetArgs(argv: readonly string[]): FleetConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        nodes: { type: 'string' },
        profile: { type: 'string' },
        pods: { type: 'string' },
        kubelets: { type: 'string' },
        driver: { type: 'string' },
        'mig-gpus': { type: 'string' },
        'steady-s': { type: 'string' },
      },
    }));
  } catch (err) {
    // Node's message names the flag ("Unknown option '--node'", "Option '--nodes <value>' argument missing").
    const flag = /'(--?[a-z-]+)/.exec(String(err))?.[1] ?? 'arguments';
    throw new FleetArgsError(flag, err instanceof Error ? err.message : String(err));
  }
  const str = (k: string): string | undefined => {
    const v = values[k];
    return typeof v === 'string' ? v : undefined;
  };
  const nodes = integer('--nodes', str('nodes'), 1, 500);
  const profile = str('profile') ?? 'h100-8x';
  if (!/^[a-z0-9][a-z0-9-]*$/.test(profile))
    throw new FleetArgsError('--profile', `not a profile name: '${profile}'`);
  if (!fs.existsSync(path.join(profilesDir(), `${profile}.json`))) {
    const known = fs.readdirSync(profilesDir()).filter((f) => f.endsWith('.json'));
    throw new FleetArgsError(
      '--profile',
      `no fake NVML profile '${profile}' (known: ${known.map((f) => f.slice(0, -5)).join(', ')})`,
    );
  }
  const driver = str('driver') ?? 'gpu-dra';
  if (!(FLEET_DRIVERS as readonly string[]).includes(driver))
    throw new FleetArgsError('--driver', `expected one of ${FLEET_DRIVERS.join(', ')}, got '${driver}'`);
  return {
    nodes,
    profile,
    pods: integer('--pods', str('pods'), 0, 100_000, 4 * nodes),
    kubelets: integer('--kubelets', str('kubelets'), 0, nodes, Math.min(nodes, 5)),
    driver: driver as FleetDriver,
    migGpus: integer('--mig-gpus', str('mig-gpus'), 0, 64, 2),
    steadySeconds: integer('--steady-s', str('steady-s'), 10, 3_600, 120),
  };
}

/** The settings the bench runs with: FLEET_ARGS (a JSON array of the command line's arguments). */
export function fleetConfigFromEnv(env: NodeJS.ProcessEnv = process.env): FleetConfig {
  const raw = env['FLEET_ARGS'];
  if (raw === undefined || raw === '')
    throw new FleetArgsError('FLEET_ARGS', 'unset: run `npm run fleet -- --nodes N`');
  const argv: unknown = JSON.parse(raw);
  if (!Array.isArray(argv) || !argv.every((a): a is string => typeof a === 'string'))
    throw new FleetArgsError('FLEET_ARGS', 'expected a JSON array of strings');
  return parseFleetArgs(argv);
}

/** A deterministic MIG UUID for instance `i` of GPU `minor`. */
function migUuid(minor: number, i: number): string {
  const h = crypto
    .createHash('sha256')
    .update(`gpu-dra-fleet-mig-${String(minor)}-${String(i)}`)
    .digest('hex');
  return `MIG-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * `base` with its last `migGpus` GPUs in MIG mode, each filled with instances of its smallest
 * (one-slice) GI profile at every placement: a node offering whole GPUs and MIG devices, as the
 * issue's mixed workload needs. Throws when those GPUs have no one-slice profile.
 */
export function fleetNodeProfile(base: FakeNvmlConfig, migGpus: number): FakeNvmlConfig {
  if (migGpus > base.gpus.length)
    throw new FleetArgsError(
      '--mig-gpus',
      `the profile has ${String(base.gpus.length)} GPUs, fewer than ${String(migGpus)}`,
    );
  const first = base.gpus.length - migGpus;
  const gpus = base.gpus.map((gpu, i) => {
    if (i < first) return gpu;
    const one = gpuProfiles(base, gpu).find((p) => p.sliceCount === 1 && p.placements.length > 0);
    if (gpu.migCapable !== true || one === undefined)
      throw new FleetArgsError(
        '--mig-gpus',
        `GPU ${String(gpu.minor)} of the profile cannot run MIG instances`,
      );
    const placements = one.placements.slice(0, one.instanceCount);
    return {
      ...gpu,
      migMode: { current: 1, pending: 1 },
      migDevices: placements.map((placement, k) => ({
        uuid: migUuid(gpu.minor, k),
        gpuInstanceId: k + 1,
        computeInstanceId: 0,
        profileId: one.id,
        placement,
      })),
    };
  });
  return {
    ...base,
    description: `${base.description ?? 'profile'}; fleet: the last ${String(migGpus)} GPU(s) in MIG mode, filled with one-slice instances`,
    gpus,
  };
}

/** What a node built by {@link fleetNodeProfile} publishes: whole GPUs with MIG off, and each MIG device. */
export function expectedDevices(cfg: FakeNvmlConfig): { gpus: number; mig: number } {
  let gpus = 0;
  let mig = 0;
  for (const g of cfg.gpus) {
    if ((g.migMode?.current ?? 0) === 1) mig += g.migDevices?.length ?? 0;
    else gpus++;
  }
  return { gpus, mig };
}
