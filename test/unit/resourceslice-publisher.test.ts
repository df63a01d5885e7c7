import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';

import type { NodeInventory } from '../../src/nvml/types.js';
import { capturingLogger } from '../support/capturingLogger.js';
import { inventoryFixture } from '../support/inventoryFixture.js';
import type { Device, ResourceSlice } from '../../src/api/resource.js';
import type { SliceClient, WatchPhase } from '../../src/resourceslice/sliceApi.js';
import type { ServerVersion } from '../../src/resourceslice/partitions.js';
import { droppedPaths, likelyFeatureGate } from '../../src/resourceslice/sliceWire.js';
import {
  DEFAULT_RESYNC_INTERVAL_MS,
  PUBLISHER_RBAC_RULES,
  ResourceSlicePublisher,
  WATCH_TIMEOUT_GRACE_MS,
  watchRetryDelay,
  watchTimeoutSeconds,
  type PublisherOptions,
} from '../../src/resourceslice/publisher.js';

const NODE = 'node-a';
const DRIVER = 'gpu.dra.dev';

class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

type Watcher = {
  selector: Record<string, string>;
  /** The apiserver's end of the watch at its timeoutSeconds. */
  timer?: ReturnType<typeof setTimeout>;
  onEvent: (phase: WatchPhase, obj: unknown) => void;
  onDone: (err: unknown) => void;
};

/** An in-memory apiserver for ResourceSlices and Nodes, with write counting and fault injection. */
class FakeApi implements SliceClient {
  readonly slices = new Map<string, ResourceSlice>();
  readonly nodes = new Map<string, string>([[NODE, 'node-uid-1']]);
  readonly calls = { list: 0, create: 0, update: 0, delete: 0, watch: 0, getNode: 0, version: 0 };
  /** What `GET /version` answers; a number fails it with that status. */
  version: ServerVersion | number = { gitVersion: 'v1.37.2', major: '1', minor: '37' };
  /** Errors to throw from the next calls of a verb. */
  /** Per verb, what successive calls do: an HTTP status to fail with, 0 to pass, or a function (run then) giving one. */
  readonly faults: Partial<Record<'list' | 'create' | 'update' | 'delete', (number | (() => number))[]>> = {};
  /** Simulates a disabled feature gate: the apiserver drops these device fields. */
  dropDeviceFields: string[] = [];
  /** Simulates a disabled feature gate: the apiserver drops these spec fields. */
  dropSpecFields: string[] = [];
  /** Simulates DRAConsumableCapacity off: capacities lose their requestPolicy. */
  dropRequestPolicy = false;
  private rv = 100;
  private uid = 0;
  private watchers = new Set<Watcher>();
  /** Every watch opened, in order: the resourceVersion it started from and its timeout. */
  readonly watchesOpened: { rv: string | undefined; timeoutSeconds: number }[] = [];

  writes(): number {
    return this.calls.create + this.calls.update + this.calls.delete;
  }

  private fault(verb: 'list' | 'create' | 'update' | 'delete'): void {
    const fault = this.faults[verb]?.shift();
    const code = typeof fault === 'function' ? fault() : fault;
    if (code !== undefined && code !== 0) throw new ApiError(code, `injected ${code} on ${verb}`);
  }

  private emit(phase: WatchPhase, s: ResourceSlice): void {
    for (const w of this.watchers) {
      if (w.selector['spec.nodeName'] === s.spec.nodeName && w.selector['spec.driver'] === s.spec.driver) {
        w.onEvent(phase, structuredClone(s));
      }
    }
  }

  private store(s: ResourceSlice): ResourceSlice {
    const spec = Object.fromEntries(
      Object.entries(s.spec).filter(([k]) => !this.dropSpecFields.includes(k)),
    ) as ResourceSlice['spec'];
    const copy = structuredClone({ ...s, spec });
    const devices = (copy.spec.devices ?? []).map((d) => {
      const kept = Object.fromEntries(Object.entries(d).filter(([k]) => !this.dropDeviceFields.includes(k)));
      if (!this.dropRequestPolicy || !d.capacity) return kept;
      const capacity = Object.fromEntries(
        Object.entries(d.capacity).map(([k, c]) => [
          k,
          Object.fromEntries(Object.entries(c).filter(([f]) => f !== 'requestPolicy')),
        ]),
      );
      return { ...kept, capacity };
    });
    const stored: ResourceSlice = {
      ...copy,
      metadata: { ...copy.metadata, resourceVersion: String(++this.rv) },
      spec: copy.spec.devices ? { ...copy.spec, devices: devices as unknown as Device[] } : copy.spec,
    };
    this.slices.set(stored.metadata.name, stored);
    return structuredClone(stored);
  }

