// Smoke test of the e2e fixtures with no driver code: the real control plane allocates a
// hand-written ResourceSlice and binds the pod; the kubelet-dra harness then fails to prepare
// because no DRA driver registered.
import { CoreV1Api, ResourceV1Api, type ResourceV1ResourceClaim, type V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';

import { useCluster } from './support/fixture.js';
import { peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';
import { createNamespace, createDriverDeviceClass } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'smoke';

describe('e2e fixtures smoke test', () => {
  const fx = useCluster();

  it('allocates a claim from a hand-written slice and binds the pod', async () => {
    const c = fx.cluster;
    const core = c.kubeConfig.makeApiClient(CoreV1Api);
    const resource = c.kubeConfig.makeApiClient(ResourceV1Api);

    await createDriverDeviceClass(resource, 'gpu-smoke', DRIVER);

    // The harness wipes this node's ResourceSlices at start-up: publish only after `ready`.
    const nodeStart = Date.now();
    const n = await fx.startNode(NODE);
    peersLog(`kubelet-dra ${NODE} ready in ${String(Date.now() - nodeStart)}ms`);
    const registeredNode = await core.readNode({ name: NODE });
    expect(registeredNode.status?.conditions?.find((cond) => cond.type === 'Ready')?.status).toBe('True');

    await resource.createResourceSlice({
      body: {
        metadata: { name: `${NODE}-${DRIVER}` },
        spec: {
          driver: DRIVER,
          nodeName: NODE,
          pool: { name: NODE, generation: 1, resourceSliceCount: 1 },
          devices: [
            { name: 'gpu-0', attributes: { index: { _int: 0 } } },
            { name: 'gpu-1', attributes: { index: { _int: 1 } } },
          ],
        },
      },
    });

    await createNamespace(core, NS);

    await resource.createNamespacedResourceClaimTemplate({
      namespace: NS,
      body: {
        metadata: { name: 'one-gpu' },
        spec: {
          spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: 'gpu-smoke' } }] } },
        },
      },
    });
    const pod: V1Pod = {
      metadata: { name: 'pod', namespace: NS },
      spec: {
        containers: [
          { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'gpu' }] } },
        ],
        resourceClaims: [{ name: 'gpu', resourceClaimTemplateName: 'one-gpu' }],
      },
    };
    await core.createNamespacedPod({ namespace: NS, body: pod });

    // resourceclaim-controller generates the claim and records it in the pod status.
    const claimName = await eventually('generated ResourceClaim', async () => {
      const p = await core.readNamespacedPod({ namespace: NS, name: 'pod' });
      return p.status?.resourceClaimStatuses?.find((s) => s.name === 'gpu')?.resourceClaimName;
    });

    // The scheduler allocates a device from the slice, reserves the claim and binds the pod.
    const claim = await eventually('allocated ResourceClaim', async () => {
      const rc: ResourceV1ResourceClaim = await resource.readNamespacedResourceClaim({
        namespace: NS,
        name: claimName,
      });
      return rc.status?.allocation !== undefined && (rc.status.reservedFor?.length ?? 0) > 0 ? rc : undefined;
    });
    const results = claim.status?.allocation?.devices?.results ?? [];
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ driver: DRIVER, pool: NODE, request: 'gpu' });
    expect(['gpu-0', 'gpu-1']).toContain(results[0]?.device);
    expect(claim.status?.reservedFor?.[0]).toMatchObject({ resource: 'pods', name: 'pod' });

    const bound = await eventually('pod bound to node', async () => {
      const p = await core.readNamespacedPod({ namespace: NS, name: 'pod' });
      return p.spec?.nodeName !== undefined && p.spec.nodeName !== '' ? p : undefined;
    });
    expect(bound.spec?.nodeName).toBe(NODE);

    // The kubelet's DRA manager cannot prepare: no driver registered for gpu.dra.dev. An
    // earlier attempt may fail first with the Node authorizer's "no relationship found" while
    // its graph has not seen the pod -> claim edge yet; the harness retries as a kubelet does.
    const notRegistered = new RegExp(`DRA driver ${DRIVER.replaceAll('.', '\\.')} is not registered`);
    const failed = await n.waitForEvent(
      (e) =>
        e.event === 'prepareFailed' && e['pod'] === `${NS}/pod` && notRegistered.test(String(e['error'])),
      60_000,
    );
    expect(failed['uid']).toBe(bound.metadata?.uid);
  });
});
