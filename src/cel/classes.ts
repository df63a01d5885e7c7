/**
 * The DeviceClasses this driver installs (deploy/deviceclass.yaml renders the same objects for
 * the default driver name; a unit test keeps them equal). `gpu.<driver>` selects whole GPUs,
 * `mig.<driver>` MIG devices, by driver and the `type` attribute, as NVIDIA's classes do; under
 * NVIDIA's driver name they carry NVIDIA's class names, `gpu.nvidia.com` and `mig.nvidia.com`,
 * so claims written for NVIDIA's driver name them unchanged.
 */
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';
import type { DeviceClass } from '../api/resource.js';

function typeSelector(driverName: string, type: 'gpu' | 'mig'): string {
  return `device.driver == '${driverName}' && device.attributes['${driverName}'].type == '${type}'`;
}

/** NVIDIA's driver name, under which this driver is a drop-in for NVIDIA's DRA driver. */
const NVIDIA_DRIVER_NAME = 'gpu.nvidia.com';

/**
 * The extended resource that the whole-GPU class backs (KEP-5004), so a pod asking for
 * `resources.limits: {<name>: N}` and no claim gets N whole GPUs through DRA. Under NVIDIA's
 * driver name it is the device plugin's `nvidia.com/gpu`, as NVIDIA's own `gpu.nvidia.com` class
 * names it: unmodified device-plugin pods then run on DRA nodes. Under any other name it is
 * `<driver>/gpu`, a name no device plugin serves, so that installing the driver never changes
 * where existing `nvidia.com/gpu` pods land until the operator opts in (Helm value
 * `deviceClasses.extendedResourceName`).
 */
export function defaultExtendedResourceName(driverName: string = DEFAULT_DRIVER_NAME): string {
  return driverName === NVIDIA_DRIVER_NAME ? 'nvidia.com/gpu' : `${driverName}/gpu`;
}

/** The name of the class of whole GPUs (`gpu`) or MIG devices (`mig`) under `driverName`. */
export function deviceClassName(type: 'gpu' | 'mig', driverName: string = DEFAULT_DRIVER_NAME): string {
  if (driverName === NVIDIA_DRIVER_NAME) return `${type}.nvidia.com`;
  return `${type}.${driverName}`;
}

export interface DeviceClassManifest extends DeviceClass {
  readonly apiVersion: 'resource.k8s.io/v1';
  readonly kind: 'DeviceClass';
  readonly metadata: { readonly name: string };
  readonly spec: {
    readonly selectors: readonly { readonly cel: { readonly expression: string } }[];
    readonly extendedResourceName?: string;
  };
}

/** The whole-GPU and MIG DeviceClasses; only whole GPUs back an extended resource. */
export function defaultDeviceClasses(driverName: string = DEFAULT_DRIVER_NAME): DeviceClassManifest[] {
  return (['gpu', 'mig'] as const).map((type) => ({
    apiVersion: 'resource.k8s.io/v1',
    kind: 'DeviceClass',
    metadata: { name: deviceClassName(type, driverName) },
    spec: {
      selectors: [{ cel: { expression: typeSelector(driverName, type) } }],
      ...(type === 'gpu' ? { extendedResourceName: defaultExtendedResourceName(driverName) } : {}),
    },
  }));
}
