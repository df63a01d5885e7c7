// An upgrade with no gap, as the DaemonSet does it (maxSurge 1, maxUnavailable 0): the old plugin
// process A (its pod UID in its socket names) serves; the new one, B, starts beside it and
// registers; A gets SIGTERM and exits. Throughout, pods keep arriving and being prepared. The
// kubelet is the real plugin manager and DRA manager (kubelet-dra), which routes each call to the
// newest connected plugin and wipes a driver's slices when none is left.
//
// Checked: no pod's prepare failed or waited more than a few seconds; the node's ResourceSlices
// were never deleted (watched during the roll, and the kubelet never wiped them, for longer than
// its 30 s wiping delay after A left); the claims A prepared before the roll stay prepared
// (checkpoint and CDI spec) and unprepare cleanly through B; A's sockets are gone, B's remain.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, Watch } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import {
  createNamespace,
  createPodWithClaims,
  oneDeviceTemplate,
  createDriverDeviceClass,
} from './support/workloads.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { sleep } from './support/process.js';
import { draSocketPath, registrationSocketPath } from '../../src/kubelet/plugin.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'upgrade';
const UID_A = '6a0d1f3c-0000-4aaa-8aaa-00000000000a';
const UID_B = '6a0d1f3c-0000-4bbb-8bbb-00000000000b';
/** The kubelet deletes a driver's slices this long after its last plugin went away. */
const KUBELET_WIPING_DELAY_MS = 30_000;
/** What "no pod waits" means here: scheduling and one prepare, on a busy 2-core machine. */
const MAX_POD_WAIT_MS = 5_000;

