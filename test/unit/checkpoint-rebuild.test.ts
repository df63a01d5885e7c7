// A lost checkpoint (corrupt, torn, too new) is rebuilt from the API through the claim identity
// every CDI spec carries: prepared claims hold their devices again, their MPS daemons survive,
// debris goes, and while the API cannot answer nothing is swept or handed out.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { claimOfSpec, type CdiSpec } from '../../src/cdi/spec.js';
import { MemoryClaimGetter, type ClaimGetter } from '../../src/driver/claims.js';
import { rebuildNote, type RebuildSummary } from '../../src/driver/rebuild.js';
import type { DeviceState, DeviceStateOptions } from '../../src/driver/state.js';
import { KubeRequestError } from '../../src/kube/client.js';
import { nodeEventBody } from '../../src/kube/events.js';
import { SharingApplier, type MpsDaemonControl } from '../../src/sharing/apply.js';
import type { NvidiaSmi } from '../../src/sharing/driverTools.js';
import type { MpsGroup } from '../../src/sharing/plan.js';
import { isGpuDraError } from '../../src/util/errors.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { silentLogger } from '../../src/util/log.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testDeviceState,
  testGpu,
  testInventory,
  TEST_DRIVER,
  TEST_NODE,
  type ClaimSpec,
  type TestHost,
} from '../support/driverFixtures.js';

const log = silentLogger();

/** The API as a getter that can be taken down (every GET fails as a refused connection would). */
class FlakyApi implements ClaimGetter {
  readonly claims = new MemoryClaimGetter();
  down = false;
  /** A blackholed API: GETs never answer. */
  hang = false;
  gets = 0;
  get(namespace: string, name: string) {
    this.gets++;
    if (this.hang) return new Promise<never>(() => undefined);
    if (this.down)
      return Promise.reject(
        new KubeRequestError('GET', `/${namespace}/${name}`, 'connect ECONNREFUSED 10.96.0.1:443'),
      );
    return this.claims.get(namespace, name);
  }
}

/** MPS daemons that exist until stopped or swept; the sweep removes every one not owned. */
class LiveDaemons implements MpsDaemonControl {
  readonly live = new Set<string>();
  readonly swept: string[] = [];
  constructor(readonly settings: MpsDaemonControl['settings']) {}
  start(_claimUid: string, group: MpsGroup) {
    this.live.add(group.id);
    return Promise.resolve();
  }
  stop(id: string) {
    this.live.delete(id);
    return Promise.resolve();
  }
  sweep(owned: ReadonlySet<string>) {
    const gone = [...this.live].filter((id) => !owned.has(id));
    for (const id of gone) this.live.delete(id);
    this.swept.push(...gone);
    return Promise.resolve(gone);
  }
}

const smi: NvidiaSmi = { run: () => Promise.resolve({ stdout: '', stderr: '' }) };
const mpsConfig = opaque({
  apiVersion: 'gpu.dra.dev/v1alpha1',
  kind: 'GpuConfig',
  sharing: { strategy: 'MPS' },
});

let host: TestHost;
let api: FlakyApi;
let daemons: LiveDaemons;
let events: RebuildSummary[];
let checkpointFile: string;
const states: DeviceState[] = [];

/** gpu-0, gpu-1 with two MIG devices, and whole GPUs gpu-2 to gpu-6. */
const base = testInventory();
const INVENTORY: NodeInventory = { ...base, gpus: [...base.gpus, ...[2, 3, 4, 5, 6].map((i) => testGpu(i))] };

function makeState(extra: Partial<DeviceStateOptions> = {}): DeviceState {
  const state = testDeviceState(host, {
    inventory: { current: () => INVENTORY },
    claims: api,
    sharing: new SharingApplier({ nvidiaSmi: smi, mps: daemons }),
    onCheckpointRebuilt: (s) => {
      events.push(s);
      return Promise.resolve();
    },
    rebuildBackoff: { initialDelayMs: 5, maxDelayMs: 20 },
    ...extra,
  });
  states.push(state);
  return state;
}

const ref = (uid: string) => ({ uid, namespace: 'default', name: `claim-${uid}` });
async function prepare(state: DeviceState, spec: ClaimSpec) {
  api.claims.set(testClaim(spec));
  return state.prepare(ref(spec.uid), () => api.get('default', `claim-${spec.uid}`), log);
}
const specPath = (uid: string) => path.join(host.cdiRoot, `k8s.${TEST_DRIVER}-claim_${uid}.json`);
type Entries = Record<string, Record<string, unknown>>;
const entries = (): Entries =>
  (JSON.parse(fs.readFileSync(checkpointFile, 'utf8')) as { claims: Entries }).claims;
