// Crash consistency on the real peers: the driver process is SIGKILLed at failpoints
// (src/util/failpoint.ts) between the durable writes, NVML calls and host changes of prepare,
// unprepare, rollback and recovery, while the kubelet-dra harness prepares and unprepares a mix
// of claims; it is restarted, the harness retries until its view settles, and then the node must
// be consistent:
//   - every claim the kubelet believes prepared has a PrepareCompleted checkpoint entry and its
//     CDI spec file, and the checkpoint records no claim the kubelet does not believe prepared;
//   - no CDI spec, MIG device, MPS daemon (Deployment and directory) or GPU setting (compute
//     mode, time slice) without a recorded owner;
//   - no device held by two claims unless both hold shares of it, no overlapping MIG placements;
//   - prepare again of every prepared claim answers its recorded devices, and unprepare (twice)
//     of every claim gone this round succeeds; neither changes the checkpoint or the spec files.
//
// Two nodes, two drivers, one cluster: static and dynamic MIG are a driver-wide mode
// (--mig-partitioning), so one node cannot have both. `crash-static` (4 H100 + an A100 with
// static MIG devices, --consumable-shares=memory from 1.35 on, --device-metadata) takes the
// whole-GPU, time-sliced, MPS, share and static-MIG claims; `crash-dynamic` (the mig-dynamic
// profile) the dynamic-MIG claims. Each round arms one node's driver, deletes that node's pods and
// creates new ones, at once (unprepares and prepares interleave) or, every other round, once the
// old ones are gone and the empty node is checked; only that driver dies, the other keeps serving.
//
// MPS daemons: a stand-in marks a daemon ready while its Deployment exists (and not ready once it
// is deleted), where the real daemon would write `ready` (test/e2e/install.test.ts runs real
// daemon pods); a restart every few seconds cannot afford a process per daemon.
//
// Which points: a calibration round (traced, not armed) lists the points one round passes. CI
// runs every point name of that list once per node (`name@1`), each followed by a second life
// armed at the second point it passes (`*@2`: inside recovery or the retried calls), then an
// unarmed one. `npm run test:soak` (GPU_DRA_SOAK_KILLS, default 1000; GPU_DRA_SOAK_SEED;
// GPU_DRA_SOAK_SECONDS, a time limit) arms three lives a round at seeded random hits `*@N` (N up
// to the calibration round's count) instead, until that many kills happened.
import fs from 'node:fs';
import path from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  ResourceV1Api,
  type V1DeviceRequest,
  type V1ExactDeviceRequest,
  type V1Pod,
  type V1ResourceClaimTemplateSpec,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { claimSpecFilePrefix } from '../../src/cdi/spec.js';
