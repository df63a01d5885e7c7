// NVML fails under a running driver (issue #17): the fake NVML's configuration is rewritten so
// that every call on every GPU returns NVML_ERROR_UNKNOWN (the driver re-reads it at its next
// device check, every second here), while pods hold GPUs and new claims arrive; then it answers
// again.
//
// What must hold: every device is tainted in the ResourceSlices and reported Unhealthy on the
// kubelet's health stream (the running pod's status shows it); the driver stays up; a new pod is
// not placed on a failing GPU (it waits, unscheduled, and no prepare reaches the driver); and once
// NVML answers, the taints go, the running pod shows Healthy, and the waiting pod is prepared.
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, type V1ResourceSlice } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { KubeletClient } from '../../src/kubelet/client.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, type FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import type { KubeletEvent, NodeHarness } from './support/node.js';
import { peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';
import {
  createAllocatedClaim,
  createNamespace,
  createPodWithOwnClaim,
  createTypedDeviceClasses,
} from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const NODE = 'node-a';
const NS = 'nvml-outage';
const UNAVAILABLE = `${DRIVER}/gpu-unavailable`;

describe('NVML fails every call under a running driver', () => {
  const fx = useCluster({
    // As device-health.test.ts: the pod status keeps the health only with the apiserver's gate;
    // taints need DRADeviceTaints (and v1alpha3 for the scheduler's DeviceTaintRule watch) on 1.34.
    featureGates: 'ResourceHealthStatus=true,DRADeviceTaints=true',
    apiserverArgs: ['--runtime-config=resource.k8s.io/v1alpha3=true'],
  });
  const drivers = driverProcesses(fx);
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let node: NodeHarness;
  let sim: SimulatedNode;
  let profile: FakeNvmlConfig;
  let driver: DriverProcess;
  let direct: KubeletClient;

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS });
    await createNamespace(core, NS);
    profile = await loadProfile('h100-8x');
    const dir = fx.tempDir('gdra-e2e-outage-nvml-');
    sim = await createSimulatedNode(profile, path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE, { extraArgs: ['--feature-gates=ResourceHealthStatus=true'] });
    driver = await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      args: ['--device-check-interval=1s'],
    });
    direct = new KubeletClient({
      draSocket: path.join(node.pluginsDir, DRIVER, 'dra.sock'),
      timeoutMs: 45_000,
    });
    fx.track({
      stop: () => {
        direct.close();
      },
    });
  });

  async function rewrite(edit: (c: FakeNvmlConfig) => FakeNvmlConfig): Promise<void> {
    profile = edit(profile);
    await atomicWriteFile(sim.configPath, JSON.stringify(profile));
  }

  async function ourSlices(): Promise<V1ResourceSlice[]> {
    return (
      await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}` })
    ).items;
  }

  /** Device name → its taint keys (`key=value`), over our slices. */
  async function taints(): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const s of await ourSlices())
      for (const d of s.spec.devices ?? [])
        out.set(
          d.name,
          (d.taints ?? []).map((t) => `${t.key}=${t.value ?? ''}:${t.effect}`),
        );
    return out;
  }

  async function startPod(pod: string): Promise<void> {
    await createPodWithOwnClaim({ resource, core }, { namespace: NS, pod, deviceClassName: GPU_CLASS });
  }

  /** The health the kubelet reported for `pod`'s one device, from event index `from` on. */
  async function health(pod: string, want: string, from: number): Promise<KubeletEvent> {
    return node.waitForEvent((e) => {
      if (e.event !== 'resourceHealth' || e['pod'] !== `${NS}/${pod}` || node.events.indexOf(e) < from)
        return false;
      const containers = e['containers'] as Record<string, { resources?: { health?: string }[] }[] | null>;
      return containers['ctr']?.[0]?.resources?.[0]?.health === want;
    }, 60_000);
  }

  it('taints and reports every device, keeps new pods off them, stays up, and recovers when NVML answers', async () => {
    await startPod('held');
    await node.waitForEvent((e) => e.event === 'running' && e['pod'] === `${NS}/held`, 60_000);
    await health('held', 'Healthy', 0);
    const hand = await createAllocatedClaim(resource, {
      namespace: NS,
      name: 'hand-7',
      deviceClassName: GPU_CLASS,
      driver: DRIVER,
      pool: NODE,
      device: 'gpu-7',
      nodeName: NODE,
      podName: 'nobody',
    });
    const deviceNames = [...(await taints()).keys()].sort();
    expect(deviceNames).toHaveLength(8);

    // NVML fails: every call on every GPU.
    const from = node.events.length;
    const t0 = Date.now();
    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g) => ({ ...g, errors: { '*': 'UNKNOWN' } })) }));
    await eventually(
      'every device tainted gpu-unavailable',
      async () => {
        const t = await taints();
        return deviceNames.every((d) => t.get(d)?.includes(`${UNAVAILABLE}=UNKNOWN:NoSchedule`))
          ? true
          : undefined;
      },
      30_000,
      250,
    );
    const taintedMs = Date.now() - t0;
    await health('held', 'Unhealthy', from);
    const unhealthyMs = Date.now() - t0;
    expect(driver.child.exitCode).toBeNull();

    // A claim allocated on a failing GPU without the scheduler is still prepared: NoSchedule
    // (KEP-5055, as for node taints) keeps new pods from being placed on the device and lets
    // pods submitted to the kubelet without the scheduler start. Whole-GPU prepares need no
    // NVML call, so NVML failing does not fail them either.
    const meanwhile = await direct.prepare([hand]);
    expect(meanwhile.claims[hand.uid]?.error).toBe('');
    expect(meanwhile.claims[hand.uid]?.devices.map((d) => d.device_name)).toEqual(['gpu-7']);
    // A new pod is not placed on a failing GPU: it waits, unscheduled.
    await startPod('late');
    await eventually(
      'late pod reported unschedulable',
      async () => {
        const p = await core.readNamespacedPod({ namespace: NS, name: 'late' });
        return p.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.status === 'False')
          ? true
          : undefined;
      },
      30_000,
    );
    expect(node.eventsFor(`${NS}/late`)).toEqual([]);
    expect(driver.child.exitCode).toBeNull();

    // NVML answers again.
    const backFrom = node.events.length;
    const t1 = Date.now();
    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g) => ({ ...g, errors: undefined })) }));
    await eventually(
      'taints gone',
      async () => {
        const t = await taints();
        return deviceNames.every((d) => (t.get(d) ?? []).length === 0) ? true : undefined;
      },
      30_000,
      250,
    );
    const clearedMs = Date.now() - t1;
    await health('held', 'Healthy', backFrom);
    await node.waitForEvent((e) => e.event === 'running' && e['pod'] === `${NS}/late`, 60_000);
    expect(driver.child.exitCode).toBeNull();
    peersLog(
      `NVML outage: tainted ${String(taintedMs)} ms, pod Unhealthy ${String(unhealthyMs)} ms after the fault; taints cleared ${String(clearedMs)} ms after NVML answered`,
    );
  }, 240_000);

  it('NVML failing as a whole (even counting GPUs): health turns Unknown, slices stay, the driver stays up', async () => {
    // Documented in src/node/deviceMonitor.ts: a discovery that fails outright changes no slice
    // (an empty pool would strand every claim and this is more often transient than real), and
    // the health stream says Unknown until NVML answers.
    const slicesBefore = await taints();
    const from = node.events.length;
    await rewrite((c) => ({ ...c, errors: { '*': 'UNKNOWN' } }));
    await health('held', 'Unknown', from);
    expect(await taints()).toEqual(slicesBefore);
    expect(driver.child.exitCode).toBeNull();
    // Still answered from the checkpoint meanwhile.
    const c = await resource.readNamespacedResourceClaim({ namespace: NS, name: 'held-gpu' });
    const ref = { namespace: NS, name: 'held-gpu', uid: c.metadata?.uid ?? '' };
    expect((await direct.prepare([ref])).claims[ref.uid]?.error).toBe('');

    const backFrom = node.events.length;
    await rewrite((cfg) => ({ ...cfg, errors: undefined }));
    await health('held', 'Healthy', backFrom);
    expect(await taints()).toEqual(slicesBefore);
    expect(driver.child.exitCode).toBeNull();
  }, 120_000);
});