const withoutTimes = (e: Entries): Entries =>
  Object.fromEntries(Object.entries(e).map(([uid, c]) => [uid, { ...c, updated: undefined }]));

/** Prepares a whole GPU, a MIG device and an MPS GPU, then tears the checkpoint at half its length. */
async function preparedThenTorn(
  more: (state: DeviceState) => Promise<void> = () => Promise.resolve(),
): Promise<Entries> {
  const state = makeState();
  await state.recover();
  await prepare(state, { uid: 'whole', devices: ['gpu-0'] });
  await prepare(state, { uid: 'mig', devices: ['gpu-1-mig-1g10gb-19-0'] });
  await prepare(state, { uid: 'mps', devices: ['gpu-3'], config: [mpsConfig] });
  const before = entries();
  await more(state);
  state.close();
  const bytes = fs.readFileSync(checkpointFile);
  fs.writeFileSync(checkpointFile, bytes.subarray(0, Math.floor(bytes.length / 2)));
  return before;
}

beforeEach(() => {
  host = createTestHost(INVENTORY);
  api = new FlakyApi();
  events = [];
  checkpointFile = path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json');
  daemons = new LiveDaemons({
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
  for (const s of states.splice(0)) s.close();
  host.cleanup();
});

describe('a CDI spec names its claim', () => {
  it('in spec-level annotations, read back as written', async () => {
    const state = makeState();
    await state.recover();
    await prepare(state, { uid: 'named', devices: ['gpu-0'] });
    const spec = JSON.parse(fs.readFileSync(specPath('named'), 'utf8')) as CdiSpec;
    expect(spec.cdiVersion).toBe('0.6.0'); // the first version with spec annotations
    expect(spec.annotations).toEqual({
      'gpu.dra.dev/claim-namespace': 'default',
      'gpu.dra.dev/claim-name': 'claim-named',
      'gpu.dra.dev/claim-uid': 'named',
    });
    expect(claimOfSpec(spec, TEST_DRIVER)).toEqual(ref('named'));
    expect(claimOfSpec({ ...spec, annotations: undefined }, TEST_DRIVER)).toBeUndefined();
    expect(claimOfSpec(spec, 'other.example.com')).toBeUndefined();
  });
});

describe('rebuilding after a lost checkpoint', () => {
  it('torn: the claims come back from the API as they were, held, their MPS daemon kept; debris goes', async () => {
    // Debris: a claim deleted meanwhile, one re-created under a new UID, one now allocated elsewhere.
    const before = await preparedThenTorn(async (state) => {
      for (const [uid, device] of [
        ['gone', 'gpu-4'],
        ['replaced', 'gpu-5'],
        ['moved', 'gpu-6'],
      ] as const)
        await prepare(state, { uid, devices: [device] });
      api.claims.delete('default', 'claim-gone');
      api.claims.set(testClaim({ uid: 'replaced-2', name: 'claim-replaced', devices: ['gpu-5'] }));
      api.claims.set(testClaim({ uid: 'moved', devices: [{ device: 'gpu-6', pool: 'node-b' }] }));
    });
    const daemonIds = [...daemons.live];
    expect(daemonIds).toHaveLength(1);
    const state = makeState();
    const report = await state.recover();
    expect(report.checkpoint).toBe('quarantined');
    expect(report.fromApi).toEqual({
      rebuilt: ['mig', 'mps', 'whole'],
      dropped: ['gone', 'moved', 'replaced'],
      kept: [],
      pending: [],
    });
    // Same entries as before the loss, but for their timestamps.
    expect(withoutTimes(entries())).toEqual(withoutTimes(before));
    expect(fs.existsSync(specPath('gone'))).toBe(false);
    expect(fs.existsSync(specPath('replaced'))).toBe(false);
    expect(fs.existsSync(specPath('whole'))).toBe(true);
    // The running pod's MPS daemon was not swept.
    expect([...daemons.live]).toEqual(daemonIds);
    expect(daemons.swept).toEqual([]);
    // The bad file was kept; the Event facts say so.
    const aside = fs.readdirSync(path.dirname(checkpointFile)).filter((f) => f.includes('.corrupt-'));
    expect(aside.length).toBeGreaterThanOrEqual(1);
    expect(events).toHaveLength(1);
    const note = rebuildNote(events[0] as RebuildSummary);
    expect(note).toMatch(/was unreadable \(invalid JSON/);
    expect(note).toContain(`kept as ${String(events[0]?.marker.movedTo)}`);
    expect(note).toMatch(/Rebuilt 3 prepared claim\(s\) from the API, dropped 3 no longer allocated here\./);
    // Held again: a new claim cannot take the whole GPU nor the MIG device.
    for (const [uid, device] of [
      ['thief-1', 'gpu-0'],
      ['thief-2', 'gpu-1-mig-1g10gb-19-0'],
      ['thief-3', 'gpu-3'],
    ] as const) {
      const err = await prepare(state, { uid, devices: [device] }).catch((e: unknown) => e);
      expect(isGpuDraError(err, 'DEVICE_IN_USE'), `${uid}: ${String(err)}`).toBe(true);
    }
    // Unprepare cleans everything, the MPS daemon included.
    for (const uid of ['whole', 'mig', 'mps']) await state.unprepare(ref(uid), log);
    expect(entries()).toEqual({});
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
    expect(daemons.live.size).toBe(0);
  });

  it('API unreachable: nothing swept, prepares refused (retryable), rebuilt in the background once it answers', async () => {
    const before = await preparedThenTorn();
    api.down = true;
    const state = makeState();
    const report = await state.recover();
    expect(report.fromApi).toMatchObject({ rebuilt: [], pending: ['mig', 'mps', 'whole'] });
    expect(report).toMatchObject({ orphansRemoved: [], mpsDaemonsRemoved: [], migDevicesRemoved: [] });
    expect(fs.existsSync(specPath('whole'))).toBe(true);
    expect(daemons.live.size).toBe(1);
    // A prepare of a claim of its own tries the rebuild first, then refuses.
    const err = await prepare(state, { uid: 'new', devices: ['gpu-2'] }).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'CHECKPOINT_REBUILD_PENDING')).toBe(true);
    expect((err as { claimUid?: string }).claimUid).toBe('new');
    // Nor is an unrebuilt claim unprepared blind (its MPS daemon would be left behind).
    const unprep = await state.unprepare(ref('mps'), log).catch((e: unknown) => e);
    expect(isGpuDraError(unprep, 'CHECKPOINT_REBUILD_PENDING')).toBe(true);
    expect(events).toEqual([]);
    const getsWhileDown = api.gets;
    // Retried in the background.
    await expect.poll(() => api.gets, { timeout: 2_000, interval: 10 }).toBeGreaterThan(getsWhileDown);
    api.down = false;
    await expect.poll(() => events.length, { timeout: 2_000, interval: 10 }).toBe(1);
    expect(withoutTimes(entries())).toEqual(withoutTimes(before));
    expect(JSON.parse(fs.readFileSync(checkpointFile, 'utf8'))).not.toHaveProperty('rebuild');
    expect(daemons.swept).toEqual([]);
    expect(await prepare(state, { uid: 'new', devices: ['gpu-2'] })).toHaveLength(1);
  });

  it('a blackholed API costs the start one GET timeout, not one per claim', async () => {
    await preparedThenTorn();
    api.hang = true;
    const gets = api.gets;
    const started = Date.now();
    const report = await makeState({
      rebuildGetTimeoutMs: 100,
      rebuildBackoff: { initialDelayMs: 60_000 },
    }).recover();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(report.fromApi?.pending).toEqual(['mig', 'mps', 'whole']);
    expect(api.gets - gets).toBe(1);
  });

  it('a restart while the rebuild is pending goes on rebuilding, never trusting the empty claims', async () => {
    const before = await preparedThenTorn();
    api.down = true;
    const first = makeState();
    await first.recover();
    first.close();
    api.down = false;
    const report = await makeState().recover();
    expect(report.checkpoint).toBe('ok'); // the marker document, read fine
    expect(report.fromApi?.rebuilt).toEqual(['mig', 'mps', 'whole']);
    expect(withoutTimes(entries())).toEqual(withoutTimes(before));
    expect(daemons.swept).toEqual([]);
  });

  it('too new (a downgrade): kept aside, rebuilt the same way, and the note says how to go back', async () => {
    const before = await preparedThenTorn();
    fs.writeFileSync(
      checkpointFile,
      JSON.stringify({ kind: 'GpuDraCheckpoint', version: 2, minReaderVersion: 2, claims: {} }),
    );
    const report = await makeState().recover();
    expect(report.checkpoint).toBe('tooNew');
    expect(report.fromApi?.rebuilt).toEqual(['mig', 'mps', 'whole']);
    expect(withoutTimes(entries())).toEqual(withoutTimes(before));
    const note = rebuildNote(events[0] as RebuildSummary);
    expect(note).toMatch(/written by a newer gpu-dra \(needs reader version 2/);
    expect(note).toMatch(/upgrade again: it reads the rebuilt checkpoint/);
    expect(String(events[0]?.marker.movedTo)).toMatch(/checkpoint\.json\.too-new-/);
  });

  it('a spec that names no claim (an older version wrote it) keeps its devices held, and MPS sweeps wait', async () => {
    const before = await preparedThenTorn();
    const spec = JSON.parse(fs.readFileSync(specPath('whole'), 'utf8')) as CdiSpec;
    delete spec.annotations;
    fs.writeFileSync(specPath('whole'), JSON.stringify(spec));
    daemons.live.add('orphan-daemon');
    const state = makeState();
    const report = await state.recover();
    expect(report.fromApi).toMatchObject({ rebuilt: ['mig', 'mps'], kept: ['whole'] });
    expect(entries()['whole']).toMatchObject({
      state: 'PrepareCompleted',
      heldFromSpec: true,
      namespace: '',
      devices: [{ deviceName: 'gpu-0', poolName: TEST_NODE }],
    });
    expect(daemons.live.has('orphan-daemon')).toBe(true); // whose could it be? not swept
    const err = await prepare(state, { uid: 'thief', devices: ['gpu-0'] }).catch((e: unknown) => e);
    expect(isGpuDraError(err, 'DEVICE_IN_USE')).toBe(true);
    expect(rebuildNote(events[0] as RebuildSummary)).toMatch(/Kept 1 spec\(s\) it could not match/);
    // The kubelet's prepare names the claim: its record is rebuilt from the API, as it was.
    const again = await prepare(state, { uid: 'whole', devices: ['gpu-0'] });
    expect(again).toEqual([expect.objectContaining({ deviceName: 'gpu-0', requestNames: ['gpu'] })]);
    expect(withoutTimes({ whole: entries()['whole'] ?? {} })).toEqual(
      withoutTimes({ whole: before['whole'] ?? {} }),
    );
    // The kubelet's unprepare releases it.
    await state.unprepare(ref('whole'), log);
    expect(fs.existsSync(specPath('whole'))).toBe(false);
    expect(await prepare(state, { uid: 'thief', devices: ['gpu-0'] })).toHaveLength(1);
  });

  it('a post of the Event that fails neither blocks nor fails the start', async () => {
    await preparedThenTorn();
    const state = makeState({ onCheckpointRebuilt: () => Promise.reject(new Error('forbidden')) });
    const report = await state.recover();
    expect(report.fromApi?.rebuilt).toHaveLength(3);
    const hanging = makeState({ onCheckpointRebuilt: () => new Promise<void>(() => undefined) });
    fs.writeFileSync(checkpointFile, 'garbage');
    await expect(hanging.recover()).resolves.toMatchObject({ checkpoint: 'quarantined' });
  });
});

describe('the Node Event', () => {
  it('is an events.k8s.io/v1 Warning about the Node, in default, with a MicroTime', () => {
    const body = nodeEventBody(
      { type: 'Warning', reason: 'CheckpointRebuilt', action: 'RebuildCheckpoint', note: 'n' },
      { nodeName: 'node-a', driverName: 'gpu.dra.dev', now: new Date('2026-12-02T10:00:00.123Z') },
    );
    expect(body).toMatchObject({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { namespace: 'default', name: expect.stringMatching(/^node-a\.[0-9a-f]+$/) as unknown },
      eventTime: '2026-12-02T10:00:00.123000Z',
      type: 'Warning',
      reason: 'CheckpointRebuilt',
      reportingController: 'gpu.dra.dev/kubelet-plugin',
      regarding: { apiVersion: 'v1', kind: 'Node', name: 'node-a' },
    });
  });
});
