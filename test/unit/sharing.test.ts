// Sharing applied on the host: the plan (pure), the conflict rules, and the device state running
// nvidia-smi through a recorder (what would run on a real node), with crash points in between.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CdiStore } from '../../src/cdi/store.js';
import { CheckpointStore } from '../../src/checkpoint/store.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import { findConflict, whyNotShared } from '../../src/driver/conflicts.js';
import { DeviceState } from '../../src/driver/state.js';
import type { NvidiaSmi } from '../../src/sharing/driverTools.js';
import { GpuDraError, isGpuDraError } from '../../src/util/errors.js';
import { SharingApplier } from '../../src/sharing/apply.js';
import {
  mpsDaemonId,
  mpsGroups,
  setTimeSliceCommands,
  timeSlicedGpus,
  undoCommands,
  type SharedDevice,
} from '../../src/sharing/plan.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testGpu,
  testInventory,
  TEST_DRIVER,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';
import { silentLogger } from '../../src/util/log.js';

const log = silentLogger();
const ts = (interval?: 'Default' | 'Short' | 'Medium' | 'Long') =>
  opaque({
    apiVersion: 'gpu.dra.dev/v1alpha1',
    kind: 'GpuConfig',
    sharing: { strategy: 'TimeSlicing', ...(interval ? { timeSlicing: { interval } } : {}) },
  });
const mps = opaque({ apiVersion: 'gpu.dra.dev/v1alpha1', kind: 'GpuConfig', sharing: { strategy: 'MPS' } });

const gpu = (minor: number, sharing?: SharedDevice['sharing']): SharedDevice => ({
  deviceName: `gpu-${String(minor)}`,
  uuid: testGpu(minor).uuid,
  kind: 'gpu',
  sharing,
});

describe('sharing plan (pure)', () => {
  it('time-slices full GPUs only, with NVIDIA’s two nvidia-smi calls', () => {
    const devices = [
      gpu(0, { strategy: 'TimeSlicing', interval: 'Long' }),
      gpu(1),
      { ...gpu(2, { strategy: 'TimeSlicing' }), kind: 'mig' as const, deviceName: 'gpu-2-mig-1g10gb-19-0' },
    ];
    expect(timeSlicedGpus(devices)).toEqual([{ uuid: testGpu(0).uuid, interval: 'Long' }]);
    expect(setTimeSliceCommands('GPU-x', 'Long')).toEqual([
      ['-i', 'GPU-x', '-c', 'DEFAULT'],
      ['compute-policy', '-i', 'GPU-x', '--set-timeslice', '3'],
    ]);
  });

  it('resets a time slice only when no other claim still slices that GPU', () => {
    const mine = [
      gpu(0, { strategy: 'TimeSlicing', interval: 'Short' }),
      gpu(1, { strategy: 'TimeSlicing', interval: 'Short' }),
    ];
    const other = [gpu(1, { strategy: 'TimeSlicing', interval: 'Short' })];
    expect(undoCommands('u', mine, [other])).toEqual([
      ['compute-policy', '-i', testGpu(0).uuid, '--set-timeslice', '0'],
    ]);
    expect(undoCommands('u', mine, [])).toHaveLength(2);
  });

  it('one MPS daemon per group of equal settings, with a stable id; compute mode back to DEFAULT on undo', () => {
    const a = { strategy: 'MPS' as const, mps: { defaultActiveThreadPercentage: 50 } };
    const b = { strategy: 'MPS' as const };
    const groups = mpsGroups('uid-1', [gpu(0, a), gpu(1, b), gpu(2, a)]);
    expect(groups.map((g) => g.deviceNames)).toEqual([['gpu-0', 'gpu-2'], ['gpu-1']]);
    expect(groups[0]?.id).toBe(mpsDaemonId('uid-1', [testGpu(0).uuid, testGpu(2).uuid]));
    expect(groups[0]?.id).toMatch(/^uid-1-[0-9a-f]{5}$/);
    expect(undoCommands('uid-1', [gpu(0, b)], [])).toEqual([['-i', testGpu(0).uuid, '-c', 'DEFAULT']]);
  });
});

describe('conflicts between sharing claims', () => {
  const holding = (sharing?: { strategy: string; interval?: string }) => ({
    namespace: 'ns',
    name: 'holder',
    devices: [{ deviceName: 'gpu-0', adminAccess: false, sharing }],
  });
  it('time-slicing shares a GPU only at one interval', () => {
    const want = (interval: string) => [
      { deviceName: 'gpu-0', adminAccess: false, sharing: { strategy: 'TimeSlicing', interval } },
    ];
    expect(
      findConflict({ h: holding({ strategy: 'TimeSlicing', interval: 'Short' }) }, 'me', want('Short')),
    ).toBeUndefined();
    expect(
      findConflict({ h: holding({ strategy: 'TimeSlicing', interval: 'Short' }) }, 'me', want('Long'))
        ?.reason,
    ).toMatch(/interval Short and this claim asks for Long/);
  });
  it('MPS is not shared across claims; admin access always is', () => {
    const m = { adminAccess: false, sharing: { strategy: 'MPS' } };
    expect(whyNotShared(m, m)).toMatch(/MPS daemon/);
    expect(whyNotShared(m, { adminAccess: true })).toBeUndefined();
    expect(whyNotShared({ adminAccess: false }, { adminAccess: false })).toBe('no sharing allows both');
  });
});

/** nvidia-smi as a recorder; `failOn` makes calls containing it fail like the real tool. */
class RecordingSmi implements NvidiaSmi {
  readonly calls: string[] = [];
  failOn: string | undefined;
  run(args: readonly string[]) {
    const line = args.join(' ');
    this.calls.push(line);
    if (this.failOn !== undefined && line.includes(this.failOn)) {
      return Promise.reject(
        new GpuDraError('SHARING_APPLY_FAILED', `\`nvidia-smi ${line}\` exited with 1: simulated`),
      );
    }
    return Promise.resolve({ stdout: '', stderr: '' });
  }
}

