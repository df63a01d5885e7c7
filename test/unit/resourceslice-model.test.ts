import { evaluate } from '@marcbachmann/cel-js';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

import { renderSlicesYaml } from '../../src/cli/actions/slices.js';
import type { GpuDevice, NodeInventory } from '../../src/nvml/types.js';
import {
  a100Gpu,
  h100Gpu,
  inventoryFixture,
  migOf,
  withMig,
  type InventoryProfile,
} from '../support/inventoryFixture.js';
import {
  buildDevices,
  buildSlices,
  MAX_DEVICES_PER_SLICE,
  MAX_DEVICES_PER_SLICE_ADVANCED,
  ResourceSliceModelError,
  validateDevice,
  type AttributeValue,
  type SliceDevice,
} from '../../src/resourceslice/model.js';
import { DEFAULT_DRIVER_NAME } from '../../src/util/driverName.js';
import { naturalCompare } from '../../src/util/naturalCompare.js';
import { isDnsLabel, isDnsSubdomain } from '../../src/util/kubeNames.js';
import { gpuDeviceName, migDeviceName, parseDeviceName, sliceName } from '../../src/resourceslice/names.js';
import { formatQuantity, isSemver, normalizeVersion, quantityKey } from '../../src/resourceslice/values.js';

/** The only place these tests get inventories from (switch to fake-NVML discovery here). */
function inventoryOf(profile: InventoryProfile): NodeInventory {
  return inventoryFixture(profile);
}

const NODE = 'node-a';

function attr(d: SliceDevice, key: string): AttributeValue | undefined {
  return d.attributes[key];
}

/** The `device` variable Kubernetes' CEL environment builds for a device (strings only here). */
function celDevice(driver: string, d: SliceDevice): Record<string, unknown> {
  const attributes: Record<string, Record<string, unknown>> = {};
  for (const [k, v] of Object.entries(d.attributes)) {
    const slash = k.indexOf('/');
    const domain = slash < 0 ? driver : k.slice(0, slash);
    const id = slash < 0 ? k : k.slice(slash + 1);
    attributes[domain] ??= {};
    attributes[domain][id] =
      'string' in v ? v.string : 'version' in v ? v.version : 'int' in v ? BigInt(v.int) : v.bool;
  }
  return { driver, attributes };
}

describe('values', () => {
  it('normalizes NVML versions to semver 2.0.0 like NVIDIA (Masterminds .String())', () => {
    expect(normalizeVersion('580.159.04')).toBe('580.159.4');
    expect(normalizeVersion('580.105.08')).toBe('580.105.8');
    expect(normalizeVersion('9.0')).toBe('9.0.0');
    expect(normalizeVersion('13.0')).toBe('13.0.0');
    expect(normalizeVersion('550')).toBe('550.0.0');
    expect(normalizeVersion('v1.2.3-rc.01+build.007')).toBe('1.2.3-rc.1+build.007');
    expect(normalizeVersion('1.2.3.4')).toBeUndefined();
    expect(normalizeVersion('')).toBeUndefined();
    expect(normalizeVersion('abc')).toBeUndefined();
    expect(isSemver('580.159.04')).toBe(false);
    expect(isSemver('580.159.4')).toBe(true);
  });

  it('formats quantities canonically (Go BinarySI) and compares them by value', () => {
    expect(formatQuantity(85520809984)).toBe('81559Mi');
    expect(formatQuantity(42949672960)).toBe('40Gi');
    expect(formatQuantity(10468982784)).toBe('9984Mi');
    expect(formatQuantity(16)).toBe('16');
    expect(formatQuantity(0)).toBe('0');
    expect(formatQuantity(1000)).toBe('1k');
    expect(formatQuantity(1024)).toBe('1Ki');
    expect(formatQuantity(1025)).toBe('1025');
    expect(quantityKey('81559Mi')).toBe('85520809984');
    expect(quantityKey('85520809984')).toBe('85520809984');
    expect(quantityKey('1k')).toBe('1000');
    expect(quantityKey('1500m')).toBe('1.5');
    expect(quantityKey('80e9')).toBe(quantityKey('80G'));
  });
});

