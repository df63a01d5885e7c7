// The workload the e2e tests submit again and again: one ResourceClaimTemplate per pod claim and
// a single-container pod that uses them all, as a user would write it.
import type { CoreV1Api, ResourceV1Api, V1Pod, V1ResourceClaimTemplateSpec } from '@kubernetes/client-node';
import { eventually } from './wait.js';

export interface PodClaim {
  readonly name: string;
  readonly template: V1ResourceClaimTemplateSpec;
  /** Requests of the claim the container uses; all of them when absent. */
  readonly requests?: readonly string[];
}

/** A template asking for one device of a DeviceClass. */
export function oneDeviceTemplate(deviceClassName: string, request = 'gpu'): V1ResourceClaimTemplateSpec {
  return { spec: { devices: { requests: [{ name: request, exactly: { deviceClassName } }] } } };
}

/** Creates `<pod>-<claim>` templates and the pod; returns the created pod. */
export async function createPodWithClaims(
  apis: { resource: ResourceV1Api; core: CoreV1Api },
  opts: { namespace: string; pod: string; claims: readonly PodClaim[]; image?: string },
): Promise<V1Pod> {
  const templateName = (c: PodClaim): string => `${opts.pod}-${c.name}`;
  for (const c of opts.claims) {
    await apis.resource.createNamespacedResourceClaimTemplate({
      namespace: opts.namespace,
      body: { metadata: { name: templateName(c) }, spec: c.template },
    });
  }
  return apis.core.createNamespacedPod({
    namespace: opts.namespace,
    body: {
      metadata: { name: opts.pod, namespace: opts.namespace },
      spec: {
        containers: [
          {
            name: 'ctr',
            image: opts.image ?? 'registry.k8s.io/pause:3.10',
            resources: {
              claims: opts.claims.flatMap((c) =>
                c.requests?.length
                  ? c.requests.map((request) => ({ name: c.name, request }))
                  : [{ name: c.name }],
              ),
            },
          },
        ],
        resourceClaims: opts.claims.map((c) => ({
          name: c.name,
          resourceClaimTemplateName: templateName(c),
        })),
      },
    },
  });
}

/**
 * Waits for a namespace's default ServiceAccount: pods are rejected until the
 * serviceaccount-controller has created it.
 */
export async function waitForDefaultServiceAccount(core: CoreV1Api, namespace: string): Promise<void> {
  await eventually(
    'default ServiceAccount',
    async () => (await core.readNamespacedServiceAccount({ namespace, name: 'default' })).metadata?.name,
  );
}

/** Creates a namespace that pods can be created in at once. */
export async function createNamespace(
  core: CoreV1Api,
  name: string,
  labels: Record<string, string> = {},
): Promise<void> {
  await core.createNamespace({ body: { metadata: { name, labels } } });
  await waitForDefaultServiceAccount(core, name);
}
