/**
 * The ResourceSlice model: discovered devices in, resource.k8s.io/v1 ResourceSlice objects out.
 * Pure functions (no I/O, no clock); the publisher (publisher.ts) is the only place that talks
 * to the apiserver.
 *
 * Device model (names and types copied from NVIDIA's `gpu.nvidia.com` driver so that selectors
 * written for it work unchanged when this driver runs under the name `gpu.nvidia.com`):
 *
 * - Full GPU `gpu-<minor>`: `type`="gpu", `uuid`, `productName`, `brand`, `architecture`
 *   (strings); `cudaComputeCapability`, `driverVersion`, `cudaDriverVersion` (versions);
 *   `resource.kubernetes.io/pciBusID`, and where known `resource.kubernetes.io/pcieRoot` and
 *   `addressingMode` (strings) and `resource.kubernetes.io/numaNode` (int). Capacity `memory`
 *   (bytes).
 * - MIG device `gpu-<parentMinor>-mig-<profile>-<giProfileId>-<placementStart>`: `type`="mig",
 *   `uuid`, `parentUUID`, `profile`, and the parent's product/brand/architecture/versions/PCI/
 *   addressing-mode/NUMA attributes. Capacities `multiprocessors`, `copyEngines`, `decoders`, `encoders`,
 *   `jpegEngines`, `ofaEngines`, `memory`, and `memorySlice<i>` = 1 for each memory slice its
 *   placement spans (as NVIDIA publishes them; they differ by placement, so they are exempt from
 *   the same-attributes rule below).
 * - A GPU with MIG mode enabled publishes its MIG devices, not itself; a MIG-capable GPU with
 *   MIG mode off publishes itself.
 * - With `migPartitioning: 'dynamic'` (partitions.ts) a GPU with MIG mode on instead publishes a
 *   counter set, itself consuming all of it, and every possible (profile, placement) as a MIG
 *   device consuming its share; those carry no `uuid` (the instance does not exist yet) and no
 *   `memorySlice<i>` capacities, as in NVIDIA's driver. Slices then follow `counterLayout`.
 * - With `consumableShares` (shares.ts) a full GPU also carries `allowMultipleAllocations` and
 *   a request policy on `memory` (and a `shares` capacity for a number of shares), so several
 *   claims can each hold a share of it. MIG devices are never shared this way.
 *
 * Optional fields (`brand`, `architecture`, `cudaComputeCapability`, `pcieRoot`, GPU `memory`:
 * whatever discovery may not know) follow an all-or-nothing rule per node: published only when
 * known for *every* GPU on the node, otherwise omitted for all (with a warning). A selector that
 * reads an attribute a device lacks fails with a CEL evaluation error that aborts scheduling of
 * the claim, so within a pool every device of a type carries the same attribute set with the same
 * types; {@link buildDevices} asserts this. The exceptions are {@link PER_DEVICE_ATTRIBUTES}
 * (`addressingMode`, `resource.kubernetes.io/numaNode`): NVIDIA's driver publishes them on each
 * device that has them, selectors written for it guard them with `has()` or `in`, and we match it.
 *
 * Versions are normalized to Semantic Versioning 2.0.0 (see {@link normalizeVersion}):
 * `580.159.04` is published as `580.159.4`, `9.0` as `9.0.0`, `13.0` as `13.0.0`, as NVIDIA does.
 */
import {
  RESOURCE_API_VERSION,
  type CounterSet,
  type Device,
  type DeviceCapacity,
  type DeviceTaint,
  type ResourceSlice,
  type ResourceSliceSpec as ApiResourceSliceSpec,
} from '../api/resource.js';
import type { GpuDevice, MigDevice, MigResources, NodeInventory } from '../nvml/types.js';
import { GpuDraError } from '../util/errors.js';
import { gpuDeviceName, migDeviceName, sliceName } from './names.js';
import { isDnsLabel, isDnsSubdomain } from '../util/kubeNames.js';
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';
import { naturalCompare } from '../util/naturalCompare.js';
import { formatQuantity, isSemver, normalizeVersion } from './values.js';
import { memoryRequestPolicy, sharesCapacity, SHARES_CAPACITY, type ConsumableShares } from './shares.js';
import {
  dynamicMigWarnings,
  gpuPartitioning,
  MIG_CAPACITY_COUNTERS,
  gpuPublication,
  MAX_CONSUMPTIONS_PER_DEVICE,
  MAX_COUNTER_SETS_PER_SLICE,
  MAX_COUNTERS_PER_SET,
  MEMORY_SLICE_CAPACITY,
  memorySliceCapacity,
  partitionConsumption,
  type CounterLayout,
  type MigPartition,
  type MigPartitioning,
} from './partitions.js';

