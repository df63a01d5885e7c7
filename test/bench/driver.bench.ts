// `npm run bench`, second part: the driver process (`node dist/gpu-dra.mjs driver`) on a
// simulated h100-8x node against the real control plane built from test/peers.
//
//   1. start → first ResourceSlice  (spawn → ADDED on a watch opened before the spawn)
//   2. NodePrepareResources over the DRA socket, no kubelet: sequential and 8-way bursts
//   3. where a prepare's time goes: the claim GET and a durable write, measured alone
//   4. memory of the driver over many prepare/unprepare cycles
//   5. NodePrepareResources through the kubelet's DRA manager (kubelet-dra), pods bound by
//      the real scheduler, for as many claims as fit the time budget
//
// These are measurements, not tests: the only assertions are functional (every prepare
// succeeded). Figures are merged into bench-results/ as each benchmark finishes, and the
// summary in BENCHMARKS.md is rewritten at the end when all of them ran. Knobs (environment):
//   BENCH_CLAIMS (1000)  BENCH_KUBELET_BUDGET_S (240)  BENCH_MEMORY_CYCLES (2000)
//   BENCH_START_ITERATIONS (10)  BENCH_BURST (8)  BENCH_DRIVER_NODE_ARGS (extra node flags)
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { CoreV1Api, ResourceV1Api, Watch, type V1Pod, type V1ResourceSlice } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { continueRun, mergeResults, resultsDir, type BenchResult } from '../../src/bench/results.js';
import { bucketQuantile, slope, summarize } from '../../src/bench/stats.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { startCluster, type Cluster } from '../e2e/support/cluster.js';
import { startNode, type NodeHarness } from '../e2e/support/node.js';
import { ensurePeersBinary } from '../e2e/support/peers.js';
import { sleep } from '../e2e/support/process.js';
import { eventually } from '../e2e/support/wait.js';
import { fakeNvmlLib } from '../support/sim.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import type { ClaimRef } from '../../src/kubelet/proto.js';
import {
  bucketDelta,
  CLI,
  DRIVER_NAME,
  histogramBuckets,
  metricValue,
  spawnDriver,
  type DriverProcess,
} from './support/driverProcess.js';
import { updateBenchmarksDoc } from './support/report.js';
import { createClaimPod, envInt, eventTimeMs, pool, waitForPrepareOutcome } from './support/util.js';
import { grantDriverRbac } from '../e2e/support/rbac.js';
import { createAllocatedClaim, waitForDefaultServiceAccount } from '../e2e/support/workloads.js';

const N_CLAIMS = envInt('BENCH_CLAIMS', 1000);
const KUBELET_BUDGET_MS = envInt('BENCH_KUBELET_BUDGET_S', 240) * 1000;
const MEMORY_CYCLES = envInt('BENCH_MEMORY_CYCLES', 2000);
const START_ITERATIONS = envInt('BENCH_START_ITERATIONS', 10);
const BURST = envInt('BENCH_BURST', 8);
/** Extra `node` flags for every driver process, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const DRIVER_NODE_ARGS = (process.env['BENCH_DRIVER_NODE_ARGS'] ?? '').split(/\s+/).filter(Boolean);

const GPU_CLASS = `gpu.${DRIVER_NAME}`;
const NS_KUBELET = 'bench-kubelet';
const NS_DIRECT = 'bench-direct';
const KUBELET_NODE = 'node-a';
const DIRECT_NODE = 'node-b';
const START_NODE = 'node-c';
const MIG_NODE = 'node-d';
const GPUS = 8; // h100-8x

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

const round = (v: number, digits = 1): number => Math.round(v * 10 ** digits) / 10 ** digits;
const mib = (bytes: number): number => round(bytes / 2 ** 20, 1);

/** ms between two marks of a pino log (isoTime) line, by message; undefined when absent. */
function logTime(logText: string, msg: string): number | undefined {
  for (const line of logText.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as { msg?: string; time?: string };
      if (o.msg === msg && typeof o.time === 'string') return Date.parse(o.time);
    } catch {
      // not a log object
    }
  }
  return undefined;
}

