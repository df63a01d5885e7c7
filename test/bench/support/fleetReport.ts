// The "Fleet" table of BENCHMARKS.md. Each `npm run fleet` run measures one fleet size; the
// section keeps every size's row as JSON in a comment beside the table, so a run replaces only
// its own row (driver, nodes) and a fresh clone keeps the others.
import fs from 'node:fs';
import path from 'node:path';

import { repoRoot } from '../../e2e/support/peers.js';
import { replaceMarkedSection } from './report.js';

export const FLEET_START = '<!-- fleet:start -->';
export const FLEET_END = '<!-- fleet:end -->';
const DATA = /<!-- fleet:data (.*?) -->/s;

/** One run's figures: seconds, MiB, requests; `null` where a phase did not complete. */
export interface FleetRow {
  readonly driver: string;
  readonly nodes: number;
  readonly pods: number;
  readonly kubelets: number;
  readonly measuredAt: string;
  readonly machine: string;
  /** Spawn of the first driver → every node's pool complete. */
  readonly coldStartS: number | null;
  readonly steadyWindowS: number;
  /** Driver requests per node per minute in the steady window, and how many were writes. */
  readonly steadyPerNodeMin: number | null;
  readonly steadyWrites: number | null;
  /** `verb resource ×count` of the drivers in the window. */
  readonly steadyByVerb: string;
  /** resourceslices writes by anyone, from apiserver_request_total (only drivers write slices). */
  readonly steadySliceWritesMetric: number | null;
  readonly rssMeanMiB: number | null;
  readonly rssAnonMeanMiB: number | null;
  /** CPU in the steady window, % of one core: apiserver, etcd, all drivers together. */
  readonly steadyCpu: string;
  /** The old apiserver exited (connections broke) → the new one ready. */
  readonly restartDownS: number | null;
  /** The old apiserver exited → every driver has a new ResourceSlice watch open (gpu-dra: after a re-list). */
  readonly restartBackS: number | null;
  /** First driver back → last driver back: how spread out the reconnects are. */
  readonly restartSpreadS: number | null;
  /** The busiest 5 s bucket after the restart, driver requests per node (steady: per 5 s). */
  readonly restartPeakPerNode5s: number | null;
  readonly restartMaxOneNode5s: number | null;
  readonly restartWrites: number | null;
  /** K pods created at once → every claim allocated / every claim on a kubelet node prepared. */
  readonly allocatedS: number | null;
  readonly preparedS: number | null;
  readonly preparedCount: number | null;
  readonly failures: number;
  /** Where it stopped scaling, what bound first (CPU per process over each phase). */
  readonly cpuByPhase: string;
  readonly note: string;
}

export function readFleetRows(doc: string): FleetRow[] {
  const m = DATA.exec(doc);
  if (m?.[1] === undefined) return [];
  const rows: unknown = JSON.parse(m[1]);
  return Array.isArray(rows) ? (rows as FleetRow[]) : [];
}

/** `rows` with `row` in place of the one of the same driver and size, ordered by driver, size. */
export function mergeFleetRow(rows: readonly FleetRow[], row: FleetRow): FleetRow[] {
  return [...rows.filter((r) => r.driver !== row.driver || r.nodes !== row.nodes), row].sort(
    (a, b) => a.driver.localeCompare(b.driver) || a.nodes - b.nodes,
  );
}

const v = (x: number | null, unit = ''): string => (x === null ? 'n/a' : `${String(x)}${unit}`);

export function renderFleet(rows: readonly FleetRow[]): string {
  const head = [
    'driver, N nodes',
    'cold start: all slices',
    'steady: driver req/node/min (writes)',
    'steady: driver requests',
    'RSS/driver (anon)',
    'apiserver restart: new one ready, all drivers back (after the old one exited)',
    'restart peak req/node/5 s (max one node)',
    'K pods: allocated, prepared',
    'failures',
  ];
  const lines = rows.map((r) =>
    [
      `${r.driver}, ${String(r.nodes)}`,
      v(r.coldStartS, ' s'),
      `${v(r.steadyPerNodeMin)} (${v(r.steadyWrites)}; slice writes in apiserver_request_total: ${v(r.steadySliceWritesMetric)}) over ${String(r.steadyWindowS)} s`,
      r.steadyByVerb || 'none',
      `${v(r.rssMeanMiB, ' MiB')} (${v(r.rssAnonMeanMiB, ' MiB')})`,
      `${v(r.restartDownS, ' s')}, ${v(r.restartBackS, ' s')} (spread ${v(r.restartSpreadS, ' s')}; writes ${v(r.restartWrites)})`,
      `${v(r.restartPeakPerNode5s)} (${v(r.restartMaxOneNode5s)})`,
      `K = ${String(r.pods)}: ${v(r.allocatedS, ' s')}, ${v(r.preparedCount)} on ${String(r.kubelets)} kubelet nodes in ${v(r.preparedS, ' s')}`,
      String(r.failures),
    ]
      .map((c) => c.replaceAll('|', '\\|'))
      .join(' | '),
  );
  const details = rows.map(
    (r) =>
      `- ${r.driver}, N = ${String(r.nodes)} (${r.measuredAt.slice(0, 16)}Z, ${r.machine}): CPU by phase, % of one core: ${r.cpuByPhase}.${r.note ? ` ${r.note}` : ''}`,
  );
  return [
    FLEET_START,
    `<!-- fleet:data ${JSON.stringify(rows)} -->`,
    '',
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...lines.map((l) => `| ${l} |`),
    '',
    ...details,
    '',
    FLEET_END,
  ].join('\n');
}

/** Puts `row` into BENCHMARKS.md's fleet section, keeping the other sizes' rows. */
export async function writeFleetRow(row: FleetRow): Promise<void> {
  const doc = fs.readFileSync(path.join(repoRoot, 'BENCHMARKS.md'), 'utf8');
  await replaceMarkedSection(FLEET_START, FLEET_END, renderFleet(mergeFleetRow(readFleetRows(doc), row)));
}