/** `ResourceSliceMaxDevices`. */
export const MAX_DEVICES_PER_SLICE = 128;
/** `ResourceSliceMaxDevicesWithAdvancedFeatures`: once any device uses taints or counters. */
export const MAX_DEVICES_PER_SLICE_ADVANCED = 64;
/** `ResourceSliceMaxAttributesAndCapacitiesPerDevice`. */
export const MAX_ATTRIBUTES_AND_CAPACITIES = 32;
export const MAX_STRING_LENGTH = 64;
export const MAX_VERSION_LENGTH = 64;
export const MAX_TAINTS_PER_DEVICE = 16;
export const DRIVER_NAME_MAX = 63;

export const PCI_BUS_ID_ATTRIBUTE = 'resource.kubernetes.io/pciBusID';
export const PCIE_ROOT_ATTRIBUTE = 'resource.kubernetes.io/pcieRoot';
/** KEP-6072's standard NUMA attribute, an int (NVIDIA's list form needs DRAListTypeAttributes). */
export const NUMA_NODE_ATTRIBUTE = 'resource.kubernetes.io/numaNode';

/**
 * Attributes published on each device that has them, as NVIDIA's driver does, rather than all or
 * nothing per node: a GPU with no addressing mode or no NUMA node just lacks the attribute.
 */
export const PER_DEVICE_ATTRIBUTES: ReadonlySet<string> = new Set(['addressingMode', NUMA_NODE_ATTRIBUTE]);

/** Exactly one field set, as in `resource.k8s.io/v1` DeviceAttribute (lists not used). */
export type AttributeValue =
  | { readonly string: string }
  | { readonly version: string }
  | { readonly int: number }
  | { readonly bool: boolean };

export interface CapacityValue extends DeviceCapacity {
  /** A Quantity in canonical form (see {@link formatQuantity}). */
  readonly value: string;
}

export type { DeviceTaint } from '../api/resource.js';

/** Device taints by device name (KEP-5055). */
export type TaintMap = Readonly<Record<string, readonly DeviceTaint[]>>;

/** A device as the model builds it: exactly one value per attribute, canonical quantities. */
export interface SliceDevice extends Device {
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly capacity: Readonly<Record<string, CapacityValue>>;
}

export interface ResourceSliceSpec extends ApiResourceSliceSpec<SliceDevice> {
  readonly nodeName: string;
  readonly devices: readonly SliceDevice[];
}

/** A ResourceSlice as the model wants it stored (the publisher adds the owner reference). */
export interface ResourceSliceObject extends ResourceSlice<SliceDevice> {
  readonly apiVersion: typeof RESOURCE_API_VERSION;
  readonly kind: 'ResourceSlice';
  readonly spec: ResourceSliceSpec;
}

export interface ModelOptions {
  /** Default {@link DEFAULT_DRIVER_NAME}. With `gpu.nvidia.com`, NVIDIA-style CEL selects these devices. */
  readonly driverName?: string;
  readonly nodeName: string;
  /** Pool generation to stamp on every slice; default 1. The publisher bumps it on every change. */
  readonly generation?: number;
  /** Override the per-slice device limit (tests); never above the API limit. */
  readonly maxDevicesPerSlice?: number;
  /** Device taints by device name (KEP-5055); tainted pools use the 64-device slice limit. */
  readonly taints?: Readonly<Record<string, readonly DeviceTaint[]>>;
  /** Let several claims share a full GPU (shares.ts); default `disabled`. */
  readonly consumableShares?: ConsumableShares;
  /** `dynamic`: MIG-mode GPUs publish every possible partition (partitions.ts); default `static`. */
  readonly migPartitioning?: MigPartitioning;
  /**
   * Where counter sets go (partitions.ts): `separate` for Kubernetes >= 1.35 (default),
   * `combined` for 1.34. Only matters when there are counter sets.
   */
  readonly counterLayout?: CounterLayout;
}

