// Dynamic MIG publishing (KEP-4815 partitionable devices): counter sets, what each device
// consumes, the 1.34 and >= 1.35 slice layouts and their limits, the warnings for GPUs that
// cannot be partitioned, and the device names GPU-wide taints cover.
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

import type { CounterSet } from '../../src/api/resource.js';
import { renderSlicesYaml } from '../../src/cli/actions/slices.js';
import type { GpuDevice, MigProfileInfo, NodeInventory } from '../../src/nvml/types.js';
import { carryUnhealthyGpus, devicesForXid } from '../../src/resourceslice/gpuHealth.js';
import {
  buildDevices,
  buildSlices,
  MAX_ATTRIBUTES_AND_CAPACITIES,
  MAX_CONSUMED_COUNTERS_PER_SLICE,
  MAX_DEVICES_PER_SLICE_ADVANCED,
  MAX_SHARED_COUNTERS_PER_SLICE_COMBINED,
  ResourceSliceModelError,
  type SliceDevice,
  type SliceModel,
} from '../../src/resourceslice/model.js';
import {
  counterLayoutFor,
  MAX_CONSUMPTIONS_PER_DEVICE,
  MAX_COUNTER_SETS_PER_SLICE,
  MAX_COUNTERS_PER_SET,
  type CounterLayout,
} from '../../src/resourceslice/partitions.js';
import { toWire } from '../../src/resourceslice/sliceWire.js';
import { quantityKey } from '../../src/resourceslice/values.js';
import { naturalCompare } from '../../src/util/naturalCompare.js';
import { h100Gpu, inventoryFixture, withMig } from '../support/inventoryFixture.js';

const NODE = 'node-d';

const dynamic = (inv: NodeInventory, counterLayout: CounterLayout = 'separate'): SliceModel =>
  buildSlices(inv, { nodeName: NODE, migPartitioning: 'dynamic', counterLayout });

const oneH100 = (gpu: GpuDevice = withMig(h100Gpu(0), [])): NodeInventory => ({
  ...inventoryFixture('h100'),
  gpus: [gpu],
});

function device(devices: readonly SliceDevice[], name: string): SliceDevice {
  const d = devices.find((x) => x.name === name);
  if (!d) throw new Error(`no device ${name}`);
  return d;
}

/**
 * Whether the scheduler could hold all these devices at once: for each counter set, the sum of
 * what they consume stays within what it has (KEP-4815's rule).
 */
function fitsTogether(sets: readonly CounterSet[], devices: readonly SliceDevice[]): boolean {
  const used = new Map<string, number>();
  for (const d of devices) {
    for (const c of d.consumesCounters ?? []) {
      for (const [name, v] of Object.entries(c.counters)) {
        const key = `${c.counterSet}/${name}`;
        used.set(key, (used.get(key) ?? 0) + Number(quantityKey(v.value)));
      }
    }
  }
  for (const [key, n] of used) {
    const [set, name] = key.split('/') as [string, string];
    const have = sets.find((s) => s.name === set)?.counters[name];
    if (!have || n > Number(quantityKey(have.value))) return false;
  }
  return true;
}

