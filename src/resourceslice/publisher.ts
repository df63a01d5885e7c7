/**
 * Keeps this node's ResourceSlices on the apiserver equal to the model.
 *
 * - One reconcile at a time: list this node's slices of this driver (field selector
 *   `spec.nodeName=<node>,spec.driver=<driver>`), compare them *semantically* with the model
 *   (map order and Quantity spelling ignored, device order not), and write only when they differ.
 * - Any difference bumps `pool.generation` past everything seen and rewrites the whole pool:
 *   stale slices are deleted first (uid/resourceVersion preconditions), then existing ones
 *   updated and missing ones created. Unchanged pools cause no writes at all.
 * - A watch on the same selector triggers a reconcile on any foreign change (someone deleted or
 *   edited a slice, the kubelet wiped the node's slices); one watch at a time. As client-go's
 *   reflector does, each watch asks the apiserver to end it after 5–10 min (drawn per watch) and
 *   is resumed from its last resourceVersion without a list; one still open 30 s past its timeout
 *   sits on a dead connection and is replaced after a re-list. Any other end re-lists after a
 *   jittered delay. A periodic re-list (30 min ± 20 %) is the last safety net. At steady state a
 *   driver thus sends about one request per node every 7 minutes, and never writes.
 * - Conflicts (409) and other failures are retried with capped exponential backoff.
 * - Slices are owned by the Node (ownerReference with the Node's UID), so they go away with it.
 * - After each write the stored object is compared with what was sent: fields the apiserver
 *   dropped (a disabled feature gate) are logged once with the likely gate, and not re-sent in a
 *   loop.
 * - With counter sets (`--mig-partitioning=dynamic`) the slice layout depends on the Kubernetes
 *   version: unless `counterLayout` is given, the first reconcile that needs it reads `/version`
 *   once; a failure fails that reconcile (logged, retried), never a guessed layout.
 */
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import type { KubeClient } from '../kube/client.js';
import type { KubeConfig } from '../kube/config.js';
import type { NodeInventory } from '../nvml/types.js';
import { GpuDraError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { backoffDelay, sleep, type BackoffOptions } from '../util/backoff.js';
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';
import type { CounterSet, ResourceSlice } from '../api/resource.js';
import { httpStatus, kubeSliceClient, type SliceClient } from './sliceApi.js';
import {
  buildDevices,
  slicesFromDevices,
  validatePoolOptions,
  type SliceDevice,
  type TaintMap,
} from './model.js';
import { droppedPaths, gateEffect, likelyFeatureGate, sliceKey, toWire } from './sliceWire.js';
import type { ConsumableShares } from './shares.js';
import { counterLayoutFor, type CounterLayout, type MigPartitioning } from './partitions.js';

/** The only API access the publisher needs; deploy RBAC is generated from this. */
export const PUBLISHER_RBAC_RULES = [
  {
    apiGroups: ['resource.k8s.io'],
    resources: ['resourceslices'],
    verbs: ['create', 'update', 'delete', 'list', 'watch'],
  },
  { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
] as const;

export interface PublisherCounters {
  creates: number;
  updates: number;
  deletes: number;
  /** 409 answers (stale list, concurrent writer); each leads to a retried reconcile. */
  conflicts: number;
  /** Failed reconciles of any kind. */
  errors: number;
  /** Completed reconciles (with or without writes). */
  reconciles: number;
  /** Fields the apiserver dropped from what was sent. */
  droppedFields: number;
}

export interface PublisherOptions {
  readonly nodeName: string;
  /** Default {@link DEFAULT_DRIVER_NAME}. */
  readonly driverName?: string;
  /**
   * Either a KubeConfig or a shared KubeClient (the real client is built from it), or a
   * {@link SliceClient} (tests).
   */
  readonly kubeConfig?: KubeConfig | KubeClient;
  readonly client?: SliceClient;
  readonly logger?: Logger;
  /** Registers `gpu_dra_resourceslice_*` metrics here when given. */
  readonly registry?: Registry;
  /**
   * Full re-list interval, default 30 min (a safety net: watches are resumed, and replaced when
   * their connection dies); each period is drawn from ±20 % of it.
   */
  readonly resyncIntervalMs?: number;
  /** Delay that coalesces bursts of triggers into one reconcile, default 100 ms. */
  readonly debounceMs?: number;
  /** Retry backoff for failed reconciles; default 200 ms doubling to 10 s. */
  readonly backoff?: BackoffOptions;
  /** Override the per-slice device limit (tests). */
  readonly maxDevicesPerSlice?: number;
  /** `--consumable-shares`: let several claims share a full GPU; default `disabled`. */
  readonly consumableShares?: ConsumableShares;
  /** Source of the jitter in retries and re-lists, in [0, 1); default Math.random (tests). */
  readonly random?: () => number;
  /** `--mig-partitioning`: `dynamic` publishes MIG-mode GPUs as partitionable; default `static`. */
  readonly migPartitioning?: MigPartitioning;
  /** Where counter sets go; default: from the apiserver's version (partitions.ts counterLayoutFor). */
  readonly counterLayout?: CounterLayout;
}

/** A watch open this long was healthy: its end restarts the re-watch backoff. */
const HEALTHY_WATCH_MS = 60_000;

/** Default periodic re-list: a safety net only (see the module comment). */
export const DEFAULT_RESYNC_INTERVAL_MS = 30 * 60_000;

/**
 * The `timeoutSeconds` of one watch: 5 min times 1 to 2 at random, as client-go's reflector
 * draws it, so that a fleet's watches do not all end, and get renewed, together.
 */
export function watchTimeoutSeconds(random: () => number = Math.random): number {
  return Math.floor(300 * (1 + random()));
}

/**
 * How long past its timeout a watch may stay open before its connection is presumed dead (a
 * peer gone without a FIN or RST: nothing else would ever end it).
 */
export const WATCH_TIMEOUT_GRACE_MS = 30_000;

/**
 * Delay before re-listing and re-watching after watch `attempt` (0-based) ended: 0.8 s doubling
 * to 30 s, times 1 to 2 at random, as client-go's reflector backs off: drivers whose watches
 * all ended together (an apiserver restart) come back spread over the whole interval.
 */
export function watchRetryDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 800 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (1 + random()));
}

