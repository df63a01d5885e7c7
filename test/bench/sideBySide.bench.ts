// `npm run bench`, third part (issue 12): gpu-dra side by side with the anchors, NVIDIA's
// gpu-kubelet-plugin and the example driver, in one run against one control plane. Each driver
// runs on its own Node objects with its own simulated node of the same profile (64 H100s, so a
// burst of 64 exclusive claims finds 64 distinct GPUs), under its own driver name, DeviceClass
// and pool.
//
//   1. start → first ResourceSlice and start → registration socket answering GetInfo
//   2. over dra.sock (the typed KubeletClient, no kubelet): sequential prepare and unprepare,
//      bursts of 8 and of 64 concurrent single-claim prepares, CPU seconds of the sequential runs
//   3. RSS of a fresh process, idle and after many prepare/unprepare cycles
//   4. through the kubelet (kubelet-dra), pods bound by the real scheduler: bound → prepared
//
// Timed parts run INTERLEAVED in rounds (each round every driver once, the order rotating), so
// drift on the shared box hits all three alike; percentiles are over the samples of all rounds
// pooled. Only functional assertions (every prepare succeeded); targets are reported. Knobs
// (environment, defaults for the full run; see BENCHMARKS.md): BENCH_SIDE_ROUNDS (5),
// BENCH_SIDE_SEQUENTIAL (200 per round), BENCH_SIDE_BURSTS8 (8 per round), BENCH_SIDE_BURSTS64
// (2 per round), BENCH_SIDE_MEMORY_CYCLES (10000), BENCH_SIDE_KUBELET_CLAIMS (64, in pods of 8).
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { CoreV1Api, ResourceV1Api, Watch, type V1Pod, type V1ResourceSlice } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { continueRun, mergeResults, resultsDir, type BenchResult } from '../../src/bench/results.js';
import { summarize } from '../../src/bench/stats.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import type { ClaimRef } from '../../src/kubelet/proto.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import {
  ANCHOR_DRIVER,
  ANCHOR_USER,
  AnchorProcess,
  ensureAnchorBinary,
  grantAnchorRbac,
  prepareSimForAnchors,
  type AnchorDirs,
  type AnchorName,
} from '../e2e/support/anchors.js';
import { startCluster, type Cluster } from '../e2e/support/cluster.js';
import { NodeHarness } from '../e2e/support/node.js';
import { ensurePeersBinary, repoRoot } from '../e2e/support/peers.js';
import { sleep } from '../e2e/support/process.js';
import { grantDriverRbac } from '../e2e/support/rbac.js';
import { eventually } from '../e2e/support/wait.js';
import { createAllocatedClaim, waitForDefaultServiceAccount } from '../e2e/support/workloads.js';
import { naturalCompare } from '../../src/util/naturalCompare.js';
import { fakeNvmlLib } from '../support/sim.js';
import { h100Profile } from './support/bigProfile.js';
import { DRIVER_NAME, spawnDriver } from './support/driverProcess.js';
import {
  FIG,
  SIDE_RESOURCES,
  SIDE_RUN_ID,
  SIDES,
  sideId,
  writeSideBySide,
  renderSideBySideTable,
  type Side,
} from './support/sideBySideReport.js';
import { createClaimPod, envInt, eventTimeMs, pool, waitForPrepareOutcome } from './support/util.js';

