// The workload the e2e tests submit again and again: one ResourceClaimTemplate per pod claim and
// a single-container pod that uses them all, as a user would write it.
import crypto from 'node:crypto';

import type { CoreV1Api, ResourceV1Api, V1Pod, V1ResourceClaimTemplateSpec } from '@kubernetes/client-node';

import type { ClaimRef } from '../../../src/kubelet/proto.js';
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
 * Creates the claim `<pod>-gpu` (one device of `deviceClassName`, made by hand, not from a
 * template, so that it outlives the pod and can be looked up by name) and a pod using it; returns
 * the claim's UID.
 */
export async function createPodWithOwnClaim(
  apis: { resource: ResourceV1Api; core: CoreV1Api },
  opts: { namespace: string; pod: string; deviceClassName: string },
): Promise<string> {
  const claim = `${opts.pod}-gpu`;
  const created = await apis.resource.createNamespacedResourceClaim({
    namespace: opts.namespace,
    body: { metadata: { name: claim }, spec: oneDeviceTemplate(opts.deviceClassName).spec },
  });
  await apis.core.createNamespacedPod({
    namespace: opts.namespace,
    body: {
      metadata: { name: opts.pod, namespace: opts.namespace },
      spec: {
        containers: [
          { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: claim }] } },
        ],
        resourceClaims: [{ name: claim, resourceClaimName: claim }],
      },
    },
  });
  return created.metadata?.uid ?? '';
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

/** One claim for `device`, allocated as the scheduler would have allocated it. */
export interface AllocatedClaim {
  readonly namespace: string;
  readonly name: string;
  readonly deviceClassName: string;
  readonly driver: string;
  readonly pool: string;
  readonly device: string;
  /** The node the allocation is pinned to. */
  readonly nodeName: string;
  /** The made-up pod it is reserved for. */
  readonly podName: string;
}

/**
 * Creates a one-request claim and writes its status.allocation and reservedFor with the admin
 * client, so a driver can be asked to prepare it with no scheduler or kubelet: drivers GET it
 * and check both before preparing.
 */
export async function createAllocatedClaim(resource: ResourceV1Api, c: AllocatedClaim): Promise<ClaimRef> {
  const { namespace, name } = c;
  const created = await resource.createNamespacedResourceClaim({
    namespace,
    body: {
      metadata: { name, namespace },
      spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: c.deviceClassName } }] } },
    },
  });
  const updated = await resource.replaceNamespacedResourceClaimStatus({
    name,
    namespace,
    body: {
      metadata: created.metadata,
      spec: created.spec,
      status: {
        allocation: {
          devices: { results: [{ request: 'gpu', driver: c.driver, pool: c.pool, device: c.device }] },
          nodeSelector: {
            nodeSelectorTerms: [
              { matchFields: [{ key: 'metadata.name', operator: 'In', values: [c.nodeName] }] },
            ],
          },
        },
        reservedFor: [{ resource: 'pods', name: c.podName, uid: crypto.randomUUID() }],
      },
    },
  });
  return { namespace, name, uid: updated.metadata?.uid ?? '' };
}

/**
 * DeviceClasses selecting the driver's devices by their `type` attribute, as
 * deploy/deviceclass.yaml defines them for gpu.dra.dev (`gpu.gpu.dra.dev`, `mig.gpu.dra.dev`)
 * and NVIDIA's chart for gpu.nvidia.com (`gpu.nvidia.com`, `mig.nvidia.com`): type → class name.
 */
/** A DeviceClass `name` selecting every device of `driver`. */
export async function createDriverDeviceClass(
  resource: ResourceV1Api,
  name: string,
  driver: string,
): Promise<void> {
  await resource.createDeviceClass({
    body: {
      metadata: { name },
      spec: { selectors: [{ cel: { expression: `device.driver == "${driver}"` } }] },
    },
  });
}

export async function createTypedDeviceClasses(
  resource: ResourceV1Api,
  driver: string,
  classes: Readonly<Partial<Record<'gpu' | 'mig', string>>>,
): Promise<void> {
  for (const [type, name] of Object.entries(classes)) {
    await resource.createDeviceClass({
      body: {
        metadata: { name },
        spec: {
          selectors: [
            {
              cel: {
                expression: `device.driver == '${driver}' && device.attributes['${driver}'].type == '${type}'`,
              },
            },
          ],
        },
      },
    });
  }
}