export interface DeviceModel {
  /** Sorted in natural name order (`gpu-2` before `gpu-10`). */
  readonly devices: readonly SliceDevice[];
  /** Counter sets the devices consume from (dynamic MIG), in GPU order; empty otherwise. */
  readonly counterSets: readonly CounterSet[];
  /** Things an operator should know (GPUs left out, attributes omitted); log them. */
  readonly warnings: readonly string[];
}

export interface SliceModel extends DeviceModel {
  readonly slices: readonly ResourceSliceObject[];
}

/** The model refused the input: a value outside the API's limits, a duplicate name, etc. */
export class ResourceSliceModelError extends GpuDraError {
  /** Device name (or `driver`/`node`/`pool` for pool-level problems). */
  readonly device: string;
  /** The offending field, e.g. `attributes.productName`, `name`, `capacity.memory`. */
  readonly field: string;

  constructor(device: string, field: string, message: string) {
    super('RESOURCESLICE_INVALID', `ResourceSlice device ${device}: ${field}: ${message}`);
    this.device = device;
    this.field = field;
  }
}

function invalid(device: string, field: string, message: string): never {
  throw new ResourceSliceModelError(device, field, message);
}

function version(device: string, field: string, raw: string): AttributeValue {
  const v = normalizeVersion(raw);
  if (v === undefined)
    invalid(device, `attributes.${field}`, `"${raw}" is not a version (expected N[.N[.N]])`);
  return { version: v };
}

/**
 * Fields discovery may not know for a GPU. Each is published only if every GPU on the node
 * reports it (see the module comment); the value is read from the GPU (a MIG device uses its
 * parent's).
 */
export const OPTIONAL_GPU_FIELDS = {
  brand: (g: GpuDevice) => g.brand || undefined,
  architecture: (g: GpuDevice) => g.architecture || undefined,
  cudaComputeCapability: (g: GpuDevice) => g.cudaComputeCapability || undefined,
  [PCIE_ROOT_ATTRIBUTE]: (g: GpuDevice) => g.pci.pcieRoot || undefined,
  memory: (g: GpuDevice) => g.memoryBytes,
} as const;
export type OptionalGpuField = keyof typeof OPTIONAL_GPU_FIELDS;

type Included = ReadonlySet<OptionalGpuField>;

function str(field: OptionalGpuField, gpu: GpuDevice, included: Included): AttributeValue | undefined {
  if (!included.has(field)) return undefined;
  const v = OPTIONAL_GPU_FIELDS[field](gpu);
  return typeof v === 'string' ? { string: v } : undefined;
}

/** Attributes a MIG device inherits from its parent, in publication order. */
function parentAttributes(
  device: string,
  gpu: GpuDevice,
  inv: NodeInventory,
  included: Included,
): Record<string, AttributeValue> {
  const entries: [string, AttributeValue | undefined][] = [
    ['productName', { string: gpu.productName }],
    ['brand', str('brand', gpu, included)],
    ['architecture', str('architecture', gpu, included)],
    [
      'cudaComputeCapability',
      included.has('cudaComputeCapability') && gpu.cudaComputeCapability
        ? version(device, 'cudaComputeCapability', gpu.cudaComputeCapability)
        : undefined,
    ],
    ['driverVersion', version(device, 'driverVersion', inv.driverVersion)],
    ['cudaDriverVersion', version(device, 'cudaDriverVersion', inv.cudaDriverVersion)],
    [PCI_BUS_ID_ATTRIBUTE, { string: gpu.pci.busId }],
    [PCIE_ROOT_ATTRIBUTE, str(PCIE_ROOT_ATTRIBUTE, gpu, included)],
    // Per device (PER_DEVICE_ATTRIBUTES): present exactly where this GPU reports them.
    ['addressingMode', gpu.addressingMode ? { string: gpu.addressingMode } : undefined],
    [NUMA_NODE_ATTRIBUTE, gpu.numaNode === undefined ? undefined : { int: gpu.numaNode }],
  ];
  const a: Record<string, AttributeValue> = {};
  for (const [k, v] of entries) if (v !== undefined) a[k] = v;
  return a;
}

