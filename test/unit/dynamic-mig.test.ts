import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CdiStore } from '../../src/cdi/store.js';
import { deviceEnvKey } from '../../src/cdi/spec.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import { DeviceState, type DeviceStateOptions } from '../../src/driver/state.js';
import { SharingApplier, type MpsDaemonControl } from '../../src/sharing/apply.js';
import type { NvidiaSmi } from '../../src/sharing/driverTools.js';
import type { LiveMigInstance, MigInstanceControl, MigInstanceRef } from '../../src/driver/migDevices.js';
import type { MigPlacement, NodeInventory } from '../../src/nvml/types.js';
import { migCapMinor, migMinorsFile } from '../../src/sim/fakeHost.js';
import { silentLogger } from '../../src/util/log.js';
import { isGpuDraError } from '../../src/util/errors.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testDeviceState,
  TEST_DRIVER,
  TEST_DRIVER_VERSION,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';
import { a100Gpu, h100Gpu } from '../support/inventoryFixture.js';

const log = silentLogger();

/**
 * MIG devices in memory, with the rule that matters here: GPU instances of one GPU may not share
 * memory slices. `failCreateAt` makes the n-th create fail; `calls` records every call in order.
 */
class MemoryMig implements MigInstanceControl {
  readonly live: LiveMigInstance[] = [];
  readonly calls: string[] = [];
  failCreateAt: number | undefined;
  private creates = 0;
  private nextGi = 1;

  create(parentUuid: string, profileId: number, placement: MigPlacement): Promise<LiveMigInstance> {
    this.calls.push(`create ${parentUuid} ${String(profileId)} ${String(placement.start)}`);
    this.creates++;
    if (this.failCreateAt === this.creates)
      return Promise.reject(new Error('nvmlGpuInstanceCreateComputeInstance: Insufficient Resources'));
    const overlaps = this.live.some(
      (l) =>
        l.parentUuid === parentUuid &&
        l.placement.start < placement.start + placement.size &&
        placement.start < l.placement.start + l.placement.size,
    );
    if (overlaps)
      return Promise.reject(new Error('nvmlDeviceCreateGpuInstanceWithPlacement: Insufficient Resources'));
    const gi = this.nextGi++;
    const live = {
      parentUuid,
      gpuInstanceId: gi,
      computeInstanceId: 0,
      uuid: `MIG-0000000${String(gi)}-0000-4000-8000-000000000000`,
      profileId,
      placement,
    };
    this.live.push(live);
    return Promise.resolve(live);
  }

  destroy(ref: MigInstanceRef): Promise<'destroyed' | 'absent'> {
    this.calls.push(`destroy ${ref.parentUuid} ${String(ref.gpuInstanceId)}`);
    const i = this.live.findIndex(
      (l) => l.parentUuid === ref.parentUuid && l.gpuInstanceId === ref.gpuInstanceId,
    );
    if (i < 0) return Promise.resolve('absent');
    this.live.splice(i, 1);
    return Promise.resolve('destroyed');
  }

  list(parentUuid: string): Promise<LiveMigInstance[]> {
    return Promise.resolve(this.live.filter((l) => l.parentUuid === parentUuid));
  }

  listBareGpuInstances(): Promise<[]> {
    return Promise.resolve([]);
  }
}

const h100 = h100Gpu(0, { migMode: { current: true, pending: true } });
const a100 = a100Gpu(1, { migMode: { current: true, pending: true } });
const inventory: NodeInventory = {
  driverVersion: TEST_DRIVER_VERSION,
  cudaDriverVersion: '13.0',
  gpus: [h100, a100],
  failures: [],
};

let host: TestHost;
let getter: MemoryClaimGetter;
let mig: MemoryMig;
let checkpointFile: string;

/** A dynamic-mode device state on the test host; `options` replace any default. */
function makeState(options: Partial<DeviceStateOptions> = {}): DeviceState {
  return testDeviceState(host, {
    inventory: { current: () => inventory },
    claims: getter,
    migPartitioning: 'dynamic',
    mig,
    ...options,
  });
}