export class PublisherStoppedError extends GpuDraError {
  constructor() {
    super('PUBLISHER_STOPPED', 'ResourceSlice publisher stopped');
  }
}

interface Waiter {
  readonly version: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

export class ResourceSlicePublisher {
  readonly driverName: string;
  readonly nodeName: string;
  readonly counters: PublisherCounters = {
    creates: 0,
    updates: 0,
    deletes: 0,
    conflicts: 0,
    errors: 0,
    reconciles: 0,
    droppedFields: 0,
  };

  private readonly client: SliceClient;
  private readonly log: Logger;
  private readonly opts: PublisherOptions;
  private readonly fieldSelector: string;
  private readonly prom?: { ops: Counter<'operation'>; ready: Gauge };

  private devices?: readonly SliceDevice[];
  private counterSets: readonly CounterSet[] = [];
  private counterLayout?: CounterLayout;
  private inventory?: NodeInventory;
  private taints: TaintMap = {};
  /** Bumped on every model change; waiters resolve once a reconcile of their version succeeds. */
  private version = 0;
  private syncedVersion = 0;
  private waiters: Waiter[] = [];
  private readyWaiters: Waiter[] = [];

  private ready = false;
  private started = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private dirty = false;
  private wake?: () => void;
  private loopDone?: Promise<void>;
  private resyncTimer?: NodeJS.Timeout;
  private watchHandle?: { stop(): void };
  /** Replaces the watch when it outlives its timeout (a dead connection). */
  private watchGuard?: NodeJS.Timeout;
  /**
   * A watch is open, opening, or waiting out the delay after one ended; the loop opens a new one
   * only when this is false, after a successful re-list, so a driver never holds two.
   */
  private watching = false;
  private watchRv?: string;
  private lastListRv?: string;
  private watchAttempt = 0;

