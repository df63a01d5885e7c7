// What the driver's own identity may do in the e2e clusters: the publisher's rules (the same
// list deploy/rbac.yaml is checked against) and, for the kubelet plugin, claim GETs. Nothing
// more, so a test passes only if the driver stays inside the RBAC it ships with.
import { RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { PUBLISHER_RBAC_RULES } from '../../../src/resourceslice/publisher.js';
import type { Cluster } from './cluster.js';

export async function grantDriverRbac(cluster: Cluster, opts: { readClaims: boolean }): Promise<void> {
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  const name = opts.readClaims ? 'gpu-dra-driver' : 'gpu-dra-resourceslice-publisher';
  await rbac.createClusterRole({
    body: {
      metadata: { name },
      rules: [
        ...(opts.readClaims
          ? [{ apiGroups: ['resource.k8s.io'], resources: ['resourceclaims'], verbs: ['get'] }]
          : []),
        ...PUBLISHER_RBAC_RULES.map((r) => ({
          apiGroups: [...r.apiGroups],
          resources: [...r.resources],
          verbs: [...r.verbs],
        })),
      ],
    },
  });
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: cluster.driverUser }],
    },
  });
}
