// Sharing applied on the host: the plan (pure), the conflict rules, and the device state running
// nvidia-smi through a recorder (what would run on a real node), with crash points in between.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import { findConflict, whyNotShared } from '../../src/driver/conflicts.js';
import { DeviceState } from '../../src/driver/state.js';
import type { NvidiaSmi } from '../../src/sharing/driverTools.js';
import { GpuDraError, isGpuDraError } from '../../src/util/errors.js';
import { SharingApplier, type MpsDaemonControl } from '../../src/sharing/apply.js';
import type { MpsGroup } from '../../src/sharing/plan.js';
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
  testDeviceState,
  testGpu,
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
    expect(undoCommands(mine, [other])).toEqual([
      ['compute-policy', '-i', testGpu(0).uuid, '--set-timeslice', '0'],
    ]);
    expect(undoCommands(mine, [])).toHaveLength(2);
  });

  it('one MPS daemon per group of equal settings, with a stable id; compute mode back to DEFAULT on undo', () => {
    const a = { strategy: 'MPS' as const, mps: { defaultActiveThreadPercentage: 50 } };
    const b = { strategy: 'MPS' as const };
    const groups = mpsGroups('uid-1', [gpu(0, a), gpu(1, b), gpu(2, a)]);
    expect(groups.map((g) => g.deviceNames)).toEqual([['gpu-0', 'gpu-2'], ['gpu-1']]);
    expect(groups[0]?.id).toBe(mpsDaemonId('uid-1', [testGpu(0).uuid, testGpu(2).uuid]));
    expect(groups[0]?.id).toMatch(/^uid-1-[0-9a-f]{5}$/);
    expect(undoCommands([gpu(0, b)], [])).toEqual([['-i', testGpu(0).uuid, '-c', 'DEFAULT']]);
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

  const makeState = () =>
    testDeviceState(host, { claims: getter, sharing: new SharingApplier({ nvidiaSmi: smi }) });
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

/** MPS daemons as a recorder: what would be created (group, limits) and stopped. */
class RecordingDaemons implements MpsDaemonControl {
  readonly started: { claimUid: string; group: MpsGroup; limits: Readonly<Record<string, number>> }[] = [];
  readonly stopped: string[] = [];
  constructor(readonly settings: MpsDaemonControl['settings']) {}
  start(claimUid: string, group: MpsGroup, limits: Readonly<Record<string, number>>) {
    this.started.push({ claimUid, group, limits });
    return Promise.resolve();
  }
  stop(id: string) {
    this.stopped.push(id);
    return Promise.resolve();
  }
  sweep() {
    return Promise.resolve([]);
  }
}

describe('device state runs MPS daemons: whole GPUs exclusive, shares enforced by their pinned limit', () => {
  let host: TestHost;
  let getter: MemoryClaimGetter;
  let smi: RecordingSmi;
  let daemons: RecordingDaemons;
  const uuid0 = testGpu(0).uuid;
  const mpsConfig = (mpsSettings: Record<string, unknown> = {}) =>
    opaque({
      apiVersion: 'gpu.dra.dev/v1alpha1',
      kind: 'GpuConfig',
      sharing: { strategy: 'MPS', mps: mpsSettings },
    });

  const makeState = () =>
    testDeviceState(host, { claims: getter, sharing: new SharingApplier({ nvidiaSmi: smi, mps: daemons }) });
  const prepare = (
    state: DeviceState,
    uid: string,
    devices: Parameters<typeof testClaim>[0]['devices'],
    config: ReturnType<typeof opaque>[],
  ) => {
    getter.set(testClaim({ uid, devices, config }));
    return state.prepare(
      { uid, namespace: 'default', name: `claim-${uid}` },
      () => getter.get('default', `claim-${uid}`),
      log,
    );
  };
  const share = (shareID: string, memory: string) => ({
    request: 'gpu',
    device: 'gpu-0',
    shareID,
    consumedCapacity: { memory },
  });

  beforeEach(() => {
    host = createTestHost();
    getter = new MemoryClaimGetter();
    smi = new RecordingSmi();
    daemons = new RecordingDaemons({
      namespace: 'gpu-dra',
      image: 'gpu-dra:test',
      nodeName: TEST_NODE,
      driverName: TEST_DRIVER,
      pluginDir: path.join(host.pluginsDir, TEST_DRIVER),
      hostDriverRoot: '/',
      shmSizeBytes: 0,
    });
  });
  afterEach(() => {
    host.cleanup();
  });

  it('a whole GPU: EXCLUSIVE_PROCESS, the configured limit, the pipe in its CDI device; undone at unprepare', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'mps-whole', ['gpu-0'], [mpsConfig({ defaultPinnedDeviceMemoryLimit: '10Gi' })]);
    expect(smi.calls).toEqual([`-i ${uuid0} -c EXCLUSIVE_PROCESS`]);
    expect(daemons.started.map((d) => d.limits)).toEqual([{ [uuid0]: 10240 }]);
    const spec = JSON.parse(
      fs.readFileSync(path.join(host.cdiRoot, `k8s.${TEST_DRIVER}-claim_mps-whole.json`), 'utf8'),
    ) as { devices: { containerEdits: { env?: string[]; mounts?: { containerPath: string }[] } }[] };
    expect(spec.devices[0]?.containerEdits.env).toContain('CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps');
    expect(spec.devices[0]?.containerEdits.mounts?.map((m) => m.containerPath)).toEqual([
      '/tmp/nvidia-mps',
      '/dev/shm',
    ]);
    smi.calls.length = 0;
    await state.unprepare({ uid: 'mps-whole', namespace: 'default', name: 'claim-mps-whole' }, log);
    expect(daemons.stopped).toEqual([daemons.started[0]?.group.id]);
    expect(smi.calls).toEqual([`-i ${uuid0} -c DEFAULT`]);
  });

  it('two claims each holding a share of one GPU with MPS: a daemon each, pinned to its share, GPU left in DEFAULT', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'share-a', [share('aaaa0000-0000-4000-8000-000000000001', '20Gi')], [mpsConfig()]);
    await prepare(
      state,
      'share-b',
      [share('bbbb0000-0000-4000-8000-000000000002', '30Gi')],
      [mpsConfig({ defaultPinnedDeviceMemoryLimit: '8Gi' })],
    );
    expect(daemons.started.map((d) => [d.claimUid, d.limits])).toEqual([
      ['share-a', { [uuid0]: 20480 }],
      ['share-b', { [uuid0]: 8192 }],
    ]);
    // No compute-mode change: the other share's daemon must run on the same GPU.
    expect(smi.calls).toEqual([]);
    await state.unprepare({ uid: 'share-a', namespace: 'default', name: 'claim-share-a' }, log);
    expect(smi.calls).toEqual([]);
    expect(daemons.stopped).toHaveLength(1);
  });

  it('whole-GPU MPS claims still do not share a GPU across claims', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, 'mps-1', ['gpu-0'], [mpsConfig()]);
    const err = await prepare(state, 'mps-2', ['gpu-0'], [mpsConfig()]).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_IN_USE')).toBe(true);
    expect((err as Error).message).toMatch(/MPS daemon; pods share an MPS GPU by sharing one claim/);
    expect(daemons.started).toHaveLength(1);
  });
});