describe('device state applies and undoes time-slicing', () => {
  let host: TestHost;
  let getter: MemoryClaimGetter;
  let smi: RecordingSmi;
  let checkpointFile: string;
  const uuid0 = testGpu(0).uuid;

  const makeState = () => {
    const inventory = testInventory();
    return new DeviceState({
      driverName: TEST_DRIVER,
      poolName: TEST_NODE,
      hostPaths: host.hostPaths,
      cdi: new CdiStore(host.cdiRoot, TEST_DRIVER),
      checkpoint: new CheckpointStore(checkpointFile, log),
      inventory: { current: () => inventory },
      claims: getter,
      sharing: new SharingApplier({ nvidiaSmi: smi }),
      logger: log,
    });
  };
  const prepare = (state: DeviceState, uid: string, config = [ts('Short')], device = 'gpu-0') => {
    getter.set(testClaim({ uid, devices: [device], config }));
    return state.prepare(
      { uid, namespace: 'default', name: `claim-${uid}` },
      () => getter.get('default', `claim-${uid}`),
      log,
    );
  };
  const unprepare = (state: DeviceState, uid: string) =>
    state.unprepare({ uid, namespace: 'default', name: `claim-${uid}` }, log);
  const entries = () =>
    (JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as { claims: Record<string, { state: string }> })
      .claims;

  beforeEach(() => {
    host = createTestHost();
    getter = new MemoryClaimGetter();
    smi = new RecordingSmi();
    checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
  });
  afterEach(() => {
    host.cleanup();
  });

  it('sets the slice at prepare, keeps it while another claim uses it, restores Default after the last', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'ts-a');
    await prepare(state, 'ts-b');
    expect(smi.calls).toEqual([
      `-i ${uuid0} -c DEFAULT`,
      `compute-policy -i ${uuid0} --set-timeslice 1`,
      `-i ${uuid0} -c DEFAULT`,
      `compute-policy -i ${uuid0} --set-timeslice 1`,
    ]);
    smi.calls.length = 0;
    await unprepare(state, 'ts-a');
    expect(smi.calls).toEqual([]);
    await unprepare(state, 'ts-b');
    expect(smi.calls).toEqual([`compute-policy -i ${uuid0} --set-timeslice 0`]);
    expect(entries()).toEqual({});
  });

  it('a second claim asking another slice on the same GPU gets a clear error and changes nothing', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'ts-short');
    smi.calls.length = 0;
    const err = await prepare(state, 'ts-long', [ts('Long')]).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_IN_USE')).toBe(true);
    expect((err as Error).message).toMatch(/time-sliced with interval Short and this claim asks for Long/);
    expect(smi.calls).toEqual([]);
    expect(Object.keys(entries())).toEqual(['ts-short']);
    expect(fs.existsSync(path.join(host.cdiRoot, `k8s.${TEST_DRIVER}-claim_ts-long.json`))).toBe(false);
  });

  it('a failing nvidia-smi fails that claim only, and leaves no entry, no spec and the GPU reset', async () => {
    const state = makeState();
    await state.recover();
    smi.failOn = '--set-timeslice 3';
    const err = await prepare(state, 'ts-fail', [ts('Long')]).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'SHARING_APPLY_FAILED')).toBe(true);
    expect((err as GpuDraError).claimUid).toBe('ts-fail');
    expect(entries()).toEqual({});
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
    expect(smi.calls.at(-1)).toBe(`compute-policy -i ${uuid0} --set-timeslice 0`);
    // The GPU is free: the kubelet's retry, or another claim, prepares afresh.
    smi.failOn = undefined;
    await prepare(state, 'ts-next', [ts('Medium')]);
  });

  it('a crash mid-unprepare (entry marked UnprepareStarted) is finished at start-up, not restored', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'ts-crash');
    const doc = JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as {
      claims: Record<string, { state: string }>;
    };
    (doc.claims['ts-crash'] as { state: string }).state = 'UnprepareStarted';
    fs.writeFileSync(checkpointFile, JSON.stringify(doc));
    smi.calls.length = 0;
    const report = await makeState().recover();
    expect(report.rolledBack).toEqual(['ts-crash']);
    expect(smi.calls).toEqual([`compute-policy -i ${uuid0} --set-timeslice 0`]);
    expect(entries()).toEqual({});
  });

  it('a crash between the intent and the settings: the start-up undoes what may have been set', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'ts-intent', [ts('Medium')]);
    const doc = JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as {
      claims: Record<string, { state: string }>;
    };
    (doc.claims['ts-intent'] as { state: string }).state = 'PrepareStarted';
    fs.writeFileSync(checkpointFile, JSON.stringify(doc));
    smi.calls.length = 0;
    expect((await makeState().recover()).rolledBack).toEqual(['ts-intent']);
    expect(smi.calls).toEqual([`compute-policy -i ${uuid0} --set-timeslice 0`]);
  });

  it('MPS without --namespace/--image is refused, naming what is missing', async () => {
    const state = makeState();
    await state.recover();
    const err = await prepare(state, 'mps-off', [mps]).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'MPS_DAEMON_FAILED')).toBe(true);
    expect((err as Error).message).toMatch(/--namespace and --image/);
    expect(entries()).toEqual({});
  });

  it('a plain claim writes no intent record and runs no nvidia-smi', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'plain', []);
    expect(smi.calls).toEqual([]);
    expect(entries()['plain']?.state).toBe('PrepareCompleted');
  });
});
