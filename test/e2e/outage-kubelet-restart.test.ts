// The kubelet restarts under a running driver (issue #17): the kubelet-dra harness is stopped and
// started again on the same root dir (its checkpoint, the registry dir the driver's registration
// socket lives in). At start the kubelet's DRA plugin manager deletes every ResourceSlice of the
// node; its plugin watcher finds the driver's registration socket again.
//
// What must hold: the driver re-registers without restarting; the wiped slices come back; the
// pods that ran before keep running with the same CDI devices; and a NodePrepareResources for
// their claims is answered from the driver's checkpoint, even with the apiserver hung.
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, type V1ResourceSlice } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { KubeletClient } from '../../src/kubelet/client.js';
import type { ClaimRef, NodePrepareResourcesResponse } from '../../src/kubelet/proto.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import { preparedContainers, type NodeHarness } from './support/node.js';
import { peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';
import { createNamespace, createPodWithOwnClaim, createTypedDeviceClasses } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const NODE = 'node-a';
const NS = 'kubelet-restart';
const PODS = ['r0', 'r1'];

describe('the kubelet restarts under a running driver', () => {
  const fx = useCluster();
  const drivers = driverProcesses(fx);
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let node: NodeHarness;
  let driver: DriverProcess;

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS });
    await createNamespace(core, NS);
    const dir = fx.tempDir('gdra-e2e-outage-kubelet-');
    const sim = await createSimulatedNode('h100-8x', path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
    driver = await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
    });
  });

  async function ourSlices(): Promise<V1ResourceSlice[]> {
    return (
      await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}` })
    ).items;
  }

  /** The CDI devices of `pod`'s `prepared` event at or after event index `from`. */
  async function preparedDevices(pod: string, from: number): Promise<string[]> {
    const e = await node.waitForEvent(
      (ev) => ev.event === 'prepared' && ev['pod'] === `${NS}/${pod}` && node.events.indexOf(ev) >= from,
      60_000,
    );
    // Deduplicated: 1.34's kubelet lists a claim's CDI device twice for a pod it restored from
    // its checkpoint after a restart (its own bookkeeping; the driver is not called).
    return [...new Set(preparedContainers(e).flatMap((c) => c.cdiDevices))];
  }

  it('re-registers, re-publishes the wiped slices, and keeps prepared claims and running pods', async () => {
    for (const pod of PODS) {
      await createPodWithOwnClaim({ resource, core }, { namespace: NS, pod, deviceClassName: GPU_CLASS });
    }
    const before = new Map<string, string[]>();
    for (const pod of PODS) {
      before.set(pod, await preparedDevices(pod, 0));
      await node.waitForEvent((e) => e.event === 'running' && e['pod'] === `${NS}/${pod}`, 30_000);
    }
    const slicesBefore = await ourSlices();
    expect(slicesBefore.length).toBeGreaterThan(0);
    const uidsBefore = slicesBefore.map((s) => s.metadata?.uid);

    // The restart.
    await node.stop();
    const from = node.events.length;
    const t0 = Date.now();
    await node.start();
    const restarted = node.events.slice(from);
    // The startup wipe ran, over every slice of the node.
    const wipe = restarted.find((e) => e.event === 'slicesWiped');
    expect(wipe?.['fieldSelector']).toContain(`spec.nodeName=${NODE}`);

    // The driver registers again through its socket: the same process, never restarted.
    const registered = await node.waitForEvent(
      (e) => e.event === 'registered' && e['driver'] === DRIVER && node.events.indexOf(e) >= from,
      30_000,
    );
    const registeredMs = Date.parse(registered.time) - t0;
    expect(node.events.slice(from).filter((e) => e.event === 'registerFailed')).toEqual([]);
    expect(driver.child.exitCode).toBeNull();

    // The wiped slices are published again: new objects, the same devices.
    const slicesAfter = await eventually(
      'wiped slices re-published',
      async () => {
        const slices = await ourSlices();
        return slices.length === slicesBefore.length &&
          slices.every((s) => !uidsBefore.includes(s.metadata?.uid))
          ? slices
          : undefined;
      },
      30_000,
      100,
    );
    const republishedMs = Date.now() - t0;
    const names = (slices: V1ResourceSlice[]): string[] =>
      slices.flatMap((s) => (s.spec.devices ?? []).map((d) => d.name)).sort();
    expect(names(slicesAfter)).toEqual(names(slicesBefore));

    // The pods the kubelet finds again get the same devices, and keep running.
    for (const pod of PODS) {
      expect(await preparedDevices(pod, from)).toEqual(before.get(pod));
      const p = await core.readNamespacedPod({ namespace: NS, name: pod });
      expect(p.status?.phase).toBe('Running');
    }
    const lost = node.events
      .slice(from)
      .filter((e) => ['prepareFailed', 'unprepared', 'startFailed'].includes(e.event));
    expect(lost).toEqual([]);

    // A NodePrepareResources for those claims after the restart comes from the checkpoint: it
    // needs no apiserver (frozen here) and returns the same devices.
    const refs: ClaimRef[] = [];
    for (const pod of PODS) {
      const c = await resource.readNamespacedResourceClaim({ namespace: NS, name: `${pod}-gpu` });
      refs.push({ namespace: NS, name: `${pod}-gpu`, uid: c.metadata?.uid ?? '' });
    }
    const direct = new KubeletClient({
      draSocket: path.join(node.pluginsDir, DRIVER, 'dra.sock'),
      timeoutMs: 10_000,
    });
    fx.cluster.pausePeer('apiserver');
    let answer: NodePrepareResourcesResponse;
    const t1 = Date.now();
    try {
      answer = await direct.prepare(refs);
    } finally {
      fx.cluster.resumePeer('apiserver');
      direct.close();
    }
    const checkpointMs = Date.now() - t1;
    expect(checkpointMs).toBeLessThan(5_000);
    for (const [i, ref] of refs.entries()) {
      const got = answer.claims[ref.uid];
      expect(got?.error).toBe('');
      expect(got?.devices.flatMap((d) => d.cdi_device_ids)).toEqual(before.get(PODS[i] ?? ''));
    }
    peersLog(
      `kubelet restart: re-registered ${String(registeredMs)} ms, slices re-published ${String(republishedMs)} ms after the restart began; checkpoint answer ${String(checkpointMs)} ms`,
    );
  }, 180_000);
});