function gpuToDevice(
  gpu: GpuDevice,
  inv: NodeInventory,
  included: Included,
  shares: ConsumableShares,
): SliceDevice {
  const name = gpuDeviceName(gpu.minor);
  const capacity: Record<string, CapacityValue> = {};
  if (included.has('memory') && gpu.memoryBytes !== undefined) {
    const requestPolicy = memoryRequestPolicy(shares, gpu.memoryBytes);
    capacity['memory'] = {
      ...quantity(name, 'memory', gpu.memoryBytes),
      ...(requestPolicy && { requestPolicy }),
    };
  }
  const sharesCap = sharesCapacity(shares);
  if (sharesCap) capacity[SHARES_CAPACITY] = sharesCap;
  const shared = Object.values(capacity).some((c) => c.requestPolicy !== undefined);
  return {
    name,
    attributes: {
      type: { string: 'gpu' },
      uuid: { string: gpu.uuid },
      ...parentAttributes(name, gpu, inv, included),
    },
    capacity,
    ...(shared ? { allowMultipleAllocations: true } : {}),
  };
}

function migCapacity(name: string, r: MigResources): Record<string, CapacityValue> {
  return {
    multiprocessors: quantity(name, 'multiprocessors', r.multiprocessors),
    copyEngines: quantity(name, 'copyEngines', r.copyEngines),
    decoders: quantity(name, 'decoders', r.decoders),
    encoders: quantity(name, 'encoders', r.encoders),
    jpegEngines: quantity(name, 'jpegEngines', r.jpegEngines),
    ofaEngines: quantity(name, 'ofaEngines', r.ofaEngines),
    memory: quantity(name, 'memory', r.memoryBytes),
  };
}

function migToDevice(mig: MigDevice, parent: GpuDevice, inv: NodeInventory, included: Included): SliceDevice {
  const name = migDeviceName(parent.minor, mig.profile, mig.profileId, mig.placement.start);
  const capacity = migCapacity(name, mig);
  for (let i = mig.placement.start; i < mig.placement.start + mig.placement.size; i++) {
    capacity[memorySliceCapacity(i)] = { value: formatQuantity(1) };
  }
  return {
    name,
    attributes: {
      type: { string: 'mig' },
      uuid: { string: mig.uuid },
      parentUUID: { string: parent.uuid },
      profile: { string: mig.profile },
      ...parentAttributes(name, parent, inv, included),
    },
    capacity,
  };
}

/** A possible MIG device of a GPU in dynamic mode: no uuid until the driver creates it. */
function partitionToDevice(
  p: MigPartition,
  parent: GpuDevice,
  inv: NodeInventory,
  included: Included,
): SliceDevice {
  return {
    name: p.name,
    attributes: {
      type: { string: 'mig' },
      parentUUID: { string: parent.uuid },
      profile: { string: p.profile.name },
      ...parentAttributes(p.name, parent, inv, included),
    },
    capacity: migCapacity(p.name, p.profile),
    consumesCounters: [partitionConsumption(parent, p)],
  };
}

function quantity(device: string, field: string, n: number): CapacityValue {
  if (!Number.isSafeInteger(n) || n < 0)
    invalid(device, `capacity.${field}`, `${n} is not a non-negative integer`);
  return { value: formatQuantity(n) };
}

/**
 * All devices this node publishes, validated and in natural name order. Throws
 * {@link ResourceSliceModelError} when a device would break an API limit or two devices would
 * share a name.
 */