const uid = (n: number): string => `00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`;

function prepare(
  state: DeviceState,
  n: number,
  devices: string[],
): Promise<readonly { deviceName: string }[]> {
  const claim = testClaim({ uid: uid(n), devices });
  getter.set(claim);
  return state.prepare(
    { uid: uid(n), namespace: 'default', name: `claim-${uid(n)}` },
    () => getter.get('default', `claim-${uid(n)}`),
    log,
  );
}

const unprepare = (state: DeviceState, n: number): Promise<void> =>
  state.unprepare({ uid: uid(n), namespace: 'default', name: `claim-${uid(n)}` }, log);

const specPath = (n: number): string => path.join(host.cdiRoot, `k8s.gpu.dra.dev-claim_${uid(n)}.json`);
const checkpoint = (): {
  claims: Record<string, { state: string; devices: { uuid?: string; migInstance?: unknown }[] }>;
} => JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as never;

beforeEach(() => {
  host = createTestHost(inventory);
  fs.mkdirSync(path.join(host.hostPaths.procRoot, 'driver/nvidia-caps'), { recursive: true });
  fs.writeFileSync(path.join(host.hostPaths.procRoot, 'driver/nvidia-caps/mig-minors'), migMinorsFile());
  getter = new MemoryClaimGetter();
  mig = new MemoryMig();
  checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
});
afterEach(() => {
  host.cleanup();
});