function timeChild(command: string, args: string[]): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: path.dirname(CLI) }, (err) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${err.message}`));
      else resolve(performance.now() - start);
    });
  });
}

describe('gpu-dra driver benchmarks', () => {
  let cluster: Cluster | undefined;
  let node: NodeHarness | undefined;
  let sim: SimulatedNode;
  let dir: string;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let driverKubeconfig: string;
  const drivers = new Set<DriverProcess>();
  const started = Date.now();

  function record(r: Omit<BenchResult, 'measuredAt'>): void {
    const result: BenchResult = { ...r, measuredAt: new Date().toISOString() };
    mergeResults([result]);
    const s = result.summary;
    const figures = Object.entries(result.figures ?? {})
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(', ');
    log(
      `${result.name}: ${s ? `n=${s.count} p50=${s.p50} p99=${s.p99} max=${s.max} ${result.unit}` : ''}${s && figures ? '; ' : ''}${figures}`,
    );
  }

  async function startDriver(
    nodeName: string,
    opts: Partial<Parameters<typeof spawnDriver>[0]> = {},
  ): Promise<DriverProcess> {
    const d = await spawnDriver({
      nodeName,
      kubeconfig: driverKubeconfig,
      sim,
      dir: path.join(dir, `${nodeName}-${crypto.randomBytes(3).toString('hex')}`),
      ...opts,
      nodeArgs: [...DRIVER_NODE_ARGS, ...(opts.nodeArgs ?? [])],
    });
    drivers.add(d);
    return d;
  }

  async function stopDriver(d: DriverProcess): Promise<void> {
    await d.stop();
    drivers.delete(d);
  }

  async function createNode(name: string): Promise<void> {
    await core.createNode({ body: { metadata: { name, labels: { 'kubernetes.io/hostname': name } } } });
  }

  beforeAll(async () => {
    // `npm run bench` ran the in-process part just before; a run older than that is stale.
    continueRun(10 * 60_000);
    const binary = await ensurePeersBinary();
    cluster = await startCluster({ binary });
    const c = cluster;
    log(`control plane ready in ${String(c.startMs)} ms`);
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: true });
    await resource.createDeviceClass({
      body: {
        metadata: { name: GPU_CLASS },
        spec: {
          selectors: [
            {
              cel: {
                expression: `device.driver == "${DRIVER_NAME}" && device.attributes["${DRIVER_NAME}"].type == "gpu"`,
              },
            },
          ],
        },
      },
    });
    for (const ns of [NS_KUBELET, NS_DIRECT])
      await core.createNamespace({ body: { metadata: { name: ns } } });
    // Nodes without a kubelet: the publisher owns slices by the Node's UID.
    for (const n of [DIRECT_NODE, START_NODE, MIG_NODE]) await createNode(n);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-bench-'));
    sim = await createSimulatedNode('h100-8x', path.join(dir, 'sim'), { libPath: fakeNvmlLib() });
    driverKubeconfig = c.makeKubeconfig(c.driverToken, 'driver');
  }, 3_600_000);

  afterAll(async () => {
    for (const d of drivers) await d.stop().catch(() => undefined);
    await node?.stop();
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    const run = mergeResults([]);
    await updateBenchmarksDoc(run, {
      clusterSeconds: round((Date.now() - started) / 1000),
      required: [
        'discovery-h100-8x',
        'start-first-slice',
        'grpc-prepare-sequential',
        'grpc-prepare-burst',
        'memory',
        'kubelet-prepare',
      ],
    });
    log(
      `results in ${resultsDir()}/results.{json,md}; summary in BENCHMARKS.md (run wall time ${String(run.wallSeconds)} s)`,
    );
  }, 120_000);

  it('start → first ResourceSlice', async () => {
    // Baselines that bound what the driver can reach: a bare node start, and the CLI's entry
    // chunk alone (`gpu-dra help`: commander and the flag definitions, no command loaded).
    const bare: number[] = [];
    const cliHelp: number[] = [];
    for (let i = 0; i < 5; i++) {
      bare.push(await timeChild(process.execPath, ['-e', '0']));
      cliHelp.push(await timeChild(process.execPath, [CLI, 'help']));
    }

    const selector = `spec.nodeName=${START_NODE}`;
    const list = await resource.listResourceSlice({ fieldSelector: selector });
    expect(list.items).toEqual([]);
    let onAdded: ((t: number) => void) | undefined;
    let watchError: unknown;
    const watch = new Watch((cluster as Cluster).kubeConfig);
    const controller = await watch.watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { fieldSelector: selector, resourceVersion: list.metadata?.resourceVersion },
      (phase) => {
        if (phase === 'ADDED') onAdded?.(Date.now());
      },
      (err: unknown) => {
        if (err) watchError = err;
      },
    );
    const total: number[] = [];
    const toDiscovered: number[] = [];
    const toPublishing: number[] = [];
    const toServing: number[] = [];
    try {
      // Iteration 0 warms the page cache and is not counted.
      for (let i = 0; i <= START_ITERATIONS; i++) {
        const added = new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => {
            reject(new Error(`no ResourceSlice ADDED within 60 s (watch error: ${String(watchError)})`));
          }, 60_000);
          onAdded = (t) => {
            clearTimeout(timer);
            resolve(t);
          };
        });
        const d = await startDriver(START_NODE, { http: false });
        let addedAt: number;
        try {
          addedAt = await added;
        } catch (err) {
          throw new Error(`${String(err)}\n${d.logTail()}`);
        } finally {
          onAdded = undefined;
        }
        await stopDriver(d);
        if (i > 0) {
          const text = fs.readFileSync(d.logFile, 'utf8');
          const discovered = logTime(text, 'GPUs discovered');
          const publishing = logTime(text, 'publishing ResourceSlices');
          const serving = logTime(text, 'kubelet plugin serving');
          total.push(addedAt - d.spawnedAt);
          if (discovered !== undefined) toDiscovered.push(discovered - d.spawnedAt);
          if (publishing !== undefined) toPublishing.push(publishing - d.spawnedAt);
          if (serving !== undefined) toServing.push(serving - d.spawnedAt);
        }
        await resource.deleteCollectionResourceSlice({ fieldSelector: selector });
        await eventually('slices deleted', async () => {
          const l = await resource.listResourceSlice({ fieldSelector: selector });
          return l.items.length === 0 ? true : undefined;
        });
      }
    } finally {
      controller.abort();
    }
    const s = summarize(total);
    record({
      id: 'start-first-slice',
      name: 'start → first ResourceSlice (spawn `gpu-dra driver` → slice ADDED on a watch)',
      unit: 'ms',
      summary: s,
      note: `target < 300 ms; spawn → "GPUs discovered" p50 ${summarize(toDiscovered).p50} ms, → "publishing ResourceSlices" (slices listed, Node read) p50 ${summarize(toPublishing).p50} ms; spawn → "kubelet plugin serving" p50 ${summarize(toServing).p50} ms`,
    });
    record({
      id: 'start-baselines',
      name: 'start baselines (child processes)',
      unit: 'ms',
      figures: {
        'start → first slice p50 (ms)': s.p50,
        'start → first slice max (ms)': s.max,
        'node -e 0, p50 (ms)': summarize(bare).p50,
        '`gpu-dra help` (entry chunk only) incl. node start, p50 (ms)': summarize(cliHelp).p50,
        'spawn → "GPUs discovered" log, p50 (ms)': summarize(toDiscovered).p50,
        'spawn → "publishing ResourceSlices" log, p50 (ms)': summarize(toPublishing).p50,
        'spawn → "kubelet plugin serving" log, p50 (ms)': summarize(toServing).p50,
      },
    });
  }, 600_000);

  it('start → complete pool, 8 × H100 in dynamic MIG mode', async () => {
    const migSim = await createSimulatedNode('h100-8x-mig', path.join(dir, 'sim-mig'), {
      libPath: fakeNvmlLib(),
    });
    const selector = `spec.nodeName=${MIG_NODE}`;
    const list = await resource.listResourceSlice({ fieldSelector: selector });
    let onAdded: ((slice: V1ResourceSlice, t: number) => void) | undefined;
    const controller = await new Watch((cluster as Cluster).kubeConfig).watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { fieldSelector: selector, resourceVersion: list.metadata?.resourceVersion },
      (phase, obj: V1ResourceSlice) => {
        if (phase === 'ADDED') onAdded?.(obj, Date.now());
      },
      () => undefined,
    );
    const toComplete: number[] = [];
    const toFirst: number[] = [];
    let shape = { slices: 0, devices: 0, counterSets: 0 };
    try {
      // Iteration 0 warms the page cache and is not counted.
      for (let i = 0; i <= Math.max(3, Math.floor(START_ITERATIONS / 2)); i++) {
        const seen: V1ResourceSlice[] = [];
        let first = 0;
        const complete = new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => {
            reject(new Error(`pool incomplete after 60 s: ${String(seen.length)} slices`));
          }, 60_000);
          onAdded = (slice, t) => {
            seen.push(slice);
            first ||= t;
            if (seen.length === slice.spec.pool.resourceSliceCount) {
              clearTimeout(timer);
              resolve(t);
            }
          };
        });
        const d = await startDriver(MIG_NODE, {
          http: false,
          sim: migSim,
          driverArgs: ['--mig-partitioning=dynamic'],
        });
        let doneAt: number;
        try {
          doneAt = await complete;
        } catch (err) {
          throw new Error(`${String(err)}\n${d.logTail()}`);
        } finally {
          onAdded = undefined;
        }
        await stopDriver(d);
        if (i > 0) {
          toComplete.push(doneAt - d.spawnedAt);
          toFirst.push(first - d.spawnedAt);
        }
        shape = {
          slices: seen.length,
          devices: seen.reduce((n, sl) => n + (sl.spec.devices?.length ?? 0), 0),
          counterSets: seen.reduce((n, sl) => n + (sl.spec.sharedCounters?.length ?? 0), 0),
        };
        await resource.deleteCollectionResourceSlice({ fieldSelector: selector });
        await eventually('slices deleted', async () => {
          const l = await resource.listResourceSlice({ fieldSelector: selector });
          return l.items.length === 0 ? true : undefined;
        });
      }
    } finally {
      controller.abort();
    }
    expect(shape.devices).toBe(8 * 26);
    const s = summarize(toComplete);
    record({
      id: 'start-complete-pool-dynamic-mig',
      name: 'start → complete pool, 8 × H100 in dynamic MIG mode (spawn → last slice ADDED)',
      unit: 'ms',
      summary: s,
      note: `${String(shape.devices)} devices (26 per GPU: 25 placements + the GPU) and ${String(shape.counterSets)} counter sets in ${String(shape.slices)} slices; spawn → first slice p50 ${summarize(toFirst).p50} ms`,
    });
  }, 600_000);

  /** Claims allocated to `nodeName`'s pool by writing status.allocation, reserved for a fake pod. */
  async function allocatedClaims(nodeName: string, count: number): Promise<ClaimRef[]> {
    return pool(
      Array.from({ length: count }, (_, i) => i),
      8,
      async (i) => {
        const name = `claim-${String(i).padStart(4, '0')}`;
        return createAllocatedClaim(resource, {
          namespace: NS_DIRECT,
          name,
          deviceClassName: GPU_CLASS,
          driver: DRIVER_NAME,
          pool: nodeName,
          device: `gpu-${String(i % GPUS)}`,
          nodeName,
          podName: `pod-${String(i)}`,
        });
      },
    );
  }

  let directClaims: ClaimRef[] = [];

  async function cycle(
    client: KubeletClient,
    ref: ClaimRef,
    failures: string[],
  ): Promise<{ prepare: number; unprepare: number }> {
    const t0 = performance.now();
    const res = await client.prepare([ref]);
    const t1 = performance.now();
    const one = res.claims[ref.uid];
    if (!one || one.error !== '' || one.devices.length !== 1)
      failures.push(`prepare ${ref.name}: ${JSON.stringify(one)}`);
    const t2 = performance.now();
    const un = await client.unprepare([ref]);
    const t3 = performance.now();
    if (un.claims[ref.uid]?.error !== '')
      failures.push(`unprepare ${ref.name}: ${JSON.stringify(un.claims[ref.uid])}`);
    return { prepare: t1 - t0, unprepare: t3 - t2 };
  }

  it(`NodePrepareResources over the DRA socket (${String(N_CLAIMS)} pre-allocated claims)`, async () => {
    const d = await startDriver(DIRECT_NODE);
    await d.waitReady();
    const t0 = Date.now();
    directClaims = await allocatedClaims(DIRECT_NODE, N_CLAIMS);
    log(`${String(N_CLAIMS)} allocated claims created in ${String(Date.now() - t0)} ms`);
    const client = new KubeletClient({ draSocket: d.draSocket, timeoutMs: 30_000 });
    await client.waitForReady();
    const failures: string[] = [];
    try {
      for (let i = 0; i < 50; i++) await cycle(client, directClaims[i % N_CLAIMS] as ClaimRef, failures);

      const before = histogramBuckets(
        await d.metrics(),
        'gpu_dra_grpc_request_duration_seconds',
        'method="NodePrepareResources"',
      );
      const prepare: number[] = [];
      const unprepare: number[] = [];
      for (const ref of directClaims) {
        const r = await cycle(client, ref, failures);
        prepare.push(r.prepare);
        unprepare.push(r.unprepare);
      }
      const server = bucketDelta(
        histogramBuckets(
          await d.metrics(),
          'gpu_dra_grpc_request_duration_seconds',
          'method="NodePrepareResources"',
        ),
        before,
      );
      const serverP50 = bucketQuantile(server, 0.5);
      const serverP99 = bucketQuantile(server, 0.99);

      // Bursts: BURST concurrent single-claim calls on distinct GPUs, then unprepare them.
      const burstCall: number[] = [];
      const burstRound: number[] = [];
      const burstUnprepare: number[] = [];
      let burstClaims = 0;
      let burstMs = 0;
      for (let r = 0; r + BURST <= directClaims.length; r += BURST) {
        const refs = directClaims.slice(r, r + BURST);
        const start = performance.now();
        const lat = await Promise.all(
          refs.map(async (ref) => {
            const s = performance.now();
            const res = await client.prepare([ref]);
            const one = res.claims[ref.uid];
            if (!one || one.error !== '' || one.devices.length !== 1)
              failures.push(`burst prepare ${ref.name}: ${JSON.stringify(one)}`);
            return performance.now() - s;
          }),
        );
        const roundMs = performance.now() - start;
        burstMs += roundMs;
        burstClaims += refs.length;
        burstCall.push(...lat);
        burstRound.push(roundMs);
        const u0 = performance.now();
        const un = await Promise.all(refs.map((ref) => client.unprepare([ref])));
        burstUnprepare.push(performance.now() - u0);
        un.forEach((u, k) => {
          const ref = refs[k] as ClaimRef;
          if (u.claims[ref.uid]?.error !== '')
            failures.push(`burst unprepare ${ref.name}: ${JSON.stringify(u.claims[ref.uid])}`);
        });
      }
      expect(failures.slice(0, 5)).toEqual([]);

      const seq = summarize(prepare);
      record({
        id: 'grpc-prepare-sequential',
        name: 'NodePrepareResources v1 over dra.sock, 1 claim per call, sequential (driver GETs the claim, writes checkpoint + CDI spec)',
        unit: 'ms',
        summary: seq,
        note: `${String(prepare.length)} distinct claims; driver-side histogram: p50 ≤ ${serverP50 === undefined ? '?' : String(serverP50 * 1000)} ms, p99 ≤ ${serverP99 === undefined ? '?' : String(serverP99 * 1000)} ms`,
      });
      record({
        id: 'grpc-unprepare-sequential',
        name: 'NodeUnprepareResources v1 over dra.sock, 1 claim per call, sequential',
        unit: 'ms',
        summary: summarize(unprepare),
      });
      record({
        id: 'grpc-prepare-burst',
        name: `NodePrepareResources v1, bursts of ${String(BURST)} concurrent single-claim calls (distinct GPUs), per call`,
        unit: 'ms',
        summary: summarize(burstCall),
        note: `${String(burstRound.length)} rounds; round wall time p50 ${summarize(burstRound).p50} ms, p99 ${summarize(burstRound).p99} ms; unprepare of a round p50 ${summarize(burstUnprepare).p50} ms`,
      });
      record({
        id: 'grpc-throughput',
        name: 'NodePrepareResources v1 throughput',
        unit: 'claims/s',
        figures: {
          'sequential prepare p50 (ms)': seq.p50,
          'sequential prepare p99 (ms)': seq.p99,
          'sequential prepare+unprepare cycles/s': round(
            (prepare.length * 1000) /
              (prepare.reduce((a, b) => a + b, 0) + unprepare.reduce((a, b) => a + b, 0)),
          ),
          [`burst of ${String(BURST)}: prepared claims/s (prepare phases only)`]: round(
            (burstClaims * 1000) / burstMs,
          ),
          [`burst of ${String(BURST)}: per-call p50 (ms)`]: summarize(burstCall).p50,
          [`burst of ${String(BURST)}: per-call p99 (ms)`]: summarize(burstCall).p99,
        },
      });
    } finally {
      client.close();
      await stopDriver(d);
    }
  }, 900_000);

  it("where a prepare's time goes: claim GET and durable writes, measured alone", async () => {
    // The driver's prepare = GET the claim (client-node) + checkpoint write + CDI spec write +
    // checkpoint write, each write a temp file, fsync, rename and directory fsync. Measured
    // here one by one, in this process, on the same apiserver and filesystem.
    expect(directClaims.length).toBeGreaterThan(0);
    const c = cluster as Cluster;
    const refs = directClaims.slice(0, 300);
    // client-node as the driver used it before src/kube (one https.Agent per request).
    const claimApi = c.kubeConfigFor(c.driverToken).makeApiClient(ResourceV1Api);
    const getter = {
      get: (namespace: string, name: string) => claimApi.readNamespacedResourceClaim({ namespace, name }),
    };
    const viaClientNode: number[] = [];
    for (const ref of refs) {
      const t0 = performance.now();
      await getter.get(ref.namespace, ref.name);
      viaClientNode.push(performance.now() - t0);
    }
    const ca = c.kubeConfig.getCurrentCluster()?.caData;
    const agent = new https.Agent({ keepAlive: true, ...(ca ? { ca: Buffer.from(ca, 'base64') } : {}) });
    const keepAlive: number[] = [];
    try {
      for (const ref of refs) {
        const t0 = performance.now();
        await new Promise<void>((resolve, reject) => {
          const url = `${c.apiserverUrl}/apis/resource.k8s.io/v1/namespaces/${ref.namespace}/resourceclaims/${ref.name}`;
          https
            .get(url, { agent, headers: { Authorization: `Bearer ${c.driverToken}` } }, (res) => {
              res.resume();
              res.on('end', () => {
                if (res.statusCode === 200) resolve();
                else reject(new Error(`GET ${url}: ${String(res.statusCode)}`));
              });
            })
            .on('error', reject);
        });
        keepAlive.push(performance.now() - t0);
      }
    } finally {
      agent.destroy();
    }
    const fsDir = path.join(dir, 'fs-baseline');
    fs.mkdirSync(fsDir, { recursive: true });
    const doc = JSON.stringify({ claims: { x: 'y'.repeat(3000) } }, null, 2);
    const writes: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = performance.now();
      await atomicWriteFile(path.join(fsDir, 'checkpoint.json'), doc);
      writes.push(performance.now() - t0);
    }
    const a = summarize(viaClientNode);
    const b = summarize(keepAlive);
    const w = summarize(writes);
    record({
      id: 'prepare-attribution',
      name: "where a prepare's time goes (measured alone, in the bench process)",
      unit: 'ms',
      figures: {
        'claim GET via client-node 1.4 (new https.Agent, TLS handshake per call) p50 (ms)': a.p50,
        'claim GET via client-node p99 (ms)': a.p99,
        'claim GET over one keep-alive connection p50 (ms)': b.p50,
        'claim GET over one keep-alive connection p99 (ms)': b.p99,
        'atomic durable write (temp, fsync, rename, dir fsync) p50 (ms)': w.p50,
        'atomic durable write p99 (ms)': w.p99,
      },
      note: 'a prepare makes 1 GET and 3 durable writes; an unprepare 1 durable remove and 1 write',
    });
  }, 600_000);

  it(`driver memory over ${String(MEMORY_CYCLES)} prepare/unprepare cycles`, async () => {
    expect(directClaims.length).toBeGreaterThan(0);
    const memDir = path.join(dir, 'memory');
    fs.mkdirSync(memDir, { recursive: true });
    // Lets the bench force a full GC in the driver before each sample (SIGUSR2), so samples
    // show retained memory rather than where the collector happened to be.
    const preload = path.join(memDir, 'gc-on-sigusr2.cjs');
    fs.writeFileSync(preload, "process.on('SIGUSR2', () => { if (typeof gc === 'function') gc(); });\n");
    const d = await startDriver(DIRECT_NODE, { nodeArgs: ['--expose-gc', `--require=${preload}`] });
    await d.waitReady();
    const client = new KubeletClient({ draSocket: d.draSocket, timeoutMs: 30_000 });
    await client.waitForReady();
    const failures: string[] = [];
    const sample = async (
      cycles: number,
    ): Promise<{ cycles: number; rss: number; heap: number; fds: number }> => {
      process.kill(d.pid, 'SIGUSR2');
      await sleep(250);
      const rss = d.rssBytes();
      const fds = fs.readdirSync(`/proc/${String(d.pid)}/fd`).length;
      const heap = metricValue(await d.metrics(), 'nodejs_heap_size_used_bytes') ?? Number.NaN;
      return { cycles, rss, heap, fds };
    };
    try {
      const idle = await sample(0);
      for (let i = 0; i < 100; i++)
        await cycle(client, directClaims[i % directClaims.length] as ClaimRef, failures);
      const every = Math.max(1, Math.floor(MEMORY_CYCLES / 20));
      const samples = [await sample(0)];
      for (let i = 1; i <= MEMORY_CYCLES; i++) {
        await cycle(client, directClaims[i % directClaims.length] as ClaimRef, failures);
        if (i % every === 0) samples.push(await sample(i));
      }
      expect(failures.slice(0, 5)).toEqual([]);
      const first = samples[0] as { rss: number; heap: number; fds: number };
      const last = samples.at(-1) as { rss: number; heap: number; fds: number };
      const half = samples.slice(Math.floor(samples.length / 2));
      const perK = (pts: typeof samples, key: 'rss' | 'heap'): number =>
        round((slope(pts.map((p) => ({ x: p.cycles, y: p[key] }))) * 1000) / 1024, 1);
      record({
        id: 'memory',
        name: `driver memory over ${String(MEMORY_CYCLES)} prepare/unprepare cycles (after full GC, sampled every ${String(every)})`,
        unit: 'MiB',
        figures: {
          'RSS idle before any prepare (MiB)': mib(idle.rss),
          'RSS start, after 100 warm-up cycles (MiB)': mib(first.rss),
          'RSS end (MiB)': mib(last.rss),
          'RSS max (MiB)': mib(Math.max(...samples.map((p) => p.rss))),
          'RSS slope (KiB per 1000 cycles)': perK(samples, 'rss'),
          'RSS slope, second half (KiB per 1000 cycles)': perK(half, 'rss'),
          'heap used idle (MiB)': mib(idle.heap),
          'heap used start (MiB)': mib(first.heap),
          'heap used end (MiB)': mib(last.heap),
          'heap used max (MiB)': mib(Math.max(...samples.map((p) => p.heap))),
          'heap used slope (KiB per 1000 cycles)': perK(samples, 'heap'),
          'heap used slope, second half (KiB per 1000 cycles)': perK(half, 'heap'),
          'open file descriptors start → end': `${String(first.fds)} → ${String(last.fds)}`,
        },
        note: samples
          .map((p) => `${String(p.cycles)}:${String(mib(p.rss))}/${String(mib(p.heap))}`)
          .join(' '),
      });
    } finally {
      client.close();
      await stopDriver(d);
    }
  }, 900_000);

  it(`NodePrepareResources through the kubelet (up to ${String(N_CLAIMS)} claims, ${String(KUBELET_BUDGET_MS / 1000)} s budget)`, async () => {
    const c = cluster as Cluster;
    node = await startNode(c, KUBELET_NODE);
    const n = node;
    const d = await startDriver(KUBELET_NODE, {
      registryDir: n.registryDir,
      pluginsDir: n.pluginsDir,
      cdiRoot: n.cdiDir,
    });
    await n.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER_NAME, 60_000);
    await d.waitReady();
    await eventually('8 GPUs published', async () => {
      const slices = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${KUBELET_NODE}` });
      return slices.items.flatMap((s) => s.spec.devices ?? []).length === GPUS ? true : undefined;
    });
    await waitForDefaultServiceAccount(core, NS_KUBELET);
    await resource.createNamespacedResourceClaimTemplate({
      namespace: NS_KUBELET,
      body: {
        metadata: { name: 'one-gpu' },
        spec: { spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: GPU_CLASS } }] } } },
      },
    });

    // Binding times, as any watcher (the kubelet included) sees them.
    const boundAt = new Map<string, number>();
    const podsList = await core.listNamespacedPod({ namespace: NS_KUBELET });
    const podWatch = await new Watch(c.kubeConfig).watch(
      `/api/v1/namespaces/${NS_KUBELET}/pods`,
      { resourceVersion: podsList.metadata?.resourceVersion },
      (_phase, obj: V1Pod) => {
        const name = obj.metadata?.name;
        if (name && obj.spec?.nodeName && !boundAt.has(name)) boundAt.set(name, Date.now());
      },
      () => undefined,
    );

    const bindToPrepared: number[] = [];
    const bindToPreparedFirstTry: number[] = [];
    const retryErrors = new Map<string, number>();
    const createToPrepared: number[] = [];
    const deleteToUnprepared: number[] = [];
    const failures: string[] = [];
    let retried = 0;
    let batches = 0;
    let measuredMs = 0;

    const runBatch = async (b: number, measure: boolean): Promise<void> => {
      const names = Array.from({ length: GPUS }, (_, k) => `p-${String(b)}-${String(k)}`);
      const createdAt = new Map<string, number>();
      const uids = await Promise.all(
        names.map(async (name) => {
          createdAt.set(name, Date.now());
          return createClaimPod(core, {
            namespace: NS_KUBELET,
            name,
            nodeName: KUBELET_NODE,
            template: 'one-gpu',
          });
        }),
      );
      const outcomes = await Promise.all(
        names.map((name) => waitForPrepareOutcome(n, `${NS_KUBELET}/${name}`)),
      );
      outcomes.forEach((e, k) => {
        const name = names[k] as string;
        if (e.event !== 'prepared') failures.push(`${name}: ${String(e['error'])}`);
        const retries = n.eventsFor(`${NS_KUBELET}/${name}`).filter((x) => x.event === 'prepareFailed');
        if (!measure) return;
        retried += retries.length;
        for (const r of retries) {
          // Pod names and UIDs vary; the rest of the message says why the kubelet retried.
          const why = String(r['error'])
            .replaceAll(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<uid>')
            .replaceAll(/p-\d+-\d+(-gpu-[a-z0-9]+)?/g, '<name>')
            .slice(0, 240);
          retryErrors.set(why, (retryErrors.get(why) ?? 0) + 1);
        }
        const at = eventTimeMs(e);
        const bound = boundAt.get(name);
        if (bound !== undefined) bindToPrepared.push(at - bound);
        if (bound !== undefined && retries.length === 0) bindToPreparedFirstTry.push(at - bound);
        createToPrepared.push(at - (createdAt.get(name) ?? at));
      });
      const deletedAt = Date.now();
      await Promise.all(names.map((name) => core.deleteNamespacedPod({ namespace: NS_KUBELET, name })));
      const unprepared = await Promise.all(
        uids.map((uid) => n.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === uid, 120_000)),
      );
      if (measure) for (const e of unprepared) deleteToUnprepared.push(eventTimeMs(e) - deletedAt);
      // The generated claims go with their pods (garbage collector); wait, so the next batch
      // finds all 8 GPUs free instead of waiting in the scheduler's backoff.
      await eventually(
        'generated claims deleted',
        async () =>
          (await resource.listNamespacedResourceClaim({ namespace: NS_KUBELET })).items.length === 0
            ? true
            : undefined,
        60_000,
        25,
      );
    };

    try {
      await runBatch(0, false); // warm-up
      const before = histogramBuckets(
        await d.metrics(),
        'gpu_dra_grpc_request_duration_seconds',
        'method="NodePrepareResources"',
      );
      const t0 = Date.now();
      for (let b = 1; createToPrepared.length < N_CLAIMS && Date.now() - t0 < KUBELET_BUDGET_MS; b++) {
        await runBatch(b, true);
        batches++;
        if (batches % 10 === 0)
          log(`kubelet path: ${String(createToPrepared.length)} claims in ${String(Date.now() - t0)} ms`);
      }
      measuredMs = Date.now() - t0;
      const server = bucketDelta(
        histogramBuckets(
          await d.metrics(),
          'gpu_dra_grpc_request_duration_seconds',
          'method="NodePrepareResources"',
        ),
        before,
      );
      expect(failures.slice(0, 5)).toEqual([]);
      const claims = createToPrepared.length;
      const limited =
        claims < N_CLAIMS
          ? ` (time budget ${String(KUBELET_BUDGET_MS / 1000)} s reached before ${String(N_CLAIMS)})`
          : '';
      const serverP50 = bucketQuantile(server, 0.5);
      const serverP99 = bucketQuantile(server, 0.99);
      record({
        id: 'kubelet-prepare',
        name: `prepare through the kubelet's DRA manager: pod bound → kubelet-dra "prepared" (${String(GPUS)} pods at a time, 1 claim each)`,
        unit: 'ms',
        summary: summarize(bindToPrepared),
        note: `${String(claims)} claims${limited}; includes the kubelet's claim GET, the gRPC call, its checkpoint and CDI resolution; ${String(retried)} kubelet retries; driver-side NodePrepareResources histogram: p50 ≤ ${serverP50 === undefined ? '?' : String(serverP50 * 1000)} ms, p99 ≤ ${serverP99 === undefined ? '?' : String(serverP99 * 1000)} ms`,
      });
      if (bindToPreparedFirstTry.length > 0)
        record({
          id: 'kubelet-prepare-first-try',
          name: 'prepare through the kubelet, pods prepared on the first attempt only',
          unit: 'ms',
          summary: summarize(bindToPreparedFirstTry),
          note: 'the kubelet retries a failed PrepareResources after 500 ms; see kubelet retry reasons',
        });
      record({
        id: 'kubelet-create-to-prepared',
        name: 'pod created → prepared (scheduler, claim controller, allocation, binding, kubelet prepare)',
        unit: 'ms',
        summary: summarize(createToPrepared),
        note: `${String(batches)} batches of ${String(GPUS)} in ${String(round(measuredMs / 1000))} s`,
      });
      record({
        id: 'kubelet-unprepare',
        name: 'pod deleted → kubelet-dra "unprepared"',
        unit: 'ms',
        summary: summarize(deleteToUnprepared),
      });
      record({
        id: 'kubelet-figures',
        name: 'prepare through the kubelet',
        unit: '',
        figures: {
          'claims measured': claims,
          'claims requested': N_CLAIMS,
          'time budget (s)': KUBELET_BUDGET_MS / 1000,
          'bound → prepared p50 (ms)': summarize(bindToPrepared).p50,
          'bound → prepared p99 (ms)': summarize(bindToPrepared).p99,
          'kubelet PrepareResources retries': retried,
          ...Object.fromEntries(
            [...retryErrors].map(([why, count], k) => [
              `retry reason ${String(k + 1)} (×${String(count)})`,
              why,
            ]),
          ),
          'pods per second (create → unprepared → claims gone)': round((claims * 1000) / measuredMs),
        },
      });
    } finally {
      podWatch.abort();
      await stopDriver(d);
    }
  }, 1_800_000);
});
