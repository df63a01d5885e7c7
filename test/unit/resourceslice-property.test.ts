import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { GpuDevice, NodeInventory } from '../../src/nvml/types.js';
import { a100Gpu, h100Gpu, migOf } from '../support/inventoryFixture.js';
import { buildSlices, MAX_DEVICES_PER_SLICE, validateDevice } from '../../src/resourceslice/model.js';
import { naturalCompare } from '../../src/util/naturalCompare.js';
import { isDnsLabel, isDnsSubdomain } from '../../src/util/kubeNames.js';
import { parseDeviceName } from '../../src/resourceslice/names.js';
import { isSemver } from '../../src/resourceslice/values.js';

/** A GPU (H100 or A100) with a random minor, optional attributes, and maybe a MIG layout. */
const gpuArb = (minor: number): fc.Arbitrary<GpuDevice> =>
  fc
    .record({
      a100: fc.boolean(),
      mig: fc.boolean(),
      // Distinct (profile, start) pairs: each placement start used at most once per profile.
      layout: fc.uniqueArray(fc.tuple(fc.nat(4), fc.nat(7)), {
        maxLength: 12,
        selector: ([p, s]) => `${p}/${s}`,
      }),
      pcieRoot: fc.option(fc.constantFrom('pci0000:00', 'pci0000:80'), { nil: undefined }),
      addressingMode: fc.option(fc.constantFrom('HMM', 'ATS'), { nil: undefined }),
      productName: fc.string({ minLength: 1, maxLength: 64 }),
    })
    .map(({ a100, mig, layout, pcieRoot, addressingMode, productName }) => {
      const base = a100 ? a100Gpu(minor) : h100Gpu(minor);
      const gpu: GpuDevice = { ...base, productName, addressingMode, pci: { ...base.pci, pcieRoot } };
      if (!mig) return gpu;
      const migDevices = layout.map(([p, start], i) => {
        const profile = gpu.migProfiles[p % gpu.migProfiles.length];
        return migOf(gpu, profile?.name ?? '', start, i);
      });
      return { ...gpu, migMode: { current: true, pending: true }, migDevices };
    });

const inventoryArb: fc.Arbitrary<NodeInventory> = fc
  .uniqueArray(fc.nat(300), { maxLength: 24 })
  .chain((minors) => fc.tuple(...minors.map(gpuArb)))
  .map((gpus) => ({ driverVersion: '580.159.04', cudaDriverVersion: '13.0', gpus, failures: [] }));

describe('ResourceSlice model properties', () => {
  it('any inventory: valid names, every device exactly once, right counts, sorted', () => {
    fc.assert(
      fc.property(inventoryArb, fc.nat(1000), (inv, generation) => {
        const { slices, devices } = buildSlices(inv, { nodeName: 'node-x', generation });
        const expected = inv.gpus.flatMap((g) =>
          g.migMode?.current
            ? g.migDevices.map((m) => `${g.minor}/${m.profileId}/${m.placement.start}`)
            : [`${g.minor}`],
        );
        const published = slices.flatMap((s) => s.spec.devices);
        // Every device exactly once.
        expect(published.map((d) => d.name)).toEqual(devices.map((d) => d.name));
        expect(new Set(published.map((d) => d.name)).size).toBe(published.length);
        expect(published.length).toBe(expected.length);
        const ids = published.map((d) => {
          const p = parseDeviceName(d.name);
          if (!p) throw new Error(`unparseable ${d.name}`);
          return p.kind === 'gpu' ? `${p.minor}` : `${p.parentMinor}/${p.profileId}/${p.placementStart}`;
        });
        expect(new Set(ids)).toEqual(new Set(expected));
        // Counts and pool fields.
        expect(slices.length).toBe(Math.max(1, Math.ceil(expected.length / MAX_DEVICES_PER_SLICE)));
        for (const s of slices) {
          expect(isDnsSubdomain(s.metadata.name)).toBe(true);
          expect(s.spec.devices.length).toBeLessThanOrEqual(MAX_DEVICES_PER_SLICE);
          expect(s.spec.pool).toEqual({ name: 'node-x', generation, resourceSliceCount: slices.length });
        }
        expect(new Set(slices.map((s) => s.metadata.name)).size).toBe(slices.length);
        // Valid devices, natural order across slices.
        for (const d of published) {
          expect(isDnsLabel(d.name)).toBe(true);
          expect(() => {
            validateDevice(d);
          }).not.toThrow();
          for (const v of Object.values(d.attributes))
            if ('version' in v) expect(isSemver(v.version)).toBe(true);
        }
        const names = published.map((d) => d.name);
        expect(names).toEqual([...names].sort(naturalCompare));
      }),
      { numRuns: 150 },
    );
  });

  it('order of discovery does not matter', () => {
    fc.assert(
      fc.property(inventoryArb, fc.infiniteStream(fc.double()), (inv, rnd) => {
        const shuffle = <T>(xs: readonly T[]): T[] =>
          xs
            .map((x) => [rnd.next().value, x] as const)
            .sort((a, b) => a[0] - b[0])
            .map(([, x]) => x);
        const shuffled: NodeInventory = {
          ...inv,
          gpus: shuffle(inv.gpus).map((g) => ({ ...g, migDevices: shuffle(g.migDevices) })),
        };
        expect(buildSlices(shuffled, { nodeName: 'n' }).slices).toEqual(
          buildSlices(inv, { nodeName: 'n' }).slices,
        );
      }),
      { numRuns: 80 },
    );
  });
});
