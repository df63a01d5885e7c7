/**
 * The Kubernetes API objects gpu-dra reads and writes, as JSON on the wire (`resource.k8s.io/v1`
 * and the ObjectMeta they share). Hand-written and limited to the fields we use: the generated
 * models of @kubernetes/client-node would cost start-up time and rename fields (`_int`). One
 * definition per object; modules narrow them (the ResourceSlice model's exact attribute union)
 * rather than declaring their own shapes. Index signatures keep fields we do not know, so
 * an object read and written back loses nothing.
 */

export const RESOURCE_API_VERSION = 'resource.k8s.io/v1';

export interface OwnerReference {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid: string;
  readonly controller?: boolean;
  readonly blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly ownerReferences?: readonly OwnerReference[];
  readonly [field: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// ResourceSlice

/** A device attribute: exactly one field set (list types are not used). */
export interface DeviceAttribute {
  readonly string?: string;
  readonly int?: number;
  readonly bool?: boolean;
  readonly version?: string;
}

/** Quantities, e.g. `1Mi`; `min` is required by the apiserver. */
export interface CapacityRequestPolicyRange {
  readonly min?: string;
  readonly max?: string;
  readonly step?: string;
}

/** How much of a shared device's capacity a request consumes (DRAConsumableCapacity). */
export interface CapacityRequestPolicy {
  /** Consumed by a request that does not ask for this capacity. */
  readonly default?: string;
  /** At most 10, ascending; exclusive with `validRange`. */
  readonly validValues?: readonly string[];
  readonly validRange?: CapacityRequestPolicyRange;
}

export interface DeviceCapacity {
  /** A Quantity, e.g. `80Gi`. */
  readonly value: string;
  /** Only on a device with `allowMultipleAllocations` (DRAConsumableCapacity). */
  readonly requestPolicy?: CapacityRequestPolicy;
  readonly [field: string]: unknown;
}

export interface DeviceTaint {
  readonly key: string;
  readonly value?: string;
  readonly effect: 'NoSchedule' | 'NoExecute' | 'None';
  /** Set by the apiserver. */
  readonly timeAdded?: string;
}

/** How much of a shared counter is available or consumed (DRAPartitionableDevices). */
export interface Counter {
  /** A Quantity. */
  readonly value: string;
}

/** Counters several devices draw from (KEP-4815), e.g. one physical GPU's engines and memory slices. */
export interface CounterSet {
  /** A DNS label, unique in the pool. */
  readonly name: string;
  /** At most 32, keyed by DNS labels. */
  readonly counters: Readonly<Record<string, Counter>>;
}

/** What a device takes from a counter set while it is allocated. */
export interface DeviceCounterConsumption {
  readonly counterSet: string;
  /** At most 32, each naming a counter of the set. */
  readonly counters: Readonly<Record<string, Counter>>;
}

export interface Device {
  readonly name: string;
  readonly attributes?: Readonly<Record<string, DeviceAttribute>>;
  readonly capacity?: Readonly<Record<string, DeviceCapacity>>;
  /** At most 2 entries, one per counter set (DRAPartitionableDevices). */
  readonly consumesCounters?: readonly DeviceCounterConsumption[];
  readonly taints?: readonly DeviceTaint[];
  /** Several claims may hold shares of it at once (DRAConsumableCapacity). */
  readonly allowMultipleAllocations?: boolean;
  readonly [field: string]: unknown;
}

export interface ResourcePool {
  readonly name: string;
  readonly generation: number;
  readonly resourceSliceCount: number;
}

export interface ResourceSliceSpec<D = Device> {
  readonly driver: string;
  readonly nodeName?: string;
  readonly allNodes?: boolean;
  readonly pool: ResourcePool;
  readonly devices?: readonly D[];
  /**
   * Counter sets of the pool (DRAPartitionableDevices), at most 8 per slice. From Kubernetes
   * 1.35 a slice holds either these or devices; 1.34 wants them beside the devices using them.
   */
  readonly sharedCounters?: readonly CounterSet[];
  readonly [field: string]: unknown;
}

/** `D` lets a reader accept looser devices (explain reads hand-written YAML). */
export interface ResourceSlice<D = Device> {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata: ObjectMeta & { readonly name: string };
  readonly spec: ResourceSliceSpec<D>;
}

// ---------------------------------------------------------------------------------------------
// DeviceClass

export interface CelDeviceSelector {
  readonly cel?: { readonly expression: string };
}

export interface OpaqueDeviceConfiguration {
  readonly driver: string;
  readonly parameters: unknown;
}

export interface DeviceClass {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
  readonly spec?: {
    readonly selectors?: readonly CelDeviceSelector[];
    readonly config?: readonly { readonly opaque?: OpaqueDeviceConfiguration }[];
    readonly extendedResourceName?: string;
  };
}

// ---------------------------------------------------------------------------------------------
// ResourceClaim

export interface ExactDeviceRequest {
  readonly deviceClassName: string;
  readonly selectors?: readonly CelDeviceSelector[];
  readonly allocationMode?: 'ExactCount' | 'All';
  readonly count?: number;
  readonly adminAccess?: boolean;
  /** Quantities by capacity name, e.g. `{ memory: '20Gi' }` (DRAConsumableCapacity). */
  readonly capacity?: { readonly requests?: Readonly<Record<string, string>> };
}

export interface DeviceSubRequest extends ExactDeviceRequest {
  readonly name: string;
}

export interface DeviceRequest {
  readonly name: string;
  readonly exactly?: ExactDeviceRequest;
  readonly firstAvailable?: readonly DeviceSubRequest[];
}

export interface DeviceConstraint {
  readonly requests?: readonly string[];
  readonly matchAttribute?: string;
}

export interface DeviceClaimConfiguration {
  readonly requests?: readonly string[];
  readonly opaque?: OpaqueDeviceConfiguration;
}

export interface DeviceClaim {
  readonly requests?: readonly DeviceRequest[];
  readonly constraints?: readonly DeviceConstraint[];
  readonly config?: readonly DeviceClaimConfiguration[];
}

export interface DeviceRequestAllocationResult {
  readonly request: string;
  readonly driver: string;
  readonly pool: string;
  readonly device: string;
  readonly adminAccess?: boolean;
  /** Set when the device allows multiple allocations: this allocation's share of it. */
  readonly shareID?: string;
  /** Quantities by capacity name: what this share consumes (DRAConsumableCapacity). */
  readonly consumedCapacity?: Readonly<Record<string, string>>;
}

export interface DeviceAllocationConfiguration {
  /** `FromClass` or `FromClaim`. */
  readonly source: string;
  readonly requests?: readonly string[];
  readonly opaque?: OpaqueDeviceConfiguration;
}

export interface ResourceClaimStatus {
  readonly allocation?: {
    readonly devices?: {
      readonly results?: readonly DeviceRequestAllocationResult[];
      readonly config?: readonly DeviceAllocationConfiguration[];
    };
  };
}

export interface ResourceClaim {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
  readonly spec?: { readonly devices?: DeviceClaim };
  readonly status?: ResourceClaimStatus;
}

export interface ResourceClaimTemplate {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
  readonly spec?: { readonly spec?: { readonly devices?: DeviceClaim } };
}

/** The device claim of a ResourceClaim (`spec.devices`) or a template (`spec.spec.devices`). */
export function deviceClaimOf(obj: ResourceClaim | ResourceClaimTemplate): DeviceClaim | undefined {
  const spec = obj.spec;
  if (spec === undefined) return undefined;
  if ('devices' in spec && obj.kind !== 'ResourceClaimTemplate') return spec.devices;
  return 'spec' in spec ? spec.spec?.devices : undefined;
}
