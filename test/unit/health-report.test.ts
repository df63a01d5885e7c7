// Device health for the kubelet (KEP-4680): the pure model from what the device monitor knows
// to one entry per published device (src/resourceslice/healthReport.ts), and the monitor's
// health() / onHealthChange() that feed the stream (src/node/deviceMonitor.ts).
import { describe, expect, it } from 'vitest';
import { DeviceMonitor } from '../../src/node/deviceMonitor.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { carryUnhealthyGpus, publishedDeviceNames } from '../../src/resourceslice/gpuHealth.js';
import {
  describeXid,
  deviceHealth,
  MAX_HEALTH_MESSAGE,
  type DeviceHealthEntry,
  type XidRecord,
} from '../../src/resourceslice/healthReport.js';
import { silentLogger } from '../../src/util/log.js';
import { TEST_DRIVER, testInventory, withFailure, discoverFrom } from '../support/driverFixtures.js';
import { h100Gpu, inventoryFixture, withMig } from '../support/inventoryFixture.js';

const AT = Date.UTC(2026, 6, 30, 10, 0, 0);
const healthy = (inv: NodeInventory) => ({ inventory: inv, taints: {}, unhealthy: [] });
const byDevice = (entries: DeviceHealthEntry[]) => new Map(entries.map((e) => [e.device, e]));

describe('deviceHealth', () => {
  it('reports every published device HEALTHY with no message when nothing is wrong', () => {
    expect(deviceHealth({ view: healthy(testInventory()), xids: {} })).toEqual([
      { device: 'gpu-0', health: 'HEALTHY', message: '' },
      { device: 'gpu-1-mig-1g10gb-19-0', health: 'HEALTHY', message: '' },
      { device: 'gpu-1-mig-1g10gb-19-1', health: 'HEALTHY', message: '' },
    ]);
  });

  it('a GPU off the bus makes all its MIG devices UNHEALTHY, saying so; the other GPU stays HEALTHY', () => {
    const inv = testInventory();
    const lost = { index: 1, error: 'GPU is lost', code: 'GPU_IS_LOST' };
    const view = carryUnhealthyGpus(inv, withFailure(inv, lost), TEST_DRIVER);
    const got = byDevice(deviceHealth({ view, xids: {} }));
    expect(got.get('gpu-0')).toEqual({ device: 'gpu-0', health: 'HEALTHY', message: '' });
    for (const name of ['gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1']) {
      expect(got.get(name)?.health).toBe('UNHEALTHY');
      expect(got.get(name)?.message).toMatch(/^GPU fell off the bus: .*GPU-.*\(minor 1\).*GPU_IS_LOST/);
    }
  });

  it('names the NVML code and error of any other per-GPU failure', () => {
    const inv = testInventory();
    const failure = { index: 0, error: 'nvmlDeviceGetMemoryInfo failed', code: 'UNKNOWN' };
    const view = carryUnhealthyGpus(inv, withFailure(inv, failure), TEST_DRIVER);
    const got = byDevice(deviceHealth({ view, xids: {} })).get('gpu-0');
    expect(got?.health).toBe('UNHEALTHY');
    expect(got?.message).toMatch(/^NVML cannot use GPU .*: UNKNOWN: nvmlDeviceGetMemoryInfo failed$/);
  });

  it('an XID makes only the devices it was recorded for UNHEALTHY, with its number, meaning and scope', () => {
    const inv = testInventory();
    const parent = inv.gpus[1]?.uuid ?? '';
    const xid: XidRecord = { xid: 48, gpuUuid: parent, gpuInstanceId: 1, computeInstanceId: 0, at: AT };
    const got = byDevice(deviceHealth({ view: healthy(inv), xids: { 'gpu-1-mig-1g10gb-19-1': xid } }));
    expect(got.get('gpu-1-mig-1g10gb-19-1')).toEqual({
      device: 'gpu-1-mig-1g10gb-19-1',
      health: 'UNHEALTHY',
      message: `XID 48 (double-bit ECC error: uncorrectable memory error) on GPU instance 1/compute instance 0 of GPU ${parent} at 2026-07-30T10:00:00.000Z; reset the GPU, then clear it with gpu-dra taints clear (or restart the plugin)`,
    });
    expect(got.get('gpu-1-mig-1g10gb-19-0')?.health).toBe('HEALTHY');
    expect(got.get('gpu-0')?.health).toBe('HEALTHY');
  });

  it('describes known XIDs and points at the catalog for others', () => {
    expect(describeXid(79)).toBe('XID 79 (GPU has fallen off the bus)');
    expect(describeXid(94)).toBe('XID 94 (contained ECC error: the affected application was stopped)');
    expect(describeXid(4242)).toBe("XID 4242 (see NVIDIA's XID catalog)");
  });

  it('joins a lost GPU and an XID on the same device into one message', () => {
    const inv = testInventory();
    const lost = { index: 0, error: 'GPU is lost', code: 'GPU_IS_LOST' };
    const view = carryUnhealthyGpus(inv, withFailure(inv, lost), TEST_DRIVER);
    const xid: XidRecord = { xid: 79, gpuUuid: inv.gpus[0]?.uuid ?? '', at: AT };
    const message = byDevice(deviceHealth({ view, xids: { 'gpu-0': xid } })).get('gpu-0')?.message ?? '';
    expect(message).toMatch(/^GPU fell off the bus: .*; XID 79 \(GPU has fallen off the bus\) on GPU GPU-/);
  });

  it('while NVML does not answer: UNKNOWN with the error and since when, known faults stay UNHEALTHY', () => {
    const inv = testInventory();
    const xid: XidRecord = { xid: 48, gpuUuid: inv.gpus[0]?.uuid ?? '', at: AT };
    const got = deviceHealth({
      view: healthy(inv),
      xids: { 'gpu-0': xid },
      discoveryFailure: { error: 'nvmlInit failed: DRIVER_NOT_LOADED', since: AT },
    });
    expect(got.map((e) => [e.device, e.health])).toEqual([
      ['gpu-0', 'UNHEALTHY'],
      ['gpu-1-mig-1g10gb-19-0', 'UNKNOWN'],
      ['gpu-1-mig-1g10gb-19-1', 'UNKNOWN'],
    ]);
    expect(got[1]?.message).toBe(
      'NVML not answering: re-discovery failing since 2026-07-30T10:00:00.000Z (nvmlInit failed: DRIVER_NOT_LOADED); health unknown',
    );
  });

  it('in dynamic MIG mode a GPU-wide fault covers the GPU and every partition', () => {
    const inv: NodeInventory = { ...inventoryFixture('h100'), gpus: [withMig(h100Gpu(0), [])], failures: [] };
    const gpu = inv.gpus[0];
    if (!gpu) throw new Error('fixture has no GPU');
    const names = publishedDeviceNames(gpu, 'dynamic');
    expect(names.length).toBeGreaterThan(2);
    const view = carryUnhealthyGpus(
      inv,
      withFailure(inv, { index: 0, error: 'GPU is lost', code: 'GPU_IS_LOST' }),
      TEST_DRIVER,
      'dynamic',
    );
    const got = deviceHealth({ view, xids: {}, migPartitioning: 'dynamic' });
    expect(got.map((e) => e.device)).toEqual(names);
    expect(new Set(got.map((e) => e.health))).toEqual(new Set(['UNHEALTHY']));
  });

  it('cuts a message to the API limit, marking the cut', () => {
    const inv = testInventory();
    const failure = { index: 0, error: 'x'.repeat(3000), code: 'UNKNOWN' };
    const view = carryUnhealthyGpus(inv, withFailure(inv, failure), TEST_DRIVER);
    const message = byDevice(deviceHealth({ view, xids: {} })).get('gpu-0')?.message ?? '';
    expect(message).toHaveLength(MAX_HEALTH_MESSAGE);
    expect(message.endsWith('x...')).toBe(true);
  });
});

