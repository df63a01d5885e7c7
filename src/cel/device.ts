/**
 * The CEL `device` variable of a DRA selector, built from a ResourceSlice device the way
 * Kubernetes builds it (dynamic-resource-allocation `cel/compile.go`):
 *
 * - `device.driver`: the slice's driver;
 * - `device.attributes[domain][id]`: qualified names `domain/id` are split; an unqualified
 *   name belongs to the driver's domain. Values are string, int (CEL int), bool, or a
 *   {@link Semver} for `version` attributes;
 * - `device.capacity[domain][id]`: {@link Quantity} values;
 * - `device.allowMultipleAllocations`: bool (false when the device does not say).
 *
 * Looking up a domain the device has no attributes in yields an empty map, as in Kubernetes;
 * looking up a missing attribute in a domain is an evaluation error ("no such key").
 */
import { Quantity } from './quantity.js';
import { Semver } from './semver.js';

/** A `resource.k8s.io/v1` DeviceAttribute (one field set). Ints may come as number or bigint. */
export interface DeviceAttributeInput {
  readonly string?: string;
  readonly int?: number | bigint;
  readonly bool?: boolean;
  readonly version?: string;
}

/** A `resource.k8s.io/v1` Device as found in `ResourceSlice.spec.devices[]`. */
export interface DeviceInput {
  readonly name: string;
  readonly attributes?: Readonly<Record<string, DeviceAttributeInput>>;
  /** Quantities; a bare number (as YAML may parse `value: 40`) is accepted too. */
  readonly capacity?: Readonly<Record<string, { readonly value: string | number }>>;
  readonly allowMultipleAllocations?: boolean;
}

export type CelAttributeValue = string | bigint | boolean | Semver;
type DomainMap<T> = Record<string, Record<string, T>>;

/** The object registered as CEL type `kubernetes.DRADevice`. */
export class CelDevice {
  constructor(
    readonly driver: string,
    readonly attributes: DomainMap<CelAttributeValue>,
    readonly capacity: DomainMap<Quantity>,
    readonly allowMultipleAllocations: boolean,
  ) {}
}

/** The device's data cannot be turned into CEL values (Kubernetes fails the evaluation too). */
export class DeviceConversionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceConversionError';
  }
}

const EMPTY: Readonly<Record<string, never>> = Object.freeze(Object.create(null) as Record<string, never>);

/**
 * A null-prototype map (cel-js treats objects without a constructor as CEL maps) whose missing
 * string keys read as an empty map, like Kubernetes' `mapper` with a default value.
 */
function withEmptyDefault<T>(entries: DomainMap<T>): DomainMap<T> {
  const target = Object.assign(Object.create(null) as DomainMap<T>, entries);
  return new Proxy(target, {
    get(t, key) {
      if (typeof key !== 'string') return undefined;
      if (Object.hasOwn(t, key)) return t[key];
      return key === 'constructor' ? undefined : EMPTY;
    },
    getOwnPropertyDescriptor(t, key) {
      const own = Reflect.getOwnPropertyDescriptor(t, key);
      if (own || typeof key !== 'string') return own;
      return { value: EMPTY, writable: false, enumerable: false, configurable: true };
    },
  });
}

/** `domain/id` → [domain, id]; unqualified names go to the driver's domain. */
export function splitQualifiedName(name: string, driver: string): [domain: string, id: string] {
  const slash = name.indexOf('/');
  return slash < 0 ? [driver, name] : [name.slice(0, slash), name.slice(slash + 1)];
}

export function attributeToCel(value: DeviceAttributeInput, where: string): CelAttributeValue {
  if (value.string !== undefined) return value.string;
  if (value.bool !== undefined) return value.bool;
  if (value.int !== undefined) {
    if (typeof value.int === 'bigint') return value.int;
    if (!Number.isSafeInteger(value.int))
      throw new DeviceConversionError(`${where}: int ${value.int} is not an integer`);
    return BigInt(value.int);
  }
  if (value.version !== undefined) {
    const v = Semver.tryParse(value.version);
    if (!v) throw new DeviceConversionError(`${where}: parse semantic version: "${value.version}"`);
    return v;
  }
  throw new DeviceConversionError(`${where}: attribute has no value (string, int, bool or version)`);
}

/** Builds the `device` variable; throws {@link DeviceConversionError} on unusable values. */
export function toCelDevice(driver: string, device: DeviceInput): CelDevice {
  const attributes: DomainMap<CelAttributeValue> = {};
  for (const [name, value] of Object.entries(device.attributes ?? {})) {
    const [domain, id] = splitQualifiedName(name, driver);
    const bucket = (attributes[domain] ??= Object.create(null) as Record<string, CelAttributeValue>);
    bucket[id] = attributeToCel(value, `device ${device.name}: attribute ${name}`);
  }
  const capacity: DomainMap<Quantity> = {};
  for (const [name, value] of Object.entries(device.capacity ?? {})) {
    const [domain, id] = splitQualifiedName(name, driver);
    const q = Quantity.tryParse(String(value.value));
    if (!q)
      throw new DeviceConversionError(
        `device ${device.name}: capacity ${name}: "${value.value}" is not a quantity`,
      );
    const bucket = (capacity[domain] ??= Object.create(null) as Record<string, Quantity>);
    bucket[id] = q;
  }
  return new CelDevice(
    driver,
    withEmptyDefault(attributes),
    withEmptyDefault(capacity),
    device.allowMultipleAllocations ?? false,
  );
}
