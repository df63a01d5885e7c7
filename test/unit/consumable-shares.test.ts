// Shares of one GPU (DRA consumable capacity, KEP-5075), end to end inside the driver: the
// --consumable-shares flag, what the ResourceSlice model publishes for each mode, how a share's
// allocation is planned, checked against other claims and the GPU's memory, written to CDI and
// recorded, and what the kubelet gets back (share_id) on first and repeated prepares.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { CapacityRequestPolicy, DeviceRequestAllocationResult } from '../../src/api/resource.js';
import { buildClaimCdiSpec, claimDeviceKey, shareSuffix, type CdiSpec } from '../../src/cdi/spec.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import {
  findConflict,
  findMemoryOvercommit,
  sharesMayCoexist,
  type ClaimHolding,
  type HeldDevice,
} from '../../src/driver/conflicts.js';
import { indexInventory } from '../../src/driver/deviceNames.js';
import { planClaim } from '../../src/driver/plan.js';
import { DeviceState } from '../../src/driver/state.js';
import { DraService } from '../../src/kubelet/draService.js';
import { parseDriverConfig } from '../../src/node/config.js';
import { buildDevices, validateDevice, type SliceDevice } from '../../src/resourceslice/model.js';
import {
  MAX_CONSUMABLE_SHARES,
  memoryRequestPolicy,
  parseConsumableShares,
  type ConsumableShares,
} from '../../src/resourceslice/shares.js';
import { gateEffect, sliceKey, toWire } from '../../src/resourceslice/sliceWire.js';
import { slicesFromDevices } from '../../src/resourceslice/model.js';
import { quantityKey } from '../../src/resourceslice/values.js';
import { silentLogger } from '../../src/util/log.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testDeviceState,
  testGpu,
  testInventory,
  TEST_DRIVER,
  TEST_DRIVER_VERSION,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';
import { inventoryFixture, withMig } from '../support/inventoryFixture.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const H100_BYTES = 85_520_809_984; // 81559 MiB
const inCluster = { KUBERNETES_SERVICE_HOST: '10.0.0.1' };
const log = silentLogger();

/** The apiserver's checks of a request policy (pkg/apis/resource/validation), integer path. */
function policyProblems(value: string, p: CapacityRequestPolicy): string[] {
  const n = (q: string | undefined): bigint | undefined =>
    q === undefined ? undefined : BigInt(quantityKey(q) ?? 'x');
  const cap = n(value) ?? 0n;
  const def = n(p.default);
  const min = n(p.validRange?.min);
  const max = n(p.validRange?.max);
  const step = n(p.validRange?.step);
  const out: string[] = [];
  if (def === undefined) out.push('default required');
  if (min === undefined) return [...out, 'min required'];
  if (min > cap) out.push('min > capacity');
  if (def !== undefined && def < min) out.push('default < min');
  if (max !== undefined && (min > max || max > cap || (def !== undefined && def > max))) out.push('max');
  if (step !== undefined) {
    if (step <= 0n || min + step > cap) out.push('step too large');
    if (def !== undefined && (def - min) % step !== 0n) out.push('default off step');
    if (max !== undefined && (max - min) % step !== 0n) out.push('max off step');
  }
  return out;
}

describe('--consumable-shares', () => {
  it.each([
    ['disabled', 'disabled'],
    ['memory', 'memory'],
    ['unlimited', 'unlimited'],
    ['1', 1],
    ['8', 8],
    [String(MAX_CONSUMABLE_SHARES), MAX_CONSUMABLE_SHARES],
  ])('takes %s', (text, mode) => {
    expect(parseConsumableShares(text)).toBe(mode);
    expect(parseDriverConfig({ nodeName: 'n', consumableShares: text }, inCluster).consumableShares).toBe(
      mode,
    );
  });

  it('defaults to disabled', () => {
    expect(parseDriverConfig({ nodeName: 'n' }, inCluster).consumableShares).toBe('disabled');
  });

  it.each(['0', '-1', '1025', '4.5', '08', 'Memory', 'all', ' 4'])('refuses %j, naming the flag', (text) => {
    expect(parseConsumableShares(text)).toBeUndefined();
    expect(() => parseDriverConfig({ nodeName: 'n', consumableShares: text }, inCluster)).toThrow(
      /--consumable-shares: must be disabled, memory, unlimited or a number of shares from 1 to 1024/,
    );
  });
});

