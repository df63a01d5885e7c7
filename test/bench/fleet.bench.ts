// `npm run fleet -- --nodes N` (issue 18): N simulated GPU nodes against one real control plane,
// each with its own driver process, as a DaemonSet runs one per node; the first S nodes also run
// the kubelet-dra harness. In order:
//
//   1. cold start: every driver spawned at once → every node's pool complete on the apiserver
//   2. steady state: driver requests per node per minute (the apiserver's audit log, one user
//      per node's driver), writes among them, apiserver_request_total deltas, RSS per driver,
//      CPU per process
//   3. apiserver restart (in place): time until every driver has re-listed and watches again,
//      the busiest 5 s of driver requests per node after it
//   4. K pods created at once, half a whole GPU, half a MIG device: every claim allocated (the
//      scheduler, across all N nodes), those on the kubelet nodes prepared
//
// Measurements, not assertions, except that nothing failed. Settings come from FLEET_ARGS (see
// support/fleetConfig.ts); without it this file skips (it is no part of `npm run bench`).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  CoreV1Api,
  RbacAuthorizationV1Api,
  ResourceV1Api,
  Watch,
  type V1ResourceSlice,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { machineInfo } from '../../src/bench/results.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile } from '../../src/sim/fakeNvml.js';
import {
  ANCHOR_DRIVER,
  AnchorProcess,
  ensureAnchorBinary,
  grantAnchorRbac,
  prepareSimForAnchors,
  type AnchorDirs,
} from '../e2e/support/anchors.js';
import { startCluster, type Cluster } from '../e2e/support/cluster.js';
import { NodeHarness } from '../e2e/support/node.js';
import { ensurePeersBinary } from '../e2e/support/peers.js';
import { httpGet, sleep } from '../e2e/support/process.js';
import { grantDriverRbac } from '../e2e/support/rbac.js';
import { eventually } from '../e2e/support/wait.js';
import { waitForDefaultServiceAccount } from '../e2e/support/workloads.js';
import { fakeNvmlLib } from '../support/sim.js';
import { DRIVER_NAME, spawnDriver } from './support/driverProcess.js';
import {
  countBy,
  driverPeak,
  FLEET_AUDIT_POLICY,
  FLEET_DRIVER_GROUP,
  FLEET_DRIVER_USER_PREFIX,
  firstPerNode,
  parseAudit,
  requestTotals,
  totalsDelta,
  verbResource,
  within,
  WRITE_VERBS,
  type AuditRequest,
} from './support/fleetAudit.js';
import {
  expectedDevices,
  fleetConfigFromEnv,
  fleetNodeProfile,
  type FleetConfig,
} from './support/fleetConfig.js';
import { writeFleetRow, type FleetRow } from './support/fleetReport.js';
import { cpuSeconds, rssKiB, controlPlanePids } from './support/procStats.js';
import { eventTimeMs, pool, waitForPrepareOutcome } from './support/util.js';

const cfg: FleetConfig | undefined = process.env['FLEET_ARGS'] ? fleetConfigFromEnv() : undefined;
const NS = 'fleet';
const BUCKET_MS = 5_000;
/** After the restart, how long the peak is looked for. */
const RESTART_WINDOW_MS = 60_000;

function log(message: string): void {
  process.stderr.write(`[fleet] ${message}\n`);
}

const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** One node's driver, whichever driver it is. */
interface FleetDriverProc {
  readonly node: string;
  pid(): Promise<number>;
  logTail(): string;
  stop(): Promise<void>;
}