describe('names', () => {
  it('names GPUs by minor and MIG devices like NVIDIA, and parses them back', () => {
    expect(gpuDeviceName(0)).toBe('gpu-0');
    expect(migDeviceName(0, '1g.10gb', 19, 0)).toBe('gpu-0-mig-1g10gb-19-0');
    expect(migDeviceName(3, '1g.10gb+me', 20, 6)).toBe('gpu-3-mig-1g10gb-me-20-6');
    expect(parseDeviceName('gpu-3-mig-1g10gb-me-20-6')).toEqual({
      kind: 'mig',
      parentMinor: 3,
      profile: '1g10gb-me',
      profileId: 20,
      placementStart: 6,
    });
    expect(parseDeviceName('gpu-0-mig-1g10gb-19-0')).toEqual({
      kind: 'mig',
      parentMinor: 0,
      profile: '1g10gb',
      profileId: 19,
      placementStart: 0,
    });
    expect(parseDeviceName('gpu-12')).toEqual({ kind: 'gpu', minor: 12 });
    expect(parseDeviceName('gpu-x')).toBeUndefined();
  });

  it('sorts naturally', () => {
    const names = ['gpu-10', 'gpu-2', 'gpu-1-mig-1g10gb-19-10', 'gpu-1-mig-1g10gb-19-2', 'gpu-1'];
    expect([...names].sort(naturalCompare)).toEqual([
      'gpu-1',
      'gpu-1-mig-1g10gb-19-2',
      'gpu-1-mig-1g10gb-19-10',
      'gpu-2',
      'gpu-10',
    ]);
  });

  it('makes deterministic, valid, collision-free slice names', () => {
    expect(sliceName('node-a', 'gpu.dra.dev', 0)).toBe(sliceName('node-a', 'gpu.dra.dev', 0));
    expect(sliceName('node-a', 'gpu.dra.dev', 0)).toMatch(/^node-a-gpu\.dra\.dev-[0-9a-f]{8}-0$/);
    expect(sliceName('a-b', 'c.io', 0)).not.toBe(sliceName('a', 'b-c.io', 0));
    const long = sliceName('n'.repeat(253), 'd'.repeat(63), 12);
    expect(long.length).toBeLessThanOrEqual(253);
    expect(isDnsSubdomain(long)).toBe(true);
    expect(isDnsSubdomain(sliceName('x.', '.y', 1))).toBe(true);
  });
});