/** Every API limit that applies to a slice of this layout (1.34's, and 1.37's validation). */
function expectWithinLimits(model: SliceModel, layout: CounterLayout): void {
  const poolSets = model.slices.flatMap((s) => s.spec.sharedCounters ?? []);
  for (const s of model.slices) {
    const sets = s.spec.sharedCounters ?? [];
    expect(s.spec.devices.length).toBeLessThanOrEqual(MAX_DEVICES_PER_SLICE_ADVANCED);
    expect(sets.length).toBeLessThanOrEqual(MAX_COUNTER_SETS_PER_SLICE);
    if (layout === 'separate') expect(sets.length === 0 || s.spec.devices.length === 0).toBe(true);
    const shared = sets.reduce((n, c) => n + Object.keys(c.counters).length, 0);
    if (layout === 'combined') expect(shared).toBeLessThanOrEqual(MAX_SHARED_COUNTERS_PER_SLICE_COMBINED);
    let consumed = 0;
    for (const d of s.spec.devices) {
      const uses = d.consumesCounters ?? [];
      expect(uses.length).toBeLessThanOrEqual(MAX_CONSUMPTIONS_PER_DEVICE);
      expect(Object.keys(d.attributes).length + Object.keys(d.capacity).length).toBeLessThanOrEqual(
        MAX_ATTRIBUTES_AND_CAPACITIES,
      );
      for (const u of uses) {
        consumed += Object.keys(u.counters).length;
        // 1.34 looks for the set in the device's own slice; later versions anywhere in the pool.
        const set = (layout === 'combined' ? sets : poolSets).find((c) => c.name === u.counterSet);
        expect(set, `${d.name} -> ${u.counterSet}`).toBeDefined();
        for (const c of Object.keys(u.counters)) expect(set?.counters).toHaveProperty([c]);
      }
    }
    expect(consumed).toBeLessThanOrEqual(MAX_CONSUMED_COUNTERS_PER_SLICE);
    for (const c of sets) expect(Object.keys(c.counters).length).toBeLessThanOrEqual(MAX_COUNTERS_PER_SET);
  }
  const names = model.slices.map((s) => s.metadata.name);
  expect(new Set(names).size).toBe(names.length);
  for (const s of model.slices) expect(s.spec.pool.resourceSliceCount).toBe(model.slices.length);
}

