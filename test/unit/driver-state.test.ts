import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CdiSpec } from '../../src/cdi/spec.js';
import { CdiStore } from '../../src/cdi/store.js';
import { CheckpointStore } from '../../src/checkpoint/store.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import {
  createDeviceState,
  DeviceState,
  instanceLock,
  readBootId,
  type DeviceStateOptions,
  type InventorySource,
} from '../../src/driver/state.js';
import {
  createTestHost,
  testClaim,
  testDeviceState,
  testGpu,
  testInventory,
  TEST_DRIVER,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { silentLogger } from '../../src/util/log.js';

const log = silentLogger();
let host: TestHost;
let getter: MemoryClaimGetter;
let checkpointFile: string;

function makeState(
  options: { inventory?: InventorySource; cdi?: CdiStore } & Pick<
    DeviceStateOptions,
    'scanDriverFiles' | 'driverFilesTtlMs' | 'claims'
  > = {},
): DeviceState {
  return testDeviceState(host, { claims: getter, ...options });
}

const specFile = (uid: string): string => `k8s.gpu.dra.dev-claim_${uid}.json`;
const specPath = (uid: string): string => path.join(host.cdiRoot, specFile(uid));
const readCheckpoint = (): {
  bootId?: string;
  claims: Record<string, { state: string; cdiSpec?: CdiSpec; cdiSpecFile?: string }>;
} => JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as never;

async function prepareVia(state: DeviceState, uid: string, devices: string[]): Promise<string[]> {
  const claim = testClaim({ uid, devices });
  getter.set(claim);
  const out = await state.prepare(
    { uid, namespace: 'default', name: `claim-${uid}` },
    () => getter.get('default', `claim-${uid}`),
    log,
  );
  return out.map((d) => d.deviceName);
}

beforeEach(() => {
  host = createTestHost();
  getter = new MemoryClaimGetter();
  checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
});
afterEach(() => {
  host.cleanup();
});

describe('start-up recovery', () => {
  it('records the boot id and removes orphaned specs of ours only', async () => {
    fs.writeFileSync(path.join(host.cdiRoot, specFile('orphan')), '{}');
    fs.writeFileSync(path.join(host.cdiRoot, 'nvidia.yaml'), 'x');
    const state = makeState();
    const report = await state.recover();
    expect(report).toMatchObject({
      checkpoint: 'missing',
      rebooted: false,
      orphansRemoved: [specFile('orphan')],
    });
    expect(fs.readdirSync(host.cdiRoot)).toEqual(['nvidia.yaml']);
    expect(readCheckpoint().bootId).toBe(readBootId(host.hostPaths));
  });

  it('crash after PrepareStarted but before the spec was written: rolled back', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'c1', ['gpu-0']);
    const doc = readCheckpoint();
    (doc.claims['c1'] as { state: string }).state = 'PrepareStarted';
    fs.writeFileSync(checkpointFile, JSON.stringify(doc));
    fs.rmSync(specPath('c1'));
    const report = await makeState().recover();
    expect(report.rolledBack).toEqual(['c1']);
    expect(readCheckpoint().claims).toEqual({});
  });

  it('crash after the spec was written but before PrepareCompleted: rolled back, spec removed', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'c2', ['gpu-0']);
    const doc = readCheckpoint();
    (doc.claims['c2'] as { state: string }).state = 'PrepareStarted';
    fs.writeFileSync(checkpointFile, JSON.stringify(doc));
    const fresh = makeState();
    expect((await fresh.recover()).rolledBack).toEqual(['c2']);
    expect(fs.existsSync(specPath('c2'))).toBe(false);
    // gpu-0 is free again and the kubelet's retry prepares afresh.
    expect(await prepareVia(fresh, 'c3', ['gpu-0'])).toEqual(['gpu-0']);
  });

  it('same boot, spec file lost: rebuilt byte for byte from the recorded devices', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'c4', ['gpu-1-mig-1g10gb-19-0']);
    const content = fs.readFileSync(specPath('c4'), 'utf8');
    const recorded = fs.readFileSync(checkpointFile, 'utf8');
    fs.rmSync(specPath('c4'));
    expect((await makeState().recover()).restored).toEqual(['c4']);
    expect(fs.readFileSync(specPath('c4'), 'utf8')).toBe(content);
    // Nothing about the claim changed, so neither did its record.
    expect(JSON.parse(fs.readFileSync(checkpointFile, 'utf8'))).toEqual(JSON.parse(recorded));
  });

  it('a checkpoint of an older version, which stored the spec itself, restores that spec', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'old', ['gpu-0']);
    const doc = readCheckpoint();
    const stored = {
      ...(JSON.parse(fs.readFileSync(specPath('old'), 'utf8')) as CdiSpec),
      cdiVersion: '0.5.0',
    };
    (doc.claims['old'] as { cdiSpec?: CdiSpec }).cdiSpec = stored;
    fs.writeFileSync(checkpointFile, JSON.stringify(doc));
    fs.rmSync(specPath('old'));
    expect((await makeState().recover()).restored).toEqual(['old']);
    expect((JSON.parse(fs.readFileSync(specPath('old'), 'utf8')) as CdiSpec).cdiVersion).toBe('0.5.0');
  });

  it('after a reboot, specs are rebuilt against the current host, not trusted', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'c5', ['gpu-0']);
    fs.rmSync(host.cdiRoot, { recursive: true }); // /var/run is a tmpfs
    host.setBootId('99999999-0000-0000-0000-000000000000');
    // The driver moved: specs must point at today's files.
    fs.renameSync(
      path.join(host.hostPaths.driverRoot, 'usr/bin/nvidia-smi'),
      path.join(host.hostPaths.driverRoot, 'usr/bin/nvidia-smi.old'),
    );
    const report = await makeState().recover();
    expect(report).toMatchObject({ rebooted: true, rebuilt: ['c5'], dropped: [] });
    const spec = JSON.parse(fs.readFileSync(specPath('c5'), 'utf8')) as CdiSpec;
    expect(spec.containerEdits?.mounts?.map((m) => m.containerPath)).not.toContain('/usr/bin/nvidia-smi');
    expect(readCheckpoint().bootId).toBe('99999999-0000-0000-0000-000000000000');
    // The checkpoint names the spec file; the spec itself is derived data, not stored twice.
    expect(readCheckpoint().claims['c5']).toMatchObject({ cdiSpecFile: specFile('c5') });
    expect(readCheckpoint().claims['c5']?.cdiSpec).toBeUndefined();
  });

  it('after a reboot, a claim whose device vanished or changed identity is dropped', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'gone', ['gpu-0']);
    await prepareVia(state, 'swapped', ['gpu-1-mig-1g10gb-19-1']);
    host.setBootId('reboot-2');
    const base = testInventory();
    const changed: NodeInventory = {
      ...base,
      gpus: [
        testGpu(1, {
          migMode: { current: true, pending: true },
          migDevices: (base.gpus[1]?.migDevices ?? []).map((m) =>
            m.gpuInstanceId === 1 ? { ...m, uuid: 'MIG-new' } : m,
          ),
        }),
      ],
    };
    const report = await makeState({ inventory: { current: () => changed } }).recover();
    expect([...report.dropped].sort()).toEqual(['gone', 'swapped']);
    expect(readCheckpoint().claims).toEqual({});
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
  });

  it('an unreadable checkpoint is quarantined and existing specs are kept', async () => {
    fs.mkdirSync(path.dirname(checkpointFile), { recursive: true });
    fs.writeFileSync(checkpointFile, '{torn');
    fs.writeFileSync(path.join(host.cdiRoot, specFile('in-use')), '{}');
    const report = await makeState().recover();
    expect(report.checkpoint).toBe('quarantined');
    expect(report.orphansRemoved).toEqual([]);
    expect(fs.existsSync(path.join(host.cdiRoot, specFile('in-use')))).toBe(true);
  });
});