import { CHECKPOINT_FILE } from '../../src/checkpoint/schema.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import type { ClaimRef } from '../../src/kubelet/proto.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import { createSimulatedNode, simGpuSettingsFile, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, type FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { FAILPOINTS } from '../../src/util/failpoint.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import { draFeatures, k8sMinor } from './support/k8sVersion.js';
import type { NodeHarness } from './support/node.js';
import { sleep } from './support/process.js';
import { createNamespace, createTypedDeviceClasses } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const MIG_CLASS = `mig.${DRIVER}`;
const NS = 'crash';
const MPS_NS = 'gpu-dra';
const H100 = 'NVIDIA H100 80GB HBM3';
const SOAK_KILLS = Number(process.env['GPU_DRA_SOAK_KILLS'] ?? 0);
const SOAK_SEED = Number(process.env['GPU_DRA_SOAK_SEED'] ?? 1);
/** A soak stops here even with fewer kills (the summary says how many). */
const SOAK_SECONDS = Number(process.env['GPU_DRA_SOAK_SECONDS'] ?? 4 * 3600);
const SETTLE_MS = 120_000;
/**
 * Shares of a GPU (consumable capacity) from 1.35 on: the 1.34 scheduler checks a share against
 * the slice's first device rather than the one it places it on (kubernetes/kubernetes#133705),
 * so once one GPU is taken whole, no claim that consumes memory fits anywhere.
 */
const SHARES = k8sMinor() >= 35;

type Sharing = Record<string, unknown>;

function gpuRequest(name: string, extra: Partial<V1ExactDeviceRequest> = {}): V1DeviceRequest {
  return {
    name,
    exactly: {
      deviceClassName: GPU_CLASS,
      selectors: [{ cel: { expression: `device.attributes["${DRIVER}"].productName == "${H100}"` } }],
      ...extra,
    },
  };
}

function migRequest(name: string, profile: string): V1DeviceRequest {
  return {
    name,
    exactly: {
      deviceClassName: MIG_CLASS,
      selectors: [{ cel: { expression: `device.attributes["${DRIVER}"].profile == "${profile}"` } }],
    },
  };
}

function template(requests: V1DeviceRequest[], sharing?: Sharing): V1ResourceClaimTemplateSpec {
  return {
    spec: {
      devices: {
        requests,
        ...(sharing
          ? {
              config: [
                {
                  opaque: {
                    driver: DRIVER,
                    parameters: { apiVersion: `${DRIVER}/v1alpha1`, kind: 'GpuConfig', sharing },
                  },
                },
              ],
            }
          : {}),
      },
    },
  };
}

/** The claims each node's pods ask for, one pod (and template) per kind. */
const WORKLOADS: Record<'static' | 'dynamic', Record<string, V1ResourceClaimTemplateSpec>> = {
  static: {
    whole: template([gpuRequest('gpu')]),
    sliced: template([gpuRequest('gpu')], { strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } }),
    mps: template([gpuRequest('gpu')], { strategy: 'MPS', mps: { defaultActiveThreadPercentage: 50 } }),
    ...(SHARES
      ? {
          'share-a': template([gpuRequest('gpu', { capacity: { requests: { memory: '10Gi' } } })]),
          'share-b': template([gpuRequest('gpu', { capacity: { requests: { memory: '10Gi' } } })]),
        }
      : {}),
    'mig-1g': template([migRequest('mig', '1g.5gb')]),
    'mig-2g': template([migRequest('mig', '2g.10gb')]),
  },
  dynamic: {
    'dmig-2g': template([migRequest('mig', '2g.20gb')]),
    'dmig-3g': template([migRequest('mig', '3g.40gb')]),
    'dmig-pair': template([migRequest('small', '1g.5gb'), migRequest('medium', '2g.10gb')]),
  },
};

interface RecordedDevice {
  deviceName: string;
  uuid?: string;
  shareId?: string;
  cdiDeviceIds: string[];
  sharing?: { strategy?: string };
  migInstance?: { parentUuid: string; placement: { start: number; size: number } };
}
interface RecordedClaim {
  state?: string;
  namespace: string;
  name: string;
  cdiSpecFile?: string;
  mpsDaemons?: string[];
  devices: RecordedDevice[];
}

interface Side {
  readonly kind: 'static' | 'dynamic';
  readonly nodeName: string;
  readonly sim: SimulatedNode;
  readonly args: string[];
  node: NodeHarness;
  driver?: DriverProcess;
  /** Pods of this node now in the API: name → UID. */
  pods: Map<string, string>;
  /** Claims believed prepared at the last check (for the unprepare-twice check of gone ones). */
  believed: Map<string, ClaimRef>;
  /** Rounds run on this node. */
  rounds: number;
}

/** mulberry32: a seeded PRNG, so a soak run can be repeated. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 4 H100 (whole GPUs) and an A100 with static MIG devices, as one node. */
async function staticNodeConfig(): Promise<FakeNvmlConfig> {
  const h100 = await loadProfile('h100-8x');
  const a100 = await loadProfile('a100-mig');
  const mig = a100.gpus[0];
  if (!mig) throw new Error('a100-mig has no GPU');
  return {
    ...h100,
    description: 'crash-points: 4 H100 with MIG off, 1 A100 40GB with static MIG devices',
    giProfileTables: { ...h100.giProfileTables, ...a100.giProfileTables },
    gpus: [...h100.gpus.slice(0, 4), { ...mig, minor: 4 }],
  };
}

