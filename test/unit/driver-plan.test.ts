import { describe, expect, it } from 'vitest';
import { devicesOverlap, findConflict, mayShare } from '../../src/driver/conflicts.js';
import { planClaim } from '../../src/driver/plan.js';
import { indexInventory } from '../../src/driver/deviceNames.js';
import { opaque, testClaim, testInventory, TEST_DRIVER, TEST_NODE } from '../support/driverFixtures.js';

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
    for (const limit of ['99999999999999999999999999Ei', '1Ei', '100Ti'])
      expect(() => plan(testClaim({ uid: 'u1', devices: ['gpu-0'], config: [mps(limit)] })), limit).toThrow(
        /sharing\.mps\.defaultPinnedDeviceMemoryLimit: .* is more than the \d+ MiB of memory/,
      );
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

  it('mayShare: admin access on either side, or the same sharing strategy on both', () => {
    const none = { adminAccess: false };
    expect(mayShare(none, none)).toBe(false);
    expect(mayShare({ adminAccess: true }, none)).toBe(true);
    expect(mayShare(none, { adminAccess: true })).toBe(true);
    expect(
      mayShare(
        { adminAccess: false, sharing: { strategy: 'MPS' } },
        { adminAccess: false, sharing: { strategy: 'MPS' } },
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
