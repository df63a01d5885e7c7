// GPU health after start-up: the pure merge of a re-discovery with what was published
// (src/resourceslice/gpuHealth.ts) and the monitor that runs it (src/node/deviceMonitor.ts).
import { describe, expect, it } from 'vitest';
import { DeviceMonitor } from '../../src/node/deviceMonitor.js';
import type { GpuFailure, NodeInventory } from '../../src/nvml/types.js';
import {
  carryUnhealthyGpus,
  devicesForXid,
  healthTaint,
  mergeTaints,
  xidTaint,
  type HealthView,
} from '../../src/resourceslice/gpuHealth.js';
import { buildDevices } from '../../src/resourceslice/model.js';
import { silentLogger } from '../../src/util/log.js';
import {
  TEST_DRIVER,
  testGpu,
  testInventory,
  testMig,
  withFailure,
  discoverFrom,
} from '../support/driverFixtures.js';

const LOST: GpuFailure = { index: 1, error: 'nvmlDeviceGetUUID failed: GPU is lost', code: 'GPU_IS_LOST' };

describe('carryUnhealthyGpus', () => {
  it('keeps a lost GPU (here in MIG mode) with its last-known devices, each tainted gpu-lost NoSchedule', () => {
    const before = testInventory();
    const view = carryUnhealthyGpus(before, withFailure(before, LOST), TEST_DRIVER);
    expect(view.inventory.gpus).toEqual(before.gpus);
    expect(view.inventory.failures).toEqual([]);
    expect(view.unhealthy.map((u) => [u.gpu.minor, u.devices])).toEqual([
      [1, ['gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']],
    ]);
    expect(view.taints).toEqual({
      'gpu-1-mig-1g10gb-19-0': [{ key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' }],
      'gpu-1-mig-1g10gb-19-1': [{ key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' }],
    });
    // The model publishes those taints (and so the 64-device limit applies to the pool).
    const model = buildDevices(view.inventory, { taints: view.taints });
    expect(model.devices.filter((d) => d.taints).map((d) => d.name)).toEqual(Object.keys(view.taints));
    expect(model.warnings).toEqual([]);
  });

  it('stays carried while the GPU stays lost, and is dropped (untainted) when it answers again', () => {
    const healthy = testInventory();
    const first = carryUnhealthyGpus(healthy, withFailure(healthy, LOST), TEST_DRIVER);
    const second = carryUnhealthyGpus(first.inventory, withFailure(healthy, LOST), TEST_DRIVER);
    expect(second).toEqual(first);
    const recovered = carryUnhealthyGpus(second.inventory, healthy, TEST_DRIVER);
    expect(recovered).toEqual({ inventory: healthy, taints: {}, unhealthy: [] });
  });

  it('names other per-GPU errors gpu-unavailable with the NVML code as a label value', () => {
    expect(healthTaint('gpu.nvidia.com', { index: 0, error: 'x', code: 'UNKNOWN' })).toEqual({
      key: 'gpu.nvidia.com/gpu-unavailable',
      value: 'UNKNOWN',
      effect: 'NoSchedule',
    });
    expect(healthTaint(TEST_DRIVER, { index: 0, error: 'x', code: '-bad code!-' }).value).toBe('bad_code');
    expect(healthTaint(TEST_DRIVER, { index: 0, error: 'x' }).value).toBe('unknown');
  });

  it('leaves out what it cannot match safely: a GPU never seen healthy, or a changed GPU count', () => {
    const healthy = testInventory();
    // Failed since start-up: nothing known to publish.
    const fromStart = withFailure(healthy, LOST);
    expect(carryUnhealthyGpus(fromStart, fromStart, TEST_DRIVER).unhealthy).toEqual([]);
    // One GPU more enumerated than before: NVML indexes may have shifted.
    const grown = { ...withFailure(healthy, LOST), gpus: [testGpu(0), testGpu(2, { index: 2 })] };
    expect(carryUnhealthyGpus(healthy, grown, TEST_DRIVER).unhealthy).toEqual([]);
    // The failure's index now belongs to a GPU that is healthy under another index.
    const moved = { ...healthy, gpus: [testGpu(1, { index: 0 })], failures: [{ ...LOST, index: 1 }] };
    expect(carryUnhealthyGpus(healthy, moved, TEST_DRIVER).unhealthy).toEqual([]);
  });
});

describe('XID taints', () => {
  it('taints NoSchedule, and not at all for an application XID', () => {
    expect(xidTaint(TEST_DRIVER, 48)).toEqual({ key: 'gpu.dra.dev/xid', value: '48', effect: 'NoSchedule' });
    expect(xidTaint(TEST_DRIVER, 13)).toBeUndefined();
  });

  it('finds the devices an XID concerns: the GPU, the scoped MIG device, or all of a MIG GPU', () => {
    const inv = testInventory();
    const [full, mig] = inv.gpus;
    expect(devicesForXid(inv, full?.uuid ?? '')).toEqual(['gpu-0']);
    expect(devicesForXid(inv, mig?.uuid ?? '', { gpuInstanceId: 1, computeInstanceId: 0 })).toEqual([
      'gpu-1-mig-1g10gb-19-1',
    ]);
    expect(devicesForXid(inv, mig?.uuid ?? '')).toEqual(['gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']);
    // A GPU instance that no longer exists: the whole GPU is concerned.
    expect(devicesForXid(inv, mig?.uuid ?? '', { gpuInstanceId: 9 })).toHaveLength(2);
    expect(devicesForXid(inv, 'GPU-unknown')).toEqual([]);
  });

  it('merges taint maps per device, one taint per key', () => {
    const lost = { key: 'd/gpu-lost', effect: 'NoSchedule' } as const;
    const xid = { key: 'd/xid', value: '48', effect: 'NoSchedule' } as const;
    const xid2 = { ...xid, value: '79' };
    expect(mergeTaints({ a: [lost] }, { a: [xid], b: [xid] }, { a: [xid2] })).toEqual({
      a: [lost, xid2],
      b: [xid],
    });
  });
});

describe('DeviceMonitor', () => {
  function monitor(discoveries: (NodeInventory | Error)[], minRefreshIntervalMs = 0) {
    const changes: HealthView[] = [];
    const checks: string[] = [];
    const m = new DeviceMonitor({
      initial: testInventory(),
      discover: discoverFrom(discoveries),
      driverName: TEST_DRIVER,
      intervalMs: 0,
      minRefreshIntervalMs,
      onChange: (v) => changes.push(v),
      onCheck: (r) => checks.push(r),
      logger: silentLogger(),
    });
    return { m, changes, checks };
  }

  it('reports a MIG re-layout once, and nothing while the devices stay the same', () => {
    const inv = testInventory();
    const relayout: NodeInventory = {
      ...inv,
      gpus: [
        inv.gpus[0] ?? testGpu(0),
        testGpu(1, { migMode: { current: true, pending: true }, migDevices: [testMig(1, 0)] }),
      ],
    };
    const { m, changes, checks } = monitor([testInventory(), relayout, relayout]);
    expect([m.check(), m.check(), m.check()]).toEqual([false, true, false]);
    expect(checks).toEqual(['unchanged', 'changed', 'unchanged']);
    expect(changes).toHaveLength(1);
    expect(m.current()).toEqual(relayout);
    expect(buildDevices(m.current()).devices.map((d) => d.name)).toEqual(['gpu-0', 'gpu-1-mig-1g10gb-19-0']);
  });

  it('taints a lost GPU, then untaints it when it recovers', () => {
    const healthy = testInventory();
    const { m, changes } = monitor([withFailure(healthy, LOST), withFailure(healthy, LOST), healthy]);
    m.check();
    expect(Object.keys(m.taints())).toHaveLength(2);
    expect(m.current().gpus).toHaveLength(2);
    m.check();
    m.check();
    expect(m.taints()).toEqual({});
    expect(changes.map((c) => c.unhealthy.length)).toEqual([1, 0]);
  });

  it('keeps the published devices when discovery fails or enumerates no GPU', () => {
    const empty: NodeInventory = { ...testInventory(), gpus: [], failures: [] };
    const { m, changes, checks } = monitor([new Error('nvmlInit failed: Driver Not Loaded'), empty]);
    expect([m.check(), m.check()]).toEqual([false, false]);
    expect(checks).toEqual(['failed', 'failed']);
    expect(changes).toEqual([]);
    expect(m.current()).toEqual(testInventory());
  });

  it('rate-limits on-demand refreshes (a claim naming an unknown device)', async () => {
    const inv = testInventory();
    const grown: NodeInventory = { ...inv, gpus: [...inv.gpus, testGpu(2)] };
    const { m, checks } = monitor([grown, grown], 60_000);
    expect(await m.refresh()).toEqual(inv); // the constructor counts as the last check
    expect(checks).toEqual([]);
    m.check();
    expect((await m.refresh()).gpus).toHaveLength(3);
    expect(checks).toEqual(['changed']);
  });

  it('concurrent refreshes share one re-discovery', async () => {
    const inv = testInventory();
    const grown: NodeInventory = { ...inv, gpus: [...inv.gpus, testGpu(2)] };
    const { m, checks } = monitor([grown, grown, grown], 0);
    const all = await Promise.all([m.refresh(), m.refresh(), m.refresh()]);
    expect(all.map((i) => i.gpus.length)).toEqual([3, 3, 3]);
    expect(checks).toEqual(['changed']);
  });

  it('taints the devices an XID concerns, ignores an application XID, and republishes', () => {
    const { m, changes } = monitor([]);
    const gpu0 = testInventory().gpus[0]?.uuid ?? '';
    m.recordEvent({ kind: 'xid', gpuUuid: gpu0, xid: 13 });
    expect(m.taints()).toEqual({});
    m.recordEvent({ kind: 'xid', gpuUuid: gpu0, xid: 48 });
    expect(m.taints()).toEqual({ 'gpu-0': [{ key: 'gpu.dra.dev/xid', value: '48', effect: 'NoSchedule' }] });
    m.recordEvent({ kind: 'xid', gpuUuid: gpu0, xid: 48 });
    expect(changes).toHaveLength(1);
    expect(changes[0]?.taints).toEqual(m.taints());
  });

  it('re-discovers at once on a MIG configuration change', () => {
    const inv = testInventory();
    const relayout: NodeInventory = { ...inv, gpus: [inv.gpus[0] ?? testGpu(0)] };
    const { m, changes, checks } = monitor([relayout]);
    m.recordEvent({ kind: 'migConfigChange', gpuUuid: inv.gpus[1]?.uuid ?? '' });
    expect(checks).toEqual(['changed']);
    expect(changes[0]?.inventory).toEqual(relayout);
  });

  it('keeps XID taints across re-discoveries and combines them with a lost GPU taint', () => {
    const healthy = testInventory();
    const { m } = monitor([withFailure(healthy, LOST)]);
    const migUuid = healthy.gpus[1]?.uuid ?? '';
    m.recordEvent({ kind: 'xid', gpuUuid: migUuid, xid: 94, gpuInstanceId: 0 });
    m.check();
    expect(m.taints()).toEqual({
      'gpu-1-mig-1g10gb-19-0': [
        { key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' },
        { key: 'gpu.dra.dev/xid', value: '94', effect: 'NoSchedule' },
      ],
      'gpu-1-mig-1g10gb-19-1': [{ key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' }],
    });
  });
  it('clears XID taints by device, a GPU name covering its MIG devices, and a new XID taints again', () => {
    const inv = testInventory();
    const { m, changes } = monitor([withFailure(inv, LOST)]);
    const gpu0 = inv.gpus[0]?.uuid ?? '';
    const gpu1 = inv.gpus[1]?.uuid ?? '';
    m.recordEvent({ kind: 'xid', gpuUuid: gpu0, xid: 48 });
    m.recordEvent({ kind: 'xid', gpuUuid: gpu1, xid: 79 });
    expect(Object.keys(m.xidTaintMap()).sort()).toEqual([
      'gpu-0',
      'gpu-1-mig-1g10gb-19-0',
      'gpu-1-mig-1g10gb-19-1',
    ]);
    // A name with no XID taint clears nothing and republishes nothing.
    const before = changes.length;
    expect(m.clearXidTaints(['gpu-7'])).toEqual([]);
    expect(changes).toHaveLength(before);
    // The GPU's name clears its MIG devices; gpu-0 keeps its taint.
    expect(m.clearXidTaints(['gpu-1'])).toEqual(['gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']);
    expect(m.taints()).toEqual({ 'gpu-0': [{ key: 'gpu.dra.dev/xid', value: '48', effect: 'NoSchedule' }] });
    expect(changes.at(-1)?.taints).toEqual(m.taints());
    // A lost GPU's health taint is not the admin's to clear: it follows discovery.
    m.check();
    m.recordEvent({ kind: 'xid', gpuUuid: gpu1, xid: 79 });
    expect(m.clearXidTaints('all')).toEqual(['gpu-0', 'gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']);
    expect(m.taints()).toEqual({
      'gpu-1-mig-1g10gb-19-0': [{ key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' }],
      'gpu-1-mig-1g10gb-19-1': [{ key: 'gpu.dra.dev/gpu-lost', effect: 'NoSchedule' }],
    });
    // The next XID taints the device again.
    m.recordEvent({ kind: 'xid', gpuUuid: gpu0, xid: 94 });
    expect(m.taints()['gpu-0']).toEqual([{ key: 'gpu.dra.dev/xid', value: '94', effect: 'NoSchedule' }]);
  });
});