describe.skipIf(cfg === undefined)('fleet', () => {
  const c0 = cfg as FleetConfig;
  const driverName = c0.driver === 'nvidia' ? ANCHOR_DRIVER.nvidia : DRIVER_NAME;
  const nodeNames = Array.from({ length: c0.nodes }, (_, i) => `fleet-${String(i).padStart(3, '0')}`);
  const kubeletNodes = nodeNames.slice(0, c0.kubelets);
  let cluster: Cluster;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let dir: string;
  let auditLog: string;
  const harness = new Map<string, NodeHarness>();
  const sims = new Map<string, SimulatedNode>();
  const drivers = new Map<string, FleetDriverProc>();
  const driverPids = new Map<string, number>();
  let expected = { gpus: 0, mig: 0 };
  const failures: string[] = [];
  const row: { -readonly [K in keyof FleetRow]?: FleetRow[K] } = {};
  const cpuByPhase: string[] = [];
  let nvidiaBinary = '';

  /** Audit requests received from `offset` (bytes) on; returns them and the new offset. */
  function readAudit(offset: number): { reqs: AuditRequest[]; offset: number } {
    const buf = fs.readFileSync(auditLog);
    const end = buf.lastIndexOf(0x0a) + 1;
    if (end <= offset) return { reqs: [], offset };
    return { reqs: parseAudit(buf.subarray(offset, end).toString('utf8')), offset: end };
  }
  const auditSize = (): number => (fs.existsSync(auditLog) ? fs.statSync(auditLog).size : 0);

  async function metricsText(): Promise<string> {
    const r = await httpGet(`${cluster.apiserverUrl}/metrics`, cluster.adminToken, 30_000);
    if (r.status !== 200) throw new Error(`apiserver /metrics answered ${String(r.status)}`);
    return r.body;
  }

  /** CPU seconds so far of every process of interest, by pid: the control plane, drivers, kubelets. */
  function cpuSnapshot(): Map<number, { group: string; seconds: number }> {
    const m = new Map<number, { group: string; seconds: number }>();
    const add = (group: string, pid: number): void => {
      const seconds = cpuSeconds(pid);
      if (seconds !== undefined) m.set(pid, { group, seconds });
    };
    for (const [name, pids] of controlPlanePids(cluster.binary, cluster.dir))
      for (const p of pids) add(name, p);
    for (const p of driverPids.values()) add('drivers', p);
    add('bench', process.pid);
    return m;
  }

  /**
   * CPU between two snapshots as % of one core by group, e.g. `apiserver 42, etcd 10, drivers 8
   * (0.08 each)`. A process started in between (the restarted apiserver) counts from zero.
   */
  function cpuLine(
    before: Map<number, { group: string; seconds: number }>,
    after: Map<number, { group: string; seconds: number }>,
    wallMs: number,
  ): string {
    const used = new Map<string, number>();
    for (const [pid, a] of after)
      used.set(a.group, (used.get(a.group) ?? 0) + a.seconds - (before.get(pid)?.seconds ?? 0));
    const order = ['apiserver', 'etcd', 'controller-manager', 'scheduler', 'kubelet-dra', 'drivers', 'bench'];
    return order
      .filter((k) => used.has(k))
      .map((k) => {
        const pct = round(((used.get(k) ?? 0) * 100_000) / wallMs, 1);
        return k === 'drivers'
          ? `drivers ${String(pct)} (${String(round(pct / c0.nodes, 2))} each)`
          : `${k} ${String(pct)}`;
      })
      .join(', ');
  }

  function phaseCpu(
    name: string,
    before: Map<number, { group: string; seconds: number }>,
    wallMs: number,
  ): string {
    const line = cpuLine(before, cpuSnapshot(), wallMs);
    cpuByPhase.push(`${name} (${String(round(wallMs / 1000))} s): ${line}`);
    log(`CPU, ${name}: ${line}`);
    return line;
  }

  async function createReadyNode(name: string): Promise<void> {
    await core.createNode({ body: { metadata: { name, labels: { 'kubernetes.io/hostname': name } } } });
    const node = await core.readNode({ name });
    const now = new Date();
    node.status = {
      // What kubelet-dra gives its own Node, so the scheduler's scores treat both kinds alike.
      capacity: { cpu: '32', memory: '256Gi', pods: '110' },
      allocatable: { cpu: '32', memory: '256Gi', pods: '110' },
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'fleet',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
    };
    await core.replaceNodeStatus({ name, body: node });
  }

  function dirsFor(node: string): AnchorDirs {
    const h = harness.get(node);
    if (h)
      return {
        nodeName: node,
        rootDir: h.rootDir,
        registryDir: h.registryDir,
        pluginsDir: h.pluginsDir,
        cdiDir: h.cdiDir,
      };
    const rootDir = path.join(dir, 'nodes', node);
    const d = {
      nodeName: node,
      rootDir,
      registryDir: path.join(rootDir, 'plugins_registry'),
      pluginsDir: path.join(rootDir, 'plugins'),
      cdiDir: path.join(rootDir, 'cdi'),
    };
    for (const p of [d.registryDir, d.pluginsDir, d.cdiDir]) fs.mkdirSync(p, { recursive: true });
    return d;
  }

  async function launch(node: string): Promise<FleetDriverProc> {
    const sim = sims.get(node) as SimulatedNode;
    const dirs = dirsFor(node);
    const kubeconfig = cluster.makeKubeconfig(
      cluster.tokenFor(FLEET_DRIVER_USER_PREFIX + node),
      `driver-${node}`,
    );
    if (c0.driver === 'gpu-dra') {
      const d = await spawnDriver({
        nodeName: node,
        kubeconfig,
        sim,
        dir: dirs.rootDir,
        registryDir: dirs.registryDir,
        pluginsDir: dirs.pluginsDir,
        cdiRoot: dirs.cdiDir,
        http: false,
      });
      return { node, pid: () => Promise.resolve(d.pid), logTail: () => d.logTail(), stop: () => d.stop() };
    }
    const a = new AnchorProcess(nvidiaBinary, { name: 'nvidia', dirs, sim, kubeconfig, verbosity: 4 });
    a.spawn();
    return { node, pid: () => a.driverPid(), logTail: () => a.logs(60), stop: () => a.stop() };
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-fleet-'));
    auditLog = path.join(dir, 'audit.log');
    const policy = path.join(dir, 'audit-policy.yaml');
    fs.writeFileSync(policy, FLEET_AUDIT_POLICY);
    if (c0.driver === 'nvidia') nvidiaBinary = await ensureAnchorBinary('nvidia');
    cluster = await startCluster({
      binary: await ensurePeersBinary(),
      nodeNames: kubeletNodes,
      extraUsers: nodeNames.map((n) => ({
        name: FLEET_DRIVER_USER_PREFIX + n,
        groups: [FLEET_DRIVER_GROUP],
      })),
      apiserverArgs: [
        `--audit-policy-file=${policy}`,
        `--audit-log-path=${auditLog}`,
        '--audit-log-maxsize=0',
      ],
    });
    log(
      `control plane ready in ${String(cluster.startMs)} ms; ${String(c0.nodes)} nodes, driver ${c0.driver}`,
    );
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = cluster.kubeConfig.makeApiClient(ResourceV1Api);
    // The driver's own role (as deploy/ grants it), bound to the group every node's driver user is in.
    let role: string;
    if (c0.driver === 'gpu-dra') {
      await grantDriverRbac(cluster, { readClaims: true });
      role = 'gpu-dra-driver';
    } else {
      await grantAnchorRbac(cluster);
      role = 'anchor-kubelet-plugin';
    }
    await cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createClusterRoleBinding({
      body: {
        metadata: { name: 'fleet-drivers' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: FLEET_DRIVER_GROUP }],
      },
    });
    for (const [cls, type] of [
      ['fleet-gpu', 'gpu'],
      ['fleet-mig', 'mig'],
    ] as const)
      await resource.createDeviceClass({
        body: {
          metadata: { name: cls },
          spec: {
            selectors: [
              {
                cel: {
                  expression: `device.driver == "${driverName}" && device.attributes["${driverName}"].type == "${type}"`,
                },
              },
            ],
          },
        },
      });
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await waitForDefaultServiceAccount(core, NS);
    for (const [tpl, cls] of [
      ['one-gpu', 'fleet-gpu'],
      ['one-mig', 'fleet-mig'],
    ] as const)
      await resource.createNamespacedResourceClaimTemplate({
        namespace: NS,
        body: {
          metadata: { name: tpl },
          spec: { spec: { devices: { requests: [{ name: 'dev', exactly: { deviceClassName: cls } }] } } },
        },
      });
    // Nodes without a kubelet are made Ready by hand; kubelet-dra registers its own (and wipes
    // its node's slices at start, so it starts before the drivers).
    await pool(nodeNames.slice(c0.kubelets), 8, (n) => createReadyNode(n));
    await Promise.all(
      kubeletNodes.map(async (n) => {
        const h = new NodeHarness(cluster, n);
        harness.set(n, h);
        await h.start();
      }),
    );
    const profile = fleetNodeProfile(await loadProfile(c0.profile), c0.migGpus);
    expected = expectedDevices(profile);
    const lib = fakeNvmlLib();
    await pool(nodeNames, 8, async (n) => {
      const sim = await createSimulatedNode(profile, path.join(dir, 'sims', n), { libPath: lib });
      if (c0.driver === 'nvidia') prepareSimForAnchors(sim);
      sims.set(n, sim);
    });
    log(
      `${String(c0.nodes)} simulated nodes: ${String(expected.gpus)} whole GPUs + ${String(expected.mig)} MIG devices each`,
    );
  }, 3_600_000);

  afterAll(async () => {
    await Promise.all([...drivers.values()].map((d) => d.stop().catch(() => undefined)));
    await Promise.all([...harness.values()].map((h) => h.stop().catch(() => undefined)));
    const info = machineInfo();
    const full: FleetRow = {
      driver: c0.driver,
      nodes: c0.nodes,
      pods: c0.pods,
      kubelets: c0.kubelets,
      measuredAt: new Date().toISOString(),
      machine: `${String(info.cpus)} cores, ${String(info.memoryGiB)} GiB, load ${String(info.loadAverage)} at the end`,
      coldStartS: null,
      steadyWindowS: c0.steadySeconds,
      steadyPerNodeMin: null,
      steadyWrites: null,
      steadyByVerb: '',
      steadySliceWritesMetric: null,
      rssMeanMiB: null,
      rssAnonMeanMiB: null,
      steadyCpu: '',
      restartDownS: null,
      restartBackS: null,
      restartSpreadS: null,
      restartPeakPerNode5s: null,
      restartMaxOneNode5s: null,
      restartWrites: null,
      allocatedS: null,
      preparedS: null,
      preparedCount: null,
      ...row,
      failures: failures.length,
      cpuByPhase: cpuByPhase.join('; '),
      note: failures.length > 0 ? `First failures: ${failures.slice(0, 3).join('; ')}` : '',
    };
    const out = path.resolve(process.env['BENCH_OUT'] ?? 'bench-results');
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, `fleet-${c0.driver}-${String(c0.nodes)}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ config: c0, row: full, failures }, null, 2)}\n`);
    await writeFleetRow(full);
    log(`figures in ${file} and BENCHMARKS.md (Fleet)`);
    if (process.env['GPU_DRA_KEEP_TMP'] === '1') log(`keeping ${dir}`);
    await cluster.stop();
    if (process.env['GPU_DRA_KEEP_TMP'] !== '1') fs.rmSync(dir, { recursive: true, force: true });
  }, 600_000);

  it('cold start: every driver at once → every pool complete', async () => {
    const slices = new Map<string, V1ResourceSlice>();
    const completeAt = new Map<string, number>();
    const check = (node: string): void => {
      if (completeAt.has(node)) return;
      const mine = [...slices.values()].filter(
        (s) => s.spec.nodeName === node && s.spec.driver === driverName,
      );
      const gen = Math.max(0, ...mine.map((s) => s.spec.pool.generation));
      const current = mine.filter((s) => s.spec.pool.generation === gen);
      const want = current[0]?.spec.pool.resourceSliceCount;
      const devices = current.reduce((n, s) => n + (s.spec.devices?.length ?? 0), 0);
      if (want !== undefined && current.length === want && devices > 0) completeAt.set(node, Date.now());
    };
    const list = await resource.listResourceSlice();
    const watch = await new Watch(cluster.kubeConfig).watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { resourceVersion: list.metadata?.resourceVersion, allowWatchBookmarks: false },
      (phase, obj: V1ResourceSlice) => {
        const name = obj.metadata?.name ?? '';
        if (phase === 'DELETED') slices.delete(name);
        else slices.set(name, obj);
        check(obj.spec.nodeName ?? '');
      },
      () => undefined,
    );
    const cpu0 = cpuSnapshot();
    const t0 = Date.now();
    try {
      // Spawned back to back, no waiting in between: a fleet's DaemonSet after an upgrade.
      for (const n of nodeNames) drivers.set(n, await launch(n));
      const spawnedMs = Date.now() - t0;
      for (const [n, d] of drivers) driverPids.set(n, await d.pid());
      await eventually(
        `every pool complete (${String(completeAt.size)} of ${String(c0.nodes)} so far)`,
        () => Promise.resolve(completeAt.size === c0.nodes ? true : undefined),
        Math.max(300_000, c0.nodes * 5_000),
        100,
      );
      const last = Math.max(...completeAt.values());
      row.coldStartS = round((last - t0) / 1000, 2);
      const per = [...completeAt.values()].map((t) => t - t0).sort((a, b) => a - b);
      log(
        `cold start: ${String(c0.nodes)} drivers spawned in ${String(spawnedMs)} ms; first pool complete after ${String(per[0])} ms, median ${String(per[Math.floor(per.length / 2)])} ms, last ${String(last - t0)} ms`,
      );
      phaseCpu('cold start', cpu0, Date.now() - t0);
      // Every node published what its GPUs are (our driver; NVIDIA's names its own way).
      if (c0.driver === 'gpu-dra')
        for (const n of nodeNames) {
          const devs = [...slices.values()]
            .filter((s) => s.spec.nodeName === n)
            .reduce((k, s) => k + (s.spec.devices?.length ?? 0), 0);
          if (devs !== expected.gpus + expected.mig)
            failures.push(
              `${n}: ${String(devs)} devices published, ${String(expected.gpus + expected.mig)} expected`,
            );
        }
      // Drivers on kubelet nodes registered.
      await Promise.all(
        [...harness.values()].map((h) =>
          h.waitForEvent((e) => e.event === 'registered' && e['driver'] === driverName, 120_000),
        ),
      );
    } catch (err) {
      for (const d of [...drivers.values()].slice(0, 3)) log(d.logTail());
      throw err;
    } finally {
      watch.abort();
    }
    expect(failures).toEqual([]);
  });

  it('steady state: requests per node per minute, writes, RSS, CPU', async () => {
    // Let start-up settle (the first re-list, watches opened, the kubelets' first heartbeats).
    await sleep(15_000);
    const offset = auditSize();
    const m0 = requestTotals(await metricsText());
    const cpu0 = cpuSnapshot();
    const t0 = Date.now();
    await sleep(c0.steadySeconds * 1000);
    const t1 = Date.now();
    const m1 = requestTotals(await metricsText());
    row.steadyCpu = phaseCpu('steady', cpu0, t1 - t0);
    const reqs = within(readAudit(offset).reqs, t0, t1);
    const mine = reqs.filter((r) => r.client === 'driver');
    const minutes = (t1 - t0) / 60_000;
    row.steadyPerNodeMin = round(mine.length / c0.nodes / minutes, 2);
    row.steadyWrites = mine.filter((r) => WRITE_VERBS.has(r.verb)).length;
    row.steadyByVerb = countBy(mine, verbResource)
      .map(([k, n]) => `${k} ×${String(n)}`)
      .join(', ');
    const delta = totalsDelta(m0, m1);
    row.steadySliceWritesMetric = [...delta]
      .filter(([k]) => k.endsWith(' resourceslices') && WRITE_VERBS.has(k.split(' ')[0]?.toLowerCase() ?? ''))
      .reduce((n, [, d]) => n + d, 0);
    log(
      `steady (${String(c0.steadySeconds)} s): drivers ${String(mine.length)} requests (${String(row.steadyPerNodeMin)}/node/min), ${String(row.steadyWrites)} writes: ${row.steadyByVerb}`,
    );
    log(
      `steady, every client: ${countBy(reqs, (r) => r.client)
        .map(([k, n]) => `${k} ${String(n)}`)
        .join(', ')}`,
    );
    log(
      `steady, apiserver_request_total deltas: ${[...delta]
        .filter(([, d]) => d > 0)
        .sort((a, b) => b[1] - a[1])
        .map(([k, d]) => `${k} ${String(d)}`)
        .join(', ')}`,
    );
    const rss = [...driverPids.values()].map((p) => rssKiB(p));
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    row.rssMeanMiB = round(mean(rss.map((r) => r.rss)) / 1024);
    row.rssAnonMeanMiB = round(mean(rss.map((r) => r.anon)) / 1024);
    log(
      `RSS per driver: mean ${String(row.rssMeanMiB)} MiB (anon ${String(row.rssAnonMeanMiB)}), max ${String(round(Math.max(...rss.map((r) => r.rss)) / 1024))} MiB; host memory available ${String(round(os.freemem() / 2 ** 30))} GiB of ${String(round(os.totalmem() / 2 ** 30))}`,
    );
    if (row.steadyWrites > 0) failures.push(`steady: ${String(row.steadyWrites)} driver writes`);
    expect(failures).toEqual([]);
  });

  it('apiserver restart: every driver back, no herd', async () => {
    const offset = auditSize();
    const cpu0 = cpuSnapshot();
    // Measured from the old apiserver's exit, when its clients' connections broke: it may take
    // a while to go after SIGTERM (graceful termination), serving all along.
    const { stoppedAt, exitedAt, readyAt } = await cluster.restartApiserver();
    row.restartDownS = round((readyAt - exitedAt) / 1000, 2);
    log(
      `apiserver restarted: exited ${String(exitedAt - stoppedAt)} ms after SIGTERM, the new one ready ${String(row.restartDownS)} s after that`,
    );
    let back = new Map<string, number>();
    let reqs: AuditRequest[] = [];
    await eventually(
      'every driver watching its ResourceSlices again',
      () => {
        reqs = readAudit(offset).reqs;
        // A driver is back once its new ResourceSlice watch is open. gpu-dra opens it only after
        // a successful re-list; client-go drivers (NVIDIA's) may stream the list in the watch
        // itself (WatchList), so no list is required here.
        back = firstPerNode(
          reqs,
          exitedAt,
          (r) =>
            r.verb === 'watch' && r.resource === 'resourceslices' && (r.code === undefined || r.code === 200),
        );
        return Promise.resolve(back.size === c0.nodes ? true : undefined);
      },
      300_000,
      500,
    );
    const times = [...back.values()];
    row.restartBackS = round((Math.max(...times) - exitedAt) / 1000, 2);
    row.restartSpreadS = round((Math.max(...times) - Math.min(...times)) / 1000, 2);
    // Let the window after the restart fill before the peak is read.
    const windowEnd = readyAt + RESTART_WINDOW_MS;
    await sleep(Math.max(0, windowEnd - Date.now()));
    phaseCpu('apiserver restart', cpu0, Date.now() - exitedAt);
    reqs = readAudit(offset).reqs;
    const peak = driverPeak(reqs, exitedAt, windowEnd, BUCKET_MS, c0.nodes);
    row.restartPeakPerNode5s = peak.perNode;
    row.restartMaxOneNode5s = peak.maxOneNode;
    const after = within(reqs, exitedAt, windowEnd).filter((r) => r.client === 'driver');
    row.restartWrites = after.filter((r) => WRITE_VERBS.has(r.verb)).length;
    const firsts = times.map((t) => t - exitedAt).sort((a, b) => a - b);
    // One node's requests around the restart, to show what a reconnect costs.
    const first = nodeNames[0] as string;
    log(
      `restart, ${first}'s requests (ms after the old apiserver exited): ${reqs
        .filter((r) => r.node === first && r.at >= exitedAt && r.at < windowEnd)
        .map((r) => `+${String(r.at - exitedAt)} ${r.verb} ${r.resource} ${String(r.code ?? 'open')}`)
        .join(', ')}`,
    );
    log(
      `restart: every driver back ${String(row.restartBackS)} s after the old apiserver exited, the new one ready after ${String(row.restartDownS)} s (first ${String(firsts[0])} ms, median ${String(firsts[Math.floor(firsts.length / 2)])} ms); busiest 5 s: ${String(peak.total)} driver requests (${String(peak.perNode)}/node) at +${String(peak.atMs)} ms, one node at most ${String(peak.maxOneNode)}; ${String(after.length)} driver requests from the exit to ${String(RESTART_WINDOW_MS / 1000)} s after ready: ${countBy(
        after,
        verbResource,
      )
        .map(([k, n]) => `${k} ×${String(n)}`)
        .join(', ')}`,
    );
    // Every pool still complete (the slices live in etcd; the drivers must not have rewritten them).
    const l = await resource.listResourceSlice();
    const nodesWithSlices = new Set(
      l.items.filter((s) => s.spec.driver === driverName).map((s) => s.spec.nodeName),
    );
    if (nodesWithSlices.size !== c0.nodes)
      failures.push(`after the restart only ${String(nodesWithSlices.size)} nodes have slices`);
    if (row.restartWrites > 0) failures.push(`restart: ${String(row.restartWrites)} driver writes`);
    expect(failures).toEqual([]);
  });

  it('K pods at once: every claim allocated, those on kubelet nodes prepared', async () => {
    if (c0.pods === 0) return;
    const names = Array.from({ length: c0.pods }, (_, i) => `p-${String(i).padStart(5, '0')}`);
    const cpu0 = cpuSnapshot();
    const t0 = Date.now();
    await pool(names, 32, async (name, i) => {
      // No nodeSelector: the scheduler spreads them over all N nodes; even ones a GPU, odd a MIG device.
      await core.createNamespacedPod({
        namespace: NS,
        body: {
          metadata: { name, namespace: NS },
          spec: {
            containers: [
              { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'dev' }] } },
            ],
            resourceClaims: [{ name: 'dev', resourceClaimTemplateName: i % 2 === 0 ? 'one-gpu' : 'one-mig' }],
          },
        },
      });
    });
    const createdMs = Date.now() - t0;
    let allocatedAt = 0;
    try {
      await eventually(
        `${String(c0.pods)} claims allocated`,
        async () => {
          const claims = await resource.listNamespacedResourceClaim({ namespace: NS });
          const n = claims.items.filter((cl) => cl.status?.allocation !== undefined).length;
          if (n < c0.pods) return undefined;
          allocatedAt = Date.now();
          return true;
        },
        Math.max(300_000, c0.pods * 1_000),
        500,
      );
    } catch (err) {
      const pods = await core.listNamespacedPod({ namespace: NS });
      const unbound = pods.items.filter((p) => !p.spec?.nodeName).length;
      failures.push(`${String(unbound)} of ${String(c0.pods)} pods not scheduled: ${String(err)}`);
      throw err;
    }
    row.allocatedS = round((allocatedAt - t0) / 1000, 2);
    const pods = await core.listNamespacedPod({ namespace: NS });
    const onKubelets = pods.items.filter((p) => harness.has(p.spec?.nodeName ?? ''));
    const outcomes = await Promise.all(
      onKubelets.map((p) =>
        waitForPrepareOutcome(
          harness.get(p.spec?.nodeName ?? '') as NodeHarness,
          `${NS}/${p.metadata?.name ?? ''}`,
          300_000,
        ),
      ),
    );
    let lastPrepared = t0;
    for (const [k, e] of outcomes.entries()) {
      if (e.event !== 'prepared')
        failures.push(`prepare ${onKubelets[k]?.metadata?.name ?? ''}: ${String(e['error'])}`);
      else lastPrepared = Math.max(lastPrepared, eventTimeMs(e));
    }
    row.preparedCount = outcomes.filter((e) => e.event === 'prepared').length;
    row.preparedS = round((lastPrepared - t0) / 1000, 2);
    phaseCpu(`${String(c0.pods)} pods`, cpu0, Date.now() - t0);
    const perNode = new Map<string, number>();
    for (const p of pods.items)
      perNode.set(p.spec?.nodeName ?? '', (perNode.get(p.spec?.nodeName ?? '') ?? 0) + 1);
    const spread = [...perNode.values()];
    log(
      `${String(c0.pods)} pods created in ${String(createdMs)} ms; all claims allocated after ${String(row.allocatedS)} s; ${String(row.preparedCount)} on ${String(c0.kubelets)} kubelet nodes prepared after ${String(row.preparedS)} s; pods per node ${String(Math.min(...spread))}..${String(Math.max(...spread))} over ${String(perNode.size)} nodes`,
    );
    expect(failures).toEqual([]);
  });
});
