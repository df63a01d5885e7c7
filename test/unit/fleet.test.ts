// The fleet harness's pure parts (issue 18): its arguments, the node it simulates, the audit-log
// attribution the per-node request figures rest on, and the BENCHMARKS.md rows it keeps.
import { describe, expect, it } from 'vitest';

import { loadProfile } from '../../src/sim/fakeNvml.js';
import {
  classify,
  driverPeak,
  firstPerNode,
  FLEET_DRIVER_USER_PREFIX,
  parseAudit,
  requestTotals,
  totalsDelta,
} from '../bench/support/fleetAudit.js';
import {
  expectedDevices,
  FleetArgsError,
  fleetConfigFromEnv,
  fleetNodeProfile,
  parseFleetArgs,
} from '../bench/support/fleetConfig.js';
import { mergeFleetRow, readFleetRows, renderFleet, type FleetRow } from '../bench/support/fleetReport.js';

function argsError(argv: string[]): FleetArgsError {
  try {
    parseFleetArgs(argv);
  } catch (err) {
    if (err instanceof FleetArgsError) return err;
    throw err;
  }
  throw new Error(`${argv.join(' ')} parsed`);
}

describe('fleet arguments', () => {
  it('fills defaults from --nodes', () => {
    expect(parseFleetArgs(['--nodes', '10'])).toEqual({
      nodes: 10,
      profile: 'h100-8x',
      pods: 40,
      kubelets: 5,
      driver: 'gpu-dra',
      migGpus: 2,
      steadySeconds: 120,
    });
    expect(parseFleetArgs(['--nodes=3', '--kubelets=0', '--driver=nvidia', '--pods=0']).kubelets).toBe(0);
    expect(parseFleetArgs(['--nodes', '2']).kubelets).toBe(2);
  });

  it.each([
    [['--profile', 'h100-8x'], '--nodes', 'is required'],
    [['--nodes', '0'], '--nodes', 'between 1 and 500'],
    [['--nodes', 'ten'], '--nodes', 'whole number'],
    [['--nodes', '5', '--kubelets', '6'], '--kubelets', 'between 0 and 5'],
    [['--nodes', '5', '--driver', 'amd'], '--driver', 'gpu-dra, nvidia'],
    [['--nodes', '5', '--profile', 'h200'], '--profile', 'known: '],
    [['--nodes', '5', '--steady-s', '1'], '--steady-s', 'between 10'],
    [['--node', '5'], '--node', 'Unknown option'],
    [['--nodes'], '--nodes', 'argument missing'],
  ])('%j fails naming %s', (argv, flag, text) => {
    const err = argsError(argv);
    expect(err.flag).toBe(flag);
    expect(err.message).toContain(text);
  });

  it('reads the same arguments back from FLEET_ARGS', () => {
    expect(fleetConfigFromEnv({ FLEET_ARGS: JSON.stringify(['--nodes', '7']) }).nodes).toBe(7);
    expect(() => fleetConfigFromEnv({})).toThrow(/FLEET_ARGS/);
  });
});

describe('fleet node', () => {
  it('puts the last GPUs in MIG mode, filled with one-slice instances', async () => {
    const base = await loadProfile('h100-8x');
    const node = fleetNodeProfile(base, 2);
    expect(expectedDevices(node)).toEqual({ gpus: 6, mig: 14 });
    const last = node.gpus[7];
    expect(last?.migMode).toEqual({ current: 1, pending: 1 });
    expect(new Set(last?.migDevices?.map((m) => m.placement.start))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6]));
    expect(new Set(node.gpus.flatMap((g) => g.migDevices ?? []).map((m) => m.uuid)).size).toBe(14);
    expect(expectedDevices(fleetNodeProfile(base, 0))).toEqual({ gpus: 8, mig: 0 });
    expect(() => fleetNodeProfile(base, 9)).toThrow(/--mig-gpus/);
  });
});

const line = (o: Record<string, unknown>): string => JSON.stringify(o);
const received = (
  id: string,
  at: string,
  user: string,
  verb: string,
  resource: string,
  ua = 'gpu-dra',
): string =>
  line({
    auditID: id,
    stage: 'RequestReceived',
    verb,
    user: { username: user },
    userAgent: ua,
    objectRef: { resource },
    requestReceivedTimestamp: at,
  });
const complete = (id: string, code: number): string =>
  line({ auditID: id, stage: 'ResponseComplete', responseStatus: { code } });