  /** An outside writer (another tool, an admin, the kubelet). */
  outsideCreate(s: ResourceSlice): void {
    const stored = this.store({ ...s, metadata: { ...s.metadata, uid: `uid-${++this.uid}` } });
    this.emit('ADDED', stored);
  }

  outsideDelete(name: string): void {
    const s = this.slices.get(name);
    if (!s) throw new Error(`no slice ${name}`);
    this.slices.delete(name);
    this.emit('DELETED', s);
  }

  outsideEdit(name: string, edit: (s: ResourceSlice) => ResourceSlice): void {
    const s = structuredClone(this.slices.get(name));
    if (!s) throw new Error(`no slice ${name}`);
    this.emit('MODIFIED', this.store(edit(s)));
  }

  /** The kubelet's wipe: DeleteCollection with spec.nodeName. */
  wipeNode(node: string): void {
    for (const s of [...this.slices.values()])
      if (s.spec.nodeName === node) this.outsideDelete(s.metadata.name);
  }

  mine(): ResourceSlice[] {
    return [...this.slices.values()]
      .filter((s) => s.spec.nodeName === NODE && s.spec.driver === DRIVER)
      .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  }

  private parse(selector: string): Record<string, string> {
    return Object.fromEntries(selector.split(',').map((kv) => kv.split('=') as [string, string]));
  }

  list(fieldSelector: string): Promise<{ items: ResourceSlice[]; resourceVersion: string | undefined }> {
    this.calls.list++;
    this.fault('list');
    const sel = this.parse(fieldSelector);
    const items = [...this.slices.values()].filter(
      (s) => s.spec.nodeName === sel['spec.nodeName'] && s.spec.driver === sel['spec.driver'],
    );
    return Promise.resolve({ items: structuredClone(items), resourceVersion: String(this.rv) });
  }

  create(slice: ResourceSlice): Promise<ResourceSlice> {
    this.calls.create++;
    this.fault('create');
    if (this.slices.has(slice.metadata.name)) return Promise.reject(new ApiError(409, 'AlreadyExists'));
    if (slice.metadata.resourceVersion)
      return Promise.reject(new ApiError(400, 'resourceVersion set on create'));
    const stored = this.store({ ...slice, metadata: { ...slice.metadata, uid: `uid-${++this.uid}` } });
    this.emit('ADDED', stored);
    return Promise.resolve(stored);
  }

  update(slice: ResourceSlice): Promise<ResourceSlice> {
    this.calls.update++;
    this.fault('update');
    const cur = this.slices.get(slice.metadata.name);
    if (!cur) return Promise.reject(new ApiError(404, 'NotFound'));
    if (cur.metadata.resourceVersion !== slice.metadata.resourceVersion)
      return Promise.reject(new ApiError(409, 'Conflict'));
    if (cur.spec.nodeName !== slice.spec.nodeName || cur.spec.pool.name !== slice.spec.pool.name) {
      return Promise.reject(new ApiError(422, 'field is immutable'));
    }
    const stored = this.store({ ...slice, metadata: { ...slice.metadata, uid: cur.metadata.uid } });
    this.emit('MODIFIED', stored);
    return Promise.resolve(stored);
  }

  delete(name: string, pre?: { uid?: string; resourceVersion?: string }): Promise<void> {
    this.calls.delete++;
    this.fault('delete');
    const cur = this.slices.get(name);
    if (!cur) return Promise.reject(new ApiError(404, 'NotFound'));
    if (pre?.uid !== undefined && pre.uid !== cur.metadata.uid)
      return Promise.reject(new ApiError(409, 'uid precondition'));
    if (pre?.resourceVersion !== undefined && pre.resourceVersion !== cur.metadata.resourceVersion) {
      return Promise.reject(new ApiError(409, 'resourceVersion precondition'));
    }
    this.slices.delete(name);
    this.emit('DELETED', cur);
    return Promise.resolve();
  }