describe('dynamic MIG: counter set and consumption', () => {
  it("gives an H100 NVIDIA's counter set: the largest of each capacity, and 8 memory slices", () => {
    const { counterSets } = buildDevices(oneH100(), { migPartitioning: 'dynamic' });
    expect(counterSets).toEqual([
      {
        name: 'gpu-0-counter-set',
        counters: {
          multiprocessors: { value: '132' },
          'copy-engines': { value: '8' },
          decoders: { value: '7' },
          encoders: { value: '0' },
          'jpeg-engines': { value: '7' },
          'ofa-engines': { value: '1' },
          memory: { value: '81152Mi' },
          ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`memory-slice-${i}`, { value: '1' }])),
        },
      },
    ]);
  });

  it('publishes the whole GPU and all 25 (profile, placement) pairs of an H100, in natural order', () => {
    const { devices, warnings } = buildDevices(oneH100(), { migPartitioning: 'dynamic' });
    expect(warnings).toEqual([]);
    const starts = (p: string, id: number, s: number[]): string[] =>
      s.map((x) => `gpu-0-mig-${p}-${id}-${x}`);
    expect(devices.map((d) => d.name)).toEqual([
      'gpu-0',
      ...starts('1g10gb', 19, [0, 1, 2, 3, 4, 5, 6]),
      ...starts('1g10gb-me', 20, [0, 1, 2, 3, 4, 5, 6]),
      ...starts('1g20gb', 15, [0, 2, 4, 6]),
      ...starts('2g20gb', 14, [0, 2, 4]),
      ...starts('3g40gb', 9, [0, 4]),
      ...starts('4g40gb', 5, [0]),
      ...starts('7g80gb', 0, [0]),
    ]);
  });

  it('publishes the whole GPU with its static attributes and the largest profile’s capacities, consuming every counter', () => {
    const staticGpu = buildDevices(oneH100(h100Gpu(0))).devices[0];
    const { devices, counterSets } = buildDevices(oneH100(), { migPartitioning: 'dynamic' });
    const gpu = device(devices, 'gpu-0');
    expect(gpu.attributes).toEqual(staticGpu?.attributes);
    // As NVIDIA publishes it: in MIG mode the whole GPU is the 7g.80gb instance spanning it.
    expect(gpu.capacity).toEqual({
      memory: { value: '81152Mi' },
      multiprocessors: { value: '132' },
      copyEngines: { value: '8' },
      decoders: { value: '7' },
      encoders: { value: '0' },
      jpegEngines: { value: '7' },
      ofaEngines: { value: '1' },
    });
    expect(gpu.consumesCounters).toEqual([
      { counterSet: 'gpu-0-counter-set', counters: counterSets[0]?.counters },
    ]);
  });

  it('publishes a partition like a MIG device without uuid, consuming its profile and memory slices', () => {
    const { devices } = buildDevices(oneH100(), { migPartitioning: 'dynamic' });
    const staticMig = buildDevices(oneH100(withMig(h100Gpu(0), [['3g.40gb', 4]]))).devices[0];
    const d = device(devices, 'gpu-0-mig-3g40gb-9-4');
    const { uuid, ...withoutUuid } = staticMig?.attributes ?? {};
    expect(uuid).toBeDefined();
    expect(d.attributes).toEqual(withoutUuid);
    expect(d.attributes['profile']).toEqual({ string: '3g.40gb' });
    expect(d.attributes['parentUUID']).toEqual({ string: h100Gpu(0).uuid });
    // NVIDIA's dynamic devices carry no memorySlice<i> capacities (the counters say it).
    expect(d.capacity).toEqual({
      multiprocessors: { value: '60' },
      copyEngines: { value: '3' },
      decoders: { value: '3' },
      encoders: { value: '0' },
      jpegEngines: { value: '3' },
      ofaEngines: { value: '0' },
      memory: { value: '40448Mi' },
    });
    expect(d.consumesCounters).toEqual([
      {
        counterSet: 'gpu-0-counter-set',
        counters: {
          multiprocessors: { value: '60' },
          'copy-engines': { value: '3' },
          decoders: { value: '3' },
          encoders: { value: '0' },
          'jpeg-engines': { value: '3' },
          'ofa-engines': { value: '0' },
          memory: { value: '40448Mi' },
          'memory-slice-4': { value: '1' },
          'memory-slice-5': { value: '1' },
          'memory-slice-6': { value: '1' },
          'memory-slice-7': { value: '1' },
        },
      },
    ]);
  });

  it('lets the scheduler co-allocate exactly the partitions that fit side by side', () => {
    const { devices, counterSets } = buildDevices(oneH100(), { migPartitioning: 'dynamic' });
    const fits = (...names: string[]): boolean =>
      fitsTogether(
        counterSets,
        names.map((n) => device(devices, n)),
      );
    expect(fits(...[0, 1, 2, 3, 4, 5, 6].map((s) => `gpu-0-mig-1g10gb-19-${s}`))).toBe(true);
    expect(fits('gpu-0-mig-3g40gb-9-0', 'gpu-0-mig-3g40gb-9-4')).toBe(true);
    expect(fits('gpu-0-mig-4g40gb-5-0', 'gpu-0-mig-3g40gb-9-4')).toBe(true);
    // Overlapping memory slices.
    expect(fits('gpu-0-mig-1g10gb-19-0', 'gpu-0-mig-2g20gb-14-0')).toBe(false);
    expect(fits('gpu-0-mig-4g40gb-5-0', 'gpu-0-mig-2g20gb-14-2')).toBe(false);
    // Only one +me profile's media engine (ofa-engines 1).
    expect(fits('gpu-0-mig-1g10gb-me-20-0', 'gpu-0-mig-1g10gb-me-20-1')).toBe(false);
    // The whole GPU excludes every partition, and the 7g profile everything else.
    for (const d of devices.filter((x) => x.name !== 'gpu-0')) {
      expect(fits('gpu-0', d.name), d.name).toBe(false);
      if (d.name !== 'gpu-0-mig-7g80gb-0-0') expect(fits('gpu-0-mig-7g80gb-0-0', d.name)).toBe(false);
    }
    expect(fits('gpu-0')).toBe(true);
  });
});