describe('crash points: SIGKILL between every step, restart, retry, invariants hold', () => {
  const features = draFeatures(['DRAPartitionableDevices', 'DRAConsumableCapacity']);
  const fx = useCluster({
    ...features,
    // MPS daemons are privileged pods (src/sharing/mps.ts).
    apiserverArgs: [...(features.apiserverArgs ?? []), '--allow-privileged=true'],
    nodeNames: ['crash-static', 'crash-dynamic'],
  });
  const drivers = driverProcesses(fx);
  const sides: Side[] = [];
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let apps: AppsV1Api;
  let traceDir: string;
  let lifeNo = 0;
  let roundNo = 0;
  const restartMs: number[] = [];
  let stopMps = false;

  beforeAll(async () => {
    const c = fx.cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    apps = c.kubeConfig.makeApiClient(AppsV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS, mig: MIG_CLASS });
    await createNamespace(core, NS);
    await createNamespace(core, MPS_NS);
    traceDir = fx.tempDir('gdra-e2e-crash-trace-');
    const specs = [
      {
        kind: 'static' as const,
        nodeName: 'crash-static',
        profile: await staticNodeConfig(),
        args: [
          ...(SHARES ? ['--consumable-shares=memory'] : []),
          `--namespace=${MPS_NS}`,
          '--image=gpu-dra:crash-test',
          '--mps-shm-size=0',
          '--mps-ready-timeout=20s',
          '--device-metadata=true',
        ],
      },
      {
        kind: 'dynamic' as const,
        nodeName: 'crash-dynamic',
        profile: 'mig-dynamic',
        args: ['--mig-partitioning=dynamic'],
      },
    ];
    for (const s of specs) {
      const sim = await createSimulatedNode(s.profile, fx.tempDir(`gdra-e2e-crash-${s.kind}-`), {
        libPath: fakeNvmlLib(),
      });
      // Retries at most a second apart: the settle wait is what each kill costs.
      const node = await fx.startNode(s.nodeName, { extraArgs: ['--retry-base=100ms', '--retry-max=1s'] });
      sides.push({
        kind: s.kind,
        nodeName: s.nodeName,
        sim,
        args: s.args,
        node,
        pods: new Map(),
        believed: new Map(),
        rounds: 0,
      });
      for (const [kind, spec] of Object.entries(WORKLOADS[s.kind])) {
        await resource.createNamespacedResourceClaimTemplate({
          namespace: NS,
          body: { metadata: { name: `${s.kind}-${kind}` }, spec },
        });
      }
    }
    // The dynamic node's MIG devices are read from its fake NVML (as nvidia-smi would).
    process.env['FAKE_NVML_CONFIG'] = side('dynamic').sim.configPath;
    void mpsStandIn();
    fx.track({
      stop: () => {
        stopMps = true;
      },
    });
    for (const s of sides) s.driver = await startLife(s, undefined);
  });

  function side(kind: Side['kind']): Side {
    const s = sides.find((x) => x.kind === kind);
    if (!s) throw new Error(`${kind} node not set up`);
    return s;
  }
  const pluginDir = (s: Side): string => path.join(s.node.pluginsDir, DRIVER);

  /** Marks an MPS daemon ready while its Deployment exists, not ready once it is deleted. */
  async function mpsStandIn(): Promise<void> {
    while (!stopMps) {
      try {
        const live = new Set<string>();
        const list = await apps.listNamespacedDeployment({ namespace: MPS_NS });
        for (const d of list.items) {
          const labels = d.metadata?.labels ?? {};
          const s = sides.find((x) => x.nodeName === labels['gpu-dra.dev/node']);
          const id = labels['gpu-dra.dev/mps-daemon'];
          if (!s || !id || d.metadata?.deletionTimestamp) continue;
          const dir = path.join(pluginDir(s), 'mps', id);
          live.add(dir);
          if (fs.existsSync(dir) && !fs.existsSync(path.join(dir, 'ready')))
            fs.writeFileSync(path.join(dir, 'ready'), '');
        }
        for (const s of sides) {
          const root = path.join(pluginDir(s), 'mps');
          for (const id of fs.existsSync(root) ? fs.readdirSync(root) : []) {
            const dir = path.join(root, id);
            if (!live.has(dir)) fs.rmSync(path.join(dir, 'ready'), { force: true });
          }
        }
      } catch {
        // a directory removed under us, or the apiserver busy: poll again
      }
      await sleep(100);
    }
  }

  /** Starts the node's driver, armed at `spec` (GPU_DRA_FAILPOINTS) or not; traced either way. */
  async function startLife(s: Side, spec: string | undefined): Promise<DriverProcess> {
    const trace = path.join(traceDir, `life-${String(++lifeNo)}`);
    const started = Date.now();
    const d = await drivers.start({
      nodeName: s.nodeName,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node: s.node,
      sim: s.sim,
      args: s.args,
      env: { GPU_DRA_FAILPOINT_TRACE: trace, ...(spec ? { GPU_DRA_FAILPOINTS: spec } : {}) },
      mayDie: spec !== undefined,
    });
    if (d.child.exitCode === null && d.child.signalCode === null) restartMs.push(Date.now() - started);
    traces.set(d, trace);
    armedAt.set(d, spec);
    return d;
  }
  const traces = new Map<DriverProcess, string>();
  const armedAt = new Map<DriverProcess, string | undefined>();
  const traceOf = (d: DriverProcess): string[] => {
    const file = traces.get(d);
    return file && fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  };
  const dead = (d: DriverProcess | undefined): boolean =>
    d === undefined || d.child.exitCode !== null || d.child.signalCode !== null;

  /** Pods of the node the harness has prepared (this UID) and not unprepared. */
  function preparedPods(s: Side): Set<string> {
    const state = new Map<string, boolean>();
    for (const e of s.node.events) {
      if (typeof e['uid'] !== 'string') continue;
      if (e.event === 'prepared') state.set(e['uid'], true);
      if (e.event === 'unprepared') state.set(e['uid'], false);
    }
    return new Set([...state].filter(([, v]) => v).map(([uid]) => uid));
  }

  /**
   * Has the harness prepared every pod of this round (`s.pods`), each bound to the node and not
   * terminating? Read from one list: two (bound, then unbound) could miss a pod bound in between.
   */
  async function settled(s: Side): Promise<boolean> {
    const byName = new Map(
      (await core.listNamespacedPod({ namespace: NS })).items.map((p: V1Pod) => [p.metadata?.name ?? '', p]),
    );
    const prepared = preparedPods(s);
    return [...s.pods].every(([name, uid]) => {
      const p = byName.get(name);
      return (
        p?.metadata?.uid === uid &&
        p.spec?.nodeName === s.nodeName &&
        !p.metadata.deletionTimestamp &&
        prepared.has(uid)
      );
    });
  }

  async function until(what: string, done: () => Promise<boolean> | boolean): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    while (!(await done())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  interface RoundResult {
    /** The point each killed life died at. */
    readonly killedAt: string[];
    /** The points the lives passed (hits), in order. */
    readonly hits: string[];
  }

  /**
   * One round on `s`: kill its (quiescent) driver, start it armed at specs[0], delete the node's
   * pods and create new ones; a life that dies is followed by one armed at the next spec, then
   * by an unarmed one; once the harness settled, check the invariants. A node's odd rounds create the new
   * pods at once, so prepares and unprepares interleave (and a new claim may take over the GPU a
   * deleted one just left); its even rounds wait for the old pods to go, check the node empty (a leak
   * cannot hide behind a new owner), then create them.
   */
  async function round(s: Side, specs: readonly string[]): Promise<RoundResult> {
    const r = ++roundNo;
    // Per node: the nodes take turns too, so a round-wide parity would give each node one kind.
    const interleaved = ++s.rounds % 2 === 1;
    const roundStart = Date.now();
    const old = s.driver;
    if (old && !dead(old)) {
      old.child.kill('SIGKILL');
      await old.exited;
    }
    const killedAt: string[] = [];
    const hits: string[] = [];
    const next = [...specs.slice(1)];
    let life = await startLife(s, specs[0]);
    /** Until `goal` holds with a driver alive, restarting each life that dies (armed at the next spec). */
    const settle = async (what: string, goal: () => Promise<boolean>): Promise<void> => {
      for (;;) {
        await until(
          `round ${String(r)} on ${s.nodeName}: ${what} or the driver to die`,
          async () => dead(life) || (await goal()),
        );
        if (!dead(life)) return;
        const trace = traceOf(life);
        hits.push(...trace);
        const armed = armedAt.get(life);
        expect(
          await life.exited,
          `${s.nodeName}: life armed at ${String(armed)} ended by SIGKILL`,
        ).toMatchObject({
          signal: 'SIGKILL',
        });
        if (armed === undefined)
          throw new Error(`the unarmed driver of ${s.nodeName} died:\n${life.stderr()}`);
        killedAt.push(trace.at(-1) ?? '?');
        life = await startLife(s, next.shift());
      }
    };
    const gone = [...s.pods.keys()];
    for (const name of gone) await core.deleteNamespacedPod({ namespace: NS, name }).catch(() => undefined);
    s.pods = new Map();
    if (!interleaved) {
      await settle('the old pods to go', () => podsGone(gone));
      await checkInvariants(s, 0, life);
    }
    for (const kind of Object.keys(WORKLOADS[s.kind])) {
      const name = `${s.kind}-${kind}-${String(r)}`;
      const pod = await core.createNamespacedPod({
        namespace: NS,
        body: {
          metadata: { name },
          spec: {
            nodeSelector: { 'kubernetes.io/hostname': s.nodeName },
            containers: [
              { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'c' }] } },
            ],
            resourceClaims: [{ name: 'c', resourceClaimTemplateName: `${s.kind}-${kind}` }],
          },
        },
      });
      s.pods.set(name, pod.metadata?.uid ?? '');
    }
    await settle('the pods to settle', async () => (await settled(s)) && (await podsGone(gone)));
    hits.push(...traceOf(life));
    s.driver = life;
    await checkInvariants(s, Object.keys(WORKLOADS[s.kind]).length, life);
    process.stdout.write(
      `crash-points round ${String(r)} ${s.nodeName} ${interleaved ? 'interleaved' : 'two-phase'} [${specs.join(' ')}]: ` +
        `killed at [${killedAt.join(' ')}], ${String(hits.length)} hits, ${String(Date.now() - roundStart)} ms\n`,
    );
    return { killedAt, hits };
  }

  async function podsGone(names: readonly string[]): Promise<boolean> {
    const present = new Set(
      (await core.listNamespacedPod({ namespace: NS })).items.map((p) => p.metadata?.name ?? ''),
    );
    return names.every((n) => !present.has(n));
  }

  function readCheckpoint(s: Side): Record<string, RecordedClaim> {
    const file = path.join(pluginDir(s), CHECKPOINT_FILE);
    if (!fs.existsSync(file)) return {};
    return (
      (JSON.parse(fs.readFileSync(file, 'utf8')) as { claims?: Record<string, RecordedClaim> }).claims ?? {}
    );
  }
  const specFiles = (s: Side): string[] =>
    fs
      .readdirSync(s.node.cdiDir)
      .filter((f) => f.startsWith(claimSpecFilePrefix(DRIVER)))
      .sort();
  const snapshot = (s: Side): string =>
    JSON.stringify({
      checkpoint: readCheckpoint(s),
      specs: specFiles(s).map((f) => [f, fs.readFileSync(path.join(s.node.cdiDir, f), 'utf8')]),
    });

  /** `pods`: how many of the node's pods should be prepared now; `life`: the driver serving. */
  async function checkInvariants(s: Side, pods: number, life: DriverProcess): Promise<void> {
    const where = `${s.nodeName} after round ${String(roundNo)}`;
    // The kubelet's view: the claims of the pods it prepared and has not unprepared.
    const prepared = preparedPods(s);
    const claims = (await resource.listNamespacedResourceClaim({ namespace: NS })).items;
    const believed = new Map<string, ClaimRef>();
    for (const c of claims) {
      if (!(c.metadata?.ownerReferences ?? []).some((o) => prepared.has(o.uid))) continue;
      const uid = c.metadata?.uid ?? '';
      believed.set(uid, { uid, namespace: NS, name: c.metadata?.name ?? '' });
    }
    if (believed.size !== pods) {
      // What the harness and the API said, to tell a lost claim from a harness or test race.
      const onNode = (
        await core.listNamespacedPod({ namespace: NS, fieldSelector: `spec.nodeName=${s.nodeName}` })
      ).items.map((p) => ({
        pod: p.metadata?.name,
        uid: p.metadata?.uid,
        phase: p.status?.phase,
        deleting: p.metadata?.deletionTimestamp !== undefined,
        prepared: prepared.has(p.metadata?.uid ?? ''),
        claims: p.status?.resourceClaimStatuses,
      }));
      const owned = claims.map((c) => ({
        claim: c.metadata?.name,
        owners: c.metadata?.ownerReferences?.map((o) => o.uid),
        deleting: c.metadata?.deletionTimestamp !== undefined,
      }));
      const names = new Set(onNode.map((p) => `${NS}/${String(p.pod)}`));
      const events = s.node.events
        .filter((e) => names.has(String(e['pod'])))
        .map((e) => `${String(e['pod'])} ${e.event}`);
      expect.fail(
        `${where}: ${String(believed.size)} claims believed prepared, ${String(pods)} expected\n` +
          JSON.stringify({ onNode, owned, events }, null, 1),
      );
    }
    const checkpoint = readCheckpoint(s);
    const specs = specFiles(s);
    // Believed prepared ⇔ recorded PrepareCompleted, with its spec file.
    for (const [uid, ref] of believed) {
      const entry = checkpoint[uid];
      expect(entry?.state ?? 'PrepareCompleted', `${where}: ${ref.name}`).toBe('PrepareCompleted');
      expect(entry, `${where}: checkpoint entry of ${ref.name}`).toBeDefined();
      expect(specs, `${where}: spec of ${ref.name}`).toContain(entry?.cdiSpecFile);
    }
    expect(Object.keys(checkpoint).sort(), `${where}: recorded claims are the believed ones`).toEqual(
      [...believed.keys()].sort(),
    );
    expect(specs, `${where}: spec files are the recorded ones`).toEqual(
      Object.values(checkpoint)
        .map((e) => e.cdiSpecFile)
        .sort(),
    );
    // No device held twice but as shares; no overlapping MIG placements.
    const holders = new Map<string, RecordedDevice[]>();
    const placements: { parent: string; from: number; to: number; uid: string }[] = [];
    for (const [uid, e] of Object.entries(checkpoint)) {
      for (const d of e.devices) {
        holders.set(d.deviceName, [...(holders.get(d.deviceName) ?? []), d]);
        if (d.migInstance) {
          const { start, size } = d.migInstance.placement;
          placements.push({ parent: d.migInstance.parentUuid, from: start, to: start + size, uid });
        }
      }
    }
    for (const [device, held] of holders) {
      if (held.length > 1)
        expect(
          held.every((d) => d.shareId),
          `${where}: ${device} held by ${String(held.length)} claims`,
        ).toBe(true);
    }
    for (const a of placements)
      for (const b of placements)
        if (a !== b && a.parent === b.parent)
          expect(a.to <= b.from || b.to <= a.from, `${where}: MIG placements overlap`).toBe(true);
    // MIG devices (dynamic): exactly the recorded ones exist.
    if (s.kind === 'dynamic') {
      const live = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: s.sim.hostPaths }).gpus.flatMap(
        (g) => g.migDevices.map((m) => `${g.uuid}@${String(m.placement.start)}+${String(m.placement.size)}`),
      );
      expect(live.sort(), `${where}: live MIG devices are the recorded ones`).toEqual(
        placements.map((p) => `${p.parent}@${String(p.from)}+${String(p.to - p.from)}`).sort(),
      );
    }
    // MPS daemons: Deployments and directories are the recorded ones.
    const daemons = Object.values(checkpoint)
      .flatMap((e) => e.mpsDaemons ?? [])
      .sort();
    const deployments = (
      await apps.listNamespacedDeployment({
        namespace: MPS_NS,
        labelSelector: `gpu-dra.dev/node=${s.nodeName}`,
      })
    ).items
      .filter((d) => !d.metadata?.deletionTimestamp)
      .map((d) => d.metadata?.labels?.['gpu-dra.dev/mps-daemon'] ?? '?')
      .sort();
    expect(deployments, `${where}: MPS Deployments are the recorded daemons`).toEqual(daemons);
    const mpsRoot = path.join(pluginDir(s), 'mps');
    expect(fs.existsSync(mpsRoot) ? fs.readdirSync(mpsRoot).sort() : [], `${where}: MPS directories`).toEqual(
      daemons,
    );
    // GPU settings: an exclusive compute mode or a time slice only on a GPU whose claim asks for it.
    for (const g of s.sim.config.gpus) {
      const file = simGpuSettingsFile(s.sim.hostPaths.driverRoot, g.uuid);
      const settings = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      const owners = Object.values(checkpoint).flatMap((e) => e.devices.filter((d) => d.uuid === g.uuid));
      if (/computeMode=EXCLUSIVE_PROCESS/.test(settings))
        expect(
          owners.map((d) => d.sharing?.strategy),
          `${where}: ${g.uuid} exclusive`,
        ).toContain('MPS');
      if (/timeslice=[123]/.test(settings))
        expect(
          owners.map((d) => d.sharing?.strategy),
          `${where}: ${g.uuid} time slice`,
        ).toContain('TimeSlicing');
    }
    // Idempotence, on the socket: prepare again answers the recorded devices; unprepare of the
    // claims gone this round succeeds twice; nothing changes.
    const before = snapshot(s);
    const passed = traceOf(life).length;
    const client = new KubeletClient({ draSocket: path.join(pluginDir(s), 'dra.sock') });
    try {
      const again = await client.prepare([...believed.values()]);
      for (const [uid, ref] of believed) {
        const answer = again.claims[uid];
        expect(answer?.error ?? '', `${where}: prepare again ${ref.name}`).toBe('');
        expect(answer?.devices.flatMap((d) => d.cdi_device_ids).sort()).toEqual(
          checkpoint[uid]?.devices.flatMap((d) => d.cdiDeviceIds).sort(),
        );
      }
      const goneRefs = [...s.believed.values()].filter((ref) => !believed.has(ref.uid));
      for (let i = 0; i < 2; i++) {
        const res = await client.unprepare(goneRefs);
        for (const ref of goneRefs)
          expect(res.claims[ref.uid]?.error ?? '', `${where}: unprepare ${ref.name}`).toBe('');
      }
    } finally {
      client.close();
    }
    expect(snapshot(s), `${where}: the repeated calls changed nothing`).toBe(before);
    expect(traceOf(life).slice(passed), `${where}: the repeated calls wrote nothing, touched no GPU`).toEqual(
      [],
    );
    s.believed = believed;
  }

  it(
    'a calibration round per node passes its points; then every point, killed, leaves the node consistent',
    async () => {
      const started = Date.now();
      // Pods to unprepare in the first round of each node.
      for (const s of sides) await round(s, []);
      const calibration = new Map<Side, string[]>();
      for (const s of sides) calibration.set(s, (await round(s, [])).hits);

      const killedAt: string[] = [];
      let rounds = 0;
      const run = async (s: Side, specs: string[]): Promise<void> => {
        const res = await round(s, specs);
        killedAt.push(...res.killedAt);
        rounds++;
      };
      if (SOAK_KILLS > 0) {
        const random = prng(SOAK_SEED);
        const soakUntil = started + SOAK_SECONDS * 1000;
        while (killedAt.length < SOAK_KILLS && Date.now() < soakUntil) {
          const s = sides[rounds % sides.length] as Side;
          const total = calibration.get(s)?.length ?? 1;
          const at = (): string => `*@${String(1 + Math.floor(random() * total))}`;
          await run(s, [at(), at(), at()]);
          if (rounds % 25 === 0)
            process.stdout.write(
              `crash-points soak: ${String(killedAt.length)} kills in ${String(rounds)} rounds, ${String(Math.round((Date.now() - started) / 1000))} s\n`,
            );
        }
      } else {
        for (const s of sides) {
          const names = [...new Set(calibration.get(s))];
          for (const name of names) await run(s, [`${name}@1`, '*@2']);
          // Every point the workload passes was killed at, at least once.
          for (const name of names) expect(killedAt, `a kill at ${name} on ${s.nodeName}`).toContain(name);
        }
      }
      const secs = (Date.now() - started) / 1000;
      const distinct = [...new Set(killedAt)].sort();
      const median = [...restartMs].sort((a, b) => a - b)[Math.floor(restartMs.length / 2)] ?? 0;
      process.stdout.write(
        `crash-points: ${String(killedAt.length)} kill points survived in ${String(rounds)} rounds, ` +
          `${String(distinct.length)} distinct points (${distinct.join(', ')}); never killed at: ` +
          `${FAILPOINTS.filter((n) => !distinct.includes(n)).join(', ')}; ${secs.toFixed(0)} s, ` +
          `${(secs / Math.max(1, killedAt.length)).toFixed(2)} s per kill; driver start to ready median ${String(median)} ms\n`,
      );
      expect(killedAt.length).toBeGreaterThan(0);
    },
    4 * 3_600_000,
  );
});