export function buildDevices(
  inventory: NodeInventory,
  options: Pick<ModelOptions, 'taints' | 'consumableShares' | 'migPartitioning'> = {},
): DeviceModel {
  const warnings: string[] = [];
  for (const f of inventory.failures) {
    const code = f.code && !f.error.includes(f.code) ? ` (${f.code})` : '';
    warnings.push(`GPU at index ${f.index} left out: ${f.error}${code}`);
  }
  const gpus = [...inventory.gpus].sort((a, b) => a.minor - b.minor);
  const included = new Set<OptionalGpuField>();
  for (const field of Object.keys(OPTIONAL_GPU_FIELDS) as OptionalGpuField[]) {
    const get = OPTIONAL_GPU_FIELDS[field];
    const missing = gpus.filter((g) => get(g) === undefined).map((g) => gpuDeviceName(g.minor));
    if (missing.length === 0) included.add(field);
    else if (missing.length < gpus.length) {
      warnings.push(
        `${field} omitted on all devices: unknown for ${missing.join(', ')} (every device must carry the same attributes)`,
      );
    }
  }

  const shares = options.consumableShares ?? 'disabled';
  if ((shares === 'memory' || shares === 'unlimited') && gpus.length > 0 && !included.has('memory')) {
    // A share is a slice of memory: with no memory capacity there is nothing to share by.
    warnings.push(
      `--consumable-shares=${shares} ignored: GPU memory is not known for every GPU, so GPUs are published whole`,
    );
  }

  const mode = options.migPartitioning ?? 'static';
  const devices: SliceDevice[] = [];
  const counterSets: CounterSet[] = [];
  for (const gpu of gpus) {
    if (mode === 'dynamic') warnings.push(...dynamicMigWarnings(gpu, gpuDeviceName(gpu.minor)));
    switch (gpuPublication(gpu, mode)) {
      case 'mig':
        if (gpu.migDevices.length === 0) {
          warnings.push(
            `${gpuDeviceName(gpu.minor)} has MIG mode enabled but no MIG devices: nothing published for it`,
          );
        }
        for (const mig of gpu.migDevices) devices.push(migToDevice(mig, gpu, inventory, included));
        break;
      case 'partitions': {
        const part = gpuPartitioning(gpu);
        if (!part) break; // gpuPublication said there are placements
        counterSets.push(part.counterSet);
        const whole = gpuToDevice(gpu, inventory, included, shares);
        devices.push({
          ...whole,
          capacity: { ...whole.capacity, ...migCapacity(whole.name, part.wholeGpuResources) },
          consumesCounters: [part.wholeGpu],
        });
        for (const p of part.partitions) devices.push(partitionToDevice(p, gpu, inventory, included));
        break;
      }
      case 'whole':
        devices.push(gpuToDevice(gpu, inventory, included, shares));
        break;
      case 'none':
        break;
    }
  }

  const taints = options.taints ?? {};
  const withTaints = devices.map((d) => {
    const t = taints[d.name];
    return t && t.length > 0 ? { ...d, taints: [...t] } : d;
  });
  withTaints.sort((a, b) => naturalCompare(a.name, b.name));

  const seen = new Set<string>();
  for (const d of withTaints) {
    if (seen.has(d.name)) {
      invalid(
        d.name,
        'name',
        'two devices map to this name (e.g. several compute instances in one GPU instance)',
      );
    }
    seen.add(d.name);
    validateDevice(d);
  }
  assertUniformAttributes(withTaints);
  validateCounterSets(counterSets);
  validateConsumption(withTaints, counterSets);
  return { devices: withTaints, counterSets, warnings };
}

const C_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function validateQualifiedName(device: string, kind: string, key: string): void {
  const slash = key.indexOf('/');
  const id = slash < 0 ? key : key.slice(slash + 1);
  if (slash >= 0) {
    const domain = key.slice(0, slash);
    if (!isDnsSubdomain(domain) || domain.length > 63)
      invalid(device, `${kind}.${key}`, 'domain is not a DNS subdomain of <= 63 characters');
  }
  if (id.length > 32 || !C_IDENTIFIER.test(id))
    invalid(device, `${kind}.${key}`, 'name is not a C identifier of <= 32 characters');
}

/** Checks one device against the resource.k8s.io/v1 validation limits. */
export function validateDevice(d: SliceDevice): void {
  if (!isDnsLabel(d.name)) invalid(d.name, 'name', `"${d.name}" is not a DNS label of <= 63 characters`);
  const attrs = Object.entries(d.attributes);
  const caps = Object.entries(d.capacity);
  if (attrs.length + caps.length > MAX_ATTRIBUTES_AND_CAPACITIES) {
    invalid(
      d.name,
      'attributes',
      `${attrs.length} attributes + ${caps.length} capacities exceed the limit of ${MAX_ATTRIBUTES_AND_CAPACITIES}`,
    );
  }
  for (const [key, value] of attrs) {
    validateQualifiedName(d.name, 'attributes', key);
    const field = `attributes.${key}`;
    // The apiserver counts bytes (Go len()), not characters.
    if ('string' in value) {
      const n = Buffer.byteLength(value.string, 'utf8');
      if (n > MAX_STRING_LENGTH) {
        invalid(d.name, field, `string of ${n} bytes exceeds ${MAX_STRING_LENGTH}: "${value.string}"`);
      }
    } else if ('version' in value) {
      const n = Buffer.byteLength(value.version, 'utf8');
      if (n > MAX_VERSION_LENGTH)
        invalid(d.name, field, `version of ${n} bytes exceeds ${MAX_VERSION_LENGTH}`);
      if (!isSemver(value.version)) invalid(d.name, field, `"${value.version}" is not semver 2.0.0`);
    } else if ('int' in value) {
      if (!Number.isSafeInteger(value.int)) invalid(d.name, field, `${value.int} is not an integer`);
    }
  }
  for (const [key, value] of caps) {
    validateQualifiedName(d.name, 'capacity', key);
    if (value.requestPolicy !== undefined && d.allowMultipleAllocations !== true) {
      invalid(d.name, `capacity.${key}.requestPolicy`, 'needs allowMultipleAllocations: true on the device');
    }
  }
  if ((d.taints?.length ?? 0) > MAX_TAINTS_PER_DEVICE) {
    invalid(d.name, 'taints', `${d.taints?.length} taints exceed ${MAX_TAINTS_PER_DEVICE}`);
  }
}