describe('dynamic MIG: slices', () => {
  const inv = inventoryFixture('h100-8x-mig-on');

  it('8 × H100, Kubernetes >= 1.35: 208 devices (26 per GPU), 1 counter slice + 4 device slices', () => {
    const model = dynamic(inv, 'separate');
    expect(model.devices).toHaveLength(208);
    for (let m = 0; m < 8; m++) {
      expect(
        model.devices.filter((d) => d.name === `gpu-${m}` || d.name.startsWith(`gpu-${m}-`)),
      ).toHaveLength(26);
    }
    expect(model.counterSets.map((c) => c.name)).toEqual(
      Array.from({ length: 8 }, (_, m) => `gpu-${m}-counter-set`),
    );
    expect(model.slices).toHaveLength(5);
    expect(model.slices[0]?.spec.sharedCounters?.map((c) => c.name)).toEqual(
      model.counterSets.map((c) => c.name),
    );
    expect(model.slices.map((s) => s.spec.devices.length)).toEqual([0, 64, 64, 64, 16]);
    const names = model.slices.flatMap((s) => s.spec.devices.map((d) => d.name));
    expect(names).toEqual([...names].sort(naturalCompare));
    expectWithinLimits(model, 'separate');
  });

  it('8 × H100, Kubernetes 1.34: one slice per GPU holding its counter set and its 26 devices', () => {
    const model = dynamic(inv, 'combined');
    expect(model.slices).toHaveLength(8);
    model.slices.forEach((s, m) => {
      expect(s.spec.sharedCounters?.map((c) => c.name)).toEqual([`gpu-${m}-counter-set`]);
      expect(s.spec.devices).toHaveLength(26);
      expect(s.spec.devices[0]?.name).toBe(`gpu-${m}`);
    });
    expectWithinLimits(model, 'combined');
  });

  it('sends a counter-set slice without devices, and devices with their consumption', () => {
    const [counters, first] = dynamic(inv, 'separate').slices.map((s) => toWire(s, 'uid'));
    expect(counters?.spec).not.toHaveProperty('devices');
    expect(counters?.spec.sharedCounters).toHaveLength(8);
    expect(first?.spec).not.toHaveProperty('sharedCounters');
    expect(first?.spec.devices?.[0]?.consumesCounters?.[0]?.counterSet).toBe('gpu-0-counter-set');
    const [combined] = dynamic(inv, 'combined').slices.map((s) => toWire(s, 'uid'));
    expect(combined?.spec.sharedCounters).toHaveLength(1);
    expect(combined?.spec.devices).toHaveLength(26);
  });

  it('puts more than 8 counter sets in several slices', () => {
    const gpus = Array.from({ length: 10 }, (_, m) => withMig(h100Gpu(m), []));
    const model = dynamic({ ...inv, gpus }, 'separate');
    expect(model.slices.map((s) => s.spec.sharedCounters?.length ?? 0)).toEqual([8, 2, 0, 0, 0, 0, 0]);
    expect(model.slices.map((s) => s.spec.devices.length)).toEqual([0, 0, 64, 64, 64, 64, 4]);
    expectWithinLimits(model, 'separate');
  });

  it('keeps MIG-off GPUs apart from counters in both layouts', () => {
    const mixed: NodeInventory = {
      ...inv,
      gpus: [withMig(h100Gpu(0), []), h100Gpu(1), withMig(h100Gpu(2), [])],
    };
    const combined = dynamic(mixed, 'combined');
    expect(combined.slices.map((s) => [s.spec.sharedCounters?.[0]?.name, s.spec.devices.length])).toEqual([
      ['gpu-0-counter-set', 26],
      [undefined, 1],
      ['gpu-2-counter-set', 26],
    ]);
    expect(device(combined.devices, 'gpu-1').consumesCounters).toBeUndefined();
    expectWithinLimits(combined, 'combined');
    const separate = dynamic(mixed, 'separate');
    expect(separate.slices.map((s) => s.spec.devices.length)).toEqual([0, 53]);
    expectWithinLimits(separate, 'separate');
  });

  it('fails with the counter set named when a GPU cannot fit one slice as 1.34 requires', () => {
    // 10 profiles × 7 placements: 71 devices with their counter set, over 64 in one slice.
    const profile = h100Gpu(0).migProfiles[0] as MigProfileInfo;
    const migProfiles = Array.from({ length: 10 }, (_, i) => ({ ...profile, name: `p${i}.x`, id: 100 + i }));
    const big = oneH100(withMig(h100Gpu(0, { migProfiles }), []));
    expect(dynamic(big, 'separate').slices.map((s) => s.spec.devices.length)).toEqual([0, 64, 7]);
    try {
      dynamic(big, 'combined');
      throw new Error('expected a ResourceSliceModelError');
    } catch (err) {
      expect(err).toBeInstanceOf(ResourceSliceModelError);
      expect(err).toMatchObject({ device: 'counter set gpu-0-counter-set', field: 'devices' });
    }
  });

  it('refuses more than 32 counters in a set', () => {
    const profile = h100Gpu(0).migProfiles[0] as MigProfileInfo;
    const wide = { ...profile, placements: Array.from({ length: 26 }, (_, start) => ({ start, size: 1 })) };
    expect(() =>
      buildDevices(oneH100(withMig(h100Gpu(0, { migProfiles: [wide] }), [])), { migPartitioning: 'dynamic' }),
    ).toThrow(/counter set gpu-0-counter-set: counters: 33 counters exceed 32/);
  });

  it('matches the YAML snapshot of one dynamic H100 (Kubernetes >= 1.35), applyable as printed', async () => {
    const yaml = renderSlicesYaml(oneH100(), { nodeName: NODE, migPartitioning: 'dynamic' });
    await expect(yaml).toMatchFileSnapshot('./__snapshots__/resourceslice-h100-dynamic.yaml');
    const docs = parseAllDocuments(yaml).map((d) => d.toJS() as { spec: Record<string, unknown> });
    expect(docs).toHaveLength(2);
    expect(docs[0]?.spec).not.toHaveProperty('devices');
    expect(docs[0]?.spec['sharedCounters']).toHaveLength(1);
    expect(docs[1]?.spec['devices']).toHaveLength(26);
  });
});

