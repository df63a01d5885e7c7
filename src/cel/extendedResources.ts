/**
 * Extended resources backed by DRA (KEP-5004): a pod that asks for `resources.limits:
 * {nvidia.com/gpu: 2}` and no claim gets, from the scheduler, a ResourceClaim on the DeviceClass
 * that names that resource. This builds the claim the scheduler would make, so `explain` can
 * evaluate device-plugin-style pods like any claim (the scheduler's rules, from
 * pkg/scheduler/framework/plugins/dynamicresources of 1.34 and 1.37):
 *
 * - A class backs `spec.extendedResourceName` and, implicitly, `deviceclass.resource.kubernetes.io/<class>`.
 *   When several classes name one resource the newest wins (creationTimestamp), then the lower name.
 * - One request per container and resource: `container-<i>-request-<j>`, `i` the container's index
 *   in initContainers followed by containers, `j` the resource's index among the container's
 *   requests sorted by name; ExactCount of the requested quantity.
 * - Requests default to limits (the apiserver's defaulting).
 *
 * Not modelled: the node. The scheduler asks DRA only on nodes whose allocatable does not serve
 * the resource (a device plugin's); this assumes it does not. Nor init containers that are not
 * sidecars: 1.34 gives each its own request, 1.36+ let them reuse the regular containers' devices,
 * so their claim depends on the release and is refused here rather than guessed.
 */
import type { DeviceClass, DeviceRequest, ResourceClaim } from '../api/resource.js';
import { ConfigError } from '../util/errors.js';
import { Quantity } from './quantity.js';

/** The implicit extended resource name of every DeviceClass, followed by the class name. */
export const DEVICE_CLASS_RESOURCE_PREFIX = 'deviceclass.resource.kubernetes.io/';

type Quantities = Readonly<Record<string, string | number>>;

export interface PodContainer {
  readonly name?: string;
  readonly restartPolicy?: string;
  readonly resources?: { readonly requests?: Quantities; readonly limits?: Quantities };
}

export interface PodObject {
  readonly kind?: string;
  readonly metadata?: { readonly name?: string; readonly namespace?: string };
  readonly spec?: {
    readonly initContainers?: readonly PodContainer[];
    readonly containers?: readonly PodContainer[];
  };
}

/** A class's creationTimestamp in ms (an RFC 3339 string in YAML, a Date from a client); 0 when absent. */
function createdAt(c: DeviceClass): number {
  const t = c.metadata?.['creationTimestamp'];
  if (t instanceof Date) return t.getTime();
  return typeof t === 'string' ? Date.parse(t) || 0 : 0;
}

/** Extended resource name → the DeviceClass that backs it. */
export function extendedResourceClasses(classes: readonly DeviceClass[]): Map<string, string> {
  const explicit = new Map<string, DeviceClass>();
  const newer = (a: DeviceClass, b: DeviceClass): boolean => {
    const ta = createdAt(a);
    const tb = createdAt(b);
    return ta !== tb ? ta > tb : (a.metadata?.name ?? '') < (b.metadata?.name ?? '');
  };
  for (const c of classes) {
    const name = c.spec?.extendedResourceName;
    if (name === undefined || c.metadata?.name === undefined) continue;
    const current = explicit.get(name);
    if (current === undefined || newer(c, current)) explicit.set(name, c);
  }
  const out = new Map<string, string>();
  for (const c of classes)
    if (c.metadata?.name) out.set(DEVICE_CLASS_RESOURCE_PREFIX + c.metadata.name, c.metadata.name);
  for (const [name, c] of explicit) out.set(name, c.metadata?.name ?? '');
  return out;
}

function wholeCount(value: string | number, where: string): number {
  const q = typeof value === 'number' ? Quantity.tryParse(String(value)) : Quantity.tryParse(value);
  const nanos = q?.nanos;
  if (nanos === undefined || nanos < 0n || nanos % 1_000_000_000n !== 0n)
    throw new ConfigError(where, `an extended resource is a whole number of devices, not ${String(value)}`);
  return Number(nanos / 1_000_000_000n);
}

/**
 * The claim the scheduler makes for `pod`'s DRA-backed extended resources (named
 * `<pod>-extended-resources`, as the scheduler's generated name starts), or undefined when the
 * pod asks for none that a class in `classes` backs.
 */
export function extendedResourceClaim(
  pod: PodObject,
  classes: readonly DeviceClass[],
): ResourceClaim | undefined {
  const backing = extendedResourceClasses(classes);
  const podName = pod.metadata?.name ?? '';
  const init = pod.spec?.initContainers ?? [];
  const containers = [...init, ...(pod.spec?.containers ?? [])];
  const requests: DeviceRequest[] = [];
  containers.forEach((c, i) => {
    const asked: Record<string, string | number> = { ...c.resources?.limits, ...c.resources?.requests };
    const names = Object.keys(asked).sort();
    names.forEach((resource, j) => {
      const className = backing.get(resource);
      const value = asked[resource];
      if (className === undefined || value === undefined) return;
      const where = `Pod ${podName} container ${c.name ?? String(i)} ${resource}`;
      // Asking for none is no request, as for the scheduler.
      const count = wholeCount(value, where);
      if (count === 0) return;
      if (i < init.length && c.restartPolicy !== 'Always')
        throw new ConfigError(
          where,
          'init containers that are not sidecars get release-dependent requests (each its own in 1.34, ' +
            'reusing the containers’ devices from 1.36); explain models regular and sidecar containers only',
        );
      requests.push({
        name: `container-${String(i)}-request-${String(j)}`,
        exactly: { deviceClassName: className, allocationMode: 'ExactCount', count },
      });
    });
  });
  if (requests.length === 0) return undefined;
  requests.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceClaim',
    metadata: {
      name: `${podName}-extended-resources`,
      ...(pod.metadata?.namespace !== undefined ? { namespace: pod.metadata.namespace } : {}),
    },
    spec: { devices: { requests } },
  };
}
