/**
 * The DeviceClasses this driver installs (deploy/deviceclass.yaml renders the same objects for
 * the default driver name; a unit test keeps them equal). `gpu.<driver>` selects whole GPUs,
 * `mig.<driver>` MIG devices, by driver and the `type` attribute, as NVIDIA's classes do.
 */
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';
import type { DeviceClass } from '../api/resource.js';

function typeSelector(driverName: string, type: 'gpu' | 'mig'): string {
  return `device.driver == '${driverName}' && device.attributes['${driverName}'].type == '${type}'`;
}

export interface DeviceClassManifest extends DeviceClass {
  readonly apiVersion: 'resource.k8s.io/v1';
  readonly kind: 'DeviceClass';
  readonly metadata: { readonly name: string };
  readonly spec: { readonly selectors: readonly { readonly cel: { readonly expression: string } }[] };
}

/** The `gpu.<driver>` and `mig.<driver>` DeviceClasses. */
export function defaultDeviceClasses(driverName: string = DEFAULT_DRIVER_NAME): DeviceClassManifest[] {
  return (['gpu', 'mig'] as const).map((type) => ({
    apiVersion: 'resource.k8s.io/v1',
    kind: 'DeviceClass',
    metadata: { name: `${type}.${driverName}` },
    spec: { selectors: [{ cel: { expression: typeSelector(driverName, type) } }] },
  }));
}
