// Device health through the kubelet's own code (KEP-4680): the driver process serves
// DRAResourceHealth on dra.sock; kubelet-dra runs the kubelet's DRA manager with
// ResourceHealthStatus on, which opens the stream (1.37: v1, because registration advertises it;
// 1.34: v1alpha1, always), and computes each pod's containerStatuses[].allocatedResourcesStatus
// with the manager's own UpdateAllocatedResourcesStatus; the harness writes that to the
// apiserver, as the kubelet's status manager would, and reports it (`resourceHealth`).
//
// Faults are injected into the fake NVML under the running driver, as device-changes.test.ts
// does: a GPU marked lost in its configuration (re-read at the driver's next re-discovery) and
// XID events appended to $FAKE_NVML_EVENTS. The node: an A100 with four MIG devices (GPU 0) and
// an A100 in whole-GPU mode (GPU 1). Pods: `whole` holds GPU 1, `mig-a` the 3g.20gb MIG device
// (GPU instance 2), `mig-b` the 2g.10gb one, each through a ResourceClaim it names; `templated`
// a 1g.5gb through a claim template, which 1.34's kubelet leaves out of the status.
//
// The health message reaches the pod status from 1.36 (ResourceHealthStatusMessage, beta);
// 1.34 shows the health alone. Run on 1.34 with GPU_DRA_K8S_VERSION=v1.34.4.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, type FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { fakeNvmlLib } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import type { KubeletEvent, NodeHarness } from './support/node.js';
import { driverProcesses } from './support/driverProcess.js';
import { createNamespace, createPodWithClaims, createTypedDeviceClasses } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const MIG_CLASS = `mig.${DRIVER}`;
const NODE = 'node-a';
const NS = 'device-health';
/** What each pod's container claims: the pod's claim `<pod>-gpu`, request `gpu`. */
const resourceName = (pod: string): string => `claim:${pod}-gpu/gpu`;

/** One entry of allocatedResourcesStatus[].resources, as the apiserver stored it. */
interface ResourceHealth {
  readonly resourceID: string;
  readonly health?: string;
  readonly message?: string;
}

/** The `resourceHealth` event's allocatedResourcesStatus for `pod`'s claim in container `ctr`. */
function resourcesOf(e: KubeletEvent, pod: string): ResourceHealth[] | undefined {
  const containers = e['containers'] as Record<
    string,
    { name: string; resources: ResourceHealth[] }[] | null
  >;
  return containers['ctr']?.find((s) => s.name === resourceName(pod))?.resources;
}

