// deploy/rbac.yaml and deploy/validatingadmissionpolicy.yaml on a real apiserver, with the
// driver authenticated as the DaemonSet's ServiceAccount user:
// - RBAC allows exactly the calls the code makes (SubjectAccessReview, verb by verb);
// - the claim status write (src/driver/statusWriter.ts) works with those rules and a token bound
//   to the claim's node, as a DaemonSet pod has; from 1.36 (per-driver authorization of
//   status.devices) the same token cannot write another node's claims or another driver's
//   entries, nor can a token bound to no node. 1.34 and 1.35 have no such check: there the status
//   patch rule alone decides, and the test says so;
// - the admission policy denies ResourceSlice writes from the plugin when the request carries
//   no node name (static tokens cannot carry the `authentication.kubernetes.io/node-name`
//   extra that real bound ServiceAccount tokens have), and leaves other users alone.
import crypto from 'node:crypto';
import path from 'node:path';
import {
  AuthorizationV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  VersionApi,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { describeDevices, type ClaimRef } from '../../src/driver/deviceStatus.js';
import { ClaimStatusWriter } from '../../src/driver/statusWriter.js';
import { KubeApiError, type KubeClient } from '../../src/kube/client.js';
import { loadKubeconfigClient } from '../../src/kube/kubeconfig.js';
import { silentLogger } from '../../src/util/log.js';
import { nodeBoundToken } from './support/rbac.js';
import { readYamlObjects } from '../support/yamlObjects.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { useCluster } from './support/fixture.js';
import { eventually } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SA_USER = 'system:serviceaccount:gpu-dra:gpu-dra-kubelet-plugin';
const GROUPS = ['system:serviceaccounts', 'system:serviceaccounts:gpu-dra', 'system:authenticated'];

const load = (file: string): KubernetesObject[] =>
  readYamlObjects<KubernetesObject>(path.join(ROOT, 'deploy', file));

function slice(name: string, nodeName: string): Parameters<ResourceV1Api['createResourceSlice']>[0]['body'] {
  return {
    metadata: { name },
    spec: {
      driver: 'gpu.dra.dev',
      nodeName,
      pool: { name: nodeName, generation: 1, resourceSliceCount: 1 },
      devices: [{ name: 'gpu-0' }],
    },
  };
}

describe('deploy/ RBAC and admission policy on a real apiserver', () => {
  const fx = useCluster({ driverUser: SA_USER });
  beforeAll(async () => {
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    for (const o of [...load('namespace.yaml'), ...load('rbac.yaml')]) await objects.create(o);
  });

  it('grants exactly the calls the driver makes', async () => {
    const authz = fx.cluster.kubeConfig.makeApiClient(AuthorizationV1Api);
    const allowed = async (
      group: string,
      resource: string,
      verb: string,
      more: { subresource?: string; name?: string; namespace?: string } = {},
    ): Promise<boolean> => {
      const r = await authz.createSubjectAccessReview({
        body: {
          spec: {
            user: SA_USER,
            groups: GROUPS,
            resourceAttributes: {
              group,
              resource,
              verb,
              ...more,
              ...(resource === 'resourceclaims' ? { namespace: 'default' } : {}),
            },
          },
        },
      });
      return r.status?.allowed === true;
    };
    for (const verb of ['create', 'update', 'delete', 'list', 'watch'])
      expect(await allowed('resource.k8s.io', 'resourceslices', verb), verb).toBe(true);
    expect(await allowed('resource.k8s.io', 'resourceclaims', 'get')).toBe(true);
    expect(await allowed('', 'nodes', 'get')).toBe(true);
    // The Node Event after a lost checkpoint (src/kube/events.ts): create, in `default` only.
    expect(await allowed('events.k8s.io', 'events', 'create', { namespace: 'default' })).toBe(true);
    for (const [verb, namespace] of [
      ['create', 'gpu-dra'],
      ['create', 'kube-system'],
      ['update', 'default'],
      ['patch', 'default'],
      ['delete', 'default'],
      ['list', 'default'],
    ] as const)
      expect(
        await allowed('events.k8s.io', 'events', verb, { namespace }),
        `events ${verb} in ${namespace}`,
      ).toBe(false);
    expect(await allowed('', 'events', 'create', { namespace: 'default' }), 'core/v1 events').toBe(false);
    // The claim status write: the patch, and (1.36+) this driver's entries from its own node.
    const status = { subresource: 'status' };
    const ownDriver = { subresource: 'driver', name: 'gpu.dra.dev' };
    expect(await allowed('resource.k8s.io', 'resourceclaims', 'patch', status)).toBe(true);
    expect(await allowed('resource.k8s.io', 'resourceclaims', 'associated-node:patch', ownDriver)).toBe(true);
    for (const [verb, more] of [
      ['update', status],
      ['get', status],
      ['patch', {}],
      ['arbitrary-node:patch', ownDriver],
      ['associated-node:update', ownDriver],
      ['associated-node:patch', { subresource: 'driver', name: 'other.example.com' }],
      ['associated-node:patch', { subresource: 'binding' }],
      ['patch', { subresource: 'binding' }],
    ] as const) {
      expect(
        await allowed('resource.k8s.io', 'resourceclaims', verb, more),
        `${JSON.stringify(more)} ${verb}`,
      ).toBe(false);
    }
    for (const [group, resource, verb] of [
      ['resource.k8s.io', 'resourceslices', 'patch'],
      ['resource.k8s.io', 'resourceslices', 'deletecollection'],
      ['resource.k8s.io', 'resourceclaims', 'update'],
      ['resource.k8s.io', 'resourceclaims', 'list'],
      ['resource.k8s.io', 'deviceclasses', 'create'],
      ['', 'nodes', 'update'],
      ['', 'secrets', 'get'],
      ['', 'pods', 'list'],
    ] as const) {
      expect(await allowed(group, resource, verb), `${resource} ${verb}`).toBe(false);
    }
    // MPS daemons: Deployments in its own namespace only, and only the verbs src/sharing/mps.ts uses.
    for (const verb of ['create', 'delete', 'list'])
      expect(await allowed('apps', 'deployments', verb, { namespace: 'gpu-dra' }), verb).toBe(true);
    for (const [verb, namespace] of [
      ['update', 'gpu-dra'],
      ['patch', 'gpu-dra'],
      ['create', 'default'],
      ['create', 'kube-system'],
      ['list', ''],
    ] as const) {
      expect(
        await allowed('apps', 'deployments', verb, { namespace }),
        `deployments ${verb} in ${namespace}`,
      ).toBe(false);
    }
    for (const [resource, verb] of [
      ['pods', 'create'],
      ['pods', 'get'],
      ['daemonsets', 'create'],
    ] as const) {
      const group = resource === 'pods' ? '' : 'apps';
      expect(await allowed(group, resource, verb, { namespace: 'gpu-dra' }), `${resource} ${verb}`).toBe(
        false,
      );
    }
  });

  it("writes its claims' status.devices from its own node only, with the shipped rules", async () => {
    const c = fx.cluster;
    const core = c.kubeConfig.makeApiClient(CoreV1Api);
    const asAdmin = c.kubeConfig.makeApiClient(ResourceV1Api);
    const minor = Number.parseInt((await c.kubeConfig.makeApiClient(VersionApi).getCode()).minor, 10);
    const perDriverCheck = minor >= 36;
    for (const name of ['node-a', 'node-b']) await core.createNode({ body: { metadata: { name } } });
    // As a DaemonSet pod's projected token is: bound to a pod on node-a.
    const token = await nodeBoundToken(c, {
      namespace: 'gpu-dra',
      serviceAccount: 'gpu-dra-kubelet-plugin',
      nodeName: 'node-a',
    });
    const bound = await loadKubeconfigClient(c.makeKubeconfig(token, 'bound-plugin'));
    const unbound = await loadKubeconfigClient(c.makeKubeconfig(c.driverToken, 'unbound-plugin'));

    const onA = await allocatedClaim(asAdmin, 'on-a', 'node-a');
    const onB = await allocatedClaim(asAdmin, 'on-b', 'node-b');
    // Another driver's entry, which our writes must leave alone.
    await apply(
      adminClient(c),
      onA,
      [entry('other.example.com', 'node-a', 'dev-0', { by: 'other' })],
      'other',
    );

    const writer = new ClaimStatusWriter({ kube: bound, driverName: 'gpu.dra.dev', logger: silentLogger() });
    const devices = describeDevices(new Map(), [
      { requestNames: ['gpu'], poolName: 'node-a', deviceName: 'gpu-0', uuid: 'GPU-1234' },
    ]);
    writer.prepared(onA, devices);
    await writer.idle();
    expect(writer.disabledReason).toBeUndefined();
    expect(writer.counts.writes).toBe(1);
    const written = await asAdmin.readNamespacedResourceClaim({ namespace: 'default', name: 'on-a' });
    expect(written.status?.devices?.map((d): unknown[] => [d.driver, d.device, d.data as unknown])).toEqual([
      ['other.example.com', 'dev-0', { by: 'other' }],
      ['gpu.dra.dev', 'gpu-0', { uuid: 'GPU-1234' }],
    ]);

    // Settled at once: the three run together, and a rejection must never wait unhandled
    // while the loop below awaits an earlier one.
    const settle = (p: Promise<unknown>): Promise<{ value?: unknown; err?: unknown }> =>
      p.then(
        (value) => ({ value }),
        (err: unknown) => ({ err }),
      );
    const refusals: [string, Promise<{ value?: unknown; err?: unknown }>][] = [
      ["another node's claim", settle(apply(bound, onB, [entry('gpu.dra.dev', 'node-b', 'gpu-0', {})]))],
      [
        "another driver's entry",
        settle(
          apply(bound, onA, [entry('other.example.com', 'node-a', 'dev-0', { by: 'us' })], 'gpu-dra-other'),
        ),
      ],
      [
        'a token bound to no node',
        settle(apply(unbound, onA, [entry('gpu.dra.dev', 'node-a', 'gpu-0', { x: 'y' })])),
      ],
    ];
    for (const [what, write] of refusals) {
      const { value, err } = await write;
      if (perDriverCheck) {
        expect(err, what).toBeInstanceOf(KubeApiError);
        expect((err as KubeApiError).statusCode, what).toBe(422);
        expect((err as KubeApiError).apiMessage, what).toContain('resourceclaims/driver');
      } else {
        // 1.34, 1.35: patch on resourceclaims/status is all it takes.
        expect(err, what).toBeUndefined();
        expect(value, what).toBeDefined();
      }
    }

    // Unprepare: our entries go, the other driver's stay.
    writer.unprepared(onA);
    await writer.idle();
    expect(writer.counts.clears).toBe(1);
    const cleared = await asAdmin.readNamespacedResourceClaim({ namespace: 'default', name: 'on-a' });
    expect(cleared.status?.devices?.map((d) => d.driver)).toEqual(['other.example.com']);
    bound.close();
    unbound.close();
  });

  it('lets the plugin write slices before the policy, and denies node-less requests after it', async () => {
    const asDriver = fx.cluster.kubeConfigFor(fx.cluster.driverToken).makeApiClient(ResourceV1Api);
    const asAdmin = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await asDriver.createResourceSlice({ body: slice('before-policy', 'node-a') });

    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    for (const o of load('validatingadmissionpolicy.yaml')) await objects.create(o);

    // Policies take effect asynchronously once the apiserver has compiled them.
    const denial = await eventually(
      'policy enforced',
      async () => {
        try {
          await asDriver.createResourceSlice({ body: slice(`probe-${String(Date.now())}`, 'node-a') });
          return undefined;
        } catch (err) {
          return String((err as { body?: unknown }).body ?? err);
        }
      },
      60_000,
      500,
    );
    expect(denial).toMatch(/no node name in the request's user info/);
    await expect(asDriver.deleteResourceSlice({ name: 'before-policy' })).rejects.toThrow();
    // Other users are not affected.
    await asAdmin.createResourceSlice({ body: slice('by-admin', 'node-b') });
    await asAdmin.deleteResourceSlice({ name: 'before-policy' });
  });
});

function entry(
  driver: string,
  pool: string,
  device: string,
  data: Record<string, string>,
): Record<string, unknown> {
  return { driver, pool, device, data };
}

function adminClient(c: {
  makeKubeconfig(token: string, name?: string): string;
  adminToken: string;
}): Promise<KubeClient> {
  return loadKubeconfigClient(c.makeKubeconfig(c.adminToken, 'admin-client'));
}

/** A server-side apply of status.devices, as statusWriter.ts sends it. */
async function apply(
  kube: KubeClient | Promise<KubeClient>,
  claim: ClaimRef,
  devices: readonly Record<string, unknown>[],
  fieldManager = 'gpu-dra',
): Promise<unknown> {
  return (await kube).request(
    'PATCH',
    `/apis/resource.k8s.io/v1/namespaces/${claim.namespace}/resourceclaims/${claim.name}/status`,
    {
      query: { fieldManager, force: true },
      contentType: 'application/apply-patch+yaml',
      body: {
        apiVersion: 'resource.k8s.io/v1',
        kind: 'ResourceClaim',
        metadata: { namespace: claim.namespace, name: claim.name },
        status: { devices },
      },
    },
  );
}

/** A claim allocated on `node` one device of ours (gpu-0) and one of another driver (dev-0). */
async function allocatedClaim(resource: ResourceV1Api, name: string, node: string): Promise<ClaimRef> {
  const created = await resource.createNamespacedResourceClaim({
    namespace: 'default',
    body: {
      metadata: { name },
      spec: {
        devices: {
          requests: [
            { name: 'gpu', exactly: { deviceClassName: 'gpu.gpu.dra.dev' } },
            { name: 'nic', exactly: { deviceClassName: 'nic.other.example.com' } },
          ],
        },
      },
    },
  });
  await resource.replaceNamespacedResourceClaimStatus({
    namespace: 'default',
    name,
    body: {
      metadata: created.metadata,
      spec: created.spec,
      status: {
        allocation: {
          devices: {
            results: [
              { request: 'gpu', driver: 'gpu.dra.dev', pool: node, device: 'gpu-0' },
              { request: 'nic', driver: 'other.example.com', pool: node, device: 'dev-0' },
            ],
          },
          nodeSelector: {
            nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }],
          },
        },
        reservedFor: [{ resource: 'pods', name: `pod-${name}`, uid: crypto.randomUUID() }],
      },
    },
  });
  return { namespace: 'default', name, uid: created.metadata?.uid ?? '' };
}
