// Extended resources backed by DRA (KEP-5004) on the real peers: pods written for the NVIDIA
// device plugin — `resources.limits: {nvidia.com/gpu: N}`, no resourceClaims — get whole GPUs
// from the driver process running as the drop-in gpu.nvidia.com on a simulated 8×H100 node. The
// DeviceClasses are the chart's for that name (gpu.gpu.nvidia.com names nvidia.com/gpu); the Node
// lists no nvidia.com/gpu in its allocatable, which is how the scheduler tells a resource DRA
// backs from one a device plugin serves. The scheduler makes the pod's claim and records it in
// pod.status.extendedResourceClaimStatus; the kubelet's DRA manager prepares that claim through
// the driver's dra.sock and maps each container to the CDI devices of its own requests, which the
// CDI library injects. Deleting the pods unprepares the GPUs and the garbage collector removes
// the claims the pods owned.
//
// The gate DRAExtendedResource is alpha in 1.34 and 1.35, beta (on) in 1.36 and GA (locked on) in
// 1.37; where it is off the cluster and the kubelet harness turn it on (draFeatures), so the same
// test runs on every minor (GPU_DRA_K8S_VERSION). Two things differ by version, and are checked
// as such: a Node that once ran the device plugin keeps `nvidia.com/gpu: 0` in its allocatable,
// which 1.35+ take as "not served, DRA may back it" (kubernetes/kubernetes#133784) and 1.34 as a
// device plugin's resource with none free; and an apiserver without the gate (the default of 1.34
// and 1.35) drops the class's extendedResourceName silently.
import fs from 'node:fs';
import {
  CoreV1Api,
  ResourceV1Api,
  VersionApi,
  type KubeConfig,
  type ResourceV1ResourceClaim,
  type V1Container,
  type V1Pod,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { defaultDeviceClasses, deviceClassName } from '../../src/cel/classes.js';
import { deviceEnvKey } from '../../src/cdi/spec.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import { draFeatures, k8sMinor, kubeletDraFeatureArgs } from './support/k8sVersion.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { grantDriverRbac } from './support/rbac.js';
import { eventually } from './support/wait.js';
import { createNamespace } from './support/workloads.js';

const DRIVER = 'gpu.nvidia.com';
const CLASS = deviceClassName('gpu', DRIVER);
const RESOURCE = 'nvidia.com/gpu';
const NODE = 'node-a';
const NS = 'ext';
/** The annotation the scheduler puts on the claims it makes for extended resources. */
const EXTENDED_CLAIM_ANNOTATION = 'resource.kubernetes.io/extended-resource-claim';

interface OciSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string }[] };
}

/** One pod that ran: what the API says about its claim and what the kubelet gave its containers. */
interface Ran {
  readonly pod: V1Pod;
  readonly claim: ResourceV1ResourceClaim;
  readonly prepared: KubeletEvent;
}