describe('device model', () => {
  it('publishes every H100 with NVIDIA attribute names and types', () => {
    const { devices, warnings } = buildDevices(inventoryOf('h100-8x'));
    expect(warnings).toEqual([]);
    expect(devices.map((d) => d.name)).toEqual(Array.from({ length: 8 }, (_, i) => `gpu-${i}`));
    const d = devices[0];
    if (!d) throw new Error('no device');
    expect(d.attributes).toEqual({
      type: { string: 'gpu' },
      uuid: { string: h100Gpu(0).uuid },
      productName: { string: 'NVIDIA H100 80GB HBM3' },
      brand: { string: 'Nvidia' },
      architecture: { string: 'Hopper' },
      cudaComputeCapability: { version: '9.0.0' },
      driverVersion: { version: '580.159.4' },
      cudaDriverVersion: { version: '13.0.0' },
      'resource.kubernetes.io/pciBusID': { string: '0000:18:00.0' },
      'resource.kubernetes.io/pcieRoot': { string: 'pci0000:00' },
      'resource.kubernetes.io/numaNode': { int: 0 },
    });
    expect(d.capacity).toEqual({ memory: { value: '81559Mi' } });
  });

  it('publishes MIG devices of MIG-enabled GPUs, and the whole GPU when MIG is off', () => {
    const { devices } = buildDevices(inventoryOf('a100-mig'));
    expect(devices.map((d) => d.name)).toEqual([
      'gpu-0-mig-1g5gb-19-2',
      'gpu-0-mig-1g5gb-19-3',
      'gpu-0-mig-2g10gb-14-0',
      'gpu-0-mig-3g20gb-9-4',
      'gpu-1',
    ]);
    const mig = devices.find((d) => d.name === 'gpu-0-mig-3g20gb-9-4');
    if (!mig) throw new Error('missing');
    const parent = inventoryOf('a100-mig').gpus[0];
    expect(attr(mig, 'type')).toEqual({ string: 'mig' });
    expect(attr(mig, 'profile')).toEqual({ string: '3g.20gb' });
    expect(attr(mig, 'parentUUID')).toEqual({ string: parent?.uuid });
    expect(attr(mig, 'productName')).toEqual({ string: 'NVIDIA A100-SXM4-40GB' });
    expect(attr(mig, 'cudaComputeCapability')).toEqual({ version: '8.0.0' });
    expect(mig.capacity).toEqual({
      multiprocessors: { value: '42' },
      copyEngines: { value: '3' },
      decoders: { value: '2' },
      encoders: { value: '0' },
      jpegEngines: { value: '0' },
      ofaEngines: { value: '0' },
      memory: { value: '19968Mi' },
      // NVIDIA's per-memory-slice capacities: 3g.20gb at placement 4 spans slices 4-7.
      memorySlice4: { value: '1' },
      memorySlice5: { value: '1' },
      memorySlice6: { value: '1' },
      memorySlice7: { value: '1' },
    });
  });

  it('gives every device of a type the same attribute set (memory slices aside: they are the placement)', () => {
    const { devices } = buildDevices(inventoryOf('a100-mig'));
    const sig = (d: SliceDevice): string =>
      Object.entries(d.attributes)
        .map(([k, v]) => `${k}:${Object.keys(v).join()}`)
        .sort()
        .join() +
      '|' +
      Object.keys(d.capacity)
        .filter((k) => !k.startsWith('memorySlice'))
        .sort()
        .join();
    const byType = new Map<string, Set<string>>();
    for (const d of devices) {
      const t = attr(d, 'type');
      const type = t && 'string' in t ? t.string : '';
      byType.set(type, (byType.get(type) ?? new Set()).add(sig(d)));
    }
    for (const sigs of byType.values()) expect(sigs.size).toBe(1);
  });

  it('omits an optional attribute on all devices when some GPU lacks it, with a warning', () => {
    const inv: NodeInventory = {
      ...inventoryOf('h100-8x'),
      gpus: inventoryOf('h100-8x').gpus.map((g) =>
        g.minor === 3 ? { ...g, pci: { ...g.pci, pcieRoot: undefined }, brand: undefined } : g,
      ),
    };
    const { devices, warnings } = buildDevices(inv);
    for (const d of devices) {
      expect(d.attributes).not.toHaveProperty(['resource.kubernetes.io/pcieRoot']);
      expect(d.attributes).not.toHaveProperty('brand');
    }
    expect(warnings.join('\n')).toMatch(
      /resource\.kubernetes\.io\/pcieRoot omitted on all devices: unknown for gpu-3/,
    );
    expect(warnings.join('\n')).toMatch(/brand omitted on all devices/);
  });

  it('publishes addressingMode per device, as NVIDIA does: where the GPU reports one', () => {
    const gpus = [h100Gpu(0, { addressingMode: 'HMM' }), h100Gpu(1), h100Gpu(2, { addressingMode: 'None' })];
    const { devices, warnings } = buildDevices({ ...inventoryOf('h100'), gpus });
    expect(devices.map((d) => attr(d, 'addressingMode'))).toEqual([
      { string: 'HMM' },
      undefined,
      { string: 'None' },
    ]);
    expect(warnings).toEqual([]);
  });

  it('publishes resource.kubernetes.io/numaNode as an int on each device with a NUMA node', () => {
    const gpus = [
      h100Gpu(0, { numaNode: 0 }),
      h100Gpu(1, { numaNode: undefined }),
      h100Gpu(2, { numaNode: 1 }),
    ];
    const { devices, warnings } = buildDevices({ ...inventoryOf('h100'), gpus });
    expect(devices.map((d) => attr(d, 'resource.kubernetes.io/numaNode'))).toEqual([
      { int: 0 },
      undefined,
      { int: 1 },
    ]);
    expect(warnings).toEqual([]);
  });

  it("gives a MIG device its parent's NUMA node and addressing mode", () => {
    const parent = withMig(h100Gpu(0, { numaNode: 1, addressingMode: 'ATS' }), [['1g.10gb', 0]]);
    const { devices } = buildDevices({ ...inventoryOf('h100'), gpus: [parent] });
    expect(devices.length).toBeGreaterThan(0);
    for (const d of devices) {
      expect(attr(d, 'type')).toEqual({ string: 'mig' });
      expect(attr(d, 'resource.kubernetes.io/numaNode')).toEqual({ int: 1 });
      expect(attr(d, 'addressingMode')).toEqual({ string: 'ATS' });
    }
  });

  it('warns about a MIG-enabled GPU without MIG devices and about failed GPUs', () => {
    const inv: NodeInventory = {
      ...inventoryOf('h100'),
      gpus: [withMig(h100Gpu(0), [])],
      failures: [{ index: 1, error: 'GPU is lost', code: 'GPU_IS_LOST' }],
    };
    const { devices, warnings } = buildDevices(inv);
    expect(devices).toEqual([]);
    expect(warnings).toEqual([
      'GPU at index 1 left out: GPU is lost (GPU_IS_LOST)',
      'gpu-0 has MIG mode enabled but no MIG devices: nothing published for it',
    ]);
  });

  it('selects devices with NVIDIA-style CEL when the driver is named gpu.nvidia.com', () => {
    const driver = 'gpu.nvidia.com';
    const { slices } = buildSlices(inventoryOf('a100-mig'), { nodeName: NODE, driverName: driver });
    const devices = slices.flatMap((s) => s.spec.devices);
    const select = (expr: string): string[] =>
      devices.filter((d) => evaluate(expr, { device: celDevice(driver, d) }) === true).map((d) => d.name);
    // DeviceClasses of NVIDIA's Helm chart.
    expect(
      select(`device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'`),
    ).toEqual(['gpu-1']);
    expect(
      select(`device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'`),
    ).toHaveLength(4);
    // User selectors of NVIDIA's e2e tests.
    expect(
      select(`device.attributes['gpu.nvidia.com'].productName.matches('^NVIDIA A100.*40GB$')`),
    ).toHaveLength(5);
    expect(
      select(
        `device.attributes['gpu.nvidia.com'].type == 'mig' && device.attributes['gpu.nvidia.com'].profile == '1g.5gb'`,
      ),
    ).toEqual(['gpu-0-mig-1g5gb-19-2', 'gpu-0-mig-1g5gb-19-3']);
    // As in Kubernetes, reading an attribute a device lacks is an error, not false.
    expect(() => select(`device.attributes['gpu.nvidia.com'].profile == '1g.5gb'`)).toThrow(
      /No such key: profile/,
    );
  });
});