  watch(
    fieldSelector: string,
    rv: string | undefined,
    timeoutSeconds: number,
    onEvent: (phase: WatchPhase, obj: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<{ stop(): void }> {
    this.calls.watch++;
    this.watchesOpened.push({ rv, timeoutSeconds });
    const w: Watcher = { selector: this.parse(fieldSelector), onEvent, onDone };
    this.watchers.add(w);
    w.timer = setTimeout(() => {
      if (this.watchers.delete(w)) w.onDone(undefined);
    }, timeoutSeconds * 1000);
    w.timer.unref();
    return Promise.resolve({
      stop: () => {
        clearTimeout(w.timer);
        this.watchers.delete(w);
      },
    });
  }

  /** Ends every watch as a network error would. */
  breakWatches(): void {
    this.endWatches(new Error('connection reset'));
  }

  /**
   * Ends every watch: cleanly by default, as the apiserver does at its timeoutSeconds or when
   * shutting down.
   */
  endWatches(err?: Error): void {
    for (const w of [...this.watchers]) {
      clearTimeout(w.timer);
      this.watchers.delete(w);
      w.onDone(err);
    }
  }

  /** A connection gone silent: the watch stays "open" but nothing will ever arrive or end it. */
  silenceWatches(): void {
    for (const w of this.watchers) {
      clearTimeout(w.timer);
      w.onEvent = () => undefined;
      w.onDone = () => undefined;
    }
  }

  watcherCount(): number {
    return this.watchers.size;
  }

  serverVersion(): Promise<ServerVersion> {
    this.calls.version++;
    const v = this.version;
    return typeof v === 'number'
      ? Promise.reject(new ApiError(v, `injected ${v} on /version`))
      : Promise.resolve(v);
  }

  getNodeUid(name: string): Promise<string> {
    this.calls.getNode++;
    const uid = this.nodes.get(name);
    return uid ? Promise.resolve(uid) : Promise.reject(new ApiError(404, `node ${name} not found`));
  }
}

async function eventually(check: () => void, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/**
 * Runs a timing test on vitest's fake clock: the publisher's delays (re-watch backoff, periodic
 * re-list, watch timeouts of minutes) are checked to the millisecond, and a loaded CI machine
 * cannot make them late.
 */
async function withFakeTimers(body: () => Promise<void>): Promise<void> {
  vi.useFakeTimers();
  try {
    await body();
    await Promise.all(publishers.splice(0).map((p) => p.stop()));
  } finally {
    vi.useRealTimers();
  }
}

/** On the fake clock: the first publish done and its watch open. */
async function settle(pub: ResourceSlicePublisher): Promise<void> {
  const ready = pub.whenReady();
  await vi.advanceTimersByTimeAsync(10);
  await ready;
  await vi.advanceTimersByTimeAsync(10);
}

/** On the fake clock: one H100's slices published and watched, the periodic re-list out of the way. */
async function watchingPublisher(random: () => number = () => 0): Promise<FakeApi> {
  const api = new FakeApi();
  const pub = newPublisher(api, { resyncIntervalMs: 3_600_000, random });
  pub.start(inv('h100'));
  await settle(pub);
  return api;
}

const publishers: ResourceSlicePublisher[] = [];

function newPublisher(api: FakeApi, extra: Partial<PublisherOptions> = {}): ResourceSlicePublisher {
  const p = new ResourceSlicePublisher({
    nodeName: NODE,
    driverName: DRIVER,
    client: api,
    debounceMs: 2,
    backoff: { initialDelayMs: 5, maxDelayMs: 50 },
    ...extra,
  });
  publishers.push(p);
  return p;
}

afterEach(async () => {
  await Promise.all(publishers.splice(0).map((p) => p.stop()));
});

const inv = (p: Parameters<typeof inventoryFixture>[0]): NodeInventory => inventoryFixture(p);

describe('ResourceSlicePublisher', () => {
  it('exports exactly the RBAC it needs', () => {
    expect(PUBLISHER_RBAC_RULES).toEqual([
      {
        apiGroups: ['resource.k8s.io'],
        resources: ['resourceslices'],
        verbs: ['create', 'update', 'delete', 'list', 'watch'],
      },
      { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
    ]);
  });

  it('publishes the model, owned by the Node, and becomes ready', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    expect(pub.isReady()).toBe(false);
    pub.start(inv('h100-8x'));
    await pub.whenReady();
    expect(pub.isReady()).toBe(true);
    const [s] = api.mine();
    expect(api.mine()).toHaveLength(1);
    expect(s?.spec.pool).toEqual({ name: NODE, generation: 1, resourceSliceCount: 1 });
    expect(s?.spec.devices?.map((d) => d.name)).toEqual(Array.from({ length: 8 }, (_, i) => `gpu-${i}`));
    expect(s?.metadata.ownerReferences).toEqual([
      { apiVersion: 'v1', kind: 'Node', name: NODE, uid: 'node-uid-1', controller: true },
    ]);
    expect(pub.counters).toMatchObject({ creates: 1, updates: 0, deletes: 0 });
  });

  it('does not rewrite unchanged slices (no churn), even across restarts', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    expect(api.mine()).toHaveLength(2);
    const writes = api.writes();
    await pub.sync();
    await pub.update(inv('h100-mig-224'));
    await pub.sync();
    expect(api.writes()).toBe(writes);
    await pub.stop();

    // A restarted driver with the same devices writes nothing either.
    const again = newPublisher(api);
    again.start(inv('h100-mig-224'));
    await again.whenReady();
    await again.sync();
    expect(api.writes()).toBe(writes);
    expect(again.counters).toMatchObject({ creates: 0, updates: 0, deletes: 0 });
  });

  it('republishes on inventory change with a bumped generation, deleting stale slices', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    expect(api.mine().map((s) => s.spec.pool.generation)).toEqual([1, 1]);
    await pub.update(inv('h100-8x'));
    const mine = api.mine();
    expect(mine).toHaveLength(1);
    expect(mine[0]?.spec.pool).toEqual({ name: NODE, generation: 2, resourceSliceCount: 1 });
    expect(pub.counters).toMatchObject({ creates: 2, updates: 1, deletes: 1 });
  });

  it('removes stale slices of this driver on this node after a restart with fewer devices, and nothing else', async () => {
    const api = new FakeApi();
    const old = newPublisher(api);
    old.start(inv('h100-mig-224'));
    await old.whenReady();
    await old.stop();
    // Someone else's slices: another driver on this node, and this driver on another node.
    const foreign = (name: string, node: string, driver: string): ResourceSlice => ({
      metadata: { name },
      spec: {
        driver,
        nodeName: node,
        pool: { name: node, generation: 1, resourceSliceCount: 1 },
        devices: [],
      },
    });
    api.outsideCreate(foreign('other-driver', NODE, 'net.example.com'));
    api.outsideCreate(foreign('other-node', 'node-b', DRIVER));
    // A slice left by some older naming scheme.
    api.outsideCreate(foreign('node-a-gpu.dra.dev-x7k2q', NODE, DRIVER));

    const pub = newPublisher(api);
    pub.start(inv('h100'));
    await pub.whenReady();
    const mine = api.mine();
    expect(mine).toHaveLength(1);
    expect(mine[0]?.spec.devices?.map((d) => d.name)).toEqual(['gpu-0']);
    expect(mine[0]?.spec.pool.generation).toBe(2);
    expect(api.slices.has('other-driver')).toBe(true);
    expect(api.slices.has('other-node')).toBe(true);
  });

  it('repairs a slice deleted or edited by someone else, and re-creates after the kubelet wipes the node', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api, { resyncIntervalMs: 3_600_000 });
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    await eventually(() => {
      expect(api.watcherCount()).toBe(1);
    });
    const [first, second] = api.mine();
    if (!first || !second) throw new Error('expected two slices');

    api.outsideDelete(second.metadata.name);
    await eventually(() => {
      expect(api.mine()).toHaveLength(2);
    });
    expect(api.mine().map((s) => s.spec.pool.generation)).toEqual([2, 2]);

    api.outsideEdit(first.metadata.name, (s) => ({
      ...s,
      spec: { ...s.spec, devices: s.spec.devices?.slice(1) },
    }));
    await eventually(() => {
      expect(api.mine()[0]?.spec.devices).toHaveLength(128);
      expect(api.mine().map((s) => s.spec.pool.generation)).toEqual([3, 3]);
    });

    api.wipeNode(NODE);
    expect(api.mine()).toHaveLength(0);
    await eventually(() => {
      expect(api.mine()).toHaveLength(2);
    }, 2000);
    // Never back to an older generation than what consumers have seen.
    expect(api.mine()[0]?.spec.pool.generation).toBe(4);
  });