const ROUNDS = envInt('BENCH_SIDE_ROUNDS', 5);
const SEQUENTIAL = envInt('BENCH_SIDE_SEQUENTIAL', 200);
const BURSTS8 = envInt('BENCH_SIDE_BURSTS8', 8);
const BURSTS64 = envInt('BENCH_SIDE_BURSTS64', 2);
const MEMORY_CYCLES = envInt('BENCH_SIDE_MEMORY_CYCLES', 10_000);
const KUBELET_CLAIMS = envInt('BENCH_SIDE_KUBELET_CLAIMS', 64);
/** Idle time before the second RSS sample after the memory cycles. */
const IDLE_AFTER_CYCLES_MS = 15_000;
/** Whether every count is at its default: only such a run rewrites the table in BENCHMARKS.md. */
const FULL_SIZE = [
  'BENCH_SIDE_ROUNDS',
  'BENCH_SIDE_SEQUENTIAL',
  'BENCH_SIDE_BURSTS8',
  'BENCH_SIDE_BURSTS64',
  'BENCH_SIDE_MEMORY_CYCLES',
  'BENCH_SIDE_KUBELET_CLAIMS',
].every((k) => (process.env[k] ?? '') === '');
const GPUS = 64;
const KUBELET_BATCH = 8;
/** Distinct claims per driver for the dra.sock part: claim i is on GPU i mod 64. */
const CLAIMS = Math.min(256, Math.ceil(Math.max(SEQUENTIAL, GPUS) / GPUS) * GPUS);
/** Both Go drivers default to qps 5 / burst 10, which throttles every prepare. */
const GO_CLIENT_FLAGS = ['--kube-api-qps=1000', '--kube-api-burst=1000'];
/** Each driver's log verbosity as its Helm chart deploys it. */
const ANCHOR_VERBOSITY: Readonly<Record<AnchorName, number>> = { nvidia: 4, example: 0 };

const DRIVER: Readonly<Record<Side, string>> = {
  'gpu-dra': DRIVER_NAME,
  nvidia: ANCHOR_DRIVER.nvidia,
  example: ANCHOR_DRIVER.example,
};
/** The example driver publishes no `type` attribute; the two GPU drivers mark GPUs with one. */
const CLASS_SELECTOR: Readonly<Record<Side, string>> = {
  'gpu-dra': `device.driver == "${DRIVER_NAME}" && device.attributes["${DRIVER_NAME}"].type == "gpu"`,
  nvidia: `device.driver == "${ANCHOR_DRIVER.nvidia}" && device.attributes["${ANCHOR_DRIVER.nvidia}"].type == "gpu"`,
  example: `device.driver == "${ANCHOR_DRIVER.example}"`,
};
const deviceClass = (side: Side): string => `side-${side}`;
const directNode = (side: Side): string => `side-${side}`;
const startNodeName = (side: Side): string => `side-start-${side}`;
const kubeletNode = (side: Side): string => `side-k-${side}`;
const directNs = (side: Side): string => `side-${side}`;
const kubeletNs = (side: Side): string => `side-k-${side}`;

function log(message: string): void {
  process.stderr.write(`[bench side-by-side] ${message}\n`);
}

const round = (v: number, digits = 1): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** Each round starts with the next driver, so none always runs first (or right after another). */
const order = (r: number): Side[] => SIDES.map((_, i) => SIDES[(i + r) % SIDES.length] as Side);

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** A /proc/<pid>/status memory line in MiB: VmRSS, or its RssAnon (private) / RssFile part. */
function rssMiB(pid: number, field: 'VmRSS' | 'RssAnon' | 'RssFile' = 'VmRSS'): number {
  const status = fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  const kb = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1];
  if (kb === undefined) throw new Error(`no ${field} for pid ${String(pid)}`);
  return round(Number(kb) / 1024, 1);
}

/** The commit build.sh pins for an anchor (what the report names). */
function anchorCommit(name: AnchorName): string {
  const script = fs.readFileSync(path.join(repoRoot, 'test', 'anchors', 'build.sh'), 'utf8');
  return new RegExp(`${name}\\) echo [^;]*?"([0-9a-f]{40}) `).exec(script)?.[1] ?? 'unknown';
}

type DirectMeasure = 'prepare' | 'unprepare' | 'burst8' | 'burst8-wall' | 'burst64' | 'burst64-wall';

/** One driver process of the bench, whichever driver it is. */
interface Running {
  readonly side: Side;
  readonly nodeName: string;
  readonly draSocket: string;
  readonly registrationSocket: string;
  readonly spawnedAt: number;
  /** The driver's own pid (behind unshare for NVIDIA's). */
  pid(): Promise<number>;
  logTail(): string;
  stop(): Promise<void>;
}