describe('slices', () => {
  it('fills the pool and node fields', () => {
    const { slices } = buildSlices(inventoryOf('h100-8x'), { nodeName: NODE, generation: 7 });
    expect(slices).toHaveLength(1);
    const s = slices[0];
    expect(s?.apiVersion).toBe('resource.k8s.io/v1');
    expect(s?.spec.driver).toBe(DEFAULT_DRIVER_NAME);
    expect(s?.spec.nodeName).toBe(NODE);
    expect(s?.spec.pool).toEqual({ name: NODE, generation: 7, resourceSliceCount: 1 });
  });

  it('splits at 128 devices per slice (224 MIG devices -> 128 + 96)', () => {
    const { slices } = buildSlices(inventoryOf('h100-mig-224'), { nodeName: NODE });
    expect(slices.map((s) => s.spec.devices.length)).toEqual([128, 96]);
    expect(slices.every((s) => s.spec.pool.resourceSliceCount === 2)).toBe(true);
    expect(new Set(slices.map((s) => s.metadata.name)).size).toBe(2);
    const names = slices.flatMap((s) => s.spec.devices.map((d) => d.name));
    expect(names).toEqual([...names].sort(naturalCompare));
    expect(new Set(names).size).toBe(224);
  });

  it('splits at 64 devices once taints are used', () => {
    const taints = {
      'gpu-0-mig-1g10gb-19-0': [{ key: 'gpu.dra.dev/xid', value: '79', effect: 'NoSchedule' as const }],
    };
    const { slices } = buildSlices(inventoryOf('h100-mig-224'), { nodeName: NODE, taints });
    expect(MAX_DEVICES_PER_SLICE_ADVANCED).toBe(64);
    expect(slices.map((s) => s.spec.devices.length)).toEqual([64, 64, 64, 32]);
    expect(slices[0]?.spec.devices[0]?.taints).toEqual(taints['gpu-0-mig-1g10gb-19-0']);
  });

  it('publishes one empty slice for an empty pool', () => {
    const { slices } = buildSlices({ ...inventoryOf('h100'), gpus: [] }, { nodeName: NODE });
    expect(slices).toHaveLength(1);
    expect(slices[0]?.spec.devices).toEqual([]);
    expect(slices[0]?.spec.pool.resourceSliceCount).toBe(1);
  });

  it('is stable: shuffled discovery order gives the same slices', () => {
    const inv = inventoryOf('h100-mig-224');
    const shuffled: NodeInventory = {
      ...inv,
      gpus: [...inv.gpus].reverse().map((g, i) => ({
        ...g,
        index: i,
        migDevices: [...g.migDevices].sort(() => 0.5 - ((i * 7919) % 13) / 13),
      })),
    };
    const a = buildSlices(inv, { nodeName: NODE });
    const b = buildSlices(shuffled, { nodeName: NODE });
    expect(b.slices).toEqual(a.slices);
  });

  it('matches the YAML snapshots', async () => {
    for (const profile of ['h100', 'h100-8x', 'a100-mig'] as const) {
      const yaml = renderSlicesYaml(inventoryOf(profile), { nodeName: NODE });
      await expect(yaml).toMatchFileSnapshot(`./__snapshots__/resourceslice-${profile}.yaml`);
      const docs = parseAllDocuments(yaml).map((d) => d.toJS() as unknown);
      expect(docs).toEqual(buildSlices(inventoryOf(profile), { nodeName: NODE }).slices);
    }
  });

  it('renders warnings as YAML comments', () => {
    const inv = { ...inventoryOf('h100'), failures: [{ index: 1, error: 'lost' }] };
    const yaml = renderSlicesYaml(inv, { nodeName: NODE });
    expect(yaml.split('\n')[0]).toBe('# warning: GPU at index 1 left out: lost');
    expect(parseYaml(yaml.split('---\n')[1] ?? '')).toMatchObject({ kind: 'ResourceSlice' });
  });
});