/** The attribute names and types every device of a type must share (per-device ones aside). */
/**
 * A whole GPU in dynamic MIG mode also publishes the MIG engine capacities (the largest
 * profile's), as NVIDIA's does, while a GPU beside it with MIG mode off does not: selectors
 * written for NVIDIA's driver guard them (`has()`), so they do not make the sets differ.
 */
const MIG_ENGINE_CAPACITIES: ReadonlySet<string> = new Set(
  MIG_CAPACITY_COUNTERS.map(([capacity]) => capacity).filter((c) => c !== 'memory'),
);

function attributeSignature(d: SliceDevice): string {
  const attrs = Object.entries(d.attributes)
    .filter(([k]) => !PER_DEVICE_ATTRIBUTES.has(k))
    .map(([k, v]) => `${k}:${Object.keys(v)[0] ?? ''}`)
    .sort();
  const caps = Object.keys(d.capacity)
    .filter((k) => !MEMORY_SLICE_CAPACITY.test(k) && !(d.consumesCounters && MIG_ENGINE_CAPACITIES.has(k)))
    .sort();
  return `${attrs.join(',')}|${caps.join(',')}`;
}

function assertUniformAttributes(devices: readonly SliceDevice[]): void {
  const byType = new Map<string, { sig: string; device: string }>();
  for (const d of devices) {
    const t = d.attributes['type'];
    const type = t && 'string' in t ? t.string : '';
    const sig = attributeSignature(d);
    const first = byType.get(type);
    if (!first) byType.set(type, { sig, device: d.name });
    else if (first.sig !== sig) {
      invalid(
        d.name,
        'attributes',
        `attribute set differs from ${first.device} of the same type (${sig} vs ${first.sig})`,
      );
    }
  }
}

/** The slice device limit that applies to these devices. */
export function maxDevicesPerSlice(devices: readonly SliceDevice[]): number {
  return devices.some((d) => (d.taints?.length ?? 0) > 0 || (d.consumesCounters?.length ?? 0) > 0)
    ? MAX_DEVICES_PER_SLICE_ADVANCED
    : MAX_DEVICES_PER_SLICE;
}

export function validatePoolOptions(driverName: string, nodeName: string, generation: number): void {
  if (driverName.length > DRIVER_NAME_MAX || !isDnsSubdomain(driverName)) {
    invalid(
      'driver',
      'spec.driver',
      `"${driverName}" is not a DNS subdomain of <= ${DRIVER_NAME_MAX} characters`,
    );
  }
  if (!isDnsSubdomain(nodeName)) invalid('node', 'spec.nodeName', `"${nodeName}" is not a node name`);
  if (!Number.isSafeInteger(generation) || generation < 0) {
    invalid('pool', 'spec.pool.generation', `${generation} is not a non-negative integer`);
  }
}

/** Kubernetes 1.34's `ResourceSliceMaxSharedCounters`: counters of all sets in one slice. */
export const MAX_SHARED_COUNTERS_PER_SLICE_COMBINED = 32;
/**
 * Kubernetes 1.34's `ResourceSliceMaxDeviceCountersPerSlice`: counters all devices of a slice
 * consume. Later versions dropped it; kept for every layout, as it costs nothing on real GPUs.
 */
export const MAX_CONSUMED_COUNTERS_PER_SLICE = 1024;