describe('device health reaches the pods holding the devices, through the kubelet', () => {
  const fx = useCluster({
    // The apiserver drops allocatedResourcesStatus unless its ResourceHealthStatus gate is on
    // (alpha in 1.34); the driver's taints need DRADeviceTaints on 1.34 (and v1alpha3 for its
    // scheduler's DeviceTaintRule watch).
    featureGates: 'ResourceHealthStatus=true,DRADeviceTaints=true',
    apiserverArgs: ['--runtime-config=resource.k8s.io/v1alpha3=true'],
  });
  let node: NodeHarness;
  let sim: SimulatedNode;
  let profile: FakeNvmlConfig;
  let eventsFile: string;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  /** Whether this kubelet copies the driver's message into the status (1.36+). */
  let withMessage: boolean;
  /** The kubelet's minor version. */
  let minor: number;
  /** Whether it reports claims made from templates (1.35+). */
  let templatesReported: boolean;
  /** The pods whose devices no fault touches. */
  const bystanders = (): string[] => (templatesReported ? ['templated'] : []);
  const drivers = driverProcesses(fx);

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS, mig: MIG_CLASS });
    await createNamespace(core, NS);
    const a100 = await loadProfile('a100-mig');
    // GPU 1 out of MIG mode: a whole GPU beside GPU 0's MIG devices.
    profile = {
      ...a100,
      gpus: a100.gpus.map((g, i) =>
        i === 1 ? { ...g, migMode: { current: 0, pending: 0 }, migDevices: [] } : g,
      ),
    };
    const dir = fx.tempDir('gdra-e2e-health-');
    sim = await createSimulatedNode(profile, path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    eventsFile = path.join(dir, 'nvml-events');
    fs.writeFileSync(eventsFile, '');
    node = await fx.startNode(NODE, { extraArgs: ['--feature-gates=ResourceHealthStatus=true'] });
    const version = String(node.events.find((e) => e.event === 'ready')?.['kubeletVersion']);
    minor = Number(/^v1\.(\d+)\./.exec(version)?.[1]);
    withMessage = minor >= 36;
    templatesReported = minor >= 35;
    await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      args: ['--device-check-interval=1s'],
      env: { FAKE_NVML_EVENTS: eventsFile },
    });
  });

  /** Rewrites the fake NVML's configuration; the driver's next re-discovery reads it. */
  async function rewrite(edit: (c: FakeNvmlConfig) => FakeNvmlConfig): Promise<void> {
    profile = edit(profile);
    await atomicWriteFile(sim.configPath, JSON.stringify(profile));
  }

  /**
   * The first `resourceHealth` report for `pod`, among the events from index `from` on, whose one
   * device has `health`.
   */
  async function reported(pod: string, health: string, from = 0): Promise<ResourceHealth> {
    const e = await node.waitForEvent((ev) => {
      if (ev.event !== 'resourceHealth' || ev['pod'] !== `${NS}/${pod}` || node.events.indexOf(ev) < from)
        return false;
      const resources = resourcesOf(ev, pod);
      return resources?.length === 1 && resources[0]?.health === health;
    }, 60_000);
    const got = resourcesOf(e, pod)?.[0];
    if (!got) throw new Error('unreachable: the predicate saw one resource');
    return got;
  }

  /** The apiserver holds one entry for `pod`'s claim, its one device with `health`. */
  async function expectStored(pod: string, health: string): Promise<void> {
    expect(await stored(pod), pod).toEqual([{ name: resourceName(pod), health: [health] }]);
  }

  /** allocatedResourcesStatus of `pod`'s container as the apiserver holds it now. */
  async function stored(pod: string): Promise<{ name: string; health: (string | undefined)[] }[]> {
    const p = await core.readNamespacedPod({ namespace: NS, name: pod });
    return (p.status?.containerStatuses?.[0]?.allocatedResourcesStatus ?? []).map((s) => ({
      name: s.name,
      health: (s.resources ?? []).map((r) => r.health),
    }));
  }

  /**
   * A pod whose container uses request `gpu` of its claim `<pod>-gpu`: a ResourceClaim of that
   * name it references (`byName`), or one made from a template (named `<pod>-<pod>-gpu-<suffix>`).
   */
  async function startPod(
    pod: string,
    deviceClassName: string,
    profileName?: string,
    how: 'byName' | 'template' = 'byName',
  ): Promise<void> {
    const claim = `${pod}-gpu`;
    const selectors = profileName
      ? [{ cel: { expression: `device.attributes["${DRIVER}"].profile == "${profileName}"` } }]
      : undefined;
    const spec = {
      devices: {
        requests: [{ name: 'gpu', exactly: { deviceClassName, ...(selectors ? { selectors } : {}) } }],
      },
    };
    if (how === 'template') {
      await createPodWithClaims(
        { resource, core },
        { namespace: NS, pod, claims: [{ name: claim, requests: ['gpu'], template: { spec } }] },
      );
      return;
    }
    await resource.createNamespacedResourceClaim({
      namespace: NS,
      body: { metadata: { name: claim }, spec },
    });
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: pod, namespace: NS },
        spec: {
          containers: [
            {
              name: 'ctr',
              image: 'registry.k8s.io/pause:3.10',
              resources: { claims: [{ name: claim, request: 'gpu' }] },
            },
          ],
          resourceClaims: [{ name: claim, resourceClaimName: claim }],
        },
      },
    });
  }

  it('the kubelet registers the driver with its health service and reports every held device Healthy', async () => {
    const registered = await node.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER);
    expect(registered['versions']).toEqual([
      'v1.DRAPlugin',
      'v1beta1.DRAPlugin',
      'v1.DRAResourceHealth',
      'v1alpha1.DRAResourceHealth',
    ]);
    await startPod('whole', GPU_CLASS);
    await startPod('mig-a', MIG_CLASS, '3g.20gb');
    await startPod('mig-b', MIG_CLASS, '2g.10gb');
    await startPod('templated', MIG_CLASS, '1g.5gb', 'template');
    for (const pod of ['whole', 'mig-a', 'mig-b', ...bystanders()]) {
      const r = await reported(pod, 'Healthy');
      expect(r.message).toBeUndefined();
      // What `kubectl describe pod` reads: the apiserver kept it.
      await expectStored(pod, 'Healthy');
    }
    if (!templatesReported) {
      // 1.34 matches a container's claim to the claim's object name, not to the pod's claim
      // entry, so a claim made from a template never gets an entry.
      await node.waitForEvent((e) => e.event === 'running' && e['pod'] === `${NS}/templated`, 60_000);
      expect(await stored('templated')).toEqual([]);
    }
    // Which version of the stream the kubelet opened: v1 when it knows it (1.37), else v1alpha1.
    const watching = (drivers.last()?.stderr() ?? '')
      .split('\n')
      .filter((l) => l.includes('kubelet watching device health'))
      .map((l) => (JSON.parse(l) as { version: string }).version);
    expect(watching).toEqual([minor >= 37 ? 'v1' : 'v1alpha1']);
    // The devices the scheduler gave them, from the prepared CDI devices.
    const prepared = (pod: string): string =>
      JSON.stringify(node.eventsFor(`${NS}/${pod}`).find((e) => e.event === 'prepared')?.['containers']);
    expect(prepared('whole')).toMatch(/gpu-1/);
    expect(prepared('mig-a')).toMatch(/gpu-0-mig-3g20gb-9-4/);
    expect(prepared('mig-b')).toMatch(/gpu-0-mig-2g10gb-14-0/);
  });

  it('a GPU that fell off the bus: its pod shows Unhealthy, the others stay Healthy, and it recovers', async () => {
    const lostAt = node.events.length;
    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g, i) => (i === 1 ? { ...g, lost: true } : g)) }));
    const r = await reported('whole', 'Unhealthy', lostAt);
    if (withMessage)
      expect(r.message).toMatch(/^GPU fell off the bus: NVML reports GPU GPU-\S+ \(minor 1\) lost/);
    else expect(r.message).toBeUndefined();
    await expectStored('whole', 'Unhealthy');
    for (const pod of ['mig-a', 'mig-b', ...bystanders()]) await expectStored(pod, 'Healthy');

    // It answers again: Healthy again.
    const backAt = node.events.length;
    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g, i) => (i === 1 ? { ...g, lost: false } : g)) }));
    expect((await reported('whole', 'Healthy', backAt)).message).toBeUndefined();
    await expectStored('whole', 'Healthy');
  });

  it('an XID scoped to a MIG device: only the pod holding it shows Unhealthy, with the XID and its meaning', async () => {
    // XID 48 (double-bit ECC) in GPU 0's GPU instance 2, compute instance 0: mig-a's device.
    const xidAt = node.events.length;
    fs.appendFileSync(eventsFile, '0 8 48 2 0\n');
    const r = await reported('mig-a', 'Unhealthy', xidAt);
    if (withMessage)
      expect(r.message).toMatch(
        /^XID 48 \(double-bit ECC error: uncorrectable memory error\) on GPU instance 2\/compute instance 0 of GPU GPU-/,
      );
    else expect(r.message).toBeUndefined();
    await expectStored('mig-a', 'Unhealthy');
    for (const pod of ['whole', 'mig-b', ...bystanders()]) await expectStored(pod, 'Healthy');
  });

  it('an XID on a whole GPU: its pod shows Unhealthy; an application XID changes nothing', async () => {
    // XID 13 (an application's fault) on GPU 0 first: events are delivered in order, so once
    // XID 79 on GPU 1 shows, 13 was handled, and mig-b must still be Healthy.
    const xidAt = node.events.length;
    fs.appendFileSync(eventsFile, '0 8 13\n1 8 79\n');
    const r = await reported('whole', 'Unhealthy', xidAt);
    if (withMessage)
      expect(r.message).toMatch(
        /^XID 79 \(GPU has fallen off the bus\) on GPU GPU-\S+ at \S+; reset the GPU/,
      );
    else expect(r.message).toBeUndefined();
    await expectStored('whole', 'Unhealthy');
    await expectStored('mig-a', 'Unhealthy');
    for (const pod of ['mig-b', ...bystanders()]) await expectStored(pod, 'Healthy');
    // The harness never failed to write a status.
    expect(node.events.filter((e) => e.event === 'healthStatusFailed')).toEqual([]);
  });
});
