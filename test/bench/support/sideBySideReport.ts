// The side-by-side table (issue 12): gpu-dra next to NVIDIA's gpu-kubelet-plugin and the example
// driver, from one run, with our figures as ratios to each anchor's and each target of the issue
// marked met or not met. Targets are reported here, never asserted.
import fs from 'node:fs';
import path from 'node:path';

import { machineLine, resultsDir, type BenchResult, type BenchRun } from '../../../src/bench/results.js';
import type { LatencySummary } from '../../../src/bench/stats.js';
import { missingFromRun, replaceMarkedSection } from './report.js';

export const SIDES = ['gpu-dra', 'nvidia', 'example'] as const;
export type Side = (typeof SIDES)[number];

/** Result ids: `side-<measure>-<side>`; `side-run` holds the run's own facts. */
export const sideId = (measure: string, side: Side): string => `side-${measure}-${side}`;
export const SIDE_RUN_ID = 'side-run';
/** The summaries every side records (each one `side-<measure>-<side>`). */
export const SIDE_MEASURES = [
  'prepare',
  'unprepare',
  'burst8',
  'burst8-wall',
  'burst64',
  'burst64-wall',
  'start-slice',
  'start-registered',
  'kubelet',
] as const;
/** Figures: RSS and CPU. */
export const SIDE_RESOURCES = 'resources';
export const FIG = {
  rssIdle: 'RSS idle, after start (MiB)',
  rssAnonIdle: 'RSS idle, anonymous part (MiB)',
  rssAnonAfter: 'RSS after the cycles, anonymous part (MiB)',
  rssBusy: 'RSS right after the last cycle (MiB)',
  rssAnonBusy: 'RSS right after the last cycle, anonymous part (MiB)',
  rssAfter: 'RSS after the cycles (MiB)',
  rssGrowth: 'RSS growth (MiB)',
  cycles: 'prepare/unprepare cycles',
  cpuPerK: 'CPU seconds per 1000 claims (prepare + unprepare)',
  failed: 'failed prepare/unprepare calls, whole run so far',
} as const;

const START = '<!-- bench:side-by-side:start -->';
const END = '<!-- bench:side-by-side:end -->';

/** Every result id a complete side-by-side run has. */
export function sideRequired(): string[] {
  return [
    SIDE_RUN_ID,
    ...SIDES.flatMap((s) => [...SIDE_MEASURES.map((m) => sideId(m, s)), sideId(SIDE_RESOURCES, s)]),
  ];
}

interface Target {
  readonly text: string;
  readonly met: (ours: number, nvidia: number, example: number) => boolean;
}
const PER_CALL: Target = {
  text: '≤ example and ≤ ½ NVIDIA',
  met: (g, n, e) => g <= e && g <= n / 2,
};
const NOT_LATER_THAN_EXAMPLE: Target = { text: '≤ example', met: (g, _n, e) => g <= e };

interface Row {
  readonly label: string;
  readonly value: (side: Side) => number | undefined;
  readonly target?: Target;
}

const fmt = (v: number | undefined): string =>
  v === undefined || !Number.isFinite(v)
    ? '?'
    : Number.isInteger(v) || Math.abs(v) >= 100
      ? v.toFixed(0)
      : v.toFixed(1);
const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || b === 0 ? '?' : (a / b).toFixed(2);