function countersOf(d: SliceDevice): number {
  return (d.consumesCounters ?? []).reduce((n, c) => n + Object.keys(c.counters).length, 0);
}

function validateCounterSets(sets: readonly CounterSet[]): void {
  const seen = new Set<string>();
  for (const set of sets) {
    const where = `counter set ${set.name}`;
    if (!isDnsLabel(set.name)) invalid(where, 'name', 'is not a DNS label of <= 63 characters');
    if (seen.has(set.name)) invalid(where, 'name', 'two counter sets have this name');
    seen.add(set.name);
    const names = Object.keys(set.counters);
    if (names.length === 0) invalid(where, 'counters', 'a counter set needs at least one counter');
    if (names.length > MAX_COUNTERS_PER_SET)
      invalid(where, 'counters', `${names.length} counters exceed ${MAX_COUNTERS_PER_SET}`);
    for (const n of names) if (!isDnsLabel(n)) invalid(where, `counters.${n}`, 'is not a DNS label');
  }
}

/**
 * Each device's consumption names counter sets of the pool and counters of those sets: the
 * scheduler ignores the whole pool otherwise ("counter set ... not found").
 */
function validateConsumption(devices: readonly SliceDevice[], sets: readonly CounterSet[]): void {
  const byName = new Map(sets.map((s) => [s.name, s]));
  for (const d of devices) {
    const uses = d.consumesCounters ?? [];
    if (uses.length > MAX_CONSUMPTIONS_PER_DEVICE) {
      invalid(d.name, 'consumesCounters', `${uses.length} entries exceed ${MAX_CONSUMPTIONS_PER_DEVICE}`);
    }
    if (countersOf(d) > MAX_COUNTERS_PER_SET) {
      invalid(d.name, 'consumesCounters', `${countersOf(d)} counters exceed ${MAX_COUNTERS_PER_SET}`);
    }
    const named = new Set<string>();
    for (const use of uses) {
      const set = byName.get(use.counterSet);
      if (!set || named.has(use.counterSet)) {
        invalid(d.name, 'consumesCounters', `counter set ${use.counterSet} is unknown or named twice`);
      }
      named.add(use.counterSet);
      for (const c of Object.keys(use.counters)) {
        if (!(c in set.counters))
          invalid(d.name, `consumesCounters.${c}`, `counter set ${set.name} has no such counter`);
      }
    }
  }
}

/**
 * Splits devices (already sorted) into chunks of at most `limit` devices and
 * {@link MAX_CONSUMED_COUNTERS_PER_SLICE} consumed counters; always at least one chunk.
 */
function chunkDevices(items: readonly SliceDevice[], limit: number): SliceDevice[][] {
  const out: SliceDevice[][] = [[]];
  let counters = 0;
  for (const d of items) {
    const last = out[out.length - 1] ?? [];
    const n = countersOf(d);
    if (last.length > 0 && (last.length >= limit || counters + n > MAX_CONSUMED_COUNTERS_PER_SLICE)) {
      out.push([d]);
      counters = n;
    } else {
      last.push(d);
      counters += n;
    }
  }
  return out;
}

interface SliceContent {
  readonly devices: SliceDevice[];
  readonly sharedCounters?: readonly CounterSet[];
}

/** Kubernetes >= 1.35: counter sets in slices of their own, first, then the devices. */
function separateLayout(
  devices: readonly SliceDevice[],
  sets: readonly CounterSet[],
  limit: number,
): SliceContent[] {
  const out: SliceContent[] = [];
  for (let i = 0; i < sets.length; i += MAX_COUNTER_SETS_PER_SLICE) {
    out.push({ devices: [], sharedCounters: sets.slice(i, i + MAX_COUNTER_SETS_PER_SLICE) });
  }
  if (devices.length > 0) out.push(...chunkDevices(devices, limit).map((d) => ({ devices: d })));
  return out;
}

/**
 * Kubernetes 1.34: a counter set must sit in the slice of every device that consumes it, so
 * each set gets one slice with its consumers (one GPU per slice, as NVIDIA does). Devices that
 * consume nothing are chunked as usual, in order between them.
 */