describe('limits', () => {
  const base = (): NodeInventory => inventoryOf('h100');
  const withGpu = (g: Partial<GpuDevice>): NodeInventory => ({ ...base(), gpus: [h100Gpu(0, g)] });

  function expectModelError(fn: () => unknown, device: string, field: string): void {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(ResourceSliceModelError);
      const e = err as ResourceSliceModelError;
      expect(e.code).toBe('RESOURCESLICE_INVALID');
      expect(e.device).toBe(device);
      expect(e.field).toBe(field);
      expect(e.message).toContain(device);
      return;
    }
    throw new Error('expected a ResourceSliceModelError');
  }

  it('rejects strings over 64 characters, naming device and field', () => {
    expectModelError(
      () => buildDevices(withGpu({ productName: 'X'.repeat(65) })),
      'gpu-0',
      'attributes.productName',
    );
    expect(() => buildDevices(withGpu({ productName: 'X'.repeat(64) }))).not.toThrow();
    // 32 characters, 64 bytes in UTF-8: still fits; one more does not (the apiserver counts bytes).
    expect(() => buildDevices(withGpu({ productName: 'é'.repeat(32) }))).not.toThrow();
    expectModelError(
      () => buildDevices(withGpu({ productName: 'é'.repeat(33) })),
      'gpu-0',
      'attributes.productName',
    );
  });

  it('rejects versions that are not semver', () => {
    expectModelError(
      () => buildDevices({ ...base(), driverVersion: '1.2.3.4' }),
      'gpu-0',
      'attributes.driverVersion',
    );
    expectModelError(
      () => buildDevices(withGpu({ cudaComputeCapability: 'nine' })),
      'gpu-0',
      'attributes.cudaComputeCapability',
    );
    expectModelError(
      () => buildDevices({ ...base(), driverVersion: `1.2.3-${'a'.repeat(60)}` }),
      'gpu-0',
      'attributes.driverVersion',
    );
  });

  it('rejects device names that are not DNS labels', () => {
    const gpu = a100Gpu(0);
    const mig = { ...migOf(gpu, '1g.5gb', 0, 0), profile: 'p'.repeat(60) };
    const inv: NodeInventory = {
      ...base(),
      gpus: [{ ...gpu, migMode: { current: true, pending: true }, migDevices: [mig] }],
    };
    expectModelError(() => buildDevices(inv), `gpu-0-mig-${'p'.repeat(60)}-19-0`, 'name');
  });

  it('rejects two devices with the same name', () => {
    const gpu = a100Gpu(0);
    const twins = [migOf(gpu, '2g.10gb', 0, 0), { ...migOf(gpu, '2g.10gb', 0, 1), computeInstanceId: 1 }];
    const inv: NodeInventory = {
      ...base(),
      gpus: [{ ...gpu, migMode: { current: true, pending: true }, migDevices: twins }],
    };
    expectModelError(() => buildDevices(inv), 'gpu-0-mig-2g10gb-14-0', 'name');
  });

  it('rejects more than 32 attributes and capacities', () => {
    const attributes: Record<string, AttributeValue> = {};
    for (let i = 0; i < 30; i++) attributes[`a${i}`] = { string: 'x' };
    const capacity = { c1: { value: '1' }, c2: { value: '1' } };
    expect(() => {
      validateDevice({ name: 'gpu-0', attributes, capacity });
    }).not.toThrow();
    expectModelError(
      () => {
        validateDevice({ name: 'gpu-0', attributes: { ...attributes, extra: { bool: true } }, capacity });
      },
      'gpu-0',
      'attributes',
    );
  });

  it('rejects bad attribute names and negative capacities', () => {
    expectModelError(
      () => {
        validateDevice({ name: 'gpu-0', attributes: { '1bad': { string: 'x' } }, capacity: {} });
      },
      'gpu-0',
      'attributes.1bad',
    );
    expectModelError(
      () => {
        validateDevice({ name: 'gpu-0', attributes: { 'Bad_Domain/x': { string: 'x' } }, capacity: {} });
      },
      'gpu-0',
      'attributes.Bad_Domain/x',
    );
    expectModelError(() => buildDevices(withGpu({ memoryBytes: -1 })), 'gpu-0', 'capacity.memory');
  });

  it('rejects an invalid driver name', () => {
    expectModelError(
      () => buildSlices(base(), { nodeName: NODE, driverName: 'Not_A_Domain' }),
      'driver',
      'spec.driver',
    );
    expectModelError(
      () => buildSlices(base(), { nodeName: NODE, driverName: `${'a'.repeat(60)}.com` }),
      'driver',
      'spec.driver',
    );
  });

  it('keeps every generated device name a DNS label for realistic extremes', () => {
    const name = migDeviceName(2 ** 31 - 1, '7g.80gb+me+gfx', 2 ** 31 - 1, 7);
    expect(isDnsLabel(name)).toBe(true);
    expect(MAX_DEVICES_PER_SLICE).toBe(128);
  });
});