describe('dynamic MIG: prepare makes the device, unprepare destroys it', () => {
  it('creates the allocated placement and injects its UUID and access caps', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-0-mig-2g20gb-14-2']);
    expect(mig.calls).toEqual([`create ${h100.uuid} 14 2`]);
    const made = mig.live[0];
    const spec = JSON.parse(fs.readFileSync(specPath(1), 'utf8')) as {
      devices: {
        containerEdits: {
          env?: string[];
          deviceNodes?: { path: string; hostPath?: string; major?: number; minor?: number }[];
        };
      }[];
    };
    const edits = spec.devices[0]?.containerEdits;
    expect(edits?.env).toContain(`${deviceEnvKey('gpu-0-mig-2g20gb-14-2')}=${made?.uuid ?? ''}`);
    const gi = made?.gpuInstanceId ?? -1;
    // The caps exist in no host /dev: the spec carries their numbers and no host path.
    expect(edits?.deviceNodes).toContainEqual({
      path: `/dev/nvidia-caps/nvidia-cap${String(migCapMinor(0, gi))}`,
      type: 'c',
      major: 241,
      minor: migCapMinor(0, gi),
      fileMode: 0o444,
    });
    expect(edits?.deviceNodes).toContainEqual(
      expect.objectContaining({ path: `/dev/nvidia-caps/nvidia-cap${String(migCapMinor(0, gi, 0))}` }),
    );
    const entry = checkpoint().claims[uid(1)];
    expect(entry?.state).toBe('PrepareCompleted');
    expect(entry?.devices[0]).toMatchObject({
      uuid: made?.uuid,
      migInstance: {
        parentUuid: h100.uuid,
        profileId: 14,
        placement: { start: 2, size: 2 },
        gpuInstanceId: gi,
        computeInstanceId: 0,
      },
    });

    // Repeated prepare: answered from the checkpoint, nothing made twice.
    await prepare(state, 1, ['gpu-0-mig-2g20gb-14-2']);
    expect(mig.calls).toHaveLength(1);

    await unprepare(state, 1);
    expect(mig.live).toEqual([]);
    expect(fs.existsSync(specPath(1))).toBe(false);
    expect(checkpoint().claims[uid(1)]).toBeUndefined();
    await unprepare(state, 1);
    expect(mig.calls).toEqual([`create ${h100.uuid} 14 2`, `destroy ${h100.uuid} ${String(gi)}`]);
  });

  it('refuses overlapping slots of one GPU before NVML is asked, and a whole GPU against its MIG devices', async () => {
    const state = makeState();
    await prepare(state, 1, ['gpu-0-mig-3g40gb-9-0']);
    const overlap = await prepare(state, 2, ['gpu-0-mig-1g10gb-19-3']).catch((e: unknown) => e);
    expect(isGpuDraError(overlap, 'DEVICE_IN_USE')).toBe(true);
    const whole = await prepare(state, 3, ['gpu-0']).catch((e: unknown) => e);
    expect(isGpuDraError(whole, 'DEVICE_IN_USE')).toBe(true);
    expect(mig.calls).toHaveLength(1);
    // Beside it, on free slices, is fine.
    await prepare(state, 4, ['gpu-0-mig-1g10gb-19-4']);
    expect(mig.live.map((l) => l.placement.start).sort()).toEqual([0, 4]);
  });

  it('a claim of several devices that fails midway leaves nothing made', async () => {
    const state = makeState();
    mig.failCreateAt = 3;
    const err = await prepare(state, 1, [
      'a:gpu-1-mig-1g5gb-19-0',
      'b:gpu-1-mig-1g5gb-19-1',
      'c:gpu-1-mig-2g10gb-14-2',
    ]).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'MIG_CREATE_FAILED')).toBe(true);
    expect((err as Error).message).toContain('gpu-1-mig-2g10gb-14-2');
    expect(mig.live).toEqual([]);
    expect(checkpoint().claims[uid(1)]).toBeUndefined();
    expect(fs.existsSync(specPath(1))).toBe(false);
    // The kubelet's retry succeeds.
    mig.failCreateAt = undefined;
    await prepare(state, 1, ['a:gpu-1-mig-1g5gb-19-0', 'b:gpu-1-mig-1g5gb-19-1', 'c:gpu-1-mig-2g10gb-14-2']);
    expect(mig.live).toHaveLength(3);
  });

  it('a crash between the NVML create and the checkpoint write: the restart destroys the instance, the retry makes it again', async () => {
    // The CDI write fails like a kill at that point: the device exists, the intent is recorded.
    const crashing = new CdiStore(host.cdiRoot, TEST_DRIVER);
    crashing.write = () => Promise.reject(new Error('killed'));
    const dying = makeState({ cdi: crashing });
    // The rollback of the failed attempt is skipped too, as a kill would skip it.
    mig.destroy = () => Promise.reject(new Error('killed'));
    await prepare(dying, 1, ['gpu-0-mig-1g10gb-19-5']).catch(() => undefined);
    expect(mig.live).toHaveLength(1);
    expect(checkpoint().claims[uid(1)]?.state).toBe('PrepareStarted');

    mig = Object.assign(new MemoryMig(), { live: mig.live });
    const restarted = makeState();
    const report = await restarted.recover();
    expect(report.rolledBack).toEqual([uid(1)]);
    expect(mig.live).toEqual([]);
    await prepare(restarted, 1, ['gpu-0-mig-1g10gb-19-5']);
    expect(mig.live).toHaveLength(1);
  });

  it('start-up destroys instances on dynamic GPUs no claim owns, and keeps those a prepared claim owns', async () => {
    const state = makeState();
    await prepare(state, 1, ['gpu-1-mig-3g20gb-9-4']);
    // One made behind the driver's back (or left by a lost checkpoint).
    await mig.create(h100.uuid, 19, { start: 6, size: 1 });
    const report = await makeState().recover();
    expect(report.migDevicesRemoved).toHaveLength(1);
    expect(mig.live.map((l) => `${l.parentUuid}@${String(l.placement.start)}`)).toEqual([`${a100.uuid}@4`]);
  });

  it('after a reboot, a prepared claim gets its MIG device made again in its slot', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-0-mig-4g40gb-5-0']);
    const before = mig.live[0]?.uuid;
    mig.live.length = 0; // GPU instances do not survive a reboot
    host.setBootId('99999999-2222-3333-4444-555555555555');
    const rebooted = makeState();
    const report = await rebooted.recover();
    expect(report).toMatchObject({ rebuilt: [uid(1)], dropped: [], migDevicesRemoved: [] });
    const after = mig.live[0];
    expect(after?.placement).toEqual({ start: 0, size: 4 });
    expect(after?.uuid).not.toBe(before);
    expect(checkpoint().claims[uid(1)]?.devices[0]?.uuid).toBe(after?.uuid);
    expect(fs.readFileSync(specPath(1), 'utf8')).toContain(after?.uuid ?? 'missing');
    await unprepare(rebooted, 1);
    expect(mig.live).toEqual([]);
  });

  it('a corrupt checkpoint: the live MIG devices are adopted in their slots, none destroyed or made', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-0-mig-4g40gb-5-0']);
    await prepare(state, 2, ['gpu-1-mig-3g20gb-9-4']);
    const before = checkpoint().claims;
    const live = mig.live.map((l) => l.uuid);
    // And one whose claim is gone meanwhile: its device is debris.
    await prepare(state, 3, ['gpu-0-mig-1g10gb-19-6']);
    getter.delete('default', `claim-${uid(3)}`);
    fs.writeFileSync(checkpointFile, '{"kind":"GpuDraCheckpoint","version":1,"claims":{"');
    mig.calls.length = 0;
    const fresh = makeState();
    const report = await fresh.recover();
    expect(report.fromApi).toMatchObject({ rebuilt: [uid(1), uid(2)], dropped: [uid(3)], pending: [] });
    expect(report.migDevicesRemoved).toHaveLength(1);
    expect(mig.live.map((l) => l.uuid)).toEqual(live);
    expect(mig.calls.filter((c) => c.startsWith('create'))).toEqual([]);
    const strip = (c: Record<string, unknown>) => ({ ...c, updated: undefined });
    for (const n of [1, 2])
      expect(strip(checkpoint().claims[uid(n)] as never)).toEqual(strip(before[uid(n)] as never));
    // Held again: the slot's parent cannot be taken whole.
    const err = await prepare(fresh, 4, ['gpu-0']).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_IN_USE')).toBe(true);
    await unprepare(fresh, 1);
    await unprepare(fresh, 2);
    expect(mig.live).toEqual([]);
  });

  it('a corrupt checkpoint whose claim lost its MIG device: kept, its slot held, nothing made', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-0-mig-4g40gb-5-0']);
    mig.live.length = 0;
    fs.writeFileSync(checkpointFile, '');
    const fresh = makeState();
    const report = await fresh.recover();
    expect(report.fromApi).toMatchObject({ rebuilt: [], kept: [uid(1)] });
    expect(mig.live).toEqual([]);
    const err = await prepare(fresh, 2, ['gpu-0-mig-4g40gb-5-0']).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_IN_USE')).toBe(true);
  });

  it('MPS on a dynamic MIG device: the daemon gets the new UUID, and stops before the device is destroyed', async () => {
    const started: { uuids: readonly string[]; limits: Readonly<Record<string, number>> }[] = [];
    const daemons: MpsDaemonControl = {
      settings: {
        namespace: 'gpu-dra',
        image: 'gpu-dra:test',
        nodeName: TEST_NODE,
        driverName: TEST_DRIVER,
        pluginDir: path.join(host.pluginsDir, TEST_DRIVER),
        hostDriverRoot: '/',
        shmSizeBytes: 0,
      },
      start: (_uid, group, limits) => {
        started.push({ uuids: group.uuids, limits });
        return Promise.resolve();
      },
      stop: (id) => {
        mig.calls.push(`stop MPS daemon ${id}`);
        return Promise.resolve();
      },
      sweep: () => Promise.resolve([]),
    };
    const smi: NvidiaSmi = { run: () => Promise.resolve({ stdout: '', stderr: '' }) };
    const state = makeState({ sharing: new SharingApplier({ nvidiaSmi: smi, mps: daemons }) });
    await state.recover();
    const config = opaque({
      apiVersion: 'gpu.dra.dev/v1alpha1',
      kind: 'MigDeviceConfig',
      sharing: { strategy: 'MPS', mps: { defaultPinnedDeviceMemoryLimit: '8Gi' } },
    });
    getter.set(testClaim({ uid: uid(1), devices: ['gpu-0-mig-3g40gb-9-4'], config: [config] }));
    await state.prepare(
      { uid: uid(1), namespace: 'default', name: `claim-${uid(1)}` },
      () => getter.get('default', `claim-${uid(1)}`),
      log,
    );
    const made = mig.live[0];
    expect(started).toEqual([{ uuids: [made?.uuid], limits: { [made?.uuid ?? '']: 8192 } }]);
    await unprepare(state, 1);
    expect(mig.calls.slice(1).map((c) => c.split(' ')[0])).toEqual(['stop', 'destroy']);
    expect(mig.live).toEqual([]);
  });

  it('a whole GPU in MIG mode gets the MIG device spanning it, so it can compute; admin access gets none', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-0']);
    expect(mig.calls).toEqual([`create ${h100.uuid} 0 0`]);
    const made = mig.live[0];
    expect(made?.placement).toEqual({ start: 0, size: 8 });
    expect(fs.readFileSync(specPath(1), 'utf8')).toContain(`${deviceEnvKey('gpu-0')}=${made?.uuid ?? 'x'}`);
    const taken = await prepare(state, 2, ['gpu-0-mig-1g10gb-19-6']).catch((e: unknown) => e);
    expect(isGpuDraError(taken, 'DEVICE_IN_USE')).toBe(true);

    getter.set(testClaim({ uid: uid(3), devices: [{ request: 'gpu', device: 'gpu-1', adminAccess: true }] }));
    await state.prepare(
      { uid: uid(3), namespace: 'default', name: `claim-${uid(3)}` },
      () => getter.get('default', `claim-${uid(3)}`),
      log,
    );
    expect(mig.calls).toHaveLength(1);
    await unprepare(state, 1);
    expect(mig.live).toEqual([]);
  });

  it('refuses time-slicing for a whole GPU in dynamic mode before anything is made', async () => {
    const state = makeState();
    await state.recover();
    const config = opaque({
      apiVersion: 'gpu.dra.dev/v1alpha1',
      kind: 'GpuConfig',
      sharing: { strategy: 'TimeSlicing' },
    });
    getter.set(testClaim({ uid: uid(1), devices: ['gpu-0'], config: [config] }));
    const err = await state
      .prepare(
        { uid: uid(1), namespace: 'default', name: `claim-${uid(1)}` },
        () => getter.get('default', `claim-${uid(1)}`),
        log,
      )
      .catch((e: unknown) => e);
    expect(isGpuDraError(err, 'OPAQUE_CONFIG_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(
      /config\[0\]\.opaque\.parameters\.sharing\.strategy: TimeSlicing cannot apply to gpu-0/,
    );
    expect(mig.calls).toEqual([]);
  });

  it('a lost spec of a prepared claim is restored with the device that exists, none made twice', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 1, ['gpu-1-mig-2g10gb-14-4']);
    fs.rmSync(specPath(1));
    await prepare(state, 1, ['gpu-1-mig-2g10gb-14-4']);
    expect(mig.calls).toHaveLength(1);
    expect(fs.readFileSync(specPath(1), 'utf8')).toContain(mig.live[0]?.uuid ?? 'x');
  });

  it('a static-mode plugin refuses a slot name as an unknown device', async () => {
    const state = makeState({ migPartitioning: 'static', mig: undefined });
    const err = await prepare(state, 1, ['gpu-0-mig-2g20gb-14-0']).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_UNKNOWN')).toBe(true);
  });
});