describe('the ResourceSlice model with shares', () => {
  const gpus = (mode: ConsumableShares): readonly SliceDevice[] =>
    buildDevices(inventoryFixture('h100-8x'), { consumableShares: mode }).devices;

  it('disabled: GPUs as before, no policy, not multi-allocatable', () => {
    const [d] = gpus('disabled');
    expect(d?.allowMultipleAllocations).toBeUndefined();
    expect(d?.capacity).toEqual({ memory: { value: '81559Mi' } });
  });

  it('memory: the whole GPU by default, 1Mi steps up to its memory', () => {
    for (const d of gpus('memory')) {
      expect(d.allowMultipleAllocations).toBe(true);
      expect(d.capacity).toEqual({
        memory: {
          value: '81559Mi',
          requestPolicy: { default: '81559Mi', validRange: { min: '1Mi', max: '81559Mi', step: '1Mi' } },
        },
      });
      expect(policyProblems('81559Mi', d.capacity['memory']?.requestPolicy ?? {})).toEqual([]);
      expect(() => {
        validateDevice(d);
      }).not.toThrow();
    }
  });

  it('unlimited: 0 by default, so claims that do not ask share without limit', () => {
    const [d] = gpus('unlimited');
    expect(d?.allowMultipleAllocations).toBe(true);
    expect(d?.capacity['memory']?.requestPolicy).toEqual({
      default: '0',
      validRange: { min: '0', max: '81559Mi', step: '1Mi' },
    });
    expect(policyProblems('81559Mi', d?.capacity['memory']?.requestPolicy ?? {})).toEqual([]);
  });

  it('N: a shares capacity of N (1 a claim by default) next to unlimited memory', () => {
    const [d] = gpus(4);
    expect(d?.allowMultipleAllocations).toBe(true);
    expect(d?.capacity['shares']).toEqual({
      value: '4',
      requestPolicy: { default: '1', validRange: { min: '1', max: '4', step: '1' } },
    });
    expect(d?.capacity['memory']?.requestPolicy?.default).toBe('0');
    expect(policyProblems('4', d?.capacity['shares']?.requestPolicy ?? {})).toEqual([]);
    // N = 1 cannot have a step (min + step would pass the capacity); the apiserver refuses one.
    const [one] = gpus(1);
    expect(one?.capacity['shares']?.requestPolicy).toEqual({
      default: '1',
      validRange: { min: '1', max: '1' },
    });
    expect(policyProblems('1', one?.capacity['shares']?.requestPolicy ?? {})).toEqual([]);
  });

  it('rounds the policy down to whole MiB when the memory is not', () => {
    const policy = memoryRequestPolicy('memory', 40 * GiB + 12_345);
    expect(policy).toEqual({ default: '40Gi', validRange: { min: '1Mi', max: '40Gi', step: '1Mi' } });
    expect(policyProblems(String(40 * GiB + 12_345), policy ?? {})).toEqual([]);
  });

  it('never shares MIG devices, only full GPUs', () => {
    const inv = inventoryFixture('h100');
    const gpu = inv.gpus[0];
    if (!gpu) throw new Error('fixture changed');
    const mixed = {
      ...inv,
      gpus: [gpu, withMig({ ...gpu, minor: 1, uuid: `${gpu.uuid}1` }, [['1g.10gb', 0]])],
    };
    const { devices } = buildDevices(mixed, { consumableShares: 'memory' });
    const mig = devices.filter((d) => d.name.includes('-mig-'));
    expect(mig.length).toBeGreaterThan(0);
    for (const d of mig) {
      expect(d.allowMultipleAllocations).toBeUndefined();
      expect(Object.values(d.capacity).every((c) => c.requestPolicy === undefined)).toBe(true);
    }
    expect(devices.find((d) => d.name === 'gpu-0')?.allowMultipleAllocations).toBe(true);
  });

  it('memory/unlimited without a known memory for every GPU: published whole, with a warning', () => {
    const inv = inventoryFixture('h100-8x');
    const partial = {
      ...inv,
      gpus: inv.gpus.map((g, i) => (i === 2 ? { ...g, memoryBytes: undefined } : g)),
    };
    for (const mode of ['memory', 'unlimited'] as const) {
      const model = buildDevices(partial, { consumableShares: mode });
      expect(model.devices.every((d) => d.allowMultipleAllocations === undefined)).toBe(true);
      expect(model.warnings).toContainEqual(expect.stringMatching(`--consumable-shares=${mode} ignored`));
    }
    // N shares need no memory: the shares capacity still works.
    const byShares = buildDevices(partial, { consumableShares: 2 });
    expect(byShares.devices.every((d) => d.allowMultipleAllocations === true)).toBe(true);
  });

  it('refuses a request policy on a device that does not allow multiple allocations, naming it', () => {
    const [d] = gpus('memory');
    if (!d) throw new Error('no device');
    const single: SliceDevice = { name: d.name, attributes: d.attributes, capacity: d.capacity };
    expect(() => {
      validateDevice(single);
    }).toThrow(/gpu-0: capacity\.memory\.requestPolicy: needs allowMultipleAllocations/);
  });

  it('puts the fields on the wire, and a changed mode changes what the publisher compares', () => {
    const slice = (mode: ConsumableShares) =>
      toWire(slicesFromDevices(gpus(mode), { nodeName: TEST_NODE })[0] as never, 'node-uid');
    const memory = slice('memory');
    expect(memory.spec.devices?.[0]).toMatchObject({
      allowMultipleAllocations: true,
      capacity: { memory: { requestPolicy: { default: '81559Mi' } } },
    });
    const keys = (['disabled', 'memory', 'unlimited', 4] as const).map((m) => sliceKey(slice(m), TEST_NODE));
    expect(new Set(keys).size).toBe(4);
    // Quantity spelling does not count: 1Mi and 1048576 are one step.
    const respelled = structuredClone(memory) as typeof memory & {
      spec: { devices: { capacity: { memory: { requestPolicy: { validRange: { step: string } } } } }[] };
    };
    const dev = respelled.spec.devices[0];
    if (dev) dev.capacity.memory.requestPolicy.validRange.step = String(MiB);
    expect(sliceKey(respelled, TEST_NODE)).toBe(sliceKey(memory, TEST_NODE));
  });

  it('says what a disabled DRAConsumableCapacity gate costs', () => {
    expect(gateEffect('DRAConsumableCapacity')).toMatch(/--consumable-shares has no effect/);
    expect(gateEffect('NoSuchGate')).toBeUndefined();
  });
});