describe('a claim is reached by its UID, namespace and name together', () => {
  it('unprepare or prepare under a known UID with another namespace/name changes nothing', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'victim', ['gpu-0']);
    const forged = { uid: 'victim', namespace: 'other', name: 'wrong' };
    await expect(state.unprepare(forged, log)).rejects.toMatchObject({ code: 'CLAIM_REF_INVALID' });
    await expect(
      state.prepare(forged, () => getter.get('default', 'claim-victim'), log),
    ).rejects.toMatchObject({ code: 'CLAIM_REF_INVALID' });
    expect(state.recordedClaimUids()).toEqual(['victim']);
    expect(fs.existsSync(specPath('victim'))).toBe(true);
    await state.unprepare({ uid: 'victim', namespace: 'default', name: 'claim-victim' }, log);
    expect(state.recordedClaimUids()).toEqual([]);
  });
});

describe('stale holders (a record the API no longer backs)', () => {
  async function heldThenWanted(change: () => void): Promise<{ state: DeviceState; result: unknown }> {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'old', ['gpu-0']);
    change();
    const result = await prepareVia(state, 'new', ['gpu-0']).catch((e: unknown) => e);
    return { state, result };
  }

  it('a holder whose claim was deleted gives its devices up, record and spec', async () => {
    const { state, result } = await heldThenWanted(() => {
      getter.delete('default', 'claim-old');
    });
    expect(result).toEqual(['gpu-0']);
    expect(state.recordedClaimUids()).toEqual(['new']);
    expect(fs.existsSync(specPath('old'))).toBe(false);
  });

  it('so does one whose claim was replaced (new UID) or deallocated', async () => {
    const replaced = await heldThenWanted(() => {
      getter.set(testClaim({ uid: 'other', name: 'claim-old', devices: ['gpu-0'] }));
    });
    expect(replaced.result).toEqual(['gpu-0']);
    host.cleanup();
    host = createTestHost();
    checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
    const deallocated = await heldThenWanted(() => {
      getter.set(testClaim({ uid: 'old', devices: ['gpu-0'], allocated: false }));
    });
    expect(deallocated.result).toEqual(['gpu-0']);
  });

  it('a holder still allocated its devices keeps them: DEVICE_IN_USE', async () => {
    const { state, result } = await heldThenWanted(() => undefined);
    expect(result).toMatchObject({ code: 'DEVICE_IN_USE' });
    expect(state.recordedClaimUids()).toEqual(['old']);
  });

  it('when the API cannot be asked, the holder is believed', async () => {
    const unreachable = {
      get: (): Promise<never> => Promise.reject(new Error('connect ECONNREFUSED')),
    };
    const state = makeState({ claims: unreachable });
    await state.recover();
    getter.set(testClaim({ uid: 'old', devices: ['gpu-0'] }));
    await state.prepare(
      { uid: 'old', namespace: 'default', name: 'claim-old' },
      () => getter.get('default', 'claim-old'),
      log,
    );
    getter.set(testClaim({ uid: 'new', devices: ['gpu-0'] }));
    const err = await state
      .prepare(
        { uid: 'new', namespace: 'default', name: 'claim-new' },
        () => getter.get('default', 'claim-new'),
        log,
      )
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DEVICE_IN_USE' });
    expect(state.recordedClaimUids()).toEqual(['old']);
  });
});

