/**
 * Pure: the model's ResourceSlices in the form written to the apiserver, the canonical key two
 * slices are compared by, and which sent fields the apiserver dropped (with the feature gate
 * that likely explains it). No I/O; the publisher (publisher.ts) runs the reconcile loop.
 */
import type {
  CapacityRequestPolicy,
  Counter,
  CounterSet,
  Device,
  DeviceCounterConsumption,
  ResourceSlice,
} from '../api/resource.js';
import type { ResourceSliceObject, SliceDevice } from './model.js';
import { quantityKey } from './values.js';

/** The part of a slice the publisher owns, in a canonical form for comparison. */
interface Projection {
  driver: string;
  nodeName: string | undefined;
  pool: { name: string; generation: number; resourceSliceCount: number };
  owner: string | undefined;
  sharedCounters?: unknown[];
  devices: unknown[];
}

function sortedEntries<T>(rec: Readonly<Record<string, T>> | undefined): [string, T][] {
  return Object.entries(rec ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

const canonical = (q: string | undefined): string | undefined =>
  q === undefined ? q : (quantityKey(q) ?? q);

function projectPolicy(p: CapacityRequestPolicy): unknown {
  const r = p.validRange;
  return [
    canonical(p.default),
    p.validValues?.map(canonical),
    r && [canonical(r.min), canonical(r.max), canonical(r.step)],
  ];
}

function projectCounters(counters: Readonly<Record<string, Counter>> | undefined): unknown {
  return sortedEntries(counters).map(([k, v]) => [k, canonical(v.value)]);
}

function projectDevice(d: Device): unknown {
  const attributes = sortedEntries(d.attributes).map(([k, v]) => [k, sortedEntries({ ...v })]);
  // A request policy is compared too: changing --consumable-shares must rewrite the slices.
  const capacity = sortedEntries(d.capacity).map(([k, v]) =>
    v.requestPolicy === undefined
      ? [k, canonical(v.value)]
      : [k, canonical(v.value), projectPolicy(v.requestPolicy)],
  );
  // timeAdded is filled in by the apiserver; it is not ours to compare.
  const taints = (d.taints ?? []).map((t) => [t.key, t.value ?? '', t.effect]);
  const consumes = (d.consumesCounters ?? []).map((c) => [c.counterSet, projectCounters(c.counters)]);
  return {
    name: d.name,
    attributes,
    capacity,
    ...(consumes.length > 0 ? { consumes } : {}),
    ...(taints.length > 0 ? { taints } : {}),
    ...(d.allowMultipleAllocations === true ? { allowMultipleAllocations: true } : {}),
  };
}

function project(s: ResourceSlice, nodeName: string): Projection {
  const owner = s.metadata.ownerReferences?.find(
    (r) => r.kind === 'Node' && r.apiVersion === 'v1' && r.name === nodeName,
  );
  return {
    driver: s.spec.driver,
    nodeName: s.spec.nodeName,
    pool: {
      name: s.spec.pool.name,
      generation: s.spec.pool.generation,
      resourceSliceCount: s.spec.pool.resourceSliceCount,
    },
    owner: owner?.uid,
    ...(s.spec.sharedCounters && s.spec.sharedCounters.length > 0
      ? { sharedCounters: s.spec.sharedCounters.map((c) => [c.name, projectCounters(c.counters)]) }
      : {}),
    devices: (s.spec.devices ?? []).map(projectDevice),
  };
}

/**
 * The part of a slice the publisher owns, canonical (map order and Quantity spelling ignored,
 * device order not, apiserver-set fields left out): two slices with the same key are the same
 * to us.
 */
export function sliceKey(s: ResourceSlice, nodeName: string): string {
  return JSON.stringify(project(s, nodeName));
}

const GATE_BY_FIELD: Readonly<Record<string, string>> = {
  taints: 'DRADeviceTaints',
  consumesCounters: 'DRAPartitionableDevices',
  sharedCounters: 'DRAPartitionableDevices',
  perDeviceNodeSelection: 'DRAPartitionableDevices',
  partitionTypeAttribute: 'DRAPartitionableDevicesType',
  allowMultipleAllocations: 'DRAConsumableCapacity',
  requestPolicy: 'DRAConsumableCapacity',
  bindsToNode: 'DRADeviceBindingConditions',
  bindingConditions: 'DRADeviceBindingConditions',
  bindingFailureConditions: 'DRADeviceBindingConditions',
  ints: 'DRAListTypeAttributes',
  bools: 'DRAListTypeAttributes',
  strings: 'DRAListTypeAttributes',
  versions: 'DRAListTypeAttributes',
  nodeAllocatableResources: 'DRANodeAllocatableResources',
  nodeAllocatableResourceMappings: 'DRANodeAllocatableResources',
  skipNodeOperations: 'DRAOptionalNodeOperations',
};

/**
 * What publishing without a gate's fields means for users, where it is not obvious: the slices
 * still publish, so only this line in the log tells an operator why a feature does nothing.
 */
const GATE_EFFECT: Readonly<Record<string, string>> = {
  DRAConsumableCapacity:
    '--consumable-shares has no effect: each GPU still goes to one claim at a time. The gate is beta ' +
    '(on by default) from Kubernetes 1.36; before that, enable DRAConsumableCapacity on ' +
    'kube-apiserver and kube-scheduler',
  DRADeviceTaints: 'unhealthy GPUs (XID errors, lost GPUs) stay schedulable',
  DRAPartitionableDevices:
    '--mig-partitioning=dynamic is unsafe: the scheduler sees a GPU and its MIG partitions as ' +
    'independent devices and may hand out overlapping ones, whose creation then fails at prepare. ' +
    'The gate is beta (on by default) from Kubernetes 1.36; before that, enable ' +
    'DRAPartitionableDevices on kube-apiserver and kube-scheduler, or use --mig-partitioning=static',
};

/** What a disabled gate costs, for the dropped-fields warning; undefined when nothing to add. */
export function gateEffect(gate: string): string | undefined {
  return GATE_EFFECT[gate];
}

/** The feature gate that most likely explains a dropped field path such as `spec.devices[3].taints`. */
export function likelyFeatureGate(path: string): string | undefined {
  const parts = path.split(/[.[\]]+/).filter((p) => p && !/^\d+$/.test(p));
  for (let i = parts.length - 1; i >= 0; i--) {
    const gate = GATE_BY_FIELD[parts[i] ?? ''];
    if (gate) return gate;
  }
  return undefined;
}

function isEmpty(v: unknown): boolean {
  return (
    v === undefined ||
    v === null ||
    (Array.isArray(v) && v.length === 0) ||
    (typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0)
  );
}

/** JSON paths present (non-empty) in `sent` but missing in `stored`. */
export function droppedPaths(sent: unknown, stored: unknown, path = ''): string[] {
  if (Array.isArray(sent)) {
    const arr = Array.isArray(stored) ? stored : [];
    return sent.flatMap((v, i) => droppedPaths(v, arr[i], `${path}[${i}]`));
  }
  if (sent !== null && typeof sent === 'object') {
    const obj = stored !== null && typeof stored === 'object' ? (stored as Record<string, unknown>) : {};
    const out: string[] = [];
    for (const [k, v] of Object.entries(sent)) {
      if (isEmpty(v)) continue;
      const p = path ? `${path}.${k}` : k;
      if (isEmpty(obj[k])) out.push(p);
      else out.push(...droppedPaths(v, obj[k], p));
    }
    return out;
  }
  return [];
}

function copyCounters(c: Readonly<Record<string, Counter>>): Record<string, Counter> {
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, { ...v }]));
}

