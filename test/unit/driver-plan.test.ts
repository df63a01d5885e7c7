import { describe, expect, it } from 'vitest';
import { devicesOverlap, findConflict, mayShare } from '../../src/driver/conflicts.js';
import { planClaim } from '../../src/driver/plan.js';
import { indexInventory } from '../../src/driver/deviceNames.js';
import { mpsPinnedLimitsMiB, OpaqueConfigError } from '../../src/driver/opaqueConfig.js';
import {
  opaque,
  testClaim,
  testGpu,
  testInventory,
  TEST_DRIVER,
  TEST_NODE,
} from '../support/driverFixtures.js';

const devices = indexInventory(testInventory());
const plan = (claim: ReturnType<typeof testClaim>): ReturnType<typeof planClaim> =>
  planClaim({ claimUid: 'u1', driverName: TEST_DRIVER, poolName: TEST_NODE, claim, devices });

describe('device names', () => {
  it('indexes full GPUs and MIG devices by their published names', () => {
    expect([...devices.keys()]).toEqual(['gpu-0', 'gpu-1', 'gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']);
  });
});

describe('planClaim', () => {
  it('takes only our driver and pool, strips subrequests, maps devices', () => {
    const claim = testClaim({
      uid: 'u1',
      devices: [
        'gpus/big:gpu-0',
        { device: 'x', driver: 'other.example.com', pool: 'p' },
        'mig:gpu-1-mig-1g10gb-19-0',
      ],
    });
    const planned = plan(claim);
    expect(planned.map((p) => [p.requestNames, p.deviceName, p.device.kind])).toEqual([
      [['gpus'], 'gpu-0', 'gpu'],
      [['mig'], 'gpu-1-mig-1g10gb-19-0', 'mig'],
    ]);
  });

  it('fails for an unknown device, naming it', () => {
    expect(() => plan(testClaim({ uid: 'u1', devices: ['gpu-9'] }))).toThrow(
      /gpu-9 \(request gpu\) does not exist/,
    );
  });

  it('fails when the claim has none of our devices (nothing to inject, no empty CDI spec)', () => {
    expect(() =>
      plan(testClaim({ uid: 'u1', devices: [{ device: 'x', driver: 'other.example.com', pool: 'p' }] })),
    ).toThrow(/no devices of driver gpu\.dra\.dev \(allocated from other\.example\.com\)/);
  });

  it("fails when our devices are in another node's pool", () => {
    expect(() => plan(testClaim({ uid: 'u1', devices: [{ device: 'gpu-0', pool: 'node-b' }] }))).toThrow(
      /pool\(s\) node-b/,
    );
  });

  it('attaches sharing and admin access', () => {
    const planned = plan(
      testClaim({
        uid: 'u1',
        devices: [{ device: 'gpu-0', adminAccess: true }],
        config: [
          opaque({ apiVersion: 'gpu.dra.dev/v1alpha1', kind: 'GpuConfig', sharing: { strategy: 'MPS' } }),
        ],
      }),
    );
    expect(planned[0]).toMatchObject({ adminAccess: true, sharing: { strategy: 'MPS' } });
  });

  const V = 'gpu.dra.dev/v1alpha1';

  it("a claim's own config that fits none of its devices is an error, a class's is not", () => {
    const mig = { apiVersion: V, kind: 'MigDeviceConfig', sharing: { strategy: 'TimeSlicing' } };
    expect(() => plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [opaque(mig)] }))).toThrow(
      /config\[0\]\.opaque\.parameters\.kind: MigDeviceConfig applies to no device of this claim \(it got full GPUs\); use GpuConfig/,
    );
    expect(
      plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [opaque(mig, undefined, 'FromClass')] })),
    ).toHaveLength(1);
  });

  it('an MPS pinned-memory limit must fit the device: 10Gi does, 99999999999999999999999999Ei does not', () => {
    const mps = (limit: string): ReturnType<typeof opaque> =>
      opaque({
        apiVersion: V,
        kind: 'GpuConfig',
        sharing: { strategy: 'MPS', mps: { defaultPinnedDeviceMemoryLimit: limit } },
      });
    expect(plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [mps('10Gi')] }))[0]).toMatchObject({
      sharing: { mps: { defaultPinnedDeviceMemoryLimit: '10Gi' } },
    });
    for (const limit of ['1Ei', '100Ti'])
      expect(() => plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [mps(limit)] })), limit).toThrow(
        /config\[0\]\.opaque\.parameters\.sharing\.mps\.defaultPinnedDeviceMemoryLimit: .* is more than the memory of the device it limits: 81559 MiB on GPU-/,
      );
    // Past int64 bytes, whatever the device: refused by validation already.
    expect(() =>
      plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [mps('99999999999999999999999999Ei')] })),
    ).toThrow(
      /config\[0\]\.opaque\.parameters\.sharing\.mps\.defaultPinnedDeviceMemoryLimit: 99999999999999999999999999Ei is more than any GPU's memory/,
    );
  });
});