describe('DeviceMonitor health', () => {
  function monitor(discoveries: (NodeInventory | Error)[]) {
    let notified = 0;
    const m = new DeviceMonitor({
      initial: testInventory(),
      discover: discoverFrom(discoveries),
      driverName: TEST_DRIVER,
      intervalMs: 0,
      minRefreshIntervalMs: 0,
      onChange: () => undefined,
      logger: silentLogger(),
    });
    m.onHealthChange(() => notified++);
    return { m, notified: () => notified };
  }
  const healthOf = (m: DeviceMonitor) => new Map(m.health().map((e) => [e.device, e.health]));

  it('tells listeners of an XID at once, and not of an application XID', () => {
    const inv = testInventory();
    const { m, notified } = monitor([]);
    m.recordEvent({ kind: 'xid', gpuUuid: inv.gpus[0]?.uuid ?? '', xid: 13 });
    expect(notified()).toBe(0);
    m.recordEvent({ kind: 'xid', gpuUuid: inv.gpus[1]?.uuid ?? '', xid: 48, gpuInstanceId: 0 });
    expect(notified()).toBe(1);
    expect([...healthOf(m)]).toEqual([
      ['gpu-0', 'HEALTHY'],
      ['gpu-1-mig-1g10gb-19-0', 'UNHEALTHY'],
      ['gpu-1-mig-1g10gb-19-1', 'HEALTHY'],
    ]);
    // The taint follows the same record.
    expect(m.taints()).toEqual({
      'gpu-1-mig-1g10gb-19-0': [{ key: `${TEST_DRIVER}/xid`, value: '48', effect: 'NoSchedule' }],
    });
  });

  it('goes UNKNOWN while re-discovery fails or finds no GPU, and back when it answers; quiet while unchanged', () => {
    const inv = testInventory();
    const empty: NodeInventory = { ...inv, gpus: [], failures: [] };
    const { m, notified } = monitor([inv, new Error('nvmlInit failed'), empty, inv]);
    m.check();
    expect(notified()).toBe(0);
    m.check();
    expect(notified()).toBe(1);
    expect(new Set(healthOf(m).values())).toEqual(new Set(['UNKNOWN']));
    const first = m.health()[0]?.message ?? '';
    expect(first).toMatch(/^NVML not answering: .*\(nvmlInit failed\)/);
    // Still failing (another way): the message changes, "since" stays the first failure's.
    m.check();
    const second = m.health()[0]?.message ?? '';
    expect(second).toMatch(/\(no GPU enumerated\)/);
    expect(second.match(/since (\S+)/)?.[1]).toBe(first.match(/since (\S+)/)?.[1]);
    m.check();
    expect(new Set(healthOf(m).values())).toEqual(new Set(['HEALTHY']));
    expect(notified()).toBe(3);
  });

  it('reports a lost GPU UNHEALTHY and HEALTHY again when it answers', () => {
    const inv = testInventory();
    const lost = withFailure(inv, { index: 1, error: 'GPU is lost', code: 'GPU_IS_LOST' });
    const { m, notified } = monitor([lost, lost, inv]);
    m.check();
    expect(healthOf(m).get('gpu-1-mig-1g10gb-19-0')).toBe('UNHEALTHY');
    m.check();
    expect(notified()).toBe(1);
    m.check();
    expect(healthOf(m).get('gpu-1-mig-1g10gb-19-0')).toBe('HEALTHY');
    expect(notified()).toBe(2);
  });
});