describe('fleet audit attribution', () => {
  it('tells the drivers (one user per node) from the kubelets, the scheduler and controllers', () => {
    expect(classify(`${FLEET_DRIVER_USER_PREFIX}fleet-007`, 'gpu-dra')).toEqual({
      client: 'driver',
      node: 'fleet-007',
    });
    expect(classify('system:node:fleet-000', 'kubelet-dra').client).toBe('kubelet');
    expect(classify('admin', 'kube-scheduler/v1.37.2 (linux/amd64)').client).toBe('scheduler');
    expect(classify('admin', 'kube-controller-manager/v1.37.2').client).toBe('controller-manager');
    expect(classify('admin', 'node-fetch').client).toBe('bench');
  });

  it('counts a request once, with the code of its completion, and skips a torn last line', () => {
    const a = `${FLEET_DRIVER_USER_PREFIX}a`;
    const text = [
      received('1', '2026-12-02T10:00:00.000000Z', a, 'list', 'resourceslices'),
      complete('1', 200),
      received('2', '2026-12-02T10:00:01.500000Z', a, 'watch', 'resourceslices'),
      received('3', '2026-12-02T10:00:00.500000Z', 'system:node:a', 'update', 'nodes'),
      complete('3', 409),
      '{"auditID":"4","stage":"RequestRec',
    ].join('\n');
    const reqs = parseAudit(text);
    expect(reqs.map((r) => [r.id, r.client, r.node, r.verb, r.code])).toEqual([
      ['1', 'driver', 'a', 'list', 200],
      ['3', 'kubelet', undefined, 'update', 409],
      ['2', 'driver', 'a', 'watch', undefined],
    ]);
    expect(firstPerNode(reqs, 0, (r) => r.verb === 'watch' && r.code === undefined).get('a')).toBe(
      Date.parse('2026-12-02T10:00:01.500Z'),
    );
  });

  it('finds the busiest 5 s bucket of driver requests, per node and for one node', () => {
    const t = (s: number): string => new Date(Date.UTC(2026, 11, 2, 10, 0, s)).toISOString();
    const lines: string[] = [];
    let id = 0;
    // Nodes a and b: one request each in the first bucket; a sends 3 more in the third.
    for (const [node, s] of [
      ['a', 1],
      ['b', 2],
      ['a', 11],
      ['a', 12],
      ['a', 13],
      ['b', 30],
    ] as const)
      lines.push(received(String(id++), t(s), FLEET_DRIVER_USER_PREFIX + node, 'list', 'resourceslices'));
    lines.push(received(String(id++), t(11), 'system:node:a', 'update', 'nodes'));
    const from = Date.UTC(2026, 11, 2, 10, 0, 0);
    expect(driverPeak(parseAudit(lines.join('\n')), from, from + 20_000, 5_000, 2)).toEqual({
      atMs: 10_000,
      total: 3,
      perNode: 1.5,
      maxOneNode: 3,
    });
  });

  it('sums apiserver_request_total by verb and resource and takes deltas', () => {
    const metrics = [
      '# TYPE apiserver_request_total counter',
      'apiserver_request_total{code="200",component="apiserver",dry_run="",group="resource.k8s.io",resource="resourceslices",scope="cluster",subresource="",verb="LIST",version="v1"} 12',
      'apiserver_request_total{code="500",component="apiserver",dry_run="",group="resource.k8s.io",resource="resourceslices",scope="cluster",subresource="",verb="LIST",version="v1"} 1',
      'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="nodes",scope="resource",subresource="status",verb="PUT",version="v1"} 4',
    ].join('\n');
    const after = requestTotals(metrics);
    expect(after).toEqual(
      new Map([
        ['LIST resourceslices', 13],
        ['PUT nodes/status', 4],
      ]),
    );
    expect(totalsDelta(new Map([['LIST resourceslices', 10]]), after).get('LIST resourceslices')).toBe(3);
  });
});

describe('fleet report', () => {
  const row = (driver: string, nodes: number, coldStartS: number): FleetRow => ({
    driver,
    nodes,
    pods: 4 * nodes,
    kubelets: 5,
    measuredAt: '2026-12-02T23:00:00.000Z',
    machine: '2 cores',
    coldStartS,
    steadyWindowS: 120,
    steadyPerNodeMin: 1,
    steadyWrites: 0,
    steadyByVerb: 'list resourceslices ×20',
    steadySliceWritesMetric: 0,
    rssMeanMiB: 70,
    rssAnonMeanMiB: 24,
    steadyCpu: 'apiserver 2',
    restartDownS: 3,
    restartBackS: 4,
    restartSpreadS: 1,
    restartPeakPerNode5s: 1,
    restartMaxOneNode5s: 2,
    restartWrites: 0,
    allocatedS: 2,
    preparedS: 1,
    preparedCount: 10,
    failures: 0,
    cpuByPhase: 'steady: apiserver 2',
    note: '',
  });

  it('keeps the other sizes when a run replaces its own row', () => {
    const rows = [row('gpu-dra', 50, 9), row('gpu-dra', 10, 2)].reduce<FleetRow[]>(mergeFleetRow, []);
    const doc = `# x\n\n${renderFleet(rows)}\n`;
    const next = mergeFleetRow(readFleetRows(doc), row('gpu-dra', 10, 3));
    expect(next.map((r) => [r.nodes, r.coldStartS])).toEqual([
      [10, 3],
      [50, 9],
    ]);
    expect(renderFleet(next)).toContain('| gpu-dra, 10 | 3 s |');
    expect(readFleetRows('no section')).toEqual([]);
  });
});