describe('prepare failure paths', () => {
  it('a failed spec write leaves neither a checkpoint entry nor a file', async () => {
    class FailingStore extends CdiStore {
      override async write(fileName: string, spec: CdiSpec): Promise<void> {
        await super.write(fileName, spec);
        throw new Error('disk full');
      }
    }
    const state = makeState({ cdi: new FailingStore(host.cdiRoot, TEST_DRIVER) });
    await state.recover();
    await expect(prepareVia(state, 'fail', ['gpu-0'])).rejects.toThrow('disk full');
    expect(readCheckpoint().claims).toEqual({});
    expect(fs.existsSync(specPath('fail'))).toBe(false);
  });

  it('a failed checkpoint write leaves no spec behind and records nothing', async () => {
    const state = makeState();
    await state.recover();
    // The plugin directory is gone and a file sits in its place: the spec lands, the record cannot.
    const dir = path.dirname(checkpointFile);
    fs.rmSync(dir, { recursive: true });
    fs.writeFileSync(dir, '');
    await expect(prepareVia(state, 'ro', ['gpu-0'])).rejects.toThrow(
      /CHECKPOINT_WRITE_FAILED|cannot write checkpoint/,
    );
    expect(fs.existsSync(specPath('ro'))).toBe(false);
    fs.rmSync(dir);
    // Nothing was recorded, so gpu-0 is free for the retry.
    expect(await prepareVia(state, 'ro', ['gpu-0'])).toEqual(['gpu-0']);
  });

  it('a crash between the spec write and the checkpoint write leaves only a spec the sweep removes', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'kept', ['gpu-0']);
    // What the crash leaves: the spec of a claim the checkpoint does not record.
    fs.copyFileSync(specPath('kept'), specPath('crashed'));
    const report = await makeState().recover();
    expect(report.orphansRemoved).toEqual([specFile('crashed')]);
    expect(fs.existsSync(specPath('kept'))).toBe(true);
  });

  it('concurrent prepares of overlapping devices: exactly one wins, the other is refused before writing', async () => {
    const state = makeState();
    await state.recover();
    const results = await Promise.allSettled([
      prepareVia(state, 'a', ['gpu-1']),
      prepareVia(state, 'b', ['gpu-1-mig-1g10gb-19-0']),
      prepareVia(state, 'c', ['gpu-1']),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results)
      if (r.status === 'rejected') expect(String(r.reason)).toMatch(/overlaps|already prepared/);
    expect(Object.keys(readCheckpoint().claims)).toHaveLength(1);
    expect(fs.readdirSync(host.cdiRoot).filter((f) => f.endsWith('.json'))).toHaveLength(1);
  });

  it('re-discovers once when an allocated device is unknown (e.g. a MIG device created later)', async () => {
    let refreshed = 0;
    const small: NodeInventory = { ...testInventory(), gpus: [testGpu(0)] };
    const state = makeState({
      inventory: {
        current: () => small,
        refresh: () => {
          refreshed++;
          return Promise.resolve(testInventory());
        },
      },
    });
    await state.recover();
    expect(await prepareVia(state, 'late', ['gpu-1-mig-1g10gb-19-0'])).toEqual(['gpu-1-mig-1g10gb-19-0']);
    expect(refreshed).toBe(1);
  });

  it('scans the driver root once per driver version and TTL, not per prepare', async () => {
    const scans: string[] = [];
    let version = '580.105.08';
    const files = { libraries: ['/usr/lib/x86_64-linux-gnu/libcuda.so.1'], binaries: [], firmware: [] };
    const scanDriverFiles = (_: unknown, v: string): typeof files => {
      scans.push(v);
      return files;
    };
    const inventory = (): NodeInventory => ({ ...testInventory(), driverVersion: version });
    const cached = makeState({ scanDriverFiles, inventory: { current: inventory } });
    await cached.recover();
    await prepareVia(cached, 'c1', ['gpu-0']);
    await prepareVia(cached, 'c2', ['gpu-1-mig-1g10gb-19-0']);
    expect(scans).toEqual(['580.105.08']);
    version = '590.1.2'; // the device monitor saw an upgraded driver
    await prepareVia(cached, 'c3', ['gpu-1-mig-1g10gb-19-1']);
    expect(scans).toEqual(['580.105.08', '590.1.2']);
    const spec = JSON.parse(fs.readFileSync(specPath('c3'), 'utf8')) as CdiSpec;
    expect(spec.containerEdits?.mounts?.map((m) => m.containerPath)).toEqual(files.libraries);
    await cached.cleanupAll();

    scans.length = 0;
    const uncached = makeState({ scanDriverFiles, driverFilesTtlMs: 0, inventory: { current: inventory } });
    await uncached.recover();
    await prepareVia(uncached, 'd1', ['gpu-0']);
    await prepareVia(uncached, 'd2', ['gpu-1']);
    expect(scans).toEqual(['590.1.2', '590.1.2']);
  });

  it('cleanupAll removes every spec of ours and the checkpoint', async () => {
    const state = makeState();
    await state.recover();
    await prepareVia(state, 'x1', ['gpu-0']);
    await state.cleanupAll();
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
    expect(fs.existsSync(checkpointFile)).toBe(false);
  });
});