describe('side by side: gpu-dra, NVIDIA’s gpu-kubelet-plugin, the example driver', () => {
  let cluster: Cluster | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let dir: string;
  const sims = new Map<Side, SimulatedNode>();
  const binaries = new Map<AnchorName, string>();
  const running = new Set<Running>();
  const nodes: NodeHarness[] = [];
  /** Failed calls, every driver's; the tests assert none after recording their figures. */
  const failures: string[] = [];
  const failed = (side: Side): number => failures.filter((f) => f.startsWith(`${side} `)).length;
  let loadAtStart = 0;

  function record(r: Omit<BenchResult, 'measuredAt'>): void {
    mergeResults([{ ...r, measuredAt: new Date().toISOString() }]);
    const s = r.summary;
    log(
      `${r.id}: ${s ? `n=${s.count} p50=${s.p50} p99=${s.p99} max=${s.max} ${r.unit}` : JSON.stringify(r.figures)}`,
    );
  }

  function simFor(side: Side): SimulatedNode {
    const sim = sims.get(side);
    if (sim === undefined) throw new Error(`no simulated node for ${side}`);
    return sim;
  }

  /** Fresh kubelet-facing directories for one process of `side` on `nodeName`. */
  function freshDirs(nodeName: string): AnchorDirs {
    const rootDir = fs.mkdtempSync(path.join(dir, `${nodeName}-`));
    const d = {
      nodeName,
      rootDir,
      registryDir: path.join(rootDir, 'plugins_registry'),
      pluginsDir: path.join(rootDir, 'plugins'),
      cdiDir: path.join(rootDir, 'cdi'),
    };
    for (const p of [d.registryDir, d.pluginsDir, d.cdiDir]) fs.mkdirSync(p, { recursive: true });
    return d;
  }

  /** Spawns `side`'s driver (no wait) with `dirs`: a kubelet-dra node's or fresh ones. */
  async function launch(side: Side, dirs: AnchorDirs): Promise<Running> {
    const c = cluster as Cluster;
    const sim = simFor(side);
    let r: Running;
    if (side === 'gpu-dra') {
      const d = await spawnDriver({
        nodeName: dirs.nodeName,
        kubeconfig: c.makeKubeconfig(c.driverToken, `side-gpu-dra-${crypto.randomBytes(3).toString('hex')}`),
        sim,
        dir: dirs.rootDir,
        registryDir: dirs.registryDir,
        pluginsDir: dirs.pluginsDir,
        cdiRoot: dirs.cdiDir,
        // The real character devices NVIDIA's plugin needs (prepareSimForAnchors), for all three.
        devRoot: path.join(sim.hostPaths.driverRoot, 'dev'),
        // The Go drivers serve no metrics or health endpoint by default; neither does this one here.
        http: false,
      });
      r = {
        side,
        nodeName: dirs.nodeName,
        draSocket: d.draSocket,
        registrationSocket: d.registrationSocket,
        spawnedAt: d.spawnedAt,
        pid: () => Promise.resolve(d.pid),
        logTail: () => d.logTail(),
        stop: () => d.stop(),
      };
    } else {
      const binary = binaries.get(side);
      if (binary === undefined) throw new Error(`anchor ${side} not built`);
      const a = new AnchorProcess(binary, {
        name: side,
        dirs,
        ...(side === 'nvidia' ? { sim } : {}),
        kubeconfig: c.makeKubeconfig(
          c.tokenFor(ANCHOR_USER),
          `side-${side}-${crypto.randomBytes(3).toString('hex')}`,
        ),
        verbosity: ANCHOR_VERBOSITY[side],
        extraArgs: [...GO_CLIENT_FLAGS, ...(side === 'example' ? [`--num-devices=${String(GPUS)}`] : [])],
      });
      a.spawn();
      r = {
        side,
        nodeName: dirs.nodeName,
        draSocket: a.draSocket,
        registrationSocket: a.registrationSocket,
        spawnedAt: a.spawnedAt,
        pid: () => a.driverPid(),
        logTail: () => a.logs(60),
        stop: () => a.stop(),
      };
    }
    running.add(r);
    return r;
  }

  async function stop(r: Running): Promise<void> {
    await r.stop();
    running.delete(r);
  }

  /** Resolves with the time the registration socket first answered GetInfo. */
  async function waitRegistration(r: Running, timeoutMs = 60_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (fs.existsSync(r.registrationSocket)) {
        // A fresh client per try: a failed one would back off for a second before redialing.
        const client = new KubeletClient({
          draSocket: r.draSocket,
          registrationSocket: r.registrationSocket,
          timeoutMs: 1_000,
        });
        try {
          const info = await client.getInfo();
          const at = Date.now();
          if (info.name !== DRIVER[r.side]) throw new Error(`GetInfo named ${info.name}`);
          return at;
        } catch (err) {
          last = String(err);
        } finally {
          client.close();
        }
      }
      if (Date.now() > deadline)
        throw new Error(`${r.side}: registration socket not answering (${last}):\n${r.logTail()}`);
      await sleep(5);
    }
  }

  /** The device names `side`'s driver published on `nodeName`, once all 64 are there. */
  async function publishedDevices(side: Side, nodeName: string): Promise<string[]> {
    return eventually(
      `${String(GPUS)} devices of ${DRIVER[side]} on ${nodeName}`,
      async () => {
        const slices = await resource.listResourceSlice({
          fieldSelector: `spec.nodeName=${nodeName},spec.driver=${DRIVER[side]}`,
        });
        const names = slices.items.flatMap((s) => (s.spec.devices ?? []).map((d) => d.name));
        return names.length === GPUS ? names : undefined;
      },
      90_000,
    );
  }

  async function deleteSlices(nodeName: string): Promise<void> {
    const selector = `spec.nodeName=${nodeName}`;
    await resource.deleteCollectionResourceSlice({ fieldSelector: selector });
    await eventually('slices deleted', async () => {
      const l = await resource.listResourceSlice({ fieldSelector: selector });
      return l.items.length === 0 ? true : undefined;
    });
  }

  beforeAll(async () => {
    // The earlier parts of `npm run bench` (about 10 minutes) started the run this joins.
    continueRun(60 * 60_000);
    loadAtStart = round(os.loadavg()[0] ?? 0, 2);
    // Here, under the hook timeout: a cold anchor build takes ~13 minutes on 2 cores.
    const [nvidia, example] = await Promise.all([
      ensureAnchorBinary('nvidia'),
      ensureAnchorBinary('example'),
    ]);
    binaries.set('nvidia', nvidia);
    binaries.set('example', example);
    cluster = await startCluster({
      binary: await ensurePeersBinary(),
      nodeNames: SIDES.map(kubeletNode),
      extraUsers: [{ name: ANCHOR_USER, groups: ['system:authenticated'] }],
    });
    const c = cluster;
    log(`control plane ready in ${String(c.startMs)} ms`);
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: true });
    await grantAnchorRbac(c);
    for (const side of SIDES) {
      await resource.createDeviceClass({
        body: {
          metadata: { name: deviceClass(side) },
          spec: { selectors: [{ cel: { expression: CLASS_SELECTOR[side] } }] },
        },
      });
      for (const ns of [directNs(side), kubeletNs(side)])
        await core.createNamespace({ body: { metadata: { name: ns } } });
      // Nodes without a kubelet: every driver reads its Node (slice owner) before publishing.
      for (const n of [directNode(side), startNodeName(side)])
        await core.createNode({ body: { metadata: { name: n, labels: { 'kubernetes.io/hostname': n } } } });
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-side-'));
    const profile = await h100Profile(GPUS);
    for (const side of SIDES) {
      const sim = await createSimulatedNode(profile, path.join(dir, `sim-${side}`), {
        libPath: fakeNvmlLib(),
      });
      // Real device nodes, PCI resource files and a CDI hook: the same host for all three.
      prepareSimForAnchors(sim);
      sims.set(side, sim);
    }
  }, 3_600_000);

  afterAll(async () => {
    for (const r of running) await r.stop().catch(() => undefined);
    for (const n of nodes) await n.stop().catch(() => undefined);
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    record({
      id: SIDE_RUN_ID,
      name: 'side by side: the run',
      unit: '',
      figures: {
        'load average at start': loadAtStart,
        'load average at end': round(os.loadavg()[0] ?? 0, 2),
        'nvidia commit': anchorCommit('nvidia').slice(0, 12),
        'example commit': anchorCommit('example').slice(0, 12),
        flags: `the Go drivers ${GO_CLIENT_FLAGS.join(' ')}, NVIDIA -v=${String(ANCHOR_VERBOSITY.nvidia)} and the example -v=${String(ANCHOR_VERBOSITY.example)} (their charts' defaults), the example --num-devices=${String(GPUS)}; gpu-dra --log-level=info, no HTTP endpoint`,
        counts: `${String(GPUS)} simulated H100s per driver; ${String(ROUNDS)} interleaved rounds, each with ${String(SEQUENTIAL)} sequential prepare/unprepare cycles, ${String(BURSTS8)} bursts of 8 and ${String(BURSTS64)} of 64; percentiles over all rounds' samples pooled; start-up once per round; RSS over ${String(MEMORY_CYCLES)} cycles of a fresh process; ${String(KUBELET_CLAIMS)} claims per driver through kubelet-dra in pods of ${String(KUBELET_BATCH)}`,
      },
    });
    const run = mergeResults([]);
    const { file, doc } = await writeSideBySide(run, {
      updateDoc: FULL_SIZE && failures.length === 0,
      why: FULL_SIZE ? `${String(failures.length)} calls failed` : 'counts lowered by BENCH_SIDE_* knobs',
    });
    process.stderr.write(`\n${renderSideBySideTable(run)}\n\n`);
    log(
      `table in ${file}${doc ? ' and BENCHMARKS.md' : ''}; all figures in ${resultsDir()}/results.{json,md}`,
    );
  }, 120_000);

  it('start → first ResourceSlice and start → registration answering, interleaved', async () => {
    const list = await resource.listResourceSlice();
    const addedAt = new Map<string, (t: number) => void>();
    const watch = await new Watch((cluster as Cluster).kubeConfig).watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { resourceVersion: list.metadata?.resourceVersion },
      (phase, obj: V1ResourceSlice) => {
        if (phase === 'ADDED') addedAt.get(obj.spec.nodeName ?? '')?.(Date.now());
      },
      () => undefined,
    );
    const toSlice = new Map<Side, number[]>(SIDES.map((s) => [s, []]));
    const toRegistered = new Map<Side, number[]>(SIDES.map((s) => [s, []]));
    try {
      // Round 0 warms the page cache (binaries, the fake NVML) and is not counted.
      for (let r = 0; r <= ROUNDS; r++) {
        for (const side of order(r)) {
          const nodeName = startNodeName(side);
          const added = new Promise<number>((resolve, reject) => {
            const timer = setTimeout(() => {
              reject(new Error(`${side}: no ResourceSlice ADDED within 90 s`));
            }, 90_000);
            addedAt.set(nodeName, (t) => {
              clearTimeout(timer);
              resolve(t);
            });
          });
          const p = await launch(side, freshDirs(nodeName));
          try {
            const [slice, registered] = await Promise.all([added, waitRegistration(p)]);
            if (r > 0) {
              toSlice.get(side)?.push(slice - p.spawnedAt);
              toRegistered.get(side)?.push(registered - p.spawnedAt);
            }
          } catch (err) {
            throw new Error(`${String(err)}\n${p.logTail()}`);
          } finally {
            addedAt.delete(nodeName);
            await stop(p);
          }
          await deleteSlices(nodeName);
        }
      }
    } finally {
      watch.abort();
    }
    for (const side of SIDES) {
      record({
        id: sideId('start-slice', side),
        name: `${side}: start → first ResourceSlice (spawn → ADDED on a watch), ${String(GPUS)} GPUs`,
        unit: 'ms',
        summary: summarize(toSlice.get(side) ?? []),
      });
      record({
        id: sideId('start-registered', side),
        name: `${side}: start → the registration socket answers GetInfo`,
        unit: 'ms',
        summary: summarize(toRegistered.get(side) ?? []),
      });
    }
  }, 1_800_000);

  /** Pre-allocated claims for `side`'s pool on its direct node: claim i on device i mod 64. */
  async function allocatedClaims(side: Side, devices: readonly string[]): Promise<ClaimRef[]> {
    const ns = directNs(side);
    const sorted = [...devices].sort(naturalCompare);
    return pool(
      Array.from({ length: CLAIMS }, (_, i) => i),
      8,
      async (i) => {
        const name = `claim-${String(i).padStart(4, '0')}`;
        return createAllocatedClaim(resource, {
          namespace: ns,
          name,
          deviceClassName: deviceClass(side),
          driver: DRIVER[side],
          pool: directNode(side),
          device: sorted[i % GPUS] as string,
          nodeName: directNode(side),
          podName: `pod-${String(i)}`,
        });
      },
    );
  }

  async function prepareOne(side: Side, client: KubeletClient, ref: ClaimRef): Promise<number> {
    const t0 = performance.now();
    const res = await client.prepare([ref]);
    const ms = performance.now() - t0;
    const one = res.claims[ref.uid];
    if (!one || one.error !== '' || one.devices.length !== 1)
      failures.push(`${side} prepare ${ref.name}: ${JSON.stringify(one)}`);
    return ms;
  }

  async function unprepareOne(side: Side, client: KubeletClient, ref: ClaimRef): Promise<number> {
    const t0 = performance.now();
    const res = await client.unprepare([ref]);
    const ms = performance.now() - t0;
    if (res.claims[ref.uid]?.error !== '')
      failures.push(`${side} unprepare ${ref.name}: ${JSON.stringify(res.claims[ref.uid])}`);
    return ms;
  }

  /** `size` concurrent prepares on consecutive claims (distinct GPUs), then their unprepares. */
  async function burst(
    side: Side,
    client: KubeletClient,
    claims: readonly ClaimRef[],
    first: number,
    size: number,
  ): Promise<{ calls: number[]; wall: number }> {
    const refs = Array.from({ length: size }, (_, k) => claims[(first + k) % claims.length] as ClaimRef);
    const t0 = performance.now();
    const calls = await Promise.all(refs.map((ref) => prepareOne(side, client, ref)));
    const wall = performance.now() - t0;
    await Promise.all(refs.map((ref) => unprepareOne(side, client, ref)));
    return { calls, wall };
  }

  it('over dra.sock: sequential, bursts of 8 and 64, CPU; then RSS over many cycles', async () => {
    const drivers = new Map<Side, { r: Running; client: KubeletClient; claims: ClaimRef[]; pid: number }>();
    const samples = new Map<Side, Record<DirectMeasure, number[]>>();
    const cpu = new Map<Side, { seconds: number; claims: number }>();
    try {
      for (const side of SIDES) {
        const r = await launch(side, freshDirs(directNode(side)));
        await waitRegistration(r);
        const devices = await publishedDevices(side, directNode(side));
        const t0 = Date.now();
        const claims = await allocatedClaims(side, devices);
        log(`${side}: ${String(claims.length)} allocated claims in ${String(Date.now() - t0)} ms`);
        const client = new KubeletClient({ draSocket: r.draSocket, timeoutMs: 60_000 });
        await client.waitForReady();
        drivers.set(side, { r, client, claims, pid: await r.pid() });
        samples.set(side, {
          prepare: [],
          unprepare: [],
          burst8: [],
          'burst8-wall': [],
          burst64: [],
          'burst64-wall': [],
        });
        cpu.set(side, { seconds: 0, claims: 0 });
        // Warm-up, not counted: code paths, connections, caches.
        for (let i = 0; i < 20; i++) {
          const ref = claims[i] as ClaimRef;
          await prepareOne(side, client, ref);
          await unprepareOne(side, client, ref);
        }
        await burst(side, client, claims, 0, 8);
        await burst(side, client, claims, 0, GPUS);
      }

      const roundP50 = new Map<Side, { prepare: number[]; unprepare: number[] }>(
        SIDES.map((side) => [side, { prepare: [], unprepare: [] }]),
      );
      for (let round_ = 0; round_ < ROUNDS; round_++) {
        for (const side of order(round_)) {
          const d = drivers.get(side);
          const s = samples.get(side);
          const c = cpu.get(side);
          if (!d || !s || !c) throw new Error(`${side} not started`);
          const cpu0 = cpuSeconds(d.pid);
          const prep: number[] = [];
          const unprep: number[] = [];
          for (let i = 0; i < SEQUENTIAL; i++) {
            const ref = d.claims[(round_ * SEQUENTIAL + i) % d.claims.length] as ClaimRef;
            prep.push(await prepareOne(side, d.client, ref));
            unprep.push(await unprepareOne(side, d.client, ref));
          }
          c.seconds += cpuSeconds(d.pid) - cpu0;
          s.prepare.push(...prep);
          s.unprepare.push(...unprep);
          roundP50.get(side)?.prepare.push(round(summarize(prep).p50));
          roundP50.get(side)?.unprepare.push(round(summarize(unprep).p50));
          c.claims += SEQUENTIAL;
          for (let b = 0; b < BURSTS8; b++) {
            const { calls, wall } = await burst(side, d.client, d.claims, b * 8, 8);
            s.burst8.push(...calls);
            s['burst8-wall'].push(wall);
          }
          for (let b = 0; b < BURSTS64; b++) {
            const { calls, wall } = await burst(side, d.client, d.claims, b * GPUS, GPUS);
            s.burst64.push(...calls);
            s['burst64-wall'].push(wall);
          }
        }
        log(`round ${String(round_ + 1)} of ${String(ROUNDS)} done`);
      }
      for (const side of SIDES) {
        const s = samples.get(side);
        if (!s) continue;
        const perRound = roundP50.get(side);
        const what: Record<DirectMeasure, string> = {
          prepare: 'NodePrepareResources, 1 claim per call, sequential',
          unprepare: 'NodeUnprepareResources, 1 claim per call, sequential',
          burst8: 'bursts of 8 concurrent single-claim prepares, per call',
          'burst8-wall': 'bursts of 8: the round, first call sent → last answer',
          burst64: 'bursts of 64 concurrent single-claim prepares, per call',
          'burst64-wall': 'bursts of 64: the round, first call sent → last answer',
        };
        for (const key of Object.keys(what) as DirectMeasure[])
          record({
            id: sideId(key, side),
            name: `${side}: ${what[key]} (dra.sock)`,
            unit: 'ms',
            summary: summarize(s[key]),
            ...(key === 'prepare' || key === 'unprepare'
              ? { note: `p50 of each round, in order: ${(perRound?.[key] ?? []).join(', ')} ms` }
              : {}),
          });
      }
      expect(failures.slice(0, 5)).toEqual([]);
    } finally {
      for (const d of drivers.values()) {
        d.client.close();
        await stop(d.r);
      }
    }

    // RSS: a fresh process per driver, one after the other (not a timing, so not interleaved).
    for (const side of SIDES) {
      const r = await launch(side, freshDirs(directNode(side)));
      const client = new KubeletClient({ draSocket: r.draSocket, timeoutMs: 60_000 });
      try {
        await waitRegistration(r);
        await publishedDevices(side, directNode(side));
        const pid = await r.pid();
        // Let start-up work (informers, the first publish) settle before the idle sample.
        await sleep(2_000);
        const idle = rssMiB(pid);
        // File-backed pages (the executable's code, Node's ~40 MiB binary among them) are shared
        // with every process mapping the same file; the anonymous part is the driver's own.
        const idleAnon = rssMiB(pid, 'RssAnon');
        await client.waitForReady();
        const claims = drivers.get(side)?.claims ?? [];
        for (let i = 0; i < MEMORY_CYCLES; i++) {
          const ref = claims[i % claims.length] as ClaimRef;
          await prepareOne(side, client, ref);
          await unprepareOne(side, client, ref);
          if ((i + 1) % 2000 === 0) log(`${side}: ${String(i + 1)} cycles, RSS ${String(rssMiB(pid))} MiB`);
        }
        // Right after the last cycle, and again once idle as a node mostly is: both runtimes give
        // memory back lazily (V8's memory reducer, Go's scavenger), so one sample would show
        // whichever had got round to it.
        const busy = rssMiB(pid);
        const busyAnon = rssMiB(pid, 'RssAnon');
        await sleep(IDLE_AFTER_CYCLES_MS);
        const after = rssMiB(pid);
        const c = cpu.get(side) ?? { seconds: Number.NaN, claims: 1 };
        record({
          id: sideId(SIDE_RESOURCES, side),
          name: `${side}: RSS and CPU`,
          unit: '',
          figures: {
            [FIG.rssIdle]: idle,
            [FIG.rssAnonIdle]: idleAnon,
            [FIG.rssAfter]: after,
            [FIG.rssAnonAfter]: rssMiB(pid, 'RssAnon'),
            [FIG.rssBusy]: busy,
            [FIG.rssAnonBusy]: busyAnon,
            [FIG.rssGrowth]: round(after - idle),
            [FIG.cycles]: MEMORY_CYCLES,
            [FIG.cpuPerK]: round((c.seconds * 1000) / c.claims, 2),
            'CPU seconds over the sequential runs': round(c.seconds, 2),
            'claims in the sequential runs': c.claims,
            [FIG.failed]: failed(side),
          },
        });
      } finally {
        client.close();
        await stop(r);
      }
    }
    expect(failures.slice(0, 5)).toEqual([]);
  }, 3_600_000);

  it('through the kubelet (kubelet-dra): pod bound → prepared, interleaved in batches', async () => {
    const c = cluster as Cluster;
    const harness = new Map<Side, NodeHarness>();
    const boundAt = new Map<string, number>();
    const watches: AbortController[] = [];
    const bindToPrepared = new Map<Side, number[]>(SIDES.map((s) => [s, []]));
    try {
      for (const side of SIDES) {
        const node = new NodeHarness(c, kubeletNode(side));
        nodes.push(node);
        await node.start();
        harness.set(side, node);
        await launch(side, node);
        await node.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER[side], 60_000);
        await publishedDevices(side, node.nodeName);
        const ns = kubeletNs(side);
        await waitForDefaultServiceAccount(core, ns);
        await resource.createNamespacedResourceClaimTemplate({
          namespace: ns,
          body: {
            metadata: { name: 'one-gpu' },
            spec: {
              spec: {
                devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: deviceClass(side) } }] },
              },
            },
          },
        });
        const pods = await core.listNamespacedPod({ namespace: ns });
        watches.push(
          await new Watch(c.kubeConfig).watch(
            `/api/v1/namespaces/${ns}/pods`,
            { resourceVersion: pods.metadata?.resourceVersion },
            (_phase, obj: V1Pod) => {
              const key = `${ns}/${obj.metadata?.name ?? ''}`;
              if (obj.spec?.nodeName && !boundAt.has(key)) boundAt.set(key, Date.now());
            },
            () => undefined,
          ),
        );
      }

      const runBatch = async (side: Side, b: number, measure: boolean): Promise<void> => {
        const node = harness.get(side) as NodeHarness;
        const ns = kubeletNs(side);
        const names = Array.from({ length: KUBELET_BATCH }, (_, k) => `p-${String(b)}-${String(k)}`);
        const uids = await Promise.all(
          names.map((name) =>
            createClaimPod(core, { namespace: ns, name, nodeName: node.nodeName, template: 'one-gpu' }),
          ),
        );
        const outcomes = await Promise.all(names.map((name) => waitForPrepareOutcome(node, `${ns}/${name}`)));
        outcomes.forEach((e, k) => {
          const key = `${ns}/${names[k] as string}`;
          if (e.event !== 'prepared') failures.push(`${side} kubelet ${key}: ${String(e['error'])}`);
          const bound = boundAt.get(key);
          if (measure && bound !== undefined) bindToPrepared.get(side)?.push(eventTimeMs(e) - bound);
        });
        await Promise.all(names.map((name) => core.deleteNamespacedPod({ namespace: ns, name })));
        await Promise.all(
          uids.map((uid) => node.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === uid, 120_000)),
        );
        // The generated claims go with their pods; wait, so the next batch finds its GPUs free.
        await eventually(
          `${side}: generated claims deleted`,
          async () =>
            (await resource.listNamespacedResourceClaim({ namespace: ns })).items.length === 0
              ? true
              : undefined,
          60_000,
          25,
        );
      };

      for (const side of SIDES) await runBatch(side, 0, false); // warm-up
      const batches = Math.max(1, Math.ceil(KUBELET_CLAIMS / KUBELET_BATCH));
      for (let b = 1; b <= batches; b++) for (const side of order(b)) await runBatch(side, b, true);
      for (const side of SIDES)
        record({
          id: sideId('kubelet', side),
          name: `${side}: through kubelet-dra, pod bound → "prepared" (${String(KUBELET_BATCH)} pods at a time, 1 claim each)`,
          unit: 'ms',
          summary: summarize(bindToPrepared.get(side) ?? []),
          note: `${String(failed(side))} failed calls so far`,
        });
      expect(failures.slice(0, 5)).toEqual([]);
    } finally {
      for (const w of watches) w.abort();
      for (const r of [...running]) await stop(r);
    }
  }, 1_800_000);
});