function rows(run: BenchRun): Row[] {
  const find = (id: string): BenchResult | undefined => run.results.find((r) => r.id === id);
  const stat =
    (measure: string, key: keyof LatencySummary) =>
    (side: Side): number | undefined =>
      find(sideId(measure, side))?.summary?.[key];
  const fig =
    (key: string) =>
    (side: Side): number | undefined => {
      const v = find(sideId(SIDE_RESOURCES, side))?.figures?.[key];
      return typeof v === 'number' ? v : undefined;
    };
  const cycles = fig(FIG.cycles)('gpu-dra');
  return [
    { label: 'prepare over dra.sock, sequential, p50 (ms)', value: stat('prepare', 'p50'), target: PER_CALL },
    { label: 'prepare, sequential, p99 (ms)', value: stat('prepare', 'p99'), target: PER_CALL },
    { label: 'prepare, sequential, max (ms)', value: stat('prepare', 'max') },
    { label: 'unprepare, sequential, p50 (ms)', value: stat('unprepare', 'p50'), target: PER_CALL },
    { label: 'unprepare, sequential, p99 (ms)', value: stat('unprepare', 'p99'), target: PER_CALL },
    { label: 'unprepare, sequential, max (ms)', value: stat('unprepare', 'max') },
    { label: 'burst of 8 concurrent prepares: per call p50 (ms)', value: stat('burst8', 'p50') },
    { label: 'burst of 8: per call p99 (ms)', value: stat('burst8', 'p99') },
    {
      label: 'burst of 8: all done (round wall time), p50 (ms)',
      value: stat('burst8-wall', 'p50'),
      target: NOT_LATER_THAN_EXAMPLE,
    },
    { label: 'burst of 64 concurrent prepares: per call p50 (ms)', value: stat('burst64', 'p50') },
    { label: 'burst of 64: per call p99 (ms)', value: stat('burst64', 'p99') },
    {
      label: 'burst of 64: all done (round wall time), p50 (ms)',
      value: stat('burst64-wall', 'p50'),
      target: NOT_LATER_THAN_EXAMPLE,
    },
    {
      label: 'start → first ResourceSlice, p50 (ms)',
      value: stat('start-slice', 'p50'),
      target: { text: '≤ both anchors', met: (g, n, e) => g <= Math.min(n, e) },
    },
    {
      label: 'start → registration socket answers GetInfo, p50 (ms)',
      value: stat('start-registered', 'p50'),
    },
    {
      label: 'RSS idle, after start (MiB)',
      value: fig(FIG.rssIdle),
      target: { text: '≤ 60 MiB', met: (g) => g <= 60 },
    },
    {
      label: 'RSS idle, anonymous (not file-backed) part (MiB)',
      value: fig(FIG.rssAnonIdle),
    },
    {
      label: `RSS right after ${cycles === undefined ? '?' : String(cycles)} cycles (MiB)`,
      value: fig(FIG.rssBusy),
    },
    {
      label: 'RSS right after the cycles, anonymous part (MiB)',
      value: fig(FIG.rssAnonBusy),
    },
    {
      label: 'RSS after the cycles and 15 s idle (MiB)',
      value: fig(FIG.rssAfter),
    },
    {
      label: 'RSS after the cycles and 15 s idle, anonymous part (MiB)',
      value: fig(FIG.rssAnonAfter),
    },
    {
      label: 'RSS growth: after the cycles and 15 s idle − idle (MiB)',
      value: fig(FIG.rssGrowth),
      target: { text: '< 5 MiB', met: (g) => g < 5 },
    },
    {
      label: 'CPU seconds per 1000 claims (prepare + unprepare)',
      value: fig(FIG.cpuPerK),
      target: { text: '≤ 1.5 × example', met: (g, _n, e) => g <= 1.5 * e },
    },
    { label: 'failed calls, start of the run → the RSS part (expected 0)', value: fig(FIG.failed) },
    {
      label: 'through the kubelet (kubelet-dra): pod bound → prepared, p50 (ms)',
      value: stat('kubelet', 'p50'),
    },
    { label: 'through the kubelet: pod bound → prepared, p99 (ms)', value: stat('kubelet', 'p99') },
  ];
}

/** The table alone (markdown, unaligned: prettier aligns it where it is written). */
export function renderSideBySideTable(run: BenchRun): string {
  const lines = [
    '| measure | gpu-dra | NVIDIA | example | gpu-dra ÷ NVIDIA | gpu-dra ÷ example | target (issue 12) |',
    '| --- | --: | --: | --: | --: | --: | --- |',
  ];
  for (const row of rows(run)) {
    const [g, n, e] = SIDES.map((s) => row.value(s));
    let target = '';
    if (row.target !== undefined) {
      const known = g !== undefined && n !== undefined && e !== undefined;
      target = `${known && row.target.met(g, n, e) ? 'met' : known ? 'not met' : '?'} (${row.target.text})`;
    }
    lines.push(
      `| ${row.label} | ${fmt(g)} | ${fmt(n)} | ${fmt(e)} | ${ratio(g, n)} | ${ratio(g, e)} | ${target} |`,
    );
  }
  return lines.join('\n');
}

/** The whole section: machine and load, the anchors and their flags, how it was measured, the table. */
export function renderSideBySide(run: BenchRun): string {
  const facts = run.results.find((r) => r.id === SIDE_RUN_ID)?.figures ?? {};
  const f = (key: string): string => String(facts[key] ?? '?');
  return [
    `Run: ${machineLine(run)}, ${f('load average at end')} at the end of the side-by-side part.`,
    '',
    `Anchors: NVIDIA's gpu-kubelet-plugin at ${f('nvidia commit')}, the example driver's dra-example-kubeletplugin at ${f('example commit')}. Flags: ${f('flags')}.`,
    '',
    `Counts: ${f('counts')}.`,
    '',
    renderSideBySideTable(run),
  ].join('\n');
}

/**
 * Writes `bench-results/side-by-side.md` always, and the marked section of BENCHMARKS.md when
 * `opts.updateDoc` (a full-size run without failures) and this run measured every figure of the
 * table (a partial or quick run leaves the committed one alone).
 */
export async function writeSideBySide(
  run: BenchRun,
  opts: { readonly updateDoc: boolean; readonly why: string },
): Promise<{ file: string; doc: boolean }> {
  const body = renderSideBySide(run);
  const file = path.join(resultsDir(), 'side-by-side.md');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `# gpu-dra side by side with the anchors\n\n${body}\n`);
  if (!opts.updateDoc) {
    process.stderr.write(`[bench] BENCHMARKS.md side-by-side left as it was: ${opts.why}\n`);
    return { file, doc: false };
  }
  const missing = missingFromRun(run, sideRequired());
  if (missing.length > 0) {
    process.stderr.write(
      `[bench] BENCHMARKS.md side-by-side left as it was: this run lacks ${missing.join(', ')}\n`,
    );
    return { file, doc: false };
  }
  await replaceMarkedSection(START, END, `${START}\n\n${body}\n\n${END}`);
  return { file, doc: true };
}