  private nodeUid?: string;
  /** Highest pool generation seen or written; new generations always go past it. */
  private maxGeneration = 0;
  /** resourceVersions of our own writes: their watch events trigger nothing. */
  private readonly ownWrites = new Set<string>();
  /** Slices the apiserver stored differently from what we sent: name -> [sentKey, storedKey]. */
  private readonly accepted = new Map<string, [string, string]>();
  private readonly warnedPaths = new Set<string>();
  /** The model's warnings last time: each is logged when it appears, not on every update. */
  private modelWarnings: ReadonlySet<string> = new Set();

  constructor(opts: PublisherOptions) {
    this.opts = opts;
    this.counterLayout = opts.counterLayout;
    this.driverName = opts.driverName ?? DEFAULT_DRIVER_NAME;
    this.nodeName = opts.nodeName;
    validatePoolOptions(this.driverName, this.nodeName, 0);
    if (opts.client) this.client = opts.client;
    else if (opts.kubeConfig) this.client = kubeSliceClient(opts.kubeConfig);
    else throw new GpuDraError('CONFIG_INVALID', 'ResourceSlicePublisher needs kubeConfig or client');
    this.log = (opts.logger ?? silentLogger()).child({
      component: 'resourceslice',
      driver: this.driverName,
      node: this.nodeName,
    });
    this.fieldSelector = `spec.nodeName=${this.nodeName},spec.driver=${this.driverName}`;
    if (opts.registry) {
      this.prom = {
        ops: new Counter({
          name: 'gpu_dra_resourceslice_operations_total',
          help: 'ResourceSlice writes by operation (create, update, delete, conflict, error)',
          labelNames: ['operation'],
          registers: [opts.registry],
        }),
        ready: new Gauge({
          name: 'gpu_dra_resourceslice_ready',
          help: '1 once the first ResourceSlice publish succeeded',
          registers: [opts.registry],
        }),
      };
    }
  }

  /** True once a publish of a real inventory has succeeded. */
  isReady(): boolean {
    return this.ready;
  }

  /** Resolves once {@link isReady} is true; rejects if the publisher stops first. */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    if (this.stopped) return Promise.reject(new PublisherStoppedError());
    return new Promise((resolve, reject) => this.readyWaiters.push({ version: 0, resolve, reject }));
  }

  /**
   * Starts publishing `inventory`. Returns at once; await {@link whenReady} for the first
   * publish. Failures are retried and logged.
   */
  start(inventory: NodeInventory): void {
    if (this.started) throw new GpuDraError('PUBLISHER_STARTED', 'ResourceSlice publisher already started');
    this.started = true;
    this.loopDone = this.loop();
    this.scheduleResync();
    // The returned promise only matters to update() callers.
    this.setInventory(inventory).catch(() => undefined);
  }