describe('extended resources backed by DRA: nvidia.com/gpu pods with no claims', () => {
  const fx = useCluster(draFeatures(['DRAExtendedResource']));
  const drivers = driverProcesses(fx);
  let node: NodeHarness;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  /** Device name → uuid, from the node's ResourceSlices. */
  const uuids = new Map<string, string>();
  const ran: Ran[] = [];

  beforeAll(async () => {
    const c = fx.cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: true });
    for (const cls of defaultDeviceClasses(DRIVER))
      await resource.createDeviceClass({
        body: { ...cls, spec: { ...cls.spec, selectors: cls.spec.selectors.map((sel) => ({ ...sel })) } },
      });
    await createNamespace(core, NS);

    const sim = await createSimulatedNode('h100-8x', fx.tempDir('gdra-e2e-ext-'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE, { extraArgs: kubeletDraFeatureArgs(['DRAExtendedResource']) });
    await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: c.makeKubeconfig(c.driverToken, 'driver-ext'),
      node,
      sim,
    });
    const slices = await eventually('the node’s 8 GPUs published', async () => {
      const list = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` });
      const devices = list.items.flatMap((s) => s.spec.devices ?? []);
      return devices.length === 8 ? devices : undefined;
    });
    for (const d of slices) uuids.set(d.name, d.attributes?.['uuid']?.string ?? '');
  });

  /** A device-plugin-style pod: `gpus` of nvidia.com/gpu in the limits of each container that has any. */
  async function createGpuPod(name: string, containers: { name: string; gpus?: number }[]): Promise<V1Pod> {
    return core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name },
        spec: {
          containers: containers.map((c): V1Container => ({
            name: c.name,
            image: 'registry.k8s.io/pause:3.10',
            ...(c.gpus !== undefined
              ? { resources: { limits: { [RESOURCE]: String(c.gpus), cpu: '1' } } }
              : {}),
          })),
        },
      },
    });
  }

  /** Waits for the kubelet to prepare `name`, then reads the pod and the claim the scheduler made for it. */
  async function ranPod(name: string): Promise<Ran> {
    const prepared = await node
      .waitForEvent((e) => e['pod'] === `${NS}/${name}` && e.event === 'prepared', 60_000)
      .catch(async (err: unknown) => {
        const p = await core.readNamespacedPod({ namespace: NS, name });
        throw new Error(`${String(err)}\npod status: ${JSON.stringify(p.status)}`);
      });
    await node.waitForEvent((e) => e['pod'] === `${NS}/${name}` && e.event === 'running', 30_000);
    const pod = await core.readNamespacedPod({ namespace: NS, name });
    const claimName = pod.status?.extendedResourceClaimStatus?.resourceClaimName ?? '';
    expect(claimName, JSON.stringify(pod.status)).not.toBe('');
    const claim = await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName });
    const r = { pod, claim, prepared };
    ran.push(r);
    return r;
  }

  /**
   * The claim is the scheduler's for this pod (annotated, owned by it, reserved for it), asks
   * `gpus` whole GPUs of the class that names nvidia.com/gpu in one request that the pod status
   * maps to `container`, and got them from this node's pool. Returns the devices.
   */
  function expectClaimFor(r: Ran, container: string, gpus: number): string[] {
    const { pod, claim } = r;
    expect(claim.metadata?.annotations?.[EXTENDED_CLAIM_ANNOTATION]).toBe('true');
    expect(claim.metadata?.ownerReferences).toEqual([
      expect.objectContaining({
        kind: 'Pod',
        name: pod.metadata?.name,
        uid: pod.metadata?.uid,
        controller: true,
      }),
    ]);
    const requests = claim.spec.devices?.requests ?? [];
    expect(requests).toHaveLength(1);
    const request = requests[0]?.name ?? '';
    expect(requests[0]?.exactly).toMatchObject({
      deviceClassName: CLASS,
      allocationMode: 'ExactCount',
      count: gpus,
    });
    expect(pod.status?.extendedResourceClaimStatus?.requestMappings).toEqual([
      { containerName: container, resourceName: RESOURCE, requestName: request },
    ]);
    expect(claim.status?.reservedFor).toEqual([
      expect.objectContaining({ resource: 'pods', name: pod.metadata?.name, uid: pod.metadata?.uid }),
    ]);
    const results = claim.status?.allocation?.devices?.results ?? [];
    expect(results).toHaveLength(gpus);
    for (const res of results) {
      expect(res).toMatchObject({ request, driver: DRIVER, pool: NODE });
      expect(res.device).toMatch(/^gpu-\d$/);
    }
    expect(pod.spec?.nodeName).toBe(NODE);
    return results.map((res) => res.device).sort();
  }

  /**
   * What the container was given: exactly the CDI devices of `devices` in this claim, and after
   * injection exactly their /dev/nvidia<minor> nodes and GPU_DRA_DEVICE_<name>=<uuid> entries.
   */
  function expectContainerSees(r: Ran, container: string, devices: string[]): void {
    const ctr = preparedContainers(r.prepared).find((c) => c.name === container);
    expect(ctr?.cdiError).toBeUndefined();
    const claimUid = r.claim.metadata?.uid ?? '';
    expect([...(ctr?.cdiDevices ?? [])].sort()).toEqual(
      devices.map((d) => `k8s.${DRIVER}/claim=${claimUid}-${d}`),
    );
    const oci = ctr?.ociSpec as OciSpec;
    const gpuNodes = (oci.linux?.devices ?? [])
      .map((d) => d.path)
      .filter((p) => /^\/dev\/nvidia\d+$/.test(p));
    expect(gpuNodes.sort()).toEqual(devices.map((d) => `/dev/nvidia${d.replace('gpu-', '')}`).sort());
    const deviceEnv = (oci.process?.env ?? []).filter((e) => e.startsWith('GPU_DRA_DEVICE_')).sort();
    expect(deviceEnv).toEqual(devices.map((d) => `${deviceEnvKey(d)}=${uuids.get(d) ?? '?'}`).sort());
    expect(fs.existsSync(`${node.cdiDir}/k8s.${DRIVER}-claim_${claimUid}.json`)).toBe(true);
  }

  it('the apiserver keeps the class’s extendedResourceName; the Node lists no nvidia.com/gpu', async () => {
    const cls = await resource.readDeviceClass({ name: CLASS });
    expect(cls.spec.extendedResourceName).toBe(RESOURCE);
    // Were it listed (a device plugin's), the scheduler would count it rather than ask DRA.
    const n = await core.readNode({ name: NODE });
    expect(Object.keys(n.status?.allocatable ?? {})).not.toContain(RESOURCE);
  });

  it('a pod asking for nvidia.com/gpu: 1 gets one whole GPU, prepared by the driver', async () => {
    await createGpuPod('one-gpu', [{ name: 'ctr', gpus: 1 }]);
    const r = await ranPod('one-gpu');
    const devices = expectClaimFor(r, 'ctr', 1);
    expectContainerSees(r, 'ctr', devices);
  });

  it('a pod asking for 2 gets two other GPUs, only in the container that asked', async () => {
    // The GPU container second, beside one asking for none, as a pod with a log sidecar would be.
    await createGpuPod('two-gpus', [{ name: 'log' }, { name: 'train', gpus: 2 }]);
    const r = await ranPod('two-gpus');
    const devices = expectClaimFor(r, 'train', 2);
    expectContainerSees(r, 'train', devices);
    expect(preparedContainers(r.prepared).find((c) => c.name === 'log')?.cdiDevices).toEqual([]);
    // Whole GPUs: none of them is the first pod's.
    const first = ran[0]?.claim.status?.allocation?.devices?.results?.map((x) => x.device) ?? [];
    expect(first).toHaveLength(1);
    for (const d of devices) expect(first).not.toContain(d);
  });

  it('a pod asking for more GPUs than are free stays unschedulable, with no claim made', async () => {
    expect(ran).toHaveLength(2);
    await createGpuPod('too-many', [{ name: 'ctr', gpus: 6 }]); // 8 - 3 in use = 5 free
    const cond = await eventually(
      'too-many reported unschedulable',
      async () =>
        (await core.readNamespacedPod({ namespace: NS, name: 'too-many' })).status?.conditions?.find(
          (c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable',
        ),
      60_000,
    );
    expect(cond.message).toMatch(/cannot allocate all claims/);
    const pod = await core.readNamespacedPod({ namespace: NS, name: 'too-many' });
    expect(pod.spec?.nodeName ?? '').toBe('');
    expect(pod.status?.extendedResourceClaimStatus).toBeUndefined();
    const claims = await resource.listNamespacedResourceClaim({ namespace: NS });
    expect(claims.items.map((c) => c.metadata?.name).sort()).toEqual(
      ran.map((r) => r.claim.metadata?.name).sort(),
    );
    await core.deleteNamespacedPod({ namespace: NS, name: 'too-many' });
  });

  it('a node that once ran the device plugin (nvidia.com/gpu: 0): DRA backs it from 1.35, not on 1.34', async () => {
    // The kubelet keeps a removed device plugin's resource at 0 rather than dropping it. No
    // kubelet runs this Node: whether the pod is placed and its claim allocated is the question.
    const nodeName = 'node-was-dp';
    await core.createNode({
      body: { metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName } } },
    });
    const n = await core.readNode({ name: nodeName });
    const resources = { cpu: '32', memory: '256Gi', pods: '110', [RESOURCE]: '0' };
    const now = new Date();
    n.status = {
      capacity: resources,
      allocatable: resources,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
    };
    await core.replaceNodeStatus({ name: nodeName, body: n });
    // The same devices as node-a's, published for this node's pool.
    for (const sl of (await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` })).items)
      await resource.createResourceSlice({
        body: {
          metadata: { name: `${nodeName}-${sl.metadata?.name ?? ''}` },
          spec: {
            driver: sl.spec.driver,
            nodeName,
            pool: { name: nodeName, generation: 1, resourceSliceCount: sl.spec.pool.resourceSliceCount },
            devices: sl.spec.devices ?? [],
          },
        },
      });
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'on-was-dp' },
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': nodeName },
          containers: [
            { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { limits: { [RESOURCE]: '1' } } },
          ],
        },
      },
    });
    const scheduled = await eventually(
      'on-was-dp scheduled or unschedulable',
      async () =>
        (await core.readNamespacedPod({ namespace: NS, name: 'on-was-dp' })).status?.conditions?.find(
          (c) => c.type === 'PodScheduled' && (c.status === 'True' || c.reason === 'Unschedulable'),
        ),
      60_000,
    );
    if (k8sMinor(await serverVersion(fx.cluster.kubeConfig)) < 35) {
      expect(scheduled.reason).toBe('Unschedulable');
      expect(scheduled.message).toContain(`Insufficient ${RESOURCE}`);
    } else {
      expect(scheduled.status, JSON.stringify(scheduled)).toBe('True');
      const pod = await core.readNamespacedPod({ namespace: NS, name: 'on-was-dp' });
      const claim = await eventually('on-was-dp’s claim allocated', async () => {
        const c = await resource.readNamespacedResourceClaim({
          namespace: NS,
          name: pod.status?.extendedResourceClaimStatus?.resourceClaimName ?? '',
        });
        return c.status?.allocation ? c : undefined;
      });
      expect(claim.status?.allocation?.devices?.results).toEqual([
        expect.objectContaining({ driver: DRIVER, pool: nodeName }),
      ]);
    }
    await core.deleteNamespacedPod({ namespace: NS, name: 'on-was-dp', gracePeriodSeconds: 0 });
  });

  it('deleting the pods unprepares their GPUs, and their claims go with them', async () => {
    expect(ran).toHaveLength(2);
    for (const r of ran) await core.deleteNamespacedPod({ namespace: NS, name: r.pod.metadata?.name ?? '' });
    for (const r of ran)
      await node.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === r.pod.metadata?.uid, 60_000);
    for (const r of ran)
      expect(fs.existsSync(`${node.cdiDir}/k8s.${DRIVER}-claim_${r.claim.metadata?.uid ?? ''}.json`)).toBe(
        false,
      );
    await eventually(
      'the pods’ claims deleted',
      async () =>
        (await resource.listNamespacedResourceClaim({ namespace: NS })).items.length === 0 ? true : undefined,
      60_000,
    );
  });
});

describe('an apiserver without the DRAExtendedResource gate set', () => {
  const fx = useCluster();

  it('drops the class’s extendedResourceName silently on 1.34 and 1.35, keeps it from 1.36 (on by default)', async () => {
    const resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    const [gpu] = defaultDeviceClasses(DRIVER);
    if (gpu === undefined) throw new Error('no gpu class');
    // Accepted, no warning or error: the field is simply not stored.
    const created = await resource.createDeviceClass({
      body: { ...gpu, spec: { ...gpu.spec, selectors: gpu.spec.selectors.map((sel) => ({ ...sel })) } },
    });
    const stored = (await resource.readDeviceClass({ name: CLASS })).spec.extendedResourceName;
    const version = await serverVersion(fx.cluster.kubeConfig);
    const want = k8sMinor(version) < 36 ? undefined : RESOURCE;
    expect(created.spec.extendedResourceName, version).toBe(want);
    expect(stored, version).toBe(want);
  });
});

/** The apiserver's gitVersion (`v1.34.4`), for the behaviours that differ by release. */
async function serverVersion(kc: KubeConfig): Promise<string> {
  return (await kc.makeApiClient(VersionApi).getCode()).gitVersion;
}