  it('resyncs and re-watches when the watch breaks', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api, { resyncIntervalMs: 3_600_000 });
    pub.start(inv('h100'));
    await pub.whenReady();
    await eventually(() => {
      expect(api.watcherCount()).toBe(1);
    });
    const lists = api.calls.list;
    api.breakWatches();
    api.wipeNode(NODE); // missed: nobody is watching
    await eventually(() => {
      expect(api.calls.list).toBeGreaterThan(lists);
      expect(api.mine()).toHaveLength(1);
      expect(api.watcherCount()).toBe(1);
    });
  });

  it('holds one watch after a broken one, not one from the re-list and another from the retry timer', async () => {
    await withFakeTimers(async () => {
      const api = await watchingPublisher();
      expect(api.watcherCount()).toBe(1);
      const watches = api.calls.watch;
      api.breakWatches();
      // Nothing before the re-watch delay (0.8 s after a first failure, with this random)...
      await vi.advanceTimersByTimeAsync(790);
      expect(api.calls.watch).toBe(watches);
      // ...then one new watch, after the re-list.
      await vi.advanceTimersByTimeAsync(100);
      expect(api.watcherCount()).toBe(1);
      expect(api.calls.watch).toBe(watches + 1);
      // A second break (1.6 s now) leaves one watch again, not a doubled pair.
      api.breakWatches();
      await vi.advanceTimersByTimeAsync(2_000);
      expect(api.watcherCount()).toBe(1);
      expect(api.calls.watch).toBe(watches + 2);
    });
  });

  it('re-lists after a broken watch only after a random delay, so a fleet does not re-list together', async () => {
    await withFakeTimers(async () => {
      const early = new FakeApi();
      const late = new FakeApi();
      const a = newPublisher(early, { resyncIntervalMs: 3_600_000, random: () => 0 });
      const b = newPublisher(late, { resyncIntervalMs: 3_600_000, random: () => 0.99 });
      a.start(inv('h100'));
      b.start(inv('h100'));
      await Promise.all([settle(a), settle(b)]);
      expect(early.watcherCount() + late.watcherCount()).toBe(2);
      const [la, lb] = [early.calls.list, late.calls.list];
      // Both watches end in the same instant, as when their apiserver goes away.
      early.breakWatches();
      late.breakWatches();
      await vi.advanceTimersByTimeAsync(790);
      expect([early.calls.list, late.calls.list]).toEqual([la, lb]);
      // 0.8 s × (1 + random): one at 0.8 s, the other at 1.59 s.
      await vi.advanceTimersByTimeAsync(100);
      expect([early.calls.list, late.calls.list]).toEqual([la + 1, lb]);
      await vi.advanceTimersByTimeAsync(690);
      expect([early.calls.list, late.calls.list]).toEqual([la + 1, lb]);
      await vi.advanceTimersByTimeAsync(100);
      expect([early.calls.list, late.calls.list]).toEqual([la + 1, lb + 1]);
      expect(late.watcherCount()).toBe(1);
    });
    expect(watchRetryDelay(0, () => 0)).toBe(800);
    expect(watchRetryDelay(20, () => 0.5)).toBe(45_000);
  });

  it('jitters the periodic re-list, so drivers started together do not re-list in step', async () => {
    await withFakeTimers(async () => {
      const early = new FakeApi();
      const late = new FakeApi();
      const a = newPublisher(early, { random: () => 0 });
      const b = newPublisher(late, { random: () => 1 });
      a.start(inv('h100'));
      b.start(inv('h100'));
      await Promise.all([settle(a), settle(b)]);
      const [la, lb] = [early.calls.list, late.calls.list];
      // The default period, 30 min: − 20 % for one, + 20 % for the other; nothing in between.
      await vi.advanceTimersByTimeAsync(0.8 * DEFAULT_RESYNC_INTERVAL_MS - 1_000);
      expect([early.calls.list, late.calls.list]).toEqual([la, lb]);
      await vi.advanceTimersByTimeAsync(2_000);
      expect([early.calls.list, late.calls.list]).toEqual([la + 1, lb]);
      await vi.advanceTimersByTimeAsync(0.4 * DEFAULT_RESYNC_INTERVAL_MS - 2_000);
      expect(late.calls.list).toBe(lb);
      await vi.advanceTimersByTimeAsync(2_000);
      expect(late.calls.list).toBe(lb + 1);
      // Meanwhile each watch was renewed at its timeout (300 s and 599 s here), without a list.
      expect(early.calls.watch).toBe(1 + Math.floor(2_162_000 / 300_000));
      expect(late.calls.watch).toBe(1 + Math.floor(2_162_000 / 599_000));
    });
    expect(DEFAULT_RESYNC_INTERVAL_MS).toBe(30 * 60_000);
  });

  it('asks each watch to end after 5-10 min, drawn per watch, and resumes it there without a list', async () => {
    await withFakeTimers(async () => {
      let r = 0.25;
      const api = await watchingPublisher(() => r);
      expect(api.watchesOpened).toEqual([{ rv: expect.any(String) as string, timeoutSeconds: 375 }]);
      // A foreign change moves the resourceVersion the next watch must start from.
      api.outsideEdit(api.mine()[0]?.metadata.name ?? '', (s) => ({
        ...s,
        metadata: { ...s.metadata, labels: { edited: 'yes' } },
      }));
      await vi.advanceTimersByTimeAsync(50);
      const seen = api.mine()[0]?.metadata.resourceVersion;
      const lists = api.calls.list;
      r = 0.9;
      // The apiserver ends the watch at its timeout: a new one from where it left off, at once.
      await vi.advanceTimersByTimeAsync(375_000 - 100);
      expect(api.calls.watch).toBe(1);
      await vi.advanceTimersByTimeAsync(100);
      expect(api.watcherCount()).toBe(1);
      expect(api.watchesOpened.at(-1)).toEqual({ rv: seen, timeoutSeconds: 570 });
      expect(api.calls.list).toBe(lists);
    });
    expect(watchTimeoutSeconds(() => 0)).toBe(300);
    expect(watchTimeoutSeconds(() => 0.999)).toBe(599);
  });

  it('re-lists after a watch that ended cleanly before its timeout (an apiserver shutting down), after the jittered delay', async () => {
    await withFakeTimers(async () => {
      const api = await watchingPublisher();
      const lists = api.calls.list;
      await vi.advanceTimersByTimeAsync(60_000);
      api.endWatches();
      api.wipeNode(NODE); // missed: nobody is watching
      await vi.advanceTimersByTimeAsync(790);
      expect(api.calls.list).toBe(lists);
      await vi.advanceTimersByTimeAsync(200);
      expect(api.calls.list).toBe(lists + 1);
      expect(api.mine()).toHaveLength(1);
      expect(api.watcherCount()).toBe(1);
      expect(api.watchesOpened.at(-1)?.rv).not.toBe(api.watchesOpened[0]?.rv);
    });
  });

  it('replaces a watch on a dead connection (open past its timeout) after a re-list', async () => {
    await withFakeTimers(async () => {
      const api = await watchingPublisher();
      const [lists, watches] = [api.calls.list, api.calls.watch];
      // The peer vanished without a FIN: the watch never ends, and changes go unseen.
      api.silenceWatches();
      api.wipeNode(NODE);
      await vi.advanceTimersByTimeAsync(300_000 + WATCH_TIMEOUT_GRACE_MS - 100);
      expect([api.calls.list, api.calls.watch]).toEqual([lists, watches]);
      // 30 s past the 300 s timeout it is given up; the re-list 0.8 s later repairs the slices.
      await vi.advanceTimersByTimeAsync(100 + 1_000);
      expect(api.calls.list).toBe(lists + 1);
      expect(api.mine()).toHaveLength(1);
      expect(api.calls.watch).toBe(watches + 1);
      expect(api.watcherCount()).toBe(1); // the silenced one was stopped, not leaked
    });
  });

  it('retries conflicts and server errors with backoff', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    api.faults.create = [409, 500];
    api.faults.list = [503];
    pub.start(inv('h100-8x'));
    await pub.whenReady();
    expect(api.mine()).toHaveLength(1);
    expect(pub.counters.conflicts).toBe(1);
    expect(pub.counters.errors).toBe(3);
    api.faults.update = [409];
    await pub.update(inv('h100'));
    expect(api.mine()[0]?.spec.devices).toHaveLength(1);
    expect(pub.counters.conflicts).toBe(2);
  });

  it('retries a taint republish the apiserver refuses, never dropping it', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    const inventory = inv('h100-8x');
    pub.start(inventory);
    await pub.whenReady();
    const errors = pub.counters.errors;
    // The device monitor's republish after an XID: the first write is refused (500), then one
    // more (503) after the retry re-lists; the change must still land, without a new update().
    api.faults.update = [500, 503];
    const taint = { key: `${DRIVER}/xid`, value: '79', effect: 'NoSchedule' as const };
    await pub.update(inventory, { 'gpu-3': [taint] });
    expect(pub.counters.errors).toBe(errors + 2);
    const devices = api.mine().flatMap((sl) => sl.spec.devices ?? []);
    expect(devices.find((d) => d.name === 'gpu-3')?.taints).toEqual([taint]);
    expect(devices.filter((d) => (d.taints ?? []).length > 0)).toHaveLength(1);
    // Clearing it is a republish like any other, retried the same way.
    api.faults.update = [500];
    await pub.update(inventory, {});
    expect(
      api
        .mine()
        .flatMap((sl) => sl.spec.devices ?? [])
        .every((d) => !d.taints?.length),
    ).toBe(true);
  });

  it('never writes a generation twice, even when a pass failed halfway and its slices went', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    expect(api.mine().map((s) => s.spec.pool.generation)).toEqual([1, 1]);
    // Generation 2 lands on the first slice; the second update fails and, before the retry,
    // the kubelet wipes the node's slices: the retry must not publish generation 2 again.
    api.faults.update = [
      0,
      () => {
        api.wipeNode(NODE);
        return 500;
      },
    ];
    await pub.update(inv('h100-mig-224'), { 'gpu-0-mig-1g10gb-19-0': [{ key: 'k', effect: 'NoSchedule' }] });
    expect(new Set(api.mine().map((s) => s.spec.pool.generation))).toEqual(new Set([3]));
  });

  it('publishes an empty pool for a node discovery found no GPU on', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start({ ...inv('h100'), gpus: [] });
    await pub.whenReady();
    expect(api.mine()).toHaveLength(1);
    expect(api.mine()[0]?.spec.devices ?? []).toEqual([]);
  });

  it('stays not ready while the Node cannot be read, then publishes', async () => {
    const api = new FakeApi();
    api.nodes.delete(NODE);
    const pub = newPublisher(api);
    pub.start(inv('h100'));
    await eventually(() => {
      expect(api.calls.getNode).toBeGreaterThan(1);
    });
    expect(pub.isReady()).toBe(false);
    expect(api.mine()).toHaveLength(0);
    api.nodes.set(NODE, 'node-uid-2');
    await pub.whenReady();
    expect(api.mine()[0]?.metadata.ownerReferences?.[0]?.uid).toBe('node-uid-2');
  });

  it('re-owns slices when the Node was re-created with a new UID', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100'));
    await pub.whenReady();
    api.nodes.set(NODE, 'node-uid-new');
    // The garbage collector deletes slices owned by the old Node object.
    api.wipeNode(NODE);
    await eventually(() => {
      expect(api.mine()[0]?.metadata.ownerReferences?.[0]?.uid).toBe('node-uid-new');
    });
  });

  it('warns about fields dropped by a disabled feature gate, once, and does not rewrite in a loop', async () => {
    const api = new FakeApi();
    api.dropDeviceFields = ['taints'];
    const { logger, lines } = capturingLogger();
    const pub = newPublisher(api, { logger });
    pub.start(inv('h100-8x'));
    await pub.whenReady();
    await pub.update(inv('h100-8x'), {
      'gpu-3': [{ key: 'gpu.dra.dev/xid', value: '79', effect: 'NoSchedule' }],
    });
    const warn = lines.find((l) => l.level === 40 && /dropped/.test(l.msg));
    expect(warn?.msg).toMatch(/dropped 1 field\(s\).*DRADeviceTaints/);
    expect(warn?.['dropped']).toEqual(['spec.devices[3].taints']);
    const writes = api.writes();
    await pub.sync();
    await pub.sync();
    expect(api.writes()).toBe(writes);
    expect(lines.filter((l) => /dropped/.test(l.msg))).toHaveLength(1);
    expect(pub.counters.droppedFields).toBe(1);
  });

  it('with DRAConsumableCapacity off, publishes shared GPUs whole and says what --consumable-shares lost', async () => {
    const api = new FakeApi();
    api.dropDeviceFields = ['allowMultipleAllocations'];
    api.dropRequestPolicy = true;
    const { logger, lines } = capturingLogger();
    const pub = newPublisher(api, { logger, consumableShares: 'memory' });
    pub.start(inv('h100-8x'));
    await pub.whenReady();
    expect(api.mine()[0]?.spec.devices).toHaveLength(8);
    expect(api.mine()[0]?.spec.devices?.[0]?.capacity).toEqual({ memory: { value: '81559Mi' } });
    const warn = lines.find((l) => l.level === 40 && /dropped/.test(l.msg));
    expect(warn?.msg).toMatch(/dropped 16 field\(s\).*DRAConsumableCapacity enabled on kube-apiserver/);
    expect(warn?.msg).toMatch(
      /without it --consumable-shares has no effect: each GPU still goes to one claim/,
    );
    expect(warn?.['likelyFeatureGates']).toEqual(['DRAConsumableCapacity']);
    const writes = api.writes();
    await pub.sync();
    expect(api.writes()).toBe(writes);
  });

  it('deleteAll removes only this driver’s slices on this node and stops publishing', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    api.outsideCreate({
      metadata: { name: 'keep-me' },
      spec: {
        driver: 'net.example.com',
        nodeName: NODE,
        pool: { name: NODE, generation: 1, resourceSliceCount: 1 },
      },
    });
    expect(await pub.deleteAll()).toBe(2);
    expect(api.mine()).toHaveLength(0);
    expect(api.slices.has('keep-me')).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(api.mine()).toHaveLength(0);
    await expect(pub.update(inv('h100'))).rejects.toThrow(/stopped/);
  });

  it('rejects an invalid inventory on update and keeps the published model', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api);
    pub.start(inv('h100'));
    await pub.whenReady();
    const bad = { ...inv('h100'), driverVersion: 'not-a-version' };
    await expect(pub.update(bad)).rejects.toMatchObject({
      code: 'RESOURCESLICE_INVALID',
      field: 'attributes.driverVersion',
    });
    await pub.sync();
    expect(api.mine()[0]?.spec.devices).toHaveLength(1);
  });

  it('counts writes in a prom-client registry when given one', async () => {
    const api = new FakeApi();
    const registry = new Registry();
    const pub = newPublisher(api, { registry });
    pub.start(inv('h100-mig-224'));
    await pub.whenReady();
    const text = await registry.metrics();
    expect(text).toContain('gpu_dra_resourceslice_operations_total{operation="create"} 2');
    expect(text).toContain('gpu_dra_resourceslice_ready 1');
  });
});