describe('dynamic MIG: GPUs that are not partitioned', () => {
  it('publishes a MIG-off GPU whole, without counters, and says how to turn MIG mode on', () => {
    const inv = inventoryFixture('h100-8x');
    const { devices, counterSets, warnings } = buildDevices(inv, { migPartitioning: 'dynamic' });
    expect(devices).toEqual(buildDevices(inv).devices);
    expect(counterSets).toEqual([]);
    expect(warnings).toHaveLength(8);
    const uuid = h100Gpu(3).uuid;
    expect(warnings[3]).toBe(
      `gpu-3 (${uuid}) is published whole: --mig-partitioning=dynamic needs MIG mode on, and the driver ` +
        `never switches it. Run \`nvidia-smi -i ${uuid} -mig 1\`, then reset the GPU ` +
        `(\`nvidia-smi -i ${uuid} -r\`, or reboot)`,
    );
    expect(buildSlices(inv, { nodeName: NODE, migPartitioning: 'dynamic' }).slices).toHaveLength(1);
  });

  it('says when a MIG mode change waits for a GPU reset', () => {
    const pendingOn = h100Gpu(0, { migMode: { current: false, pending: true } });
    const pendingOff = { ...withMig(h100Gpu(1), []), migMode: { current: true, pending: false } };
    const { warnings, counterSets } = buildDevices(
      { ...inventoryFixture('h100'), gpus: [pendingOn, pendingOff] },
      { migPartitioning: 'dynamic' },
    );
    expect(warnings[0]).toMatch(
      /^gpu-0 .* published whole: .*MIG mode is already set to turn on at the next reset$/,
    );
    expect(warnings[1]).toMatch(/^gpu-1 .* MIG mode on but set to turn off at the next GPU reset/);
    expect(counterSets.map((c) => c.name)).toEqual(['gpu-1-counter-set']);
  });

  it('leaves GPUs that are not MIG capable as they are, without a warning', () => {
    const plain = h100Gpu(0, { migMode: undefined, migProfiles: [] });
    const { devices, warnings } = buildDevices(oneH100(plain), { migPartitioning: 'dynamic' });
    expect(devices.map((d) => [d.name, d.consumesCounters])).toEqual([['gpu-0', undefined]]);
    expect(warnings).toEqual([]);
  });

  it('publishes nothing for a MIG-mode GPU whose placements NVML did not report, and says so', () => {
    const gpu = withMig(
      h100Gpu(0, { migProfiles: h100Gpu(0).migProfiles.map((p) => ({ ...p, placements: [] })) }),
      [],
    );
    const { devices, warnings } = buildDevices(oneH100(gpu), { migPartitioning: 'dynamic' });
    expect(devices).toEqual([]);
    expect(warnings.join('\n')).toMatch(
      /no MIG placements: nothing published for it \(try --mig-partitioning=static\)/,
    );
  });

  it('leaves static mode as it was: existing MIG devices, now with their memory slices', () => {
    const gpu = withMig(h100Gpu(0), [['1g.20gb', 2]]);
    const [mig] = buildDevices(oneH100(gpu)).devices;
    expect(mig?.name).toBe('gpu-0-mig-1g20gb-15-2');
    expect(mig?.consumesCounters).toBeUndefined();
    expect(Object.keys(mig?.capacity ?? {}).filter((k) => k.startsWith('memorySlice'))).toEqual([
      'memorySlice2',
      'memorySlice3',
    ]);
    expect(mig?.capacity['memory']).toEqual({ value: '20096Mi' });
  });
});