  /**
   * Republishes for a new inventory (and, when given, new device taints): recomputes the model
   * and writes only what differs.
   * Rejects with {@link ResourceSliceModelError} for an invalid inventory (the previous model
   * stays published). Resolves when the apiserver holds the new model; rejects with
   * {@link PublisherStoppedError} if the publisher stops first. Starts the publisher if needed.
   */
  update(inventory: NodeInventory, taints?: TaintMap): Promise<void> {
    try {
      if (taints) this.taints = taints;
      if (!this.started) {
        this.start(inventory);
        return this.sync();
      }
      return this.setInventory(inventory);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Triggers a reconcile now and resolves when one completes successfully. */
  sync(): Promise<void> {
    return this.waitFor(this.version, true);
  }

  private setInventory(inventory: NodeInventory): Promise<void> {
    const model = buildDevices(inventory, {
      taints: this.taints,
      ...(this.opts.consumableShares !== undefined ? { consumableShares: this.opts.consumableShares } : {}),
      ...(this.opts.migPartitioning !== undefined ? { migPartitioning: this.opts.migPartitioning } : {}),
    });
    // Dynamic MIG changes the inventory on every prepare; a standing warning (a GPU with MIG
    // mode off) would otherwise repeat with each.
    for (const w of model.warnings) if (!this.modelWarnings.has(w)) this.log.warn(w);
    this.modelWarnings = new Set(model.warnings);
    this.inventory = inventory;
    return this.setDevices(model.devices, model.counterSets);
  }

  private setDevices(devices: readonly SliceDevice[], counterSets: readonly CounterSet[]): Promise<void> {
    this.devices = devices;
    this.counterSets = counterSets;
    this.version++;
    return this.waitFor(this.version, true);
  }

  private waitFor(version: number, kick: boolean): Promise<void> {
    if (this.stopped) return Promise.reject(new PublisherStoppedError());
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ version, resolve, reject }));
    if (kick) this.kick();
    return p;
  }

  /**
   * The next periodic re-list, ±20 %: drivers started together (a DaemonSet rollout, a cluster
   * power-on) would otherwise re-list in the same second every period, for ever.
   */
  private scheduleResync(): void {
    if (this.stopped) return;
    const base = this.opts.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS;
    const delay = Math.round(base * (0.8 + 0.4 * (this.opts.random ?? Math.random)()));
    this.resyncTimer = setTimeout(() => {
      this.kick();
      this.scheduleResync();
    }, delay);
    this.resyncTimer.unref();
  }

  private kick(): void {
    this.dirty = true;
    this.wake?.();
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      if (!this.dirty) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      // Coalesce bursts of watch events and inventory changes; the first publish goes out at
      // once, since a node without slices cannot be scheduled on.
      try {
        if (this.isReady()) await sleep(this.opts.debounceMs ?? 100, this.abort.signal);
      } catch {
        break;
      }
      this.dirty = false;
      if (!this.devices) continue;
      const version = this.version;
      try {
        await this.reconcile();
        attempt = 0;
        this.counters.reconciles++;
        this.syncedVersion = Math.max(this.syncedVersion, version);
        this.markReady();
        this.settle();
        if (!this.watching) this.startWatch();
      } catch (err) {
        if (this.stopped) break;
        this.counters.errors++;
        this.prom?.ops.inc({ operation: 'error' });
        const status = httpStatus(err);
        if (status === 409) {
          this.counters.conflicts++;
          this.prom?.ops.inc({ operation: 'conflict' });
        }
        const delay = backoffDelay(
          attempt++,
          { initialDelayMs: 200, maxDelayMs: 10_000, ...this.opts.backoff },
          this.opts.random,
        );
        this.log.warn({ err, status, retryInMs: delay }, 'ResourceSlice publish failed; retrying');
        this.dirty = true;
        try {
          await sleep(delay, this.abort.signal);
        } catch {
          break;
        }
      }
    }
  }

  private markReady(): void {
    if (this.ready) return;
    this.ready = true;
    this.prom?.ready.set(1);
    this.log.info('ResourceSlices published');
    for (const w of this.readyWaiters) w.resolve();
    this.readyWaiters = [];
  }

  private settle(): void {
    const done = this.waiters.filter((w) => w.version <= this.syncedVersion);
    this.waiters = this.waiters.filter((w) => w.version > this.syncedVersion);
    for (const w of done) w.resolve();
  }

  private startWatch(): void {
    if (this.stopped) return;
    this.watching = true;
    const rv = this.watchRv ?? this.lastListRv;
    this.watchRv = rv;
    let ended = false;
    const openedAt = Date.now();
    const timeoutSeconds = watchTimeoutSeconds(this.opts.random);
    const restart = (err: unknown): void => {
      if (ended) return;
      ended = true;
      clearTimeout(this.watchGuard);
      this.watchGuard = undefined;
      this.watchHandle?.stop();
      this.watchHandle = undefined;
      if (this.stopped) return;
      // The apiserver ended it at the timeout we asked for: nothing was missed, so resume from
      // the last resourceVersion seen, without a list (client-go does the same). Every watch
      // draws its own timeout, so a fleet's renewals do not line up. An earlier clean end (an
      // apiserver shutting down ends every watch at once) takes the jittered path below.
      if (err === undefined && this.watchRv && Date.now() - openedAt >= timeoutSeconds * 1000 - 1000) {
        this.log.debug({ timeoutSeconds, rv: this.watchRv }, 'ResourceSlice watch timed out; resuming');
        this.watchAttempt = 0;
        this.startWatch();
        return;
      }
      // A watch that lived a minute was healthy, so its end starts the backoff over rather than
      // adding to it.
      if (Date.now() - openedAt >= HEALTHY_WATCH_MS) this.watchAttempt = 0;
      const delay = watchRetryDelay(this.watchAttempt++, this.opts.random);
      this.log.debug({ err, retryInMs: delay }, 'ResourceSlice watch ended');
      // Events may have been missed: re-list, then watch from the list's resourceVersion (the
      // loop opens the watch after a successful reconcile). Not at once: when an apiserver goes
      // away every driver's watch ends in the same instant, and N immediate re-lists would hit
      // its replacement together; the delay spreads them over a second or more.
      this.watchRv = undefined;
      sleep(delay, this.abort.signal).then(
        () => {
          this.watching = false;
          this.kick();
        },
        () => undefined,
      );
    };
    this.watchGuard = setTimeout(
      () => {
        const err = new Error(
          `ResourceSlice watch still open ${String(WATCH_TIMEOUT_GRACE_MS / 1000)} s past its ` +
            `${String(timeoutSeconds)} s timeout: its connection is presumed dead`,
        );
        this.log.warn({ err }, 'replacing a ResourceSlice watch on a dead connection; re-listing');
        restart(err);
      },
      timeoutSeconds * 1000 + WATCH_TIMEOUT_GRACE_MS,
    );
    this.watchGuard.unref();
    this.client
      .watch(
        this.fieldSelector,
        rv,
        timeoutSeconds,
        (phase, obj) => {
          const meta = (obj as { metadata?: { resourceVersion?: string } } | undefined)?.metadata;
          if (phase === 'BOOKMARK') {
            if (meta?.resourceVersion) this.watchRv = meta.resourceVersion;
            return;
          }
          if (phase === 'ERROR') {
            // Usually 410 Gone: the resourceVersion is too old. Re-list and re-watch.
            restart(new Error(`watch error: ${JSON.stringify(obj)}`));
            return;
          }
          this.watchAttempt = 0;
          const rvSeen = meta?.resourceVersion;
          if (rvSeen) this.watchRv = rvSeen;
          if (phase !== 'DELETED' && rvSeen && this.ownWrites.delete(rvSeen)) return;
          this.log.debug({ phase, rv: rvSeen }, 'foreign ResourceSlice change; reconciling');
          this.kick();
        },
        restart,
      )
      .then((handle) => {
        if (ended || this.stopped) handle.stop();
        else this.watchHandle = handle;
      }, restart);
  }

  private async ensureNodeUid(force: boolean): Promise<string> {
    if (!force && this.nodeUid) return this.nodeUid;
    const uid = await this.client.getNodeUid(this.nodeName);
    if (this.nodeUid && uid !== this.nodeUid) this.log.info({ uid }, 'Node UID changed; re-owning slices');
    this.nodeUid = uid;
    return uid;
  }

  private desired(generation: number, nodeUid: string): ResourceSlice[] {
    const slices = slicesFromDevices(
      this.devices ?? [],
      {
        driverName: this.driverName,
        nodeName: this.nodeName,
        generation,
        maxDevicesPerSlice: this.opts.maxDevicesPerSlice,
        ...(this.counterLayout ? { counterLayout: this.counterLayout } : {}),
      },
      this.counterSets,
    );
    return slices.map((s) => toWire(s, nodeUid));
  }

  /** Learns the counter layout from the apiserver's version, once, when counter sets need one. */
  private async ensureCounterLayout(): Promise<void> {
    if (this.counterLayout || this.counterSets.length === 0) return;
    let version;
    try {
      version = await this.client.serverVersion();
    } catch (err) {
      throw new GpuDraError(
        'APISERVER_VERSION_UNKNOWN',
        'cannot read the apiserver version (GET /version), which decides where MIG counter sets go ' +
          `(own slices from Kubernetes 1.35, beside their devices before): ${String(err)}`,
        { cause: err },
      );
    }
    const layout = counterLayoutFor(version);
    if (!layout) {
      throw new GpuDraError(
        'APISERVER_VERSION_UNKNOWN',
        `the apiserver's version ${JSON.stringify(version)} names no Kubernetes major.minor, which ` +
          'decides where MIG counter sets go (own slices from 1.35, beside their devices before)',
      );
    }
    this.counterLayout = layout;
    this.log.info(
      { kubernetesVersion: version.gitVersion, counterLayout: layout },
      layout === 'separate'
        ? 'counter sets go in ResourceSlices of their own (Kubernetes >= 1.35)'
        : 'counter sets go beside the devices that consume them (Kubernetes < 1.35)',
    );
  }

  private inSync(existing: ResourceSlice | undefined, want: ResourceSlice): boolean {
    if (!existing) return false;
    const have = sliceKey(existing, this.nodeName);
    const wantKey = sliceKey(want, this.nodeName);
    if (have === wantKey) return true;
    const acc = this.accepted.get(want.metadata.name);
    return acc !== undefined && acc[0] === wantKey && acc[1] === have;
  }

  private poolInSync(
    current: number,
    nodeUid: string | undefined,
    existing: readonly ResourceSlice[],
    byName: ReadonlyMap<string, ResourceSlice>,
  ): boolean {
    if (current === 0 || nodeUid === undefined) return false;
    if (!existing.every((s) => s.spec.pool.generation === current)) return false;
    const want = this.desired(current, nodeUid);
    return want.length === existing.length && want.every((w) => this.inSync(byName.get(w.metadata.name), w));
  }

  /** One list-compare-write pass. Throws on API errors (the loop retries). */
  private async reconcile(): Promise<void> {
    await this.ensureCounterLayout();
    const { items, resourceVersion } = await this.client.list(this.fieldSelector);
    this.lastListRv = resourceVersion;
    // The field selector is authoritative, but stay defensive: only ever touch our own slices.
    const existing = items.filter(
      (s) => s.spec.driver === this.driverName && s.spec.nodeName === this.nodeName,
    );
    const byName = new Map(existing.map((s) => [s.metadata.name, s]));
    const current = existing.reduce((m, s) => Math.max(m, s.spec.pool.generation), 0);
    this.maxGeneration = Math.max(this.maxGeneration, current);

    // Is the stored pool exactly the model at its current generation? (No node GET needed.)
    if (this.poolInSync(current, this.nodeUid, existing, byName)) return;
    // Something differs: learn the Node's UID afresh (the Node may have been re-created), and
    // check once more, since on the first pass the UID was not known yet.
    const nodeUid = await this.ensureNodeUid(true);
    if (this.poolInSync(current, nodeUid, existing, byName)) return;
    const generation = this.maxGeneration + 1;
    // Taken before the writes: a pass that fails halfway has still written this generation
    // somewhere, and the retry must go past it, not write it again over different content.
    this.maxGeneration = generation;
    const want = this.desired(generation, nodeUid);
    this.log.info(
      { generation, slices: want.length, devices: this.devices?.length ?? 0, existing: existing.length },
      'publishing ResourceSlices',
    );
    const wantNames = new Set(want.map((w) => w.metadata.name));

    // 1. Delete slices that are no longer part of the pool (or have an immutable field wrong).
    for (const s of existing) {
      const w = want.find((x) => x.metadata.name === s.metadata.name);
      const immutableDiffers =
        w !== undefined && (s.spec.pool.name !== w.spec.pool.name || s.spec.nodeName !== w.spec.nodeName);
      if (wantNames.has(s.metadata.name) && !immutableDiffers) continue;
      await this.deleteSlice(s);
      byName.delete(s.metadata.name);
    }
    // 2. Update the rest, create what is missing; every slice carries the new generation.
    for (const w of want) {
      const s = byName.get(w.metadata.name);
      let stored: ResourceSlice;
      if (s) {
        stored = await this.client.update({
          ...w,
          metadata: { ...w.metadata, resourceVersion: s.metadata.resourceVersion },
        });
        this.counters.updates++;
        this.prom?.ops.inc({ operation: 'update' });
      } else {
        // A 409 AlreadyExists (created behind our back) fails this pass; the retry re-lists.
        stored = await this.client.create(w);
        this.counters.creates++;
        this.prom?.ops.inc({ operation: 'create' });
      }
      if (stored.metadata.resourceVersion) this.rememberOwnWrite(stored.metadata.resourceVersion);
      this.checkStored(w, stored);
    }
  }

  private rememberOwnWrite(rv: string): void {
    this.ownWrites.add(rv);
    if (this.ownWrites.size > 1000) {
      const first = this.ownWrites.values().next().value;
      if (first !== undefined) this.ownWrites.delete(first);
    }
  }

  private async deleteSlice(s: ResourceSlice): Promise<void> {
    try {
      await this.client.delete(s.metadata.name, {
        uid: s.metadata.uid,
        resourceVersion: s.metadata.resourceVersion,
      });
      this.counters.deletes++;
      this.prom?.ops.inc({ operation: 'delete' });
    } catch (err) {
      if (httpStatus(err) !== 404) throw err;
    }
    this.accepted.delete(s.metadata.name);
  }

  /** Compares what the apiserver stored with what was sent; warns about dropped fields. */
  private checkStored(sent: ResourceSlice, stored: ResourceSlice): void {
    const sentKey = sliceKey(sent, this.nodeName);
    const storedKey = sliceKey(stored, this.nodeName);
    const dropped = droppedPaths(sent.spec, stored.spec, 'spec');
    if (sentKey === storedKey && dropped.length === 0) {
      this.accepted.delete(sent.metadata.name);
      return;
    }
    this.accepted.set(sent.metadata.name, [sentKey, storedKey]);
    const fresh = dropped.filter((p) => !this.warnedPaths.has(p.replace(/\[\d+\]/g, '[]')));
    if (fresh.length === 0 && dropped.length > 0) return;
    for (const p of dropped) this.warnedPaths.add(p.replace(/\[\d+\]/g, '[]'));
    this.counters.droppedFields += dropped.length;
    const gates = [...new Set(dropped.map(likelyFeatureGate).filter((g): g is string => g !== undefined))];
    const effects = gates.flatMap((g) => gateEffect(g) ?? []);
    this.log.warn(
      {
        slice: sent.metadata.name,
        dropped: dropped.slice(0, 10),
        droppedCount: dropped.length,
        likelyFeatureGates: gates,
      },
      dropped.length > 0
        ? `the apiserver dropped ${dropped.length} field(s) of ResourceSlice ${sent.metadata.name}` +
            (gates.length > 0 ? `; is the feature gate ${gates.join('/')} enabled on kube-apiserver?` : '') +
            effects.map((e) => `; without it ${e}`).join('')
        : `the apiserver stored ResourceSlice ${sent.metadata.name} differently from what was sent`,
    );
  }

  /**
   * Stops publishing and deletes every slice of this driver on this node (`--cleanup-on-exit`).
   * Returns how many were deleted.
   */
  async deleteAll(): Promise<number> {
    await this.stop();
    let deleted = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        const { items } = await this.client.list(this.fieldSelector);
        for (const s of items) {
          if (s.spec.driver !== this.driverName || s.spec.nodeName !== this.nodeName) continue;
          try {
            await this.client.delete(s.metadata.name);
            deleted++;
            this.counters.deletes++;
            this.prom?.ops.inc({ operation: 'delete' });
          } catch (err) {
            if (httpStatus(err) !== 404) throw err;
          }
        }
        this.log.info({ deleted }, 'deleted ResourceSlices');
        return deleted;
      } catch (err) {
        if (attempt >= 4) throw err;
        await sleep(backoffDelay(attempt, { initialDelayMs: 200, maxDelayMs: 2_000 }));
      }
    }
  }

  /** Stops the watch, timers and loop; pending update()/whenReady() promises reject. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort(new PublisherStoppedError());
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    clearTimeout(this.watchGuard);
    this.watchHandle?.stop();
    this.watchHandle = undefined;
    this.wake?.();
    await this.loopDone;
    const err = new PublisherStoppedError();
    for (const w of [...this.waiters, ...this.readyWaiters]) w.reject(err);
    this.waiters = [];
    this.readyWaiters = [];
    this.prom?.ready.set(0);
  }
}
