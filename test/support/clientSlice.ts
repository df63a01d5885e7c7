/**
 * A ResourceSlice in wire JSON as @kubernetes/client-node's generated models want it (`int` is
 * `_int` in attribute values), for tests that create slices through that client.
 */
import type { V1ResourceSlice } from '@kubernetes/client-node';
import type { ResourceSlice } from '../../src/api/resource.js';

export function toClientSlice(slice: ResourceSlice): V1ResourceSlice {
  return JSON.parse(JSON.stringify(slice), (key, value: unknown) => {
    if (
      key !== '' &&
      value !== null &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      'int' in value
    ) {
      const { int, ...rest } = value as Record<string, unknown>;
      return { ...rest, _int: int };
    }
    return value;
  }) as V1ResourceSlice;
}