describe('two plugin instances on one node (a rolling update)', () => {
  /** An instance as runDriver builds it: its own lock descriptors, its own in-memory checkpoint. */
  function instance(): DeviceState {
    const inventory = testInventory();
    return createDeviceState({
      driverName: TEST_DRIVER,
      nodeName: TEST_NODE,
      hostPaths: host.hostPaths,
      cdiRoot: host.cdiRoot,
      pluginDir: path.join(host.pluginsDir, TEST_DRIVER),
      inventory: { current: () => inventory },
      claims: getter,
      logger: log,
    });
  }

  it('each sees what the other prepared and unprepared: no entry lost, no stale holder', async () => {
    const a = instance();
    const b = instance();
    await a.recover();
    await b.recover();
    try {
      await prepareVia(a, 'c1', ['gpu-0']);
      await prepareVia(b, 'c2', ['gpu-1-mig-1g10gb-19-0']);
      // A's copy predates c2: writing c3 from it would drop c2.
      await prepareVia(a, 'c3', ['gpu-1-mig-1g10gb-19-1']);
      expect(Object.keys(readCheckpoint().claims).sort()).toEqual(['c1', 'c2', 'c3']);
      // A claim prepared by one is unprepared by the other, as the kubelet may route it.
      await b.unprepare({ uid: 'c1', namespace: 'default', name: 'claim-c1' }, log);
      expect(fs.existsSync(specPath('c1'))).toBe(false);
      // A must see gpu-0 free: its stale copy would name c1, which the API still has, as holder.
      expect(await prepareVia(a, 'c4', ['gpu-0'])).toEqual(['gpu-0']);
      // And B must see c4 holding it.
      getter.set(testClaim({ uid: 'c5', devices: ['gpu-0'] }));
      await expect(
        b.prepare(
          { uid: 'c5', namespace: 'default', name: 'claim-c5' },
          () => getter.get('default', 'claim-c5'),
          log,
        ),
      ).rejects.toMatchObject({ code: 'DEVICE_IN_USE' });
      expect(Object.keys(readCheckpoint().claims).sort()).toEqual(['c2', 'c3', 'c4']);
      expect(a.preparedClaimUids()).toEqual(['c2', 'c3', 'c4']);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a starting instance’s recovery neither rolls back nor sweeps what the running one is preparing', async () => {
    // A pauses its prepare right after writing the spec, before the checkpoint records the claim:
    // to a recovery that did not wait, an orphan spec.
    let paused = (): void => undefined;
    const atSpec = new Promise<void>((resolve) => (paused = resolve));
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    class PausingCdi extends CdiStore {
      override async write(fileName: string, spec: CdiSpec): Promise<void> {
        await super.write(fileName, spec);
        paused();
        await held;
      }
    }
    const checkpoint = new CheckpointStore(checkpointFile, log);
    const a = testDeviceState(host, {
      claims: getter,
      cdi: new PausingCdi(host.cdiRoot, TEST_DRIVER),
      checkpoint,
      lock: instanceLock(path.join(host.pluginsDir, TEST_DRIVER), checkpoint, log),
    });
    await a.recover();
    const b = instance();
    try {
      const prepared = prepareVia(a, 'c1', ['gpu-0']);
      await atSpec;
      const recovering = b.recover();
      await new Promise((r) => setTimeout(r, 50));
      release();
      await prepared;
      const report = await recovering;
      expect(report.orphansRemoved).toEqual([]);
      expect(fs.existsSync(specPath('c1'))).toBe(true);
      expect(b.preparedClaimUids()).toEqual(['c1']);
    } finally {
      a.close();
      b.close();
    }
  });
});