/** A share of gpu-0 as the scheduler records it. */
function share(shareID: string, memory: string, request = 'gpu'): Partial<DeviceRequestAllocationResult> {
  return { request, device: 'gpu-0', shareID, consumedCapacity: { memory } };
}

describe('planning a share', () => {
  const devices = indexInventory(testInventory());
  const plan = (uid: string, results: Partial<DeviceRequestAllocationResult>[]) =>
    planClaim({
      claimUid: uid,
      driverName: TEST_DRIVER,
      poolName: TEST_NODE,
      claim: testClaim({ uid, devices: results }),
      devices,
    });

  it('carries the share ID and the consumed memory in bytes', () => {
    const [p] = plan('a', [share('2f6c1a9e-0d1b-4c57-9e0a-7a1b2c3d4e5f', '20Gi')]);
    expect(p).toMatchObject({
      deviceName: 'gpu-0',
      shareId: '2f6c1a9e-0d1b-4c57-9e0a-7a1b2c3d4e5f',
      consumedMemoryBytes: 20 * GiB,
    });
    expect(plan('b', [share('s', '21474836480')])[0]?.consumedMemoryBytes).toBe(20 * GiB);
    expect(plan('c', [{ device: 'gpu-0' }])[0]).not.toHaveProperty('consumedMemoryBytes');
  });

  it('refuses a consumed memory that is not a whole number of bytes, naming the field', () => {
    expect(() => plan('d', [{ device: 'gpu-0' }, share('s', '1.5')])).toThrow(
      expect.objectContaining({
        code: 'CLAIM_ALLOCATION_INVALID',
        message: expect.stringContaining('results[1].consumedCapacity.memory: "1.5"') as unknown,
      }),
    );
  });
});

describe('an MPS config on a share', () => {
  it('may not pin more memory than the share holds', () => {
    const mps = (limit: string) =>
      opaque({
        apiVersion: 'gpu.dra.dev/v1alpha1',
        kind: 'GpuConfig',
        sharing: { strategy: 'MPS', mps: { defaultPinnedDeviceMemoryLimit: limit } },
      });
    const plan = (limit: string) =>
      planClaim({
        claimUid: 'm',
        driverName: TEST_DRIVER,
        poolName: TEST_NODE,
        claim: testClaim({ uid: 'm', devices: [share('s', '20Gi')], config: [mps(limit)] }),
        devices: indexInventory(testInventory()),
      });
    expect(plan('20Gi')[0]?.sharing).toMatchObject({ strategy: 'MPS' });
    expect(() => plan('21Gi')).toThrow(
      /sharing\.mps\.defaultPinnedDeviceMemoryLimit: 21Gi is more than the memory of the device it limits: the 20480 MiB share of GPU-/,
    );
  });
});