function combinedLayout(
  devices: readonly SliceDevice[],
  sets: readonly CounterSet[],
  limit: number,
): SliceContent[] {
  const groups: { set?: CounterSet; devices: SliceDevice[] }[] = [];
  const bySet = new Map<string, { set?: CounterSet; devices: SliceDevice[] }>();
  for (const d of devices) {
    const setName = d.consumesCounters?.[0]?.counterSet;
    const last = groups[groups.length - 1];
    if (setName === undefined) {
      if (last && last.set === undefined) last.devices.push(d);
      else groups.push({ devices: [d] });
      continue;
    }
    if ((d.consumesCounters?.length ?? 0) > 1) {
      invalid(d.name, 'consumesCounters', 'the 1.34 layout keeps one counter set per slice');
    }
    let g = bySet.get(setName);
    if (!g) {
      g = { set: sets.find((s) => s.name === setName), devices: [] };
      bySet.set(setName, g);
      groups.push(g);
    }
    g.devices.push(d);
  }
  const out: SliceContent[] = [];
  for (const g of groups) {
    if (!g.set) {
      out.push(...chunkDevices(g.devices, limit).map((d) => ({ devices: d })));
      continue;
    }
    const counters = Object.keys(g.set.counters).length;
    const consumed = g.devices.reduce((n, d) => n + countersOf(d), 0);
    const where = `counter set ${g.set.name}`;
    if (g.devices.length > limit || consumed > MAX_CONSUMED_COUNTERS_PER_SLICE) {
      invalid(
        where,
        'devices',
        `${g.devices.length} devices consuming ${consumed} counters do not fit one slice ` +
          `(${limit} devices, ${MAX_CONSUMED_COUNTERS_PER_SLICE} counters) as Kubernetes 1.34 requires`,
      );
    }
    if (counters > MAX_SHARED_COUNTERS_PER_SLICE_COMBINED) {
      invalid(
        where,
        'counters',
        `${counters} counters exceed ${MAX_SHARED_COUNTERS_PER_SLICE_COMBINED} (1.34)`,
      );
    }
    out.push({ devices: g.devices, sharedCounters: [g.set] });
  }
  // Sets nobody consumes still belong to the pool.
  for (const set of sets) if (!bySet.has(set.name)) out.push({ devices: [], sharedCounters: [set] });
  return out.length > 0 ? out : [{ devices: [] }];
}

/**
 * Slices for already-built devices: one pool named after the node, devices in order, split at
 * the per-slice limit, slice `i` named {@link sliceName}(node, driver, i). An empty device list
 * still yields one (empty) slice: "no devices" is not the same as "no pool". With counter sets
 * (dynamic MIG) the slices follow `options.counterLayout`; a counter-set slice of the
 * `separate` layout has `devices: []` here and no `devices` on the wire (see sliceWire.ts).
 */
export function slicesFromDevices(
  devices: readonly SliceDevice[],
  options: ModelOptions,
  counterSets: readonly CounterSet[] = [],
): ResourceSliceObject[] {
  const driver = options.driverName ?? DEFAULT_DRIVER_NAME;
  const generation = options.generation ?? 1;
  validatePoolOptions(driver, options.nodeName, generation);
  validateCounterSets(counterSets);
  validateConsumption(devices, counterSets);
  const apiLimit = maxDevicesPerSlice(devices);
  const limit = Math.max(1, Math.min(apiLimit, options.maxDevicesPerSlice ?? apiLimit));
  const contents: SliceContent[] =
    counterSets.length === 0
      ? chunkDevices(devices, limit).map((d) => ({ devices: d }))
      : (options.counterLayout ?? 'separate') === 'combined'
        ? combinedLayout(devices, counterSets, limit)
        : separateLayout(devices, counterSets, limit);
  return contents.map((c, i) => ({
    apiVersion: RESOURCE_API_VERSION,
    kind: 'ResourceSlice',
    metadata: { name: sliceName(options.nodeName, driver, i) },
    spec: {
      driver,
      nodeName: options.nodeName,
      pool: { name: options.nodeName, generation, resourceSliceCount: contents.length },
      ...(c.sharedCounters ? { sharedCounters: c.sharedCounters } : {}),
      devices: c.devices,
    },
  }));
}

/** Inventory in, ResourceSlices out. Throws {@link ResourceSliceModelError} on invalid input. */
export function buildSlices(inventory: NodeInventory, options: ModelOptions): SliceModel {
  const model = buildDevices(inventory, options);
  return { ...model, slices: slicesFromDevices(model.devices, options, model.counterSets) };
}