const copyConsumption = (c: DeviceCounterConsumption): DeviceCounterConsumption => ({
  counterSet: c.counterSet,
  counters: copyCounters(c.counters),
});

const copyCounterSet = (c: CounterSet): CounterSet => ({ name: c.name, counters: copyCounters(c.counters) });

/**
 * The model's slice as written: owned by the Node (so it goes with it), plain JSON. A slice
 * with counter sets and no devices goes without `devices`: from Kubernetes 1.35 a slice may
 * set only one of the two, and `[]` counts as set.
 */
export function toWire(s: ResourceSliceObject, nodeUid: string): ResourceSlice {
  const devices: Device[] = s.spec.devices.map((d: SliceDevice) => ({
    name: d.name,
    attributes: Object.fromEntries(Object.entries(d.attributes).map(([k, v]) => [k, { ...v }])),
    capacity: Object.fromEntries(Object.entries(d.capacity).map(([k, v]) => [k, { ...v }])),
    ...(d.consumesCounters && d.consumesCounters.length > 0
      ? { consumesCounters: d.consumesCounters.map(copyConsumption) }
      : {}),
    ...(d.taints && d.taints.length > 0 ? { taints: d.taints.map((t) => ({ ...t })) } : {}),
    ...(d.allowMultipleAllocations === true ? { allowMultipleAllocations: true } : {}),
  }));
  const sharedCounters = s.spec.sharedCounters ?? [];
  return {
    apiVersion: s.apiVersion,
    kind: s.kind,
    metadata: {
      name: s.metadata.name,
      ownerReferences: [
        { apiVersion: 'v1', kind: 'Node', name: s.spec.nodeName, uid: nodeUid, controller: true },
      ],
    },
    spec: {
      driver: s.spec.driver,
      nodeName: s.spec.nodeName,
      pool: { ...s.spec.pool },
      ...(sharedCounters.length > 0 ? { sharedCounters: sharedCounters.map(copyCounterSet) } : {}),
      ...(sharedCounters.length > 0 && devices.length === 0 ? {} : { devices }),
    },
  };
}