describe('conflicts between shares', () => {
  const held = (d: Partial<HeldDevice>): HeldDevice => ({ deviceName: 'gpu-0', adminAccess: false, ...d });
  const holding = (...devices: HeldDevice[]): ClaimHolding => ({ namespace: 'ns', name: 'c', devices });

  it('two shares of one device coexist; a share next to a whole-device use does not', () => {
    const a = held({ shareId: 'a', consumedMemoryBytes: 20 * GiB });
    const b = held({ shareId: 'b', consumedMemoryBytes: 20 * GiB });
    expect(sharesMayCoexist(a, b)).toBe(true);
    expect(sharesMayCoexist(a, held({}))).toBe(false);
    expect(sharesMayCoexist(a, held({ deviceName: 'gpu-1', shareId: 'c' }))).toBe(false);
    expect(findConflict({ x: holding(a) }, 'y', [b])).toBeUndefined();
    expect(findConflict({ x: holding(a) }, 'y', [held({})])).toMatchObject({ holderUid: 'x' });
    expect(findConflict({ x: holding(held({})) }, 'y', [b])).toMatchObject({ holderUid: 'x' });
    // A share next to a MIG device of its GPU is a whole-GPU overlap, as before.
    expect(
      findConflict({ x: holding(a) }, 'y', [held({ deviceName: 'gpu-0-mig-1g10gb-19-0', shareId: 'm' })]),
    ).toMatchObject({ held: 'gpu-0' });
  });

  it('shares whose sharing configs name different strategies do not coexist', () => {
    const ts = held({ shareId: 'a', sharing: { strategy: 'TimeSlicing' } });
    expect(sharesMayCoexist(ts, held({ shareId: 'b', sharing: { strategy: 'MPS' } }))).toBe(false);
    expect(sharesMayCoexist(ts, held({ shareId: 'b', sharing: { strategy: 'TimeSlicing' } }))).toBe(true);
    expect(sharesMayCoexist(ts, held({ shareId: 'b' }))).toBe(true);
  });

  it('finds shares that would hold more memory than the GPU has, with every holder', () => {
    const capacity = (d: string): number | undefined => (d === 'gpu-0' ? H100_BYTES : undefined);
    const claims = {
      c2: holding(held({ shareId: 's2', consumedMemoryBytes: 20 * GiB })),
      c1: holding(held({ shareId: 's1', consumedMemoryBytes: 20 * GiB })),
      c3: holding(held({ shareId: 's3', consumedMemoryBytes: 20 * GiB })),
      other: holding(held({ deviceName: 'gpu-1', shareId: 'o', consumedMemoryBytes: 60 * GiB })),
    };
    // 60Gi held + 19Gi fits 81559Mi; 60Gi + 30Gi does not.
    const want19 = [held({ shareId: 'n', consumedMemoryBytes: 19 * GiB })];
    const want30 = [held({ shareId: 'n', consumedMemoryBytes: 30 * GiB })];
    expect(findMemoryOvercommit(claims, 'new', want19, capacity)).toBeUndefined();
    const over = findMemoryOvercommit(claims, 'new', want30, capacity);
    expect(over).toMatchObject({ device: 'gpu-0', capacityBytes: H100_BYTES, wantedBytes: 30 * GiB });
    expect(over?.holders.map((h) => [h.uid, h.bytes])).toEqual([
      ['c1', 20 * GiB],
      ['c2', 20 * GiB],
      ['c3', 20 * GiB],
    ]);
    // The claim's own record does not count twice; an unknown capacity is not checked.
    expect(findMemoryOvercommit({ new: holding(...want30) }, 'new', want30, capacity)).toBeUndefined();
    expect(findMemoryOvercommit(claims, 'new', want30, () => undefined)).toBeUndefined();
    // Two shares of one claim add up.
    const twoShares = [...want30, held({ shareId: 'n2', consumedMemoryBytes: 60 * GiB })];
    expect(findMemoryOvercommit({}, 'new', twoShares, capacity)?.wantedBytes).toBe(90 * GiB);
  });
});