describe('publisher helpers', () => {
  it('finds dropped paths and names the likely gate', () => {
    const sent = {
      devices: [{ name: 'a', taints: [{ key: 'k' }], attributes: { x: { string: 'y' } } }],
      sharedCounters: [{}],
    };
    const stored = { devices: [{ name: 'a', attributes: { x: { string: 'y' } } }] };
    expect(droppedPaths(sent, stored, 'spec')).toEqual(['spec.devices[0].taints', 'spec.sharedCounters']);
    expect(likelyFeatureGate('spec.devices[0].taints')).toBe('DRADeviceTaints');
    expect(likelyFeatureGate('spec.devices[2].consumesCounters')).toBe('DRAPartitionableDevices');
    expect(likelyFeatureGate('spec.devices[0].capacity.memory.requestPolicy')).toBe('DRAConsumableCapacity');
    expect(likelyFeatureGate('spec.devices[0].attributes.x')).toBeUndefined();
  });
});

describe('ResourceSlicePublisher with dynamic MIG', () => {
  const counterSlices = (api: FakeApi): ResourceSlice[] => api.mine().filter((s) => s.spec.sharedCounters);

  it('reads /version once and lays counter sets out for it: own slices on 1.37, beside devices on 1.34', async () => {
    const api = new FakeApi();
    const pub = newPublisher(api, { migPartitioning: 'dynamic' });
    pub.start(inv('h100-8x-mig-on'));
    await pub.whenReady();
    expect(api.mine()).toHaveLength(5);
    expect(counterSlices(api)).toHaveLength(1);
    expect(counterSlices(api)[0]?.spec).not.toHaveProperty('devices');
    await pub.update(inv('h100-8x-mig-on'), { 'gpu-1': [{ key: 'k', effect: 'NoSchedule' }] });
    expect(api.calls.version).toBe(1);

    const old = new FakeApi();
    old.version = { gitVersion: 'v1.34.4', major: '1', minor: '34' };
    const pub134 = newPublisher(old, { migPartitioning: 'dynamic' });
    pub134.start(inv('h100-8x-mig-on'));
    await pub134.whenReady();
    expect(old.mine()).toHaveLength(8);
    for (const s of old.mine()) {
      expect(s.spec.sharedCounters).toHaveLength(1);
      expect(s.spec.devices).toHaveLength(26);
    }
  });

  it('does not ask for the version when nothing uses counters, nor when the layout is given', async () => {
    const api = new FakeApi();
    const staticPub = newPublisher(api);
    staticPub.start(inv('h100-8x-mig-on'));
    await staticPub.whenReady();
    await staticPub.stop();
    const given = newPublisher(api, { migPartitioning: 'dynamic', counterLayout: 'combined' });
    given.start(inv('h100-8x-mig-on'));
    await given.whenReady();
    expect(api.mine()).toHaveLength(8);
    expect(api.calls.version).toBe(0);
  });

  it('does not guess a layout: publishing waits, saying why, until /version answers', async () => {
    const api = new FakeApi();
    api.version = 503;
    const { logger, lines } = capturingLogger();
    const pub = newPublisher(api, { migPartitioning: 'dynamic', logger });
    pub.start(inv('h100-8x-mig-on'));
    await eventually(() => {
      expect(api.calls.version).toBeGreaterThanOrEqual(2);
    });
    expect(pub.isReady()).toBe(false);
    expect(api.mine()).toHaveLength(0);
    const failed = lines.find((l) => l.msg === 'ResourceSlice publish failed; retrying');
    expect(failed?.['err']).toMatchObject({
      code: 'APISERVER_VERSION_UNKNOWN',
      message: expect.stringMatching(/cannot read the apiserver version \(GET \/version\)/) as unknown,
    });
    api.version = { gitVersion: 'v1.36.1' };
    await pub.whenReady();
    expect(counterSlices(api)).toHaveLength(1);
  });

  it('with DRAPartitionableDevices off, says that dynamic MIG is unsafe and does not rewrite in a loop', async () => {
    const api = new FakeApi();
    api.dropDeviceFields = ['consumesCounters'];
    api.dropSpecFields = ['sharedCounters'];
    const { logger, lines } = capturingLogger();
    const pub = newPublisher(api, { migPartitioning: 'dynamic', logger });
    pub.start(inv('h100-8x-mig-on'));
    await pub.whenReady();
    const warns = lines.filter((l) => l.level === 40 && /dropped/.test(l.msg));
    expect(warns.length).toBeGreaterThan(0);
    for (const w of warns) {
      expect(w['likelyFeatureGates']).toEqual(['DRAPartitionableDevices']);
      expect(w.msg).toMatch(/without it --mig-partitioning=dynamic is unsafe/);
    }
    expect(warns.flatMap((w) => w['dropped'] as string[])).toContain('spec.sharedCounters');
    const writes = api.writes();
    await pub.sync();
    await pub.sync();
    expect(api.writes()).toBe(writes);
  });
});

describe('ResourceSlicePublisher model warnings', () => {
  it('logs a warning when it appears, not again while it stands, and again if it comes back', async () => {
    const api = new FakeApi();
    const { logger, lines } = capturingLogger();
    const pub = newPublisher(api, { migPartitioning: 'dynamic', logger });
    const migOff = inv('h100-8x');
    const migOn = inv('h100-8x-mig-on');
    const count = (): number => lines.filter((l) => /gpu-0 .* is published whole/.test(l.msg)).length;
    pub.start(migOff);
    await pub.whenReady();
    expect(count()).toBe(1);
    await pub.update({ ...migOff, driverVersion: '580.159.5' });
    expect(count()).toBe(1);
    await pub.update(migOn);
    await pub.update(migOff);
    expect(count()).toBe(2);
  });
});
