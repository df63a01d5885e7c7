// deploy/rbac.yaml and deploy/validatingadmissionpolicy.yaml on a real apiserver, with the
// driver authenticated as the DaemonSet's ServiceAccount user:
// - RBAC allows exactly the calls the code makes (SubjectAccessReview, verb by verb);
// - the admission policy denies ResourceSlice writes from the plugin when the request carries
//   no node name (static tokens cannot carry the `authentication.kubernetes.io/node-name`
//   extra that real bound ServiceAccount tokens have), and leaves other users alone.
import path from 'node:path';
import {
  AuthorizationV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
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
    const allowed = async (group: string, resource: string, verb: string): Promise<boolean> => {
      const r = await authz.createSubjectAccessReview({
        body: {
          spec: {
            user: SA_USER,
            groups: GROUPS,
            resourceAttributes: {
              group,
              resource,
              verb,
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
