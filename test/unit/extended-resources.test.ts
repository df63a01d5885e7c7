/**
 * The claim the scheduler makes for a pod's DRA-backed extended resources (KEP-5004), as
 * `explain` builds it: which class backs a name, the request names and counts, and the pods it
 * refuses to guess for. test/e2e/examples.test.ts checks the same shape against the real
 * scheduler's claim for examples/claims/extended-resource-pod.yaml.
 */
import { describe, expect, it } from 'vitest';
import { defaultDeviceClasses } from '../../src/cel/classes.js';
import {
  DEVICE_CLASS_RESOURCE_PREFIX,
  extendedResourceClaim,
  extendedResourceClasses,
  type PodContainer,
} from '../../src/cel/extendedResources.js';
import type { DeviceClass } from '../../src/api/resource.js';
import { GpuDraError } from '../../src/util/errors.js';

const classes = defaultDeviceClasses('gpu.nvidia.com');
const pod = (containers: PodContainer[], initContainers: PodContainer[] = []) => ({
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'ns' },
  spec: { containers, initContainers },
});
const cls = (name: string, extendedResourceName: string, creationTimestamp?: string): DeviceClass => ({
  metadata: { name, ...(creationTimestamp !== undefined ? { creationTimestamp } : {}) },
  spec: { extendedResourceName },
});

describe('extendedResourceClasses', () => {
  it('maps each class’s extendedResourceName and its implicit deviceclass.resource.kubernetes.io name', () => {
    expect(Object.fromEntries(extendedResourceClasses(classes))).toEqual({
      'nvidia.com/gpu': 'gpu.nvidia.com',
      [`${DEVICE_CLASS_RESOURCE_PREFIX}gpu.nvidia.com`]: 'gpu.nvidia.com',
      [`${DEVICE_CLASS_RESOURCE_PREFIX}mig.nvidia.com`]: 'mig.nvidia.com',
    });
  });

  it('gives a name two classes claim to the newer one, then to the lower name', () => {
    const older = cls('a', 'example.com/gpu', '2026-01-01T00:00:00Z');
    const newer = cls('b', 'example.com/gpu', '2026-02-01T00:00:00Z');
    expect(extendedResourceClasses([newer, older]).get('example.com/gpu')).toBe('b');
    expect(extendedResourceClasses([older, newer]).get('example.com/gpu')).toBe('b');
    const z = cls('z', 'example.com/gpu');
    const y = cls('y', 'example.com/gpu');
    expect(extendedResourceClasses([z, y]).get('example.com/gpu')).toBe('y');
    expect(extendedResourceClasses([y, z]).get('example.com/gpu')).toBe('y');
  });
});

describe('extendedResourceClaim', () => {
  it('is undefined for a pod asking for nothing a class backs', () => {
    expect(
      extendedResourceClaim(pod([{ name: 'c', resources: { limits: { cpu: '1' } } }]), classes),
    ).toBeUndefined();
    expect(
      extendedResourceClaim(pod([{ name: 'c', resources: { limits: { 'example.com/fpga': 1 } } }]), classes),
    ).toBeUndefined();
    expect(extendedResourceClaim({ kind: 'Pod' }, classes)).toBeUndefined();
  });

  it('makes one ExactCount request per container and resource, named by indices in sorted order', () => {
    const claim = extendedResourceClaim(
      pod(
        [
          { name: 'log' },
          // Sorted: cpu, memory, nvidia.com/gpu → index 2. Limits count as requests.
          { name: 'train', resources: { limits: { 'nvidia.com/gpu': 2, memory: '1Gi', cpu: '1' } } },
          {
            name: 'none',
            resources: { requests: { 'nvidia.com/gpu': '0' }, limits: { 'nvidia.com/gpu': '0' } },
          },
          {
            name: 'both',
            resources: {
              requests: { [`${DEVICE_CLASS_RESOURCE_PREFIX}mig.nvidia.com`]: '1', 'nvidia.com/gpu': '1' },
            },
          },
        ],
        // A sidecar (restartPolicy Always) is long-lived, like a container; it is index 0.
        [{ name: 'side', restartPolicy: 'Always', resources: { limits: { 'nvidia.com/gpu': '1' } } }],
      ),
      classes,
    );
    expect(claim).toEqual({
      apiVersion: 'resource.k8s.io/v1',
      kind: 'ResourceClaim',
      metadata: { name: 'p-extended-resources', namespace: 'ns' },
      spec: {
        devices: {
          requests: [
            exact('container-0-request-0', 'gpu.nvidia.com', 1),
            exact('container-2-request-2', 'gpu.nvidia.com', 2),
            exact('container-4-request-0', 'mig.nvidia.com', 1),
            exact('container-4-request-1', 'gpu.nvidia.com', 1),
          ],
        },
      },
    });
  });

  it('refuses fractions and init containers whose requests depend on the release', () => {
    const half = pod([{ name: 'c', resources: { limits: { 'nvidia.com/gpu': '500m' } } }]);
    expect(() => extendedResourceClaim(half, classes)).toThrow(/whole number of devices, not 500m/);
    const init = pod([{ name: 'c' }], [{ name: 'setup', resources: { limits: { 'nvidia.com/gpu': 1 } } }]);
    expect(() => extendedResourceClaim(init, classes)).toThrow(GpuDraError);
    expect(() => extendedResourceClaim(init, classes)).toThrow(
      /container setup nvidia.com\/gpu: init containers/,
    );
  });
});

function exact(name: string, deviceClassName: string, count: number) {
  return { name, exactly: { deviceClassName, allocationMode: 'ExactCount', count } };
}