describe('a share in CDI', () => {
  const UID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
  const S1 = '3F2A9C1E-77aa-4d1b-9e0a-000000000001';
  const S2 = '8d00b7c4-1111-4d1b-9e0a-000000000002';
  const build = (devices: Parameters<typeof buildClaimCdiSpec>[0]['devices']) =>
    buildClaimCdiSpec({
      driverName: TEST_DRIVER,
      claimUid: UID,
      devices,
      hostPaths: { devRoot: '/host/dev', driverRoot: '/' },
      driverFiles: { libraries: [], binaries: [], firmware: [] },
      driverVersion: TEST_DRIVER_VERSION,
    });

  it('gets a CDI device of its own, named by its share ID, with its memory limit', () => {
    const built = build([
      { deviceName: 'gpu-0', device: testGpu(0), shareId: S1, consumedMemoryBytes: 20 * GiB },
    ]);
    const name = `${UID}-gpu-0-share-3f2a9c1e`;
    expect(built.spec.devices).toEqual([
      {
        name,
        containerEdits: {
          env: [`GPU_DRA_DEVICE_GPU_0=${testGpu(0).uuid}`, `GPU_DRA_MEMORY_LIMIT_GPU_0=${String(20 * GiB)}`],
          deviceNodes: [{ path: '/dev/nvidia0', hostPath: '/host/dev/nvidia0' }],
        },
      },
    ]);
    expect(built.cdiIds.get(claimDeviceKey({ deviceName: 'gpu-0', shareId: S1 }))).toBe(
      `k8s.${TEST_DRIVER}/claim=${name}`,
    );
    expect(shareSuffix('--AB_cd-12345678')).toBe('-share-abcd1234');
  });

  it('two shares of one device in one claim stay two CDI devices, even when their IDs begin alike', () => {
    const two = build([
      { deviceName: 'gpu-0', device: testGpu(0), shareId: S2, consumedMemoryBytes: GiB },
      { deviceName: 'gpu-0', device: testGpu(0), shareId: S1, consumedMemoryBytes: 2 * GiB },
      { deviceName: 'gpu-1', device: testGpu(1) },
    ]);
    expect(two.spec.devices.map((d) => d.name)).toEqual([
      `${UID}-gpu-0-share-3f2a9c1e`,
      `${UID}-gpu-0-share-8d00b7c4`,
      `${UID}-gpu-1`,
    ]);
    expect(two.cdiIds.size).toBe(3);
    const alike = build([
      { deviceName: 'gpu-0', device: testGpu(0), shareId: '3f2a9c1e-0000-0000-0000-00000000000b' },
      { deviceName: 'gpu-0', device: testGpu(0), shareId: '3f2a9c1e-0000-0000-0000-00000000000a' },
    ]);
    expect(alike.spec.devices.map((d) => d.name)).toEqual([
      `${UID}-gpu-0-share-3f2a9c1e`,
      `${UID}-gpu-0-share-${'3f2a9c1e-0000-0000-0000-00000000000b'.replaceAll('-', '')}`,
    ]);
    // The same share listed twice is one CDI device, as a device is.
    expect(
      build([
        { deviceName: 'gpu-0', device: testGpu(0), shareId: S1 },
        { deviceName: 'gpu-0', device: testGpu(0), shareId: S1 },
      ]).spec.devices,
    ).toHaveLength(1);
  });

  it('a share ID without letters or digits is refused', () => {
    expect(() => build([{ deviceName: 'gpu-0', device: testGpu(0), shareId: '----' }])).toThrow(
      expect.objectContaining({ code: 'CDI_SPEC_INVALID' }),
    );
  });
});

