// A truncated checkpoint, as a crash or a full disk leaves it, on a node with running pods: the
// real driver process is stopped, its checkpoint cut in half, and started again. It must not
// trust the file nor crash-loop: it keeps the file aside, rebuilds the prepared claims from the
// API through the identity each CDI spec carries, holds their devices again (a new claim cannot
// take a held GPU), says what happened in a Warning Event on the Node and in its log, and the
// pods' unprepare later cleans everything, the time slice and the MPS daemon included.
//
// MPS daemons are Deployments the driver creates, which report readiness through a file; a
// stand-in here plays the daemon (writes `ready` while its Deployment exists), since what is
// checked is that the driver keeps, and later removes, the running pod's daemon.
import fs from 'node:fs';
import path from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  EventsV1Api,
  ResourceV1Api,
  type V1ResourceClaimTemplateSpec,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { KubeletClient } from '../../src/kubelet/client.js';
import { mpsDeploymentName, mpsDirs } from '../../src/sharing/mps.js';
import { createSimulatedNode, simCallLog, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import {
  createAllocatedClaim,
  createNamespace,
  createPodWithClaims,
  createDriverDeviceClass,
  oneDeviceTemplate,
} from './support/workloads.js';
import { preparedContainers, type NodeHarness } from './support/node.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { eventually } from './support/wait.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'ckpt-rebuild';
const CLASS = `gpu.${DRIVER}`;
const MPS_NS = 'gpu-dra-mps';

/** A claim template for one GPU with `sharing` in this driver's opaque config. */
function sharedTemplate(sharing: Record<string, unknown>): V1ResourceClaimTemplateSpec {
  return {
    spec: {
      devices: {
        requests: [{ name: 'gpu', exactly: { deviceClassName: CLASS } }],
        config: [
          {
            requests: ['gpu'],
            opaque: {
              driver: DRIVER,
              parameters: { apiVersion: 'gpu.dra.dev/v1alpha1', kind: 'GpuConfig', sharing },
            },
          },
        ],
      },
    },
  };
}

type Entries = Record<
  string,
  { devices: { deviceName: string }[]; updated?: string } & Record<string, unknown>
>;

describe('a truncated checkpoint is rebuilt from the API, with an Event, on the real driver process', () => {
  // MPS daemon pods are privileged (src/sharing/mps.ts), as the plugin's own.
  const fx = useCluster({ apiserverArgs: ['--allow-privileged=true'] });
  let node: NodeHarness;
  let sim: SimulatedNode;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const drivers = driverProcesses(fx);
  /** Claim UID → device, of the two pods. */
  const prepared = new Map<string, string>();
  let before: Entries = {};
  let restarted: DriverProcess | undefined;
  let keptAs = '';

  let apps: AppsV1Api;
  let mpsDaemon = '';
  const daemonNames = async (): Promise<string[]> =>
    (await apps.listNamespacedDeployment({ namespace: MPS_NS })).items.map((d) => d.metadata?.name ?? '');

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    apps = fx.cluster.kubeConfig.makeApiClient(AppsV1Api);
    await createDriverDeviceClass(resource, CLASS, DRIVER);
    await createNamespace(core, NS);
    await createNamespace(core, MPS_NS);
    sim = await createSimulatedNode('h100-8x', fx.tempDir('gdra-e2e-ckpt-'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
    // The stand-in MPS daemon: ready while its Deployment exists.
    const mpsRoot = path.join(node.pluginsDir, DRIVER, 'mps');
    let stopped = false;
    const loop = (async () => {
      while (!stopped) {
        const ids = fs.existsSync(mpsRoot) ? fs.readdirSync(mpsRoot) : [];
        const live = ids.length > 0 ? new Set(await daemonNames().catch(() => [])) : new Set<string>();
        for (const id of ids) {
          const { ready } = mpsDirs(path.join(node.pluginsDir, DRIVER), id);
          if (live.has(mpsDeploymentName(id))) fs.writeFileSync(ready, '');
          else fs.rmSync(ready, { force: true });
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    fx.track({
      stop: async () => {
        stopped = true;
        await loop;
      },
    });
  });

  const startDriver = (): Promise<DriverProcess> =>
    drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      args: [`--namespace=${MPS_NS}`, '--image=gpu-dra:test'],
      env: { MPS_SHM_SIZE: '0', MPS_READY_TIMEOUT: '30s' },
    });
  const checkpointFile = (): string => path.join(node.pluginsDir, DRIVER, 'checkpoint.json');
  const entries = (): Entries =>
    (JSON.parse(fs.readFileSync(checkpointFile(), 'utf8')) as { claims: Entries }).claims;
  const withoutTimes = (e: Entries): Entries =>
    Object.fromEntries(Object.entries(e).map(([uid, c]) => [uid, { ...c, updated: undefined }]));
  const toolCalls = (): string[] => {
    const file = simCallLog(sim.hostPaths.driverRoot);
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  };
  async function stop(p: DriverProcess): Promise<void> {
    p.child.kill('SIGTERM');
    expect(await p.exited, p.stderr()).toMatchObject({ code: 0 });
  }
  async function registeredAgain(after: number): Promise<void> {
    await node.waitForEvent(
      (e) =>
        e.event === 'registered' &&
        e['driver'] === DRIVER &&
        node.events.filter((x) => x.event === 'registered').indexOf(e) >= after,
      30_000,
    );
  }

  it('prepares a whole GPU, a time-sliced GPU and an MPS GPU, then loses the checkpoint to a truncation', async () => {
    const first = await startDriver();
    await node.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    for (const [pod, template] of [
      ['whole', oneDeviceTemplate(CLASS)],
      ['sliced', sharedTemplate({ strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } })],
      ['mps', sharedTemplate({ strategy: 'MPS' })],
    ] as const) {
      await createPodWithClaims(
        { resource, core },
        { namespace: NS, pod, claims: [{ name: 'gpu', template }] },
      );
      const event = await node.waitForEvent(
        (e) => e['pod'] === `${NS}/${pod}` && e.event === 'prepared',
        60_000,
      );
      const id = preparedContainers(event)[0]?.cdiDevices[0] ?? '';
      const [, uid = '', device = ''] = /claim=([0-9a-f-]{36})-(gpu-\d+)$/.exec(id) ?? [];
      expect(uid, id).not.toBe('');
      prepared.set(uid, device);
    }
    before = entries();
    expect(Object.keys(before).sort()).toEqual([...prepared.keys()].sort());
    mpsDaemon = mpsDeploymentName(
      ((before[[...prepared.keys()][2] ?? ''] as { mpsDaemons?: string[] }).mpsDaemons ?? [])[0] ?? '?',
    );
    expect(await daemonNames()).toEqual([mpsDaemon]);
    await stop(first);

    // A crash mid-write of a filesystem without atomic rename, or a full disk: half the file.
    const bytes = fs.readFileSync(checkpointFile());
    fs.writeFileSync(checkpointFile(), bytes.subarray(0, Math.floor(bytes.length / 2)));
  });

  it('the restarted driver rebuilds the claims, keeps the file aside, and says so in an Event and its log', async () => {
    expect(prepared.size).toBe(3);
    const registrations = node.events.filter((e) => e.event === 'registered').length;
    const truncated = fs.readFileSync(checkpointFile());
    const started = Date.now();
    restarted = await startDriver();
    await registeredAgain(registrations);
    const startMs = Date.now() - started;

    // Same entries as before the loss (timestamps aside).
    expect(withoutTimes(entries())).toEqual(withoutTimes(before));
    expect(JSON.parse(fs.readFileSync(checkpointFile(), 'utf8'))).not.toHaveProperty('rebuild');
    // The evidence, byte for byte.
    const aside = fs
      .readdirSync(path.dirname(checkpointFile()))
      .filter((f) => f.startsWith('checkpoint.json.corrupt-'));
    expect(aside).toHaveLength(1);
    keptAs = path.join(path.dirname(checkpointFile()), aside[0] ?? '');
    expect(fs.readFileSync(keptAs).equals(truncated)).toBe(true);

    const events = fx.cluster.kubeConfig.makeApiClient(EventsV1Api);
    const event = await eventually('the CheckpointRebuilt event', async () =>
      (await events.listNamespacedEvent({ namespace: 'default' })).items.find(
        (e) => e.reason === 'CheckpointRebuilt' && e.regarding?.kind === 'Node' && e.regarding.name === NODE,
      ),
    );
    expect(event.type).toBe('Warning');
    expect(event.reportingController).toBe(`${DRIVER}/kubelet-plugin`);
    expect(event.note).toContain(`checkpoint ${checkpointFile()} was unreadable (invalid JSON`);
    expect(event.note).toContain(`kept as ${keptAs}`);
    expect(event.note).toContain(
      'Rebuilt 3 prepared claim(s) from the API, dropped 0 no longer allocated here.',
    );
    // The log line says the same, with the facts as fields.
    const lines = restarted
      .stderr()
      .split('\n')
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
    const line = lines.find((l) => l['msg'] === event.note);
    expect(line, restarted.stderr()).toMatchObject({
      level: 40,
      reason: 'corrupt',
      keptAs,
      rebuilt: [...prepared.keys()].sort(),
      dropped: [],
    });
    // The running pod's MPS daemon was not swept.
    expect(await daemonNames()).toEqual([mpsDaemon]);
    console.log(`restart with a truncated checkpoint: registered again after ${String(startMs)} ms`);
  });

  it('a new claim cannot take a GPU a rebuilt claim holds', async () => {
    const client = new KubeletClient({
      draSocket: path.join(node.pluginsDir, DRIVER, 'dra.sock'),
      timeoutMs: 30_000,
    });
    try {
      const [, wholeDevice = ''] = [...prepared.entries()][0] ?? [];
      const ref = await createAllocatedClaim(resource, {
        namespace: NS,
        name: 'thief',
        deviceClassName: CLASS,
        driver: DRIVER,
        pool: NODE,
        device: wholeDevice,
        nodeName: NODE,
        podName: 'thief-pod',
      });
      const res = await client.prepare([ref]);
      expect(res.claims[ref.uid]?.error).toMatch(/DEVICE_IN_USE/);
      expect(entries()).not.toHaveProperty(ref.uid);
    } finally {
      client.close();
    }
  });

  it('deleting the pods unprepares the rebuilt claims: specs, entries, the time slice and the MPS daemon go', async () => {
    for (const pod of ['whole', 'mps', 'sliced']) {
      await core.deleteNamespacedPod({ namespace: NS, name: pod, gracePeriodSeconds: 0 });
      await node.waitForEvent((e) => e['pod'] === `${NS}/${pod}` && e.event === 'unprepared', 60_000);
    }
    expect(entries()).toEqual({});
    expect(fs.readdirSync(node.cdiDir)).toEqual([]);
    expect(toolCalls().at(-1)).toMatch(/compute-policy -i \S+ --set-timeslice 0$/);
    expect(await daemonNames()).toEqual([]);
    await stop(restarted as DriverProcess);
  });
});
