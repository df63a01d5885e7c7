/**
 * Crash points, for tests only (never set in deploy/): the process SIGKILLs itself at a chosen
 * point, as a power loss or OOM kill would, with no cleanup running. Each point sits right after
 * one durable write, NVML call or host change of prepare, unprepare, rollback or recovery, so a
 * kill there leaves exactly the state that step produced.
 *
 *   GPU_DRA_FAILPOINTS        comma-separated entries, read once at start:
 *                               name      the first hit of that point
 *                               name@N    the N-th hit (1-based) of that point
 *                               *@N       the N-th hit of any point, counted across all names
 *   GPU_DRA_FAILPOINT_TRACE   a file: one line (the point's name) is appended, synchronously,
 *                             per hit, before the process decides whether to die there, so a
 *                             test can count the points a workload passes (test/e2e/crash-points).
 *
 * Unarmed and untraced, a point costs one boolean test. An unknown name or a malformed entry
 * stops the process at start (CONFIG_INVALID), so a test cannot arm a point that is gone.
 */
import fs from 'node:fs';
import { GpuDraError } from './errors.js';

/** Every point the code passes; `failpoint()` takes only these. */
export const FAILPOINTS = [
  // prepare
  /** Dynamic MIG: the claim recorded PrepareStarted with its slots, before NVML makes anything. */
  'prepare-intent-recorded',
  /** Dynamic MIG: NVML made one MIG device of the claim (more may follow). */
  'mig-device-created',
  /** Dynamic MIG: NVML made the claim's MIG devices; their ids are not yet in the checkpoint. */
  'mig-created',
  /** The claim's devices (made MIG ids, MPS daemon ids) recorded PrepareStarted, host unchanged. */
  'prepare-devices-recorded',
  /** One nvidia-smi call that sets a time slice or compute mode ran. */
  'gpu-setting-applied',
  /** An MPS daemon's Deployment was created; not yet ready. */
  'mps-daemon-created',
  /** An MPS daemon of the claim reported ready. */
  'mps-daemon-ready',
  /** The claim's device metadata files were written, its spec not yet. */
  'metadata-written',
  /** The claim's CDI spec was written, its checkpoint entry not yet PrepareCompleted. */
  'cdi-written',
  /** The claim was recorded PrepareCompleted; the kubelet has no answer yet. */
  'prepare-completed',
  // unprepare and rollback
  /** A claim that changed the host was marked UnprepareStarted, nothing undone yet. */
  'unprepare-started',
  /** An MPS daemon's Deployment was deleted; its directory not yet removed. */
  'mps-daemon-deleted',
  /** An MPS daemon is gone and its directory removed. */
  'mps-daemon-stopped',
  /** One nvidia-smi call that restores a time slice or compute mode ran. */
  'gpu-setting-reset',
  /** NVML destroyed one recorded MIG device of the claim. */
  'mig-device-destroyed',
  /** The claim's checkpoint entry was deleted; its spec file not yet. */
  'claim-forgotten',
  /** The claim's spec file was removed; its metadata files not yet. */
  'cdi-removed',
  // recovery (start-up)
  /** The checkpoint was loaded, nothing recovered yet. */
  'recovery-loaded',
  /** A prepared claim's missing spec file was written again. */
  'cdi-restored',
  /** A spec file no claim owns was removed. */
  'orphan-cdi-removed',
  /** An MPS daemon no claim owns was removed. */
  'orphan-mps-removed',
  /** A MIG device no claim owns was destroyed. */
  'orphan-mig-destroyed',
] as const;

export type FailpointName = (typeof FAILPOINTS)[number];

/** What GPU_DRA_FAILPOINTS arms: per name the hits (1-based) that kill, and hits of any point. */
export interface FailpointArming {
  readonly byName: ReadonlyMap<FailpointName, ReadonlySet<number>>;
  readonly anyHit: ReadonlySet<number>;
}

const known = new Set<string>(FAILPOINTS);

function isFailpointName(name: string): name is FailpointName {
  return known.has(name);
}

/** Parses GPU_DRA_FAILPOINTS (see the file comment). Throws CONFIG_INVALID naming the entry. */
export function parseFailpoints(spec: string): FailpointArming {
  const byName = new Map<FailpointName, Set<number>>();
  const anyHit = new Set<number>();
  for (const raw of spec.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const m = /^([a-z*][a-z0-9-]*)(?:@([1-9][0-9]{0,8}))?$/.exec(entry);
    const name = m?.[1];
    const hit = m?.[2] === undefined ? 1 : Number(m[2]);
    if (name === '*' && m?.[2] !== undefined) {
      anyHit.add(hit);
    } else if (name !== undefined && isFailpointName(name)) {
      const hits = byName.get(name) ?? new Set<number>();
      hits.add(hit);
      byName.set(name, hits);
    } else {
      throw new GpuDraError(
        'CONFIG_INVALID',
        `GPU_DRA_FAILPOINTS entry ${JSON.stringify(entry)} is not name, name@N or *@N with a known name ` +
          `(N ≥ 1); known: ${FAILPOINTS.join(', ')}`,
      );
    }
  }
  return { byName, anyHit };
}

/** Does the `hit`-th hit of `name`, the `total`-th hit of any point, kill? */
export function killsAt(arming: FailpointArming, name: FailpointName, hit: number, total: number): boolean {
  return arming.anyHit.has(total) || (arming.byName.get(name)?.has(hit) ?? false);
}

const arming = parseFailpoints(process.env['GPU_DRA_FAILPOINTS'] ?? '');
const traceFile = process.env['GPU_DRA_FAILPOINT_TRACE'] || undefined;
const active = arming.byName.size > 0 || arming.anyHit.size > 0 || traceFile !== undefined;
const hits = new Map<FailpointName, number>();
let total = 0;

export function failpoint(name: FailpointName): void {
  if (!active) return;
  const hit = (hits.get(name) ?? 0) + 1;
  hits.set(name, hit);
  total++;
  if (traceFile !== undefined) fs.appendFileSync(traceFile, `${name}\n`);
  if (killsAt(arming, name, hit, total)) process.kill(process.pid, 'SIGKILL');
}
