// What the driver's own identity may do in the e2e clusters: the publisher's rules (the same
// list deploy/rbac.yaml is checked against) and, for the kubelet plugin, claim GETs and the
// claim status write. Nothing more, so a test passes only if the driver stays inside the RBAC it
// ships with.
//
// The status write's per-driver check (1.36+) grants `associated-node:patch` only to a
// service-account token bound to the claim's node, which the cluster's static tokens are not:
// a driver that must write status runs with {@link nodeBoundToken}.
import { CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { claimStatusRbacRules } from '../../../src/driver/statusWriter.js';
import { PUBLISHER_RBAC_RULES } from '../../../src/resourceslice/publisher.js';
import type { Cluster } from './cluster.js';
import { eventually } from './wait.js';

export async function grantDriverRbac(
  cluster: Cluster,
  opts: { readClaims: boolean; driverName?: string },
): Promise<void> {
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  const name = opts.readClaims ? 'gpu-dra-driver' : 'gpu-dra-resourceslice-publisher';
  await rbac.createClusterRole({
    body: {
      metadata: { name },
      rules: [
        ...(opts.readClaims
          ? [
              { apiGroups: ['resource.k8s.io'], resources: ['resourceclaims'], verbs: ['get'] },
              ...claimStatusRbacRules(opts.driverName ?? 'gpu.dra.dev').map((r) => ({
                apiGroups: [...r.apiGroups],
                resources: [...r.resources],
                verbs: [...r.verbs],
                ...('resourceNames' in r ? { resourceNames: [...r.resourceNames] } : {}),
              })),
            ]
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

/**
 * A token of `system:serviceaccount:<namespace>:<serviceAccount>` bound to a pod on `nodeName`,
 * as a DaemonSet pod's projected token is: the apiserver adds the node's name to the user's
 * extra (`authentication.kubernetes.io/node-name`). Creates the namespace, the service account
 * and the pod (never run: no kubelet picks it up) when missing; the pod must outlive the token's
 * use, since the apiserver checks it on every request.
 */
export async function nodeBoundToken(
  cluster: Cluster,
  opts: { namespace: string; serviceAccount: string; nodeName: string; pod?: string },
): Promise<string> {
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const exists = (err: unknown): boolean => (err as { code?: number }).code === 409;
  await core.createNamespace({ body: { metadata: { name: opts.namespace } } }).catch((err: unknown) => {
    if (!exists(err)) throw err;
  });
  await core
    .createNamespacedServiceAccount({
      namespace: opts.namespace,
      body: { metadata: { name: opts.serviceAccount } },
    })
    .catch((err: unknown) => {
      if (!exists(err)) throw err;
    });
  const podName = opts.pod ?? `${opts.serviceAccount}-${opts.nodeName}`;
  const pod = await core.createNamespacedPod({
    namespace: opts.namespace,
    body: {
      metadata: { name: podName },
      spec: {
        serviceAccountName: opts.serviceAccount,
        automountServiceAccountToken: false,
        nodeName: opts.nodeName,
        containers: [{ name: 'plugin', image: 'registry.k8s.io/pause:3.10' }],
      },
    },
  });
  // The service account admission plugin may not see a just-created account at once.
  const token = await eventually('bound token', async () => {
    const r = await core.createNamespacedServiceAccountToken({
      namespace: opts.namespace,
      name: opts.serviceAccount,
      body: {
        spec: {
          audiences: [],
          expirationSeconds: 3600,
          boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: podName, uid: pod.metadata?.uid ?? '' },
        },
      },
    });
    return r.status?.token;
  });
  return token;
}