describe('upgrade with no gap: two plugin instances side by side (--pod-uid)', () => {
  const fx = useCluster();
  let node: NodeHarness;
  let sim: SimulatedNode;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const drivers = driverProcesses(fx);

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createDriverDeviceClass(resource, `gpu.${DRIVER}`, DRIVER);
    await createNamespace(core, NS);
    sim = await createSimulatedNode('h100-8x', fx.tempDir('gdra-e2e-upgrade-'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
  });

  const startDriver = (podUid: string): Promise<DriverProcess> =>
    drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      args: [`--pod-uid=${podUid}`],
    });
  // The test's registry path is long: the registration socket may get the library's hashed name.
  const sockets = (podUid: string): string[] => [
    registrationSocketPath({ registryDir: node.registryDir }, DRIVER, podUid),
    draSocketPath({ pluginsDir: node.pluginsDir }, DRIVER, podUid),
  ];
  const draSocket = (podUid: string): string => sockets(podUid)[1] as string;
  const checkpointClaims = (): Record<string, { state: string }> =>
    (
      JSON.parse(fs.readFileSync(path.join(node.pluginsDir, DRIVER, 'checkpoint.json'), 'utf8')) as {
        claims: Record<string, { state: string }>;
      }
    ).claims;
  const specFile = (claimUid: string): string =>
    path.join(node.cdiDir, `k8s.${DRIVER}-claim_${claimUid}.json`);
  const sliceSelector = `spec.nodeName=${NODE},spec.driver=${DRIVER}`;
  const sliceUids = async (): Promise<string[]> =>
    (await resource.listResourceSlice({ fieldSelector: sliceSelector })).items
      .map((s) => s.metadata?.uid ?? '')
      .sort();
  const eventFor = (pod: string, event: string) => (e: KubeletEvent) =>
    e['pod'] === `${NS}/${pod}` && e.event === event;

  /** Creates a one-GPU pod and waits until the kubelet prepared it; returns how long that took. */
  async function podPrepared(pod: string): Promise<{ ms: number; claimUid: string }> {
    const created = Date.now();
    await createPodWithClaims(
      { resource, core },
      { namespace: NS, pod, claims: [{ name: 'gpu', template: oneDeviceTemplate(`gpu.${DRIVER}`) }] },
    );
    const prepared = await node.waitForEvent(eventFor(pod, 'prepared'), 60_000);
    const cdiId = preparedContainers(prepared)[0]?.cdiDevices[0] ?? '';
    return {
      ms: Date.parse(prepared.time) - created,
      claimUid: /claim=([0-9a-f-]{36})-/.exec(cdiId)?.[1] ?? '',
    };
  }

  async function podGone(pod: string): Promise<void> {
    await core.deleteNamespacedPod({ namespace: NS, name: pod, gracePeriodSeconds: 0 });
    await node.waitForEvent(eventFor(pod, 'unprepared'), 60_000);
  }

  let first: DriverProcess | undefined;
  fx.onFailure(() => `===== driver A stderr\n${first?.stderr() ?? '(not started)'}`);

  it('keeps preparing pods and keeps the slices while B replaces A', async () => {
    const a = await startDriver(UID_A);
    first = a;
    await node.waitForEvent((e) => e.event === 'registered' && e['endpoint'] === draSocket(UID_A), 30_000);

    // Claims A prepares before the roll; their pods keep running through it.
    const before: { pod: string; claimUid: string }[] = [];
    for (const pod of ['before-0', 'before-1', 'before-2']) {
      const { claimUid } = await podPrepared(pod);
      expect(claimUid).not.toBe('');
      before.push({ pod, claimUid });
    }

    // Watch the node's slices from here on: any deletion counts.
    const slicesAtStart = await sliceUids();
    expect(slicesAtStart.length).toBeGreaterThan(0);
    let sliceDeletions = 0;
    const watch = await new Watch(fx.cluster.kubeConfig).watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { fieldSelector: sliceSelector },
      (phase) => {
        if (phase === 'DELETED') sliceDeletions++;
      },
      () => undefined,
    );
    const wipesAtStart = node.events.filter((e) => e.event === 'slicesWiped').length;

    // Pods keep arriving, one after another, for the whole roll.
    const waits: { pod: string; ms: number }[] = [];
    let rolling = true;
    let n = 0;
    const loop = (async () => {
      while (rolling) {
        const pod = `roll-${String(n++)}`;
        const { ms } = await podPrepared(pod);
        waits.push({ pod, ms });
        await podGone(pod);
        await sleep(200);
      }
    })();
    const preparedSoFar = async (count: number): Promise<void> => {
      const target = waits.length + count;
      while (waits.length < target) {
        await Promise.race([loop, sleep(100)]);
      }
    };

    let b: DriverProcess | undefined;
    try {
      await preparedSoFar(2);
      b = await startDriver(UID_B);
      await node.waitForEvent((e) => e.event === 'registered' && e['endpoint'] === draSocket(UID_B), 30_000);
      // B took its place beside A: both instances' sockets, pods prepared meanwhile.
      for (const s of [...sockets(UID_A), ...sockets(UID_B)]) expect(fs.existsSync(s), s).toBe(true);
      await preparedSoFar(2);

      a.child.kill('SIGTERM');
      expect(await a.exited).toEqual({ code: 0, signal: null });
      await node.waitForEvent(
        (e) => e.event === 'deregistered' && e['endpoint'] === draSocket(UID_A),
        30_000,
      );
      const aLeft = Date.now();
      // B keeps preparing alone, past the kubelet's wiping delay.
      while (Date.now() - aLeft < KUBELET_WIPING_DELAY_MS + 2_000) await preparedSoFar(1);
    } finally {
      rolling = false;
      await loop;
      watch.abort();
    }

    // The kubelet had a plugin of the driver registered at every moment: the number of registered
    // endpoints, replayed from its registration events, never fell back to zero.
    let registered = 0;
    let gaps = 0;
    for (const e of node.events) {
      if (e['driver'] !== DRIVER) continue;
      if (e.event === 'registered') registered++;
      if (e.event === 'deregistered' && --registered === 0) gaps++;
    }
    expect(gaps).toBe(0);
    expect(registered).toBe(1);

    const maxWait = Math.max(...waits.map((w) => w.ms));
    process.stderr.write(
      `[upgrade] ${String(waits.length)} pods prepared during the roll; max wait ${String(maxWait)} ms; ` +
        `slice deletions ${String(sliceDeletions)}\n`,
    );
    expect(waits.length).toBeGreaterThanOrEqual(6);
    // No prepare failed in the plugin. (The node authorizer may refuse the kubelet's own GET of
    // a claim it has not yet linked to the pod; the kubelet retries 500 ms later. Not ours.)
    const authorizerRace = /cannot get resource "resourceclaims".*node/;
    const failed = node.events.filter(
      (e) => e.event === 'prepareFailed' && !authorizerRace.test(String(e['error'])),
    );
    expect(failed).toEqual([]);
    expect(maxWait).toBeLessThan(MAX_POD_WAIT_MS);
    expect(sliceDeletions).toBe(0);
    expect(node.events.filter((e) => e.event === 'slicesWiped').length).toBe(wipesAtStart);
    // The very same slice objects: B took over publishing them, nothing was re-created.
    expect(await sliceUids()).toEqual(slicesAtStart);
    expect(b?.stderr()).toContain('taking over the ResourceSlices');

    // What A prepared before the roll is still prepared, and unprepares through B.
    const recorded = checkpointClaims();
    for (const { claimUid } of before) {
      expect(recorded[claimUid]?.state, claimUid).toBe('PrepareCompleted');
      expect(fs.existsSync(specFile(claimUid)), claimUid).toBe(true);
    }
    for (const { pod } of before) await podGone(pod);
    expect(node.events.filter((e) => e.event === 'unprepareFailed')).toEqual([]);
    const after = checkpointClaims();
    for (const { claimUid } of before) {
      expect(after[claimUid], claimUid).toBeUndefined();
      expect(fs.existsSync(specFile(claimUid)), claimUid).toBe(false);
    }

    // A removed its own sockets only.
    for (const s of sockets(UID_A)) expect(fs.existsSync(s), s).toBe(false);
    for (const s of sockets(UID_B)) expect(fs.existsSync(s), s).toBe(true);
  });
});