describe('dynamic MIG: health', () => {
  const inv = oneH100(withMig(h100Gpu(0), [['1g.10gb', 3]]));

  it('taints every published device of a GPU for a GPU-wide XID, the scoped partition otherwise', () => {
    const all = buildDevices(inv, { migPartitioning: 'dynamic' }).devices.map((d) => d.name);
    expect(all).toHaveLength(26);
    const uuid = h100Gpu(0).uuid;
    expect(devicesForXid(inv, uuid, {}, 'dynamic')).toEqual(all);
    expect(devicesForXid(inv, uuid, { gpuInstanceId: 1 }, 'dynamic')).toEqual(['gpu-0-mig-1g10gb-19-3']);
    expect(devicesForXid(inv, uuid, { gpuInstanceId: 7 }, 'dynamic')).toEqual(all);
    // Static mode: the existing instance only.
    expect(devicesForXid(inv, uuid)).toEqual(['gpu-0-mig-1g10gb-19-3']);
  });

  it('an XID in the instance spanning the GPU taints the GPU too: a claim for the whole GPU holds that instance', () => {
    const whole = oneH100(withMig(h100Gpu(0), [['7g.80gb', 0]]));
    const gi = whole.gpus[0]?.migDevices[0]?.gpuInstanceId;
    expect(devicesForXid(whole, h100Gpu(0).uuid, { gpuInstanceId: gi }, 'dynamic')).toEqual([
      'gpu-0',
      'gpu-0-mig-7g80gb-0-0',
    ]);
  });

  it('keeps a lost dynamic GPU with all 26 devices tainted', () => {
    const next: NodeInventory = {
      ...inv,
      gpus: [],
      failures: [{ index: 0, error: 'lost', code: 'GPU_IS_LOST' }],
    };
    const view = carryUnhealthyGpus(inv, next, 'gpu.dra.dev', 'dynamic');
    expect(view.unhealthy[0]?.devices).toHaveLength(26);
    expect(Object.keys(view.taints)).toHaveLength(26);
    const model = buildDevices(view.inventory, { migPartitioning: 'dynamic', taints: view.taints });
    expect(model.devices.every((d) => d.taints?.[0]?.key === 'gpu.dra.dev/gpu-lost')).toBe(true);
  });
});

describe('counterLayoutFor', () => {
  it('reads the Kubernetes minor from /version', () => {
    expect(counterLayoutFor({ gitVersion: 'v1.34.4' })).toBe('combined');
    expect(counterLayoutFor({ gitVersion: 'v1.35.0-rc.1+k3s1' })).toBe('separate');
    expect(counterLayoutFor({ gitVersion: 'v1.37.2' })).toBe('separate');
    expect(counterLayoutFor({ gitVersion: 'v2.0.0' })).toBe('separate');
    expect(counterLayoutFor({ major: '1', minor: '34+' })).toBe('combined');
    expect(counterLayoutFor({ gitVersion: 'unknown', major: '1', minor: '36' })).toBe('separate');
    expect(counterLayoutFor({ gitVersion: 'v1.3x' })).toBeUndefined();
    expect(counterLayoutFor({})).toBeUndefined();
  });
});