describe('preparing shares of one GPU', () => {
  let host: TestHost;
  let getter: MemoryClaimGetter;
  let checkpointFile: string;

  beforeEach(() => {
    host = createTestHost();
    getter = new MemoryClaimGetter();
    checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
  });
  afterEach(() => {
    host.cleanup();
  });

  function makeState(): DeviceState {
    return testDeviceState(host, { claims: getter });
  }

  const ref = (uid: string) => ({ uid, namespace: 'default', name: `claim-${uid}` });
  function prepare(state: DeviceState, uid: string, results: Partial<DeviceRequestAllocationResult>[]) {
    getter.set(testClaim({ uid, devices: results }));
    return state.prepare(ref(uid), () => getter.get('default', `claim-${uid}`), log);
  }
  const spec = (uid: string): CdiSpec =>
    JSON.parse(
      fs.readFileSync(path.join(host.cdiRoot, `k8s.gpu.dra.dev-claim_${uid}.json`), 'utf8'),
    ) as CdiSpec;

  it('three 20Gi shares of gpu-0 are prepared side by side; a 30Gi fourth is refused with the sum', async () => {
    const state = makeState();
    await state.recover();
    for (const [i, uid] of ['s1', 's2', 's3'].entries()) {
      const [d] = await prepare(state, uid, [share(`000${String(i)}aaaa-share`, '20Gi')]);
      expect(d).toMatchObject({ deviceName: 'gpu-0', shareId: `000${String(i)}aaaa-share` });
      expect(d?.cdiDeviceIds).toEqual([`k8s.${TEST_DRIVER}/claim=${uid}-gpu-0-share-000${String(i)}aaaa`]);
      expect(spec(uid).devices[0]?.containerEdits.env).toEqual([
        `GPU_DRA_DEVICE_GPU_0=${testGpu(0).uuid}`,
        `GPU_DRA_MEMORY_LIMIT_GPU_0=${String(20 * GiB)}`,
      ]);
    }
    const err = await prepare(state, 's4', [share('0004aaaa', '30Gi')]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DEVICE_IN_USE', claimUid: 's4' });
    expect((err as Error).message).toBe(
      'shares of device gpu-0 would hold 90Gi of its 81559Mi memory: 30Gi for this claim, ' +
        '20Gi for claim default/claim-s1 (s1), 20Gi for claim default/claim-s2 (s2), 20Gi for claim default/claim-s3 (s3)',
    );
    expect(state.recordedClaimUids()).toEqual(['s1', 's2', 's3']);
    // A whole-GPU claim cannot join the shares either.
    await expect(prepare(state, 'whole', [{ device: 'gpu-0' }])).rejects.toMatchObject({
      code: 'DEVICE_IN_USE',
    });
    // The checkpoint keeps each share's memory.
    const recorded = JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as {
      claims: Record<string, { devices: { shareId?: string; consumedMemoryBytes?: number }[] }>;
    };
    expect(recorded.claims['s2']?.devices[0]).toMatchObject({
      shareId: '0001aaaa-share',
      consumedMemoryBytes: 20 * GiB,
    });
  });

  it('a stale holder of the memory is released before the prepare is refused', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'old', [share('0000aaaa', '60Gi')]);
    await prepare(state, 'live', [share('0001aaaa', '10Gi')]);
    // The scheduler freed old's share (its claim was deleted) and gave the memory to a new one.
    getter.delete('default', 'claim-old');
    const [d] = await prepare(state, 'new', [share('0002aaaa', '60Gi')]);
    expect(d?.shareId).toBe('0002aaaa');
    expect(state.recordedClaimUids()).toEqual(['live', 'new']);
  });

  it('answers a repeated prepare from the checkpoint with the same share and CDI ids, share_id on v1 only', async () => {
    const state = makeState();
    await state.recover();
    const service = new DraService({ state, claims: getter, logger: log });
    const shareID = '5a5a5a5a-0000-4000-8000-000000000001';
    getter.set(testClaim({ uid: 'rep', devices: [share(shareID, '20Gi')] }));
    const first = await service.prepare({ claims: [ref('rep')] }, log, 'v1');
    // The claim is gone from the API: a repeat must come from the checkpoint alone.
    getter.delete('default', 'claim-rep');
    const again = await service.prepare({ claims: [ref('rep')] }, log, 'v1');
    const device = {
      request_names: ['gpu'],
      pool_name: TEST_NODE,
      device_name: 'gpu-0',
      cdi_device_ids: [`k8s.${TEST_DRIVER}/claim=rep-gpu-0-share-5a5a5a5a`],
      share_id: shareID,
    };
    expect(first.claims['rep']).toEqual({ error: '', devices: [device] });
    expect(again).toEqual(first);
    const v1beta1Device = Object.fromEntries(Object.entries(device).filter(([k]) => k !== 'share_id'));
    expect((await service.prepare({ claims: [ref('rep')] }, log, 'v1beta1')).claims['rep']?.devices).toEqual([
      v1beta1Device,
    ]);
    // After a reboot the spec is rebuilt under the same names, with the same limit.
    const before = spec('rep');
    host.setBootId('99999999-2222-3333-4444-555555555555');
    fs.rmSync(path.join(host.cdiRoot, `k8s.gpu.dra.dev-claim_rep.json`));
    expect((await makeState().recover()).rebuilt).toEqual(['rep']);
    expect(spec('rep').devices).toEqual(before.devices);
  });
});