describe('planClaim: MPS settings against the devices each config applies to', () => {
  const N = 'resource.nvidia.com/v1beta1';
  // gpu-0, gpu-2: H100 (9.0, 81559 MiB); gpu-3: a Pascal card (6.1, 16 GiB); gpu-1: MIG mode.
  const inventory = testInventory();
  const nodeDevices = indexInventory({
    gpus: [
      ...inventory.gpus,
      testGpu(2),
      testGpu(3, { cudaComputeCapability: '6.1', memoryBytes: 16 * 2 ** 30, architecture: 'Pascal' }),
    ],
  });
  const planOn = (claim: ReturnType<typeof testClaim>): ReturnType<typeof planClaim> =>
    planClaim({ claimUid: 'u1', driverName: TEST_DRIVER, poolName: TEST_NODE, claim, devices: nodeDevices });
  const uuid = (name: string): string => nodeDevices.get(name)?.uuid ?? '';
  const mps = (mpsConfig: unknown, requests?: string[], kind = 'GpuConfig'): ReturnType<typeof opaque> =>
    opaque({ apiVersion: N, kind, sharing: { strategy: 'MPS', mpsConfig } }, requests);
  const issuesOf = (fn: () => unknown): string[] => {
    try {
      fn();
    } catch (err) {
      if (err instanceof OpaqueConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
      throw err;
    }
    return [];
  };
  const F = 'config[0].opaque.parameters.sharing.mpsConfig';

  it('carries the config index, and per-device limits resolve by index or UUID within its devices', () => {
    const planned = planOn(
      testClaim({
        uid: 'u1',
        devices: ['gpu-0', 'gpu-2', 'gpu-3'],
        config: [
          mps({
            defaultPinnedDeviceMemoryLimit: '10Gi',
            defaultPerDevicePinnedMemoryLimit: { '1': '20Gi', [uuid('gpu-3')]: '4Gi' },
          }),
        ],
      }),
    );
    expect(planned.map((p) => p.configIndex)).toEqual([0, 0, 0]);
    expect(
      mpsPinnedLimitsMiB(
        planned[0]?.sharing?.mps,
        planned.map((p) => ({ uuid: p.device.uuid ?? '' })),
      ),
    ).toEqual({ [uuid('gpu-0')]: 10240, [uuid('gpu-2')]: 20480, [uuid('gpu-3')]: 4096 });
  });

  it('an index counts only the devices of its own config, not the whole claim', () => {
    const claim = (key: string): ReturnType<typeof testClaim> =>
      testClaim({
        uid: 'u1',
        devices: ['a:gpu-0', 'b:gpu-2'],
        config: [mps({ defaultPerDevicePinnedMemoryLimit: { [key]: '1Gi' } }, ['b']), mps({}, ['a'])],
      });
    expect(planOn(claim('0')).map((p) => p.configIndex)).toEqual([1, 0]);
    expect(issuesOf(() => planOn(claim('1')))).toEqual([
      `${F}.defaultPerDevicePinnedMemoryLimit["1"]: device index 1 is out of range: this config applies to 1 device(s) of the claim, index 0..0 in allocation order (${uuid('gpu-2')})`,
    ]);
    expect(issuesOf(() => planOn(claim(uuid('gpu-0'))))).toEqual([
      `${F}.defaultPerDevicePinnedMemoryLimit["${uuid('gpu-0')}"]: ${uuid('gpu-0')} is not a device this config applies to in the claim (${uuid('gpu-2')})`,
    ]);
  });

  it('two keys for one device are an error, not a coin toss', () => {
    const claim = testClaim({
      uid: 'u1',
      devices: ['gpu-0', 'gpu-2'],
      config: [mps({ defaultPerDevicePinnedMemoryLimit: { '1': '1Gi', [uuid('gpu-2')]: '2Gi' } })],
    });
    expect(issuesOf(() => planOn(claim))).toEqual([
      `${F}.defaultPerDevicePinnedMemoryLimit["${uuid('gpu-2')}"]: names the same device as key "1" (${uuid('gpu-2')}); give one`,
    ]);
  });

  it('every pinned limit must fit the device it limits: one issue per limit, naming each device', () => {
    const claim = testClaim({
      uid: 'u1',
      devices: ['gpu-0', 'gpu-2', 'gpu-3'],
      config: [
        mps({
          defaultPinnedDeviceMemoryLimit: '20Gi',
          defaultPerDevicePinnedMemoryLimit: { '0': '79Gi', '1': '100Gi' },
        }),
      ],
    });
    expect(issuesOf(() => planOn(claim))).toEqual([
      `${F}.defaultPerDevicePinnedMemoryLimit["1"]: 100Gi is more than the memory of the device it limits: 81559 MiB on ${uuid('gpu-2')}`,
      `${F}.defaultPinnedDeviceMemoryLimit: 20Gi is more than the memory of the device it limits: 16384 MiB on ${uuid('gpu-3')}`,
    ]);
    const all = testClaim({
      uid: 'u1',
      devices: ['gpu-0', 'gpu-2'],
      config: [mps({ defaultPinnedDeviceMemoryLimit: '80Gi' })],
    });
    expect(issuesOf(() => planOn(all))).toEqual([
      `${F}.defaultPinnedDeviceMemoryLimit: 80Gi is more than the memory of the device it limits: 81559 MiB on ${uuid('gpu-0')}, 81559 MiB on ${uuid('gpu-2')}`,
    ]);
  });

  it('checks MIG devices against their own memory and UUIDs, in our format too', () => {
    const mig = 'gpu-1-mig-1g10gb-19-1';
    const ours = (mpsSettings: unknown): ReturnType<typeof opaque> =>
      opaque({
        apiVersion: 'gpu.dra.dev/v1alpha1',
        kind: 'MigDeviceConfig',
        sharing: { strategy: 'MPS', mps: mpsSettings },
      });
    expect(
      planOn(
        testClaim({
          uid: 'u1',
          devices: [mig],
          config: [ours({ defaultPerDevicePinnedMemoryLimit: { [uuid(mig)]: '9Gi' }, multiUser: true })],
        }),
      ),
    ).toHaveLength(1);
    expect(
      issuesOf(() =>
        planOn(
          testClaim({
            uid: 'u1',
            devices: [mig],
            config: [ours({ defaultPerDevicePinnedMemoryLimit: { '0': '10Gi' } })],
          }),
        ),
      ),
    ).toEqual([
      `config[0].opaque.parameters.sharing.mps.defaultPerDevicePinnedMemoryLimit["0"]: 10Gi is more than the memory of the device it limits: 9728 MiB on ${uuid(mig)}`,
    ]);
  });

  it('multiUser needs compute capability 7.0 on every device it applies to', () => {
    const claim = (devices: string[]): ReturnType<typeof testClaim> =>
      testClaim({ uid: 'u1', devices, config: [mps({ multiUser: true })] });
    expect(planOn(claim(['gpu-0', 'gpu-2']))[0]).toMatchObject({ sharing: { mps: { multiUser: true } } });
    expect(issuesOf(() => planOn(claim(['gpu-0', 'gpu-3'])))).toEqual([
      `${F}.multiUser: needs compute capability 7.0 (Volta) or newer on every device it applies to; ${uuid('gpu-3')} has 6.1`,
    ]);
    const off = testClaim({ uid: 'u1', devices: ['gpu-3'], config: [mps({ multiUser: false })] });
    expect(planOn(off)).toHaveLength(1);
  });

  it('a MIG device with TimeSlicing gets no interval; a full GPU gets Default', () => {
    const ts = (kind: string): ReturnType<typeof opaque> =>
      opaque({ apiVersion: N, kind, sharing: { strategy: 'TimeSlicing' } });
    const planned = planOn(
      testClaim({
        uid: 'u1',
        devices: ['gpu-0', 'mig:gpu-1-mig-1g10gb-19-0'],
        config: [ts('GpuConfig'), ts('MigDeviceConfig')],
      }),
    );
    expect(planned.map((p) => [p.sharing, p.configIndex])).toEqual([
      [{ strategy: 'TimeSlicing', interval: 'Default' }, 0],
      [{ strategy: 'TimeSlicing' }, 1],
    ]);
  });
});

describe('overlap rules', () => {
  it('devicesOverlap: same device, or full GPU vs its MIG devices', () => {
    expect(devicesOverlap('gpu-0', 'gpu-0')).toBe(true);
    expect(devicesOverlap('gpu-1', 'gpu-1-mig-1g10gb-19-0')).toBe(true);
    expect(devicesOverlap('gpu-1-mig-1g10gb-19-0', 'gpu-1')).toBe(true);
    expect(devicesOverlap('gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1')).toBe(false);
    expect(devicesOverlap('gpu-10', 'gpu-1-mig-1g10gb-19-0')).toBe(false);
  });

  it('mayShare: admin access on either side, or time-slicing at one interval on both; never MPS across claims', () => {
    const none = { adminAccess: false };
    expect(mayShare(none, none)).toBe(false);
    expect(mayShare({ adminAccess: true }, none)).toBe(true);
    expect(mayShare(none, { adminAccess: true })).toBe(true);
    expect(
      mayShare(
        { adminAccess: false, sharing: { strategy: 'MPS' } },
        { adminAccess: false, sharing: { strategy: 'MPS' } },
      ),
    ).toBe(false);
    expect(
      mayShare(
        { adminAccess: false, sharing: { strategy: 'TimeSlicing', interval: 'Short' } },
        { adminAccess: false, sharing: { strategy: 'TimeSlicing', interval: 'Short' } },
      ),
    ).toBe(true);
    expect(
      mayShare(
        { adminAccess: false, sharing: { strategy: 'MPS' } },
        { adminAccess: false, sharing: { strategy: 'TimeSlicing' } },
      ),
    ).toBe(false);
    expect(mayShare({ adminAccess: false, sharing: { strategy: 'MPS' } }, none)).toBe(false);
  });

  it('findConflict names the first other claim holding overlapping hardware, ignoring the claim itself', () => {
    const holding = (...names: string[]) => ({
      namespace: 'ns',
      name: 'n',
      devices: names.map((deviceName) => ({ deviceName, adminAccess: false })),
    });
    const claims = { b: holding('gpu-1-mig-1g10gb-19-0'), a: holding('gpu-0'), self: holding('gpu-1') };
    expect(findConflict(claims, 'self', [{ deviceName: 'gpu-1', adminAccess: false }])).toMatchObject({
      wanted: 'gpu-1',
      held: 'gpu-1-mig-1g10gb-19-0',
      holderUid: 'b',
    });
    expect(findConflict(claims, 'self', [{ deviceName: 'gpu-1-mig-1g10gb-19-1', adminAccess: false }])).toBe(
      undefined,
    );
    expect(findConflict(claims, 'self', [{ deviceName: 'gpu-0', adminAccess: true }])).toBe(undefined);
  });
});
