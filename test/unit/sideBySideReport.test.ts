import { describe, expect, it } from 'vitest';

import type { BenchResult, BenchRun } from '../../src/bench/results.js';
import { summarize } from '../../src/bench/stats.js';
import {
  FIG,
  SIDE_RESOURCES,
  SIDES,
  renderSideBySideTable,
  sideId,
  sideRequired,
} from '../bench/support/sideBySideReport.js';

const at = '2026-12-02T00:00:01.000Z';
const run = (results: BenchResult[]): BenchRun => ({
  startedAt: '2026-12-02T00:00:00.000Z',
  machine: { cpus: 2, cpuModel: 'x', memoryGiB: 1, node: 'v20', platform: 'linux', loadAverage: 1 },
  results,
});
const latency = (measure: string, side: (typeof SIDES)[number], v: number): BenchResult => ({
  id: sideId(measure, side),
  name: measure,
  unit: 'ms',
  summary: summarize([v]),
  measuredAt: at,
});
const row = (table: string, label: string): string[] =>
  (table.split('\n').find((l) => l.startsWith(`| ${label}`)) ?? '').split('|').map((c) => c.trim());

describe('side-by-side table', () => {
  it('shows our figure as ratios to each anchor and marks the target', () => {
    const t = renderSideBySideTable(
      run([
        latency('prepare', 'gpu-dra', 2),
        latency('prepare', 'nvidia', 5),
        latency('prepare', 'example', 4),
      ]),
    );
    expect(row(t, 'prepare over dra.sock, sequential, p50').slice(2, 8)).toEqual([
      '2',
      '5',
      '4',
      '0.40',
      '0.50',
      'met (≤ example and ≤ ½ NVIDIA)',
    ]);
  });

  it('marks a target not met when we are slower than half NVIDIA, and unknown without a figure', () => {
    const t = renderSideBySideTable(
      run([
        latency('prepare', 'gpu-dra', 3),
        latency('prepare', 'nvidia', 5),
        latency('prepare', 'example', 4),
      ]),
    );
    expect(row(t, 'prepare over dra.sock, sequential, p50')[7]).toMatch(/^not met/);
    expect(row(t, 'unprepare, sequential, p50')[7]).toMatch(/^\?/);
  });

  it('reads RSS and CPU from the resources figures', () => {
    const res = (side: (typeof SIDES)[number], idle: number, cpu: number): BenchResult => ({
      id: sideId(SIDE_RESOURCES, side),
      name: 'r',
      unit: '',
      figures: { [FIG.rssIdle]: idle, [FIG.cpuPerK]: cpu },
      measuredAt: at,
    });
    const t = renderSideBySideTable(
      run([res('gpu-dra', 59.5, 3.5), res('nvidia', 50, 9), res('example', 40, 2)]),
    );
    expect(row(t, 'RSS idle')[7]).toBe('met (≤ 60 MiB)');
    expect(row(t, 'CPU seconds per 1000 claims')[7]).toBe('not met (≤ 1.5 × example)');
  });

  it('requires every measure of every driver', () => {
    expect(sideRequired()).toContain(sideId('burst64-wall', 'example'));
    expect(sideRequired()).toContain(sideId(SIDE_RESOURCES, 'nvidia'));
  });
});
