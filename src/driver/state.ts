/**
 * Prepare and unprepare of one claim, in steps that each run once, I/O at the edges:
 *
 *   prepare(U), serialized per claim UID, claims in parallel:
 *     0. checkpoint says U is PrepareCompleted → reply with its devices (restore the spec file
 *        if it vanished); PrepareStarted (an earlier attempt died) → roll it back first.
 *     1. fetch the claim (API) and plan its devices (plan.ts, pure; one re-discovery when an
 *        allocated device is unknown, e.g. a MIG device created after the last one).
 *     2. conflicts (conflicts.ts, pure) against what other claims hold or are preparing, and
 *        reserve the devices in memory: check and reserve run without yielding, so two claims
 *        cannot both pass 2 for overlapping devices.
 *     3. write the CDI spec (built once, cdi/spec.ts, after inspecting the device nodes), after
 *        the device metadata files it mounts (deviceMetadata.ts, with --device-metadata).
 *     4. record U = PrepareCompleted in the checkpoint: the one durable write (group-committed
 *        with concurrent prepares), then release the reservation and reply; the claim's
 *        status.devices is handed to the status writer (statusWriter.ts), never waited for.
 *   A crash before 4 leaves at most a spec (and metadata files) no checkpoint entry owns, which
 *   the start-up sweep removes; the kubelet retries the prepare. No intent record is needed
 *   while a prepare changes nothing on the host but its spec and metadata files. A step that
 *   will (creating a MIG device, setting a GPU's sharing) must record PrepareStarted before
 *   acting, so that recovery, which rolls such entries back, can undo it.
 *
 *   unprepare(U): drop the checkpoint entry first (durable), then the spec file, so a crash in
 *   between leaves an orphan spec (swept at start-up), never an entry recovery would restore.
 *
 * Every error leaving this module is a GpuDraError carrying the claim's UID.
 */
import fs from 'node:fs';
import path from 'node:path';
import { errorMessage, GpuDraError, inClaim, isGpuDraError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { failpoint } from '../util/failpoint.js';
import { underRoot, type HostPaths } from '../util/hostPaths.js';
import type { MigDevice, NodeInventory } from '../nvml/types.js';
import {
  buildClaimCdiSpec,
  type CdiContainerEdits,
  type CdiMount,
  claimDeviceKey,
  claimDeviceNodes,
  claimOfSpec,
  claimSpecFileName,
  claimUidOfSpecFile,
  type ClaimCdiInput,
  type ClaimCdiSpec,
  type DriverFiles,
} from '../cdi/spec.js';
import { isValidClaimUid } from '../util/kubeNames.js';
import { inspectDeviceNodes, readCharDeviceMajors, scanDriverFiles } from '../cdi/host.js';
import { CdiStore } from '../cdi/store.js';
import { CheckpointStore, type LoadStatus, type ReadonlyCheckpointClaim } from '../checkpoint/store.js';
import {
  CHECKPOINT_FILE,
  claimState,
  type CheckpointClaim,
  type CheckpointDevice,
} from '../checkpoint/schema.js';
import type { ResourceClaim } from '../api/resource.js';
import { checkFetchedClaim, isClaimNotFound, type ClaimGetter } from './claims.js';
import {
  findConflict,
  findMemoryOvercommit,
  type ClaimHolding,
  type Conflict,
  type MemoryOvercommit,
} from './conflicts.js';
import { formatQuantity } from '../resourceslice/values.js';
import { planClaim, type PlannedDevice } from './plan.js';
import {
  indexExistingDevices,
  indexInventory,
  inSameSlot,
  recordedSlot,
  slotToMake,
  type MigSlot,
  type PlanDevice,
} from './deviceNames.js';
import {
  createdMigDevice,
  createInSlots,
  destroyRecorded,
  intendedInstance,
  sweepUnowned,
  type LiveMigInstance,
  type MigInstanceControl,
  type RecordedMigInstance,
} from './migDevices.js';
import { readMigMinors, type MigMinors } from '../nvml/host.js';
import { isDynamicMigGpu, type MigPartitioning } from '../resourceslice/partitions.js';
import { KeyedMutex } from '../util/keyedMutex.js';
import { InstanceLock } from '../util/instanceLock.js';
import { FileLock } from '../util/fileLock.js';
import { mpsPinnedLimitsMiB, OpaqueConfigError, type SharingSettings } from './opaqueConfig.js';
import { parseDeviceName } from '../resourceslice/names.js';
import type { ApplyDevice, SharingApplier } from '../sharing/apply.js';
import { changesHost, mpsGroups, type SharedDevice } from '../sharing/plan.js';
import { buildDevices, type AttributeValue } from '../resourceslice/model.js';
import { describeDevices, type DescribedDevice, type RecordedDevice } from './deviceStatus.js';
import {
  METADATA_HOST_SUBDIR,
  POD_CLAIM_NAME_ANNOTATION,
  metadataFiles,
  metadataMounts,
  type MetadataFile,
} from './deviceMetadata.js';
import { MetadataStore } from './metadataStore.js';
import type { ClaimStatusSink } from './statusWriter.js';
import {
  heldFromSpec,
  rebuildNote,
  type RebuildOutcome,
  type RebuildSummary,
  type RebuildTally,
} from './rebuild.js';
import { backoffDelay, type BackoffOptions } from '../util/backoff.js';

export interface ClaimIdentity {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
}

/** What the kubelet gets back for one device: the device as the checkpoint records it. */
export interface PreparedDevice {
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly cdiDeviceIds: readonly string[];
  readonly shareId?: string | undefined;
}

/**
 * The node's devices. `refresh` re-discovers (called once when an allocated device is not
 * known, e.g. a MIG device created after start-up); concurrent callers may share one discovery.
 */
export interface InventorySource {
  current(): NodeInventory;
  refresh?(): Promise<NodeInventory>;
}

export interface DeviceStateOptions {
  readonly driverName: string;
  /** This node's pool (the node name). */
  readonly poolName: string;
  readonly hostPaths: HostPaths;
  readonly cdi: CdiStore;
  readonly checkpoint: CheckpointStore;
  readonly inventory: InventorySource;
  readonly logger: Logger;
  /** Injectable for tests; defaults to scanning `hostPaths.driverRoot`. */
  readonly scanDriverFiles?: (hostPaths: HostPaths, driverVersion: string) => DriverFiles;
  /** How long one scan of the driver root serves prepares of the same driver version; default 60 s. */
  readonly driverFilesTtlMs?: number;
  /**
   * Reads other claims: when a prepare finds its devices held by a recorded claim, it asks the
   * API whether that claim still exists and holds them (see `reserve`). Without it, every
   * recorded holder is taken at its word.
   */
  readonly claims?: ClaimGetter;
  /**
   * Applies and undoes sharing on the host (time slices, compute modes, MPS daemons). Without
   * it, a claim whose sharing would change the host is refused (SHARING_TOOL_NOT_FOUND).
   */
  readonly sharing?: SharingApplier;
  /** `--mig-partitioning`; dynamic plans allocated slots and makes their MIG devices through `mig`. */
  readonly migPartitioning?: MigPartitioning;
  /** Makes and removes MIG devices (dynamic MIG). Without it a claim for a slot is refused. */
  readonly mig?: MigInstanceControl;
  /** Told about every prepared and unprepared claim (their status.devices); never waited for. */
  readonly claimStatus?: ClaimStatusSink;
  /**
   * Where device metadata files (KEP-5304) go. Unprepare, rollback and the start-up sweep remove
   * a claim's files whenever a store is given, so files from a run with metadata on never stay.
   */
  readonly metadata?: MetadataStore;
  /** `--device-metadata`: each prepared claim gets a file per request, mounted through its spec. */
  readonly deviceMetadata?: boolean;
  /**
   * Serializes this instance's work with another plugin instance's on the same node (a rolling
   * update), re-reading the checkpoint whenever it takes over (util/instanceLock.ts). Every
   * prepare, unprepare, recovery and cleanup runs under it. Without it, this is the only instance.
   */
  readonly lock?: InstanceLock;
  /**
   * Told once the claims of a lost checkpoint are rebuilt (the Node Event); never waited for,
   * and a failure is only logged: reporting must not hold up or fail the start.
   */
  readonly onCheckpointRebuilt?: (summary: RebuildSummary) => Promise<void>;
  /** Retries of a rebuild the API could not complete; default 1 s doubling to 60 s, jittered. */
  readonly rebuildBackoff?: BackoffOptions;
  /** How long a rebuild waits for one claim GET; default 10 s (start-up waits for the first). */
  readonly rebuildGetTimeoutMs?: number;
}

export interface RecoveryReport {
  readonly checkpoint: LoadStatus;
  readonly rebooted: boolean;
  readonly rolledBack: readonly string[];
  readonly restored: readonly string[];
  readonly rebuilt: readonly string[];
  readonly dropped: readonly string[];
  readonly orphansRemoved: readonly string[];
  /** MPS daemons (and their directories) no recorded claim owned, removed. */
  readonly mpsDaemonsRemoved: readonly string[];
  /** UUIDs of MIG devices on GPUs in dynamic mode that no recorded claim owned, destroyed. */
  readonly migDevicesRemoved: readonly string[];
  /** Claim UIDs whose device metadata files no recorded claim owned, removed. */
  readonly metadataRemoved: readonly string[];
  /**
   * After a lost checkpoint (status `quarantined`/`tooNew`, or a rebuild a previous run left
   * unfinished): the claims rebuilt from the API so far. `pending` ones wait for the API, retried
   * in the background; nothing is swept until none is left.
   */
  readonly fromApi?: RebuildTally;
}

interface Sweeps {
  readonly orphansRemoved: readonly string[];
  readonly mpsDaemonsRemoved: readonly string[];
  readonly migDevicesRemoved: readonly string[];
  readonly metadataRemoved: readonly string[];
}

export function readBootId(hostPaths: Pick<HostPaths, 'procRoot'>): string | undefined {
  try {
    return (
      fs.readFileSync(underRoot(hostPaths.procRoot, 'sys/kernel/random/boot_id'), 'utf8').trim() || undefined
    );
  } catch {
    return undefined;
  }
}

/**
 * The kubelet names a claim by UID, namespace and name; the UID alone must not reach another
 * claim's record. Records from before names were kept (empty) match any.
 */
function checkRecordedIdentity(ref: ClaimIdentity, entry: Pick<CheckpointClaim, 'namespace' | 'name'>): void {
  if (!entry.namespace && !entry.name) return;
  if (entry.namespace === ref.namespace && entry.name === ref.name) return;
  throw new GpuDraError(
    'CLAIM_REF_INVALID',
    `claim ${ref.uid} was prepared as ${entry.namespace}/${entry.name}, not ${ref.namespace}/${ref.name}: nothing done`,
    { claimUid: ref.uid },
  );
}

/** `promise`, or a rejection once `ms` passed (the promise itself is left to settle). */
function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: no answer within ${String(ms)} ms`));
    }, ms);
  });
  return Promise.race([promise, deadline]).finally(() => {
    clearTimeout(timer);
  });
}

/**
 * The checkpoint's entry for a UID, if it has one of its own: a UID such as `constructor` or
 * `toString` (valid, if no real UID) would otherwise find Object.prototype's member and read as
 * a claim prepared under another name.
 */
function recordedClaim<T>(claims: Readonly<Record<string, T>>, uid: string): T | undefined {
  return Object.hasOwn(claims, uid) ? claims[uid] : undefined;
}

function claimLabel(entry: Pick<CheckpointClaim, 'namespace' | 'name'>, uid: string): string {
  return entry.namespace || entry.name ? `${entry.namespace}/${entry.name} (${uid})` : uid;
}

function conflictError(c: Conflict, claimUid: string): GpuDraError {
  return new GpuDraError(
    'DEVICE_IN_USE',
    `device ${c.wanted} overlaps ${c.held}, already prepared for claim ${claimLabel(c.holder, c.holderUid)}: ${c.reason}`,
    { claimUid },
  );
}

function overcommitError(over: MemoryOvercommit, claimUid: string): GpuDraError {
  const total = over.holders.reduce((sum, h) => sum + h.bytes, over.wantedBytes);
  const held = over.holders.map((h) => `${formatQuantity(h.bytes)} for claim ${claimLabel(h.holder, h.uid)}`);
  return new GpuDraError(
    'DEVICE_IN_USE',
    `shares of device ${over.device} would hold ${formatQuantity(total)} of its ${formatQuantity(over.capacityBytes)} memory: ` +
      `${formatQuantity(over.wantedBytes)} for this claim, ${held.join(', ')}`,
    { claimUid },
  );
}

/** A planned device as the checkpoint records it (no CDI ids yet); `slot` where it will be made. */
function recordedDevice(p: PlannedDevice<PlanDevice>, slot?: MigSlot): CheckpointDevice {
  const migInstance = p.migInstance ?? (slot ? intendedInstance(slot) : undefined);
  return {
    requestNames: [...p.requestNames],
    poolName: p.poolName,
    deviceName: p.deviceName,
    cdiDeviceIds: [],
    ...(p.device.uuid === undefined ? {} : { uuid: p.device.uuid }),
    adminAccess: p.adminAccess,
    ...(p.shareId ? { shareId: p.shareId } : {}),
    ...(p.consumedMemoryBytes !== undefined ? { consumedMemoryBytes: p.consumedMemoryBytes } : {}),
    ...(p.sharing ? { sharing: { ...p.sharing } } : {}),
    ...(migInstance ? { migInstance: { ...migInstance, placement: { ...migInstance.placement } } } : {}),
  };
}

/**
 * Pure: what a claim holds from its reservation until its devices are made (PrepareStarted,
 * dynamic MIG devices recorded by placement, no spec yet).
 */
function plannedRecord(
  ref: ClaimIdentity,
  planned: readonly PlannedDevice<PlanDevice>[],
  slots: readonly (MigSlot | undefined)[],
): CheckpointClaim {
  return {
    state: 'PrepareStarted',
    namespace: ref.namespace,
    name: ref.name,
    devices: planned.map((p, i) => recordedDevice(p, slots[i])),
    updated: new Date().toISOString(),
  };
}

/**
 * Pure: the planned devices, each with a slot (`slots`, aligned) now the MIG device made in it
 * (`made`, in the order of the slots given).
 */
function withCreatedDevices(
  planned: readonly PlannedDevice<PlanDevice>[],
  slots: readonly (MigSlot | undefined)[],
  made: readonly LiveMigInstance[],
  minors: MigMinors,
): PlannedDevice[] {
  let next = 0;
  return planned.map((p, i) => {
    const slot = slots[i];
    if (!slot) return p as PlannedDevice;
    const live = made[next++];
    if (!live) throw new Error(`no MIG device was made for ${p.deviceName}`);
    const migInstance: RecordedMigInstance = {
      ...intendedInstance(slot),
      gpuInstanceId: live.gpuInstanceId,
      computeInstanceId: live.computeInstanceId,
    };
    return { ...p, device: createdMigDevice(slot, live, minors), migInstance };
  });
}

/**
 * A whole GPU in dynamic MIG mode is the MIG device spanning it, and MIG devices have no time
 * slice (nvidia-smi refuses compute-policy on them): such a config is refused before anything
 * is made, naming it, as a MigDeviceConfig with time-slicing is.
 */
function refuseTimeSlicedMig(
  planned: readonly PlannedDevice<PlanDevice>[],
  slots: readonly (MigSlot | undefined)[],
  claimUid: string,
): void {
  const issues = planned.flatMap((p, i) =>
    slots[i] && p.device.kind === 'gpu' && p.sharing?.strategy === 'TimeSlicing'
      ? [
          {
            path: `config[${String(p.configIndex ?? '?')}].opaque.parameters.sharing.strategy`,
            message: `TimeSlicing cannot apply to ${p.deviceName}: with dynamic MIG a whole GPU is the MIG device spanning it, which has no time slice; use MPS, or no sharing`,
          },
        ]
      : [],
  );
  if (issues.length === 0) return;
  const err = new OpaqueConfigError(issues);
  err.claimUid = claimUid;
  throw err;
}

/** The MIG devices a recorded claim had the driver make. */
function recordedMigInstances(entry: Pick<ReadonlyCheckpointClaim, 'devices'>): RecordedMigInstance[] {
  return entry.devices.flatMap((d) =>
    d.migInstance ? [{ ...d.migInstance, ...(d.uuid ? { uuid: d.uuid } : {}) }] : [],
  );
}

/** Pure: the checkpoint entry of a claim prepared as `planned`, its spec written as `built`. */
function preparedRecord(
  ref: ClaimIdentity,
  planned: readonly PlannedDevice[],
  built: ClaimCdiSpec,
  mpsDaemons: readonly string[],
  podClaimName: string | undefined,
): CheckpointClaim {
  return {
    state: 'PrepareCompleted',
    ...(mpsDaemons.length > 0 ? { mpsDaemons: [...mpsDaemons] } : {}),
    namespace: ref.namespace,
    name: ref.name,
    ...(podClaimName ? { podClaimName } : {}),
    cdiSpecFile: built.fileName,
    devices: planned.map((p) => ({
      ...recordedDevice(p),
      cdiDeviceIds: [built.cdiIds.get(claimDeviceKey(p)) ?? ''],
    })),
    updated: new Date().toISOString(),
  };
}

/** A recorded claim's devices as the sharing code sees them. */
function sharedDevices(entry: Pick<ReadonlyCheckpointClaim, 'devices'>): SharedDevice[] {
  return entry.devices.flatMap((d) => {
    const kind = parseDeviceName(d.deviceName)?.kind;
    if (!d.uuid || !kind) return [];
    return [
      {
        deviceName: d.deviceName,
        uuid: d.uuid,
        kind,
        sharing: d.sharing as SharingSettings | undefined,
        shareId: d.shareId,
      },
    ];
  });
}

/**
 * The planned devices for the sharing code, each with its MPS pinned-memory limit resolved
 * among the devices of its own config (a per-device key is an index into those, or a UUID).
 */
function plannedShared(planned: readonly PlannedDevice[]): ApplyDevice[] {
  const limits = new Map<string, number>();
  const byConfig = new Map<number, PlannedDevice[]>();
  for (const p of planned) {
    if (p.sharing?.strategy !== 'MPS' || p.configIndex === undefined) continue;
    byConfig.set(p.configIndex, [...(byConfig.get(p.configIndex) ?? []), p]);
  }
  for (const group of byConfig.values()) {
    const resolved = mpsPinnedLimitsMiB(
      group[0]?.sharing?.mps,
      group.map((p) => ({
        uuid: p.device.uuid,
        ...(p.device.memoryBytes === undefined ? {} : { memoryBytes: p.device.memoryBytes }),
      })),
    );
    for (const [uuid, mib] of Object.entries(resolved)) limits.set(uuid, mib);
  }
  return planned.map((p) => {
    // A share with MPS is enforced: its daemon pins at most the memory the share holds.
    const share =
      p.consumedMemoryBytes === undefined ? undefined : Math.floor(p.consumedMemoryBytes / 2 ** 20);
    const configured = limits.get(p.device.uuid);
    const pinned =
      p.sharing?.strategy !== 'MPS' || share === undefined
        ? configured
        : Math.min(configured ?? share, share);
    return {
      deviceName: p.deviceName,
      uuid: p.device.uuid,
      kind: p.device.kind,
      sharing: p.sharing,
      shareId: p.shareId,
      pinnedMemLimitMiB: pinned,
    };
  });
}

/** Does this recorded claim's sharing change the host (time slices, compute modes, MPS daemons)? */
function sharingChangesHost(entry: ReadonlyCheckpointClaim): boolean {
  return (entry.mpsDaemons?.length ?? 0) > 0 || changesHost(sharedDevices(entry));
}

/** Does undoing this recorded claim touch the host beyond its spec file? */
function entryChangesHost(entry: ReadonlyCheckpointClaim): boolean {
  return sharingChangesHost(entry) || entry.devices.some((d) => d.migInstance !== undefined);
}

/** Pure: per-device edits (an MPS daemon's) with the metadata mounts added to their devices. */
function withMounts(
  edits: ReadonlyMap<string, CdiContainerEdits> | undefined,
  mounts: ReadonlyMap<string, readonly CdiMount[]> | undefined,
): ReadonlyMap<string, CdiContainerEdits> | undefined {
  if (!mounts || mounts.size === 0) return edits;
  const out = new Map(edits ?? []);
  for (const [device, extra] of mounts) {
    const current = out.get(device);
    out.set(device, { ...current, mounts: [...(current?.mounts ?? []), ...extra] });
  }
  return out;
}

/** The pod-local claim name a claim made from a template carries (its own name is generated). */
function podClaimNameOf(claim: ResourceClaim): string | undefined {
  const annotations = claim.metadata?.['annotations'] as Readonly<Record<string, unknown>> | undefined;
  const v = annotations?.[POD_CLAIM_NAME_ANNOTATION];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** A recorded claim's devices, as statusWriter.ts and the metadata files describe them. */
function recordedDevices(entry: Pick<ReadonlyCheckpointClaim, 'devices'>): RecordedDevice[] {
  return entry.devices.map((d) => ({
    requestNames: d.requestNames,
    poolName: d.poolName,
    deviceName: d.deviceName,
    shareId: d.shareId,
    uuid: d.uuid,
  }));
}

export class DeviceState {
  private readonly claimLocks = new KeyedMutex();
  /** Operations begun and not finished (see `settle`). */
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Devices of prepares between their conflict check and their checkpoint write (steps 2–4). */
  private readonly reserved = new Map<string, CheckpointClaim>();
  private indexed:
    { readonly inventory: NodeInventory; readonly index: ReadonlyMap<string, PlanDevice> } | undefined;
  private driverFilesScan:
    { readonly version: string; readonly at: number; readonly files: DriverFiles } | undefined;
  private published:
    | {
        readonly inventory: NodeInventory;
        readonly attributes: ReadonlyMap<string, Readonly<Record<string, AttributeValue>>>;
      }
    | undefined;

  /** After a lost checkpoint: claims rebuilt, dropped and kept so far, over every attempt. */
  private readonly rebuildTally = { rebuilt: [] as string[], dropped: [] as string[], kept: [] as string[] };
  private rebuildAttempts = 0;
  private rebuilding: Promise<{ tally: RebuildTally; sweeps: Sweeps }> | undefined;
  private rebuildTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: DeviceStateOptions) {}

  /** UIDs of every claim the checkpoint records, prepared or not. */
  recordedClaimUids(): string[] {
    return Object.keys(this.opts.checkpoint.current().claims).sort();
  }

  /** UIDs of claims recorded as PrepareCompleted. */
  preparedClaimUids(): string[] {
    const { claims } = this.opts.checkpoint.current();
    return Object.keys(claims)
      .filter((uid) => claimState(claims[uid] as ReadonlyCheckpointClaim) === 'PrepareCompleted')
      .sort();
  }

  /** How many claims are recorded as PrepareCompleted (the metric; no list, no sort). */
  preparedClaimCount(): number {
    const { claims } = this.opts.checkpoint.current();
    let n = 0;
    for (const uid in claims)
      if (claimState(claims[uid] as ReadonlyCheckpointClaim) === 'PrepareCompleted') n++;
    return n;
  }

  /**
   * Prepares one claim. `fetch` is called only when the claim is not already prepared. Throws a
   * GpuDraError with the claim's UID on failure (the caller turns it into that claim's error).
   */
  prepare(
    ref: ClaimIdentity,
    fetch: () => Promise<ResourceClaim>,
    logger: Logger,
  ): Promise<readonly PreparedDevice[]> {
    if (!isValidClaimUid(ref.uid)) {
      return Promise.reject(
        new GpuDraError('CLAIM_UID_INVALID', `invalid claim UID ${JSON.stringify(ref.uid)}`, {
          claimUid: ref.uid,
        }),
      );
    }
    return this.exclusive(() =>
      this.claimLocks.run(ref.uid, async () => {
        const existing = recordedClaim(this.opts.checkpoint.current().claims, ref.uid);
        if (existing) checkRecordedIdentity(ref, existing);
        if (existing?.heldFromSpec && claimState(existing) === 'PrepareCompleted') {
          // Known only by its spec since the checkpoint was lost: the kubelet now names it, so
          // its record is rebuilt as a rebuild would (request names, CDI ids), nothing remade.
          const claim = await fetch().catch((err: unknown) => {
            throw new GpuDraError('CLAIM_FETCH_FAILED', `cannot read the claim: ${errorMessage(err)}`, {
              cause: err,
              claimUid: ref.uid,
            });
          });
          checkFetchedClaim(claim, ref.uid);
          const record = await this.adopt(ref, claim);
          logger.info(
            { devices: record.devices.map((d) => d.deviceName) },
            'rebuilt a held claim at its prepare',
          );
          this.opts.claimStatus?.prepared(ref, this.describe(recordedDevices(record)));
          return record.devices;
        }
        if (existing && claimState(existing) === 'PrepareCompleted') {
          await this.ensureSpecFile(ref.uid, existing, logger);
          logger.debug({ devices: existing.devices.length }, 'claim already prepared');
          // After a restart the status may not have been written yet; the sink skips a repeat.
          if (this.opts.claimStatus)
            this.opts.claimStatus.prepared(ref, this.describe(recordedDevices(existing)));
          return existing.devices;
        }
        if (existing) await this.rollback(ref.uid, existing, logger);
        await this.awaitRebuild(ref.uid);

        const claim = await fetch().catch((err: unknown) => {
          throw new GpuDraError('CLAIM_FETCH_FAILED', `cannot read the claim: ${errorMessage(err)}`, {
            cause: err,
            claimUid: ref.uid,
          });
        });
        checkFetchedClaim(claim, ref.uid);
        const podClaimName = podClaimNameOf(claim);
        const { planned: planning, inventory } = await this.plan(ref.uid, claim);
        const mode = this.opts.migPartitioning ?? 'static';
        const slots = planning.map((p) => slotToMake(p.device, p.adminAccess, mode));
        refuseTimeSlicedMig(planning, slots, ref.uid);
        const toMake = slots.filter((slot) => slot !== undefined);
        const mig = toMake.length > 0 ? this.migFor(ref.uid) : undefined;
        // Conflicts need names, sharing and placements only: reserve before anything is made.
        const holding = plannedRecord(ref, planning, slots);
        const memory = new Map(planning.map((p) => [p.deviceName, p.device.memoryBytes]));
        await this.reserve(ref.uid, holding, (device) => memory.get(device), logger);
        let started: CheckpointClaim | undefined;
        let specFile: string | undefined;
        let metadataWritten = false;
        let record: CheckpointClaim;
        let described: DescribedDevice[];
        try {
          let planned: PlannedDevice[];
          if (mig) {
            // Intent first: a crash after NVML made a device leaves an entry recovery undoes.
            started = holding;
            await this.opts.checkpoint.update((doc) => {
              doc.claims[ref.uid] = holding;
            });
            failpoint('prepare-intent-recorded');
            const made = await createInSlots(mig, toMake, ref.uid, logger);
            failpoint('mig-created');
            planned = withCreatedDevices(planning, slots, made, readMigMinors(this.opts.hostPaths));
          } else {
            planned = planning as PlannedDevice[];
          }
          const composed = this.compose(ref, planned, inventory, podClaimName);
          const { shared, sharing, metadata, built } = composed;
          described = composed.described;
          specFile = built.fileName;
          record = composed.record;
          this.reserved.set(ref.uid, record);
          if (mig || sharing) {
            // The devices made (their ids) and the MPS daemons to come, before the host changes further.
            const intent: CheckpointClaim = { ...record, state: 'PrepareStarted' };
            started = intent;
            await this.opts.checkpoint.update((doc) => {
              doc.claims[ref.uid] = intent;
            });
            failpoint('prepare-devices-recorded');
          }
          if (sharing) await sharing.apply(ref.uid, shared, logger);
          if (metadata) {
            // Before the spec that mounts them: a spec must never name a missing file.
            metadataWritten = true;
            await metadata.store.write(ref.uid, metadata.files);
            failpoint('metadata-written');
          }
          await this.opts.cdi.write(built.fileName, built.spec);
          failpoint('cdi-written');
          const done = record;
          await this.opts.checkpoint.update((doc) => {
            doc.claims[ref.uid] = done;
          });
          failpoint('prepare-completed');
        } catch (err) {
          // The spec and files must not outlive the attempt (the sweep catches them if this fails).
          if (metadataWritten) {
            await this.opts.metadata?.remove(ref.uid).catch((e: unknown) => {
              logger.error(
                { err: e },
                'removing the metadata files of a failed prepare failed; the start-up sweep removes them',
              );
            });
          }
          if (specFile !== undefined) {
            await this.opts.cdi.remove(specFile).catch((e: unknown) => {
              logger.error(
                { err: e },
                'removing the spec of a failed prepare failed; the start-up sweep removes it',
              );
            });
          }
          if (started) {
            await this.rollback(ref.uid, started, logger).catch((e: unknown) => {
              logger.error(
                { err: e },
                'undoing a failed prepare (its MIG devices or sharing) failed; the entry stays PrepareStarted and the next prepare, unprepare or start-up undoes it',
              );
            });
          }
          throw err;
        } finally {
          this.reserved.delete(ref.uid);
        }
        logger.info(
          { devices: record.devices.map((d) => d.deviceName), cdiSpec: record.cdiSpecFile },
          'claim prepared',
        );
        this.opts.claimStatus?.prepared(ref, described);
        return record.devices;
      }),
    ).catch((err: unknown) => Promise.reject(inClaim(err, ref.uid, 'INTERNAL')));
  }

  /**
   * Runs `work` while no other plugin instance of this node works (see `lock`); this instance's
   * own work still runs in parallel.
   */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const running = this.opts.lock ? this.opts.lock.run(work) : work();
    this.inFlight.add(running);
    const done = (): void => {
      this.inFlight.delete(running);
    };
    running.then(done, done);
    return running;
  }

  /**
   * Resolves once every operation begun so far has finished. Stopping waits for it after the
   * sockets are gone: a call the kubelet gave up on still finishes here (and releases the
   * node-wide lock) rather than being cut off by the exit.
   */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Closes the node-wide lock's files (after the last call, at stop). */
  close(): void {
    this.closed = true;
    clearTimeout(this.rebuildTimer);
    this.opts.lock?.close();
  }

  private migFor(claimUid: string): MigInstanceControl {
    if (this.opts.mig) return this.opts.mig;
    throw new GpuDraError(
      'MIG_CREATE_FAILED',
      'the claim names a dynamic MIG device, and this plugin was started without MIG device control (--mig-partitioning=static)',
      { claimUid },
    );
  }

  private sharingFor(claimUid: string): SharingApplier {
    if (this.opts.sharing) return this.opts.sharing;
    throw new GpuDraError(
      'SHARING_TOOL_NOT_FOUND',
      'the claim asks for sharing that changes the GPU (time-slicing or MPS), which this plugin was started without',
      { claimUid },
    );
  }

  /** Every claim but `uid` that holds or is preparing devices, as the sharing code sees them. */
  private otherHolders(uid: string): SharedDevice[][] {
    const out: SharedDevice[][] = [];
    for (const [other, entry] of Object.entries(this.opts.checkpoint.current().claims)) {
      if (other !== uid) out.push(sharedDevices(entry));
    }
    for (const [other, holding] of this.reserved) {
      if (other !== uid) out.push(sharedDevices(holding));
    }
    return out;
  }

  /**
   * The devices of `inventory` by name, built once per inventory: a dynamic-MIG node has some
   * 26 slots per GPU, and every prepare looks them up.
   */
  private deviceIndex(inventory: NodeInventory): ReadonlyMap<string, PlanDevice> {
    const cached = this.indexed;
    if (cached?.inventory === inventory) return cached.index;
    const index = indexInventory(inventory, this.opts.migPartitioning);
    this.indexed = { inventory, index };
    return index;
  }

  /**
   * Steps 3's inputs, pure but for reading the host's device nodes and driver files: the claim's
   * sharing, description, metadata files, spec and completed record, from its planned devices.
   * Prepare and the rebuild after a lost checkpoint compute them alike.
   */
  private compose(
    ref: ClaimIdentity,
    planned: readonly PlannedDevice[],
    inventory: NodeInventory,
    podClaimName: string | undefined,
  ): {
    shared: ApplyDevice[];
    sharing: SharingApplier | undefined;
    described: DescribedDevice[];
    metadata: ReturnType<DeviceState['metadataOf']>;
    built: ClaimCdiSpec;
    record: CheckpointClaim;
  } {
    const shared = plannedShared(planned);
    const sharing = changesHost(shared) ? this.sharingFor(ref.uid) : undefined;
    // Only the status and the metadata files read the description.
    const described =
      this.opts.claimStatus || this.opts.deviceMetadata
        ? this.describe(
            planned.map((p) => ({
              requestNames: p.requestNames,
              poolName: p.poolName,
              deviceName: p.deviceName,
              shareId: p.shareId,
              uuid: p.device.uuid,
            })),
            inventory,
          )
        : [];
    const metadata = this.metadataOf({ ...ref, podClaimName }, described);
    const built = this.buildSpec(
      ref,
      planned,
      inventory.driverVersion,
      withMounts(sharing?.cdiEdits(ref.uid, shared), metadata?.mounts),
    );
    const record = preparedRecord(
      ref,
      planned,
      built,
      sharing?.mpsDaemonIds(ref.uid, shared) ?? [],
      podClaimName,
    );
    return { shared, sharing, described, metadata, built, record };
  }

  /** Step 1: plan against the current devices; once more after a re-discovery if one is unknown. */
  private async plan(
    claimUid: string,
    claim: ResourceClaim,
  ): Promise<{ planned: PlannedDevice<PlanDevice>[]; inventory: NodeInventory }> {
    const base = { claimUid, driverName: this.opts.driverName, poolName: this.opts.poolName, claim };
    const planOn = (inventory: NodeInventory) => ({
      planned: planClaim({ ...base, devices: this.deviceIndex(inventory) }),
      inventory,
    });
    try {
      return planOn(this.opts.inventory.current());
    } catch (err) {
      if (!isGpuDraError(err, 'DEVICE_UNKNOWN') || !this.opts.inventory.refresh) throw err;
      return planOn(await this.opts.inventory.refresh());
    }
  }

  /**
   * Step 2: no other claim may hold or be preparing overlapping hardware unless sharing allows
   * it. The final check and the reservation run without yielding, so concurrent prepares see
   * each other.
   *
   * A recorded holder is checked against the API before it is believed: a claim that is gone,
   * was replaced, or is no longer allocated those devices is a stale record (an unprepare the
   * kubelet never sent, or one a power loss took back; see checkpoint/store.ts), and is rolled
   * back so this claim can have its devices. Only a definite answer counts: when the API
   * cannot be asked, the holder keeps its devices. Shares of a GPU that would together hold more
   * memory than it has are treated the same way: each recorded holder of the GPU's memory is
   * checked in turn before the prepare is refused.
   */
  private async reserve(
    claimUid: string,
    record: CheckpointClaim,
    memoryOf: (device: string) => number | undefined,
    logger: Logger,
  ): Promise<void> {
    const checked = new Set<string>();
    for (;;) {
      const recorded = this.opts.checkpoint.current().claims;
      const held: Record<string, ClaimHolding> =
        this.reserved.size === 0 ? recorded : { ...recorded, ...Object.fromEntries(this.reserved) };
      const conflict = findConflict(held, claimUid, record.devices);
      const over = conflict ? undefined : findMemoryOvercommit(held, claimUid, record.devices, memoryOf);
      if (!conflict && !over) {
        this.reserved.set(claimUid, record);
        return;
      }
      const refusal = over ? overcommitError(over, claimUid) : conflictError(conflict as Conflict, claimUid);
      // The recorded holder that may be stale: the conflicting claim, or each holder of the
      // memory in turn. Reservations in flight are never stale.
      const holderUid = over
        ? over.holders.find((h) => !this.reserved.has(h.uid) && !checked.has(h.uid))?.uid
        : conflict?.holderUid;
      const holder =
        holderUid === undefined || this.reserved.has(holderUid) ? undefined : recorded[holderUid];
      if (holderUid === undefined || holder === undefined || checked.has(holderUid)) throw refusal;
      checked.add(holderUid);
      if (!(await this.isStale(holderUid, holder))) {
        if (over) continue;
        throw refusal;
      }
      await this.claimLocks.run(holderUid, async () => {
        // Unless the holder's own unprepare or prepare changed it meanwhile.
        if (this.opts.checkpoint.current().claims[holderUid] !== holder) return;
        await this.rollback(holderUid, holder, logger);
        logger.warn(
          {
            staleClaim: claimLabel(holder, holderUid),
            devices: holder.devices.map((d) => d.deviceName),
          },
          'released the devices of a recorded claim the API no longer allocates them to',
        );
      });
    }
  }

  /** Does the API say `uid` no longer holds the devices its record names? */
  private async isStale(uid: string, entry: ReadonlyCheckpointClaim): Promise<boolean> {
    if (!this.opts.claims || !entry.namespace || !entry.name) return false;
    let claim: ResourceClaim;
    try {
      claim = await this.opts.claims.get(entry.namespace, entry.name);
    } catch (err) {
      return isClaimNotFound(err);
    }
    if (claim.metadata?.uid !== uid) return true;
    const results = claim.status?.allocation?.devices?.results ?? [];
    return !entry.devices.some((d) =>
      results.some(
        (r) => r.driver === this.opts.driverName && r.pool === d.poolName && r.device === d.deviceName,
      ),
    );
  }

  /**
   * Prepared devices with the attributes this node publishes for them, from a model built once
   * per inventory (as the device index is). A model that does not build (the publisher reports
   * why) describes each device by its UUID alone.
   */
  private describe(
    devices: readonly RecordedDevice[],
    inventory: NodeInventory = this.opts.inventory.current(),
  ): DescribedDevice[] {
    if (this.published?.inventory !== inventory) {
      let attributes = new Map<string, Readonly<Record<string, AttributeValue>>>();
      try {
        const model = buildDevices(inventory, { migPartitioning: this.opts.migPartitioning ?? 'static' });
        attributes = new Map(model.devices.map((d) => [d.name, d.attributes]));
      } catch (err) {
        this.opts.logger.debug({ err }, 'device model did not build; describing devices by UUID only');
      }
      this.published = { inventory, attributes };
    }
    return describeDevices(this.published.attributes, devices);
  }

  /** The claim's metadata files and the mounts of them, when metadata is on. */
  private metadataOf(
    claim: ClaimIdentity & { readonly podClaimName?: string | undefined },
    described: readonly DescribedDevice[],
  ):
    | {
        readonly store: MetadataStore;
        readonly files: MetadataFile[];
        readonly mounts: Map<string, CdiMount[]>;
      }
    | undefined {
    const store = this.opts.metadata;
    if (!store || !this.opts.deviceMetadata) return undefined;
    const files = metadataFiles(this.opts.driverName, claim, described);
    const mounts = metadataMounts(files, described, (f) => store.pathOf(claim.uid, f));
    return { store, files, mounts };
  }

  /** Reads what the spec needs from the host (driver files, device nodes), then builds it once. */
  private buildSpec(
    claim: ClaimIdentity,
    devices: ClaimCdiInput['devices'],
    driverVersion: string,
    deviceEdits?: ClaimCdiInput['deviceEdits'],
  ): ClaimCdiSpec {
    const { hostPaths } = this.opts;
    const nodeInfo = inspectDeviceNodes(claimDeviceNodes({ devices, hostPaths }), () =>
      readCharDeviceMajors(hostPaths),
    );
    return buildClaimCdiSpec({
      driverName: this.opts.driverName,
      claimUid: claim.uid,
      claim,
      devices,
      hostPaths,
      driverFiles: this.driverFiles(driverVersion),
      driverVersion,
      nodeInfo,
      ...(deviceEdits && deviceEdits.size > 0 ? { deviceEdits } : {}),
    });
  }

  /**
   * The driver's user-space files. Scanning the driver root (a stat per candidate) was the
   * largest part of a prepare, and the files change only with the driver: a scan serves every
   * prepare of the same driver version for `driverFilesTtlMs`. The version comes from the latest
   * discovery, so an upgraded driver is scanned afresh, and the TTL bounds how long a file
   * installed later (a CDI hook, say) goes unseen; NVIDIA's specs, cached for the process's life,
   * went stale on both counts (their #1144).
   */
  private driverFiles(driverVersion: string): DriverFiles {
    const now = Date.now();
    const ttl = this.opts.driverFilesTtlMs ?? 60_000;
    const cached = this.driverFilesScan;
    if (cached && cached.version === driverVersion && now - cached.at < ttl) return cached.files;
    const files = (this.opts.scanDriverFiles ?? scanDriverFiles)(this.opts.hostPaths, driverVersion);
    this.driverFilesScan = { version: driverVersion, at: now, files };
    return files;
  }

  /** Unprepares one claim; a claim this driver does not know is a success. */
  unprepare(ref: ClaimIdentity, logger: Logger): Promise<void> {
    if (!isValidClaimUid(ref.uid)) return Promise.resolve(); // never ours: we only record valid UIDs
    return this.exclusive(() =>
      this.claimLocks.run(ref.uid, async () => {
        const entry = recordedClaim(this.opts.checkpoint.current().claims, ref.uid);
        if (entry) checkRecordedIdentity(ref, entry);
        if (!entry && this.opts.checkpoint.current().rebuild) {
          await this.awaitRebuild(ref.uid);
          const rebuilt = recordedClaim(this.opts.checkpoint.current().claims, ref.uid);
          if (rebuilt) {
            checkRecordedIdentity(ref, rebuilt);
            await this.rollback(ref.uid, rebuilt, logger);
            this.opts.claimStatus?.unprepared(ref);
            logger.info('claim unprepared');
            return;
          }
        }
        if (!entry) {
          // A spec without an entry can only be debris from a crash between steps: remove it too.
          if (await this.opts.cdi.remove(claimSpecFileName(this.opts.driverName, ref.uid))) {
            logger.warn('removed CDI spec of a claim missing from the checkpoint');
          }
          await this.opts.metadata?.remove(ref.uid);
          logger.debug('claim not prepared here; nothing to do');
          return;
        }
        await this.rollback(ref.uid, entry, logger);
        this.opts.claimStatus?.unprepared(ref);
        logger.info('claim unprepared');
      }),
    ).catch((err: unknown) => Promise.reject(inClaim(err, ref.uid, 'INTERNAL')));
  }

  /**
   * Forgets the claim, then removes its spec file(s). In this order a crash in between leaves
   * an orphan spec, which the start-up sweep removes, never an entry whose spec recovery would
   * restore for a claim being unprepared.
   */
  private async rollback(uid: string, entry: ReadonlyCheckpointClaim, logger: Logger): Promise<void> {
    if (entryChangesHost(entry)) {
      // Undo is idempotent; marking the entry first means a crash midway leaves an entry that
      // recovery rolls back (undoing again), never a completed claim whose sharing is gone.
      if (claimState(entry) === 'PrepareCompleted') {
        await this.opts.checkpoint.update((doc) => {
          const current = recordedClaim(doc.claims, uid);
          if (current) doc.claims[uid] = { ...current, state: 'UnprepareStarted' };
        });
        failpoint('unprepare-started');
      }
      if (sharingChangesHost(entry)) {
        await this.sharingFor(uid).undo(
          uid,
          sharedDevices(entry),
          () => this.otherHolders(uid),
          logger,
          entry.mpsDaemons ?? [],
        );
      }
      // After sharing: an MPS daemon must be gone before its MIG device can be destroyed.
      const instances = recordedMigInstances(entry);
      if (instances.length > 0) await destroyRecorded(this.migFor(uid), instances, uid, logger);
    }
    await this.opts.checkpoint.update((doc) => {
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
      delete doc.claims[uid];
    });
    failpoint('claim-forgotten');
    const fileName = claimSpecFileName(this.opts.driverName, uid);
    await this.opts.cdi.remove(fileName);
    if (entry.cdiSpecFile && entry.cdiSpecFile !== fileName) await this.opts.cdi.remove(entry.cdiSpecFile);
    failpoint('cdi-removed');
    // After the spec that mounts them; with metadata off too, in case it was on before.
    await this.opts.metadata?.remove(uid);
  }

  /**
   * Same boot: a completed claim's spec file must exist; restore it if not, from the spec an
   * older version stored in the checkpoint, else rebuilt from the recorded devices.
   */
  private async ensureSpecFile(
    uid: string,
    entry: ReadonlyCheckpointClaim,
    logger: Logger,
  ): Promise<boolean> {
    const fileName = entry.cdiSpecFile ?? claimSpecFileName(this.opts.driverName, uid);
    if (await this.opts.cdi.exists(fileName)) {
      // The spec may mount metadata files someone removed since: write them again.
      const metadata = this.metadataOf(
        { uid, namespace: entry.namespace, name: entry.name, podClaimName: entry.podClaimName },
        this.describe(recordedDevices(entry)),
      );
      if (!metadata || (await metadata.store.exists(uid, metadata.files))) return false;
      await metadata.store.write(uid, metadata.files);
      logger.warn({ claimUid: uid }, 'device metadata files of a prepared claim were missing; restored them');
      return true;
    }
    if (entry.cdiSpec && typeof entry.cdiSpec === 'object') {
      await this.opts.cdi.write(
        claimSpecFileName(this.opts.driverName, uid),
        entry.cdiSpec as ClaimCdiSpec['spec'],
      );
    } else {
      await this.rebuild(uid, entry);
    }
    failpoint('cdi-restored');
    logger.warn({ claimUid: uid }, 'CDI spec of a prepared claim was missing; restored it');
    return true;
  }

  /**
   * Recomputes a completed claim's spec from its checkpointed devices against today's host
   * (after a reboot: device nodes, driver files and even minors may differ). Throws when a
   * device is gone or is now a different device (UUID changed).
   */
  private async rebuild(uid: string, entry: ReadonlyCheckpointClaim): Promise<void> {
    const inventory = this.opts.inventory.current();
    const index = indexExistingDevices(inventory);
    const made = await this.madeDevices(uid, entry, inventory);
    const remade = new Map([...made].filter(([, m]) => m.remade));
    const devices = entry.devices.map((d) => {
      const again = remade.get(d.deviceName);
      // A device the driver made is found in its slot (a whole GPU's is named after the GPU).
      const device = d.migInstance ? made.get(d.deviceName)?.device : index.get(d.deviceName);
      if (!device)
        throw new GpuDraError('DEVICE_CHANGED', `device ${d.deviceName} no longer exists`, { claimUid: uid });
      if (!again && d.uuid && d.uuid !== device.uuid) {
        throw new GpuDraError(
          'DEVICE_CHANGED',
          `device ${d.deviceName} is now ${device.uuid}, was ${d.uuid}`,
          {
            claimUid: uid,
          },
        );
      }
      return {
        deviceName: d.deviceName,
        device,
        ...(d.shareId ? { shareId: d.shareId } : {}),
        ...(d.consumedMemoryBytes !== undefined ? { consumedMemoryBytes: d.consumedMemoryBytes } : {}),
      };
    });
    const described = this.describe(
      recordedDevices(entry).map((d) => ({ ...d, uuid: remade.get(d.deviceName)?.device.uuid ?? d.uuid })),
      inventory,
    );
    const metadata = this.metadataOf(
      { uid, namespace: entry.namespace, name: entry.name, podClaimName: entry.podClaimName },
      described,
    );
    const built = this.buildSpec(
      { uid, namespace: entry.namespace, name: entry.name },
      devices,
      inventory.driverVersion,
      withMounts(this.opts.sharing?.cdiEdits(uid, sharedDevices(entry)), metadata?.mounts),
    );
    if (metadata) await metadata.store.write(uid, metadata.files);
    await this.opts.cdi.write(built.fileName, built.spec);
    const unchanged =
      remade.size === 0 &&
      entry.cdiSpecFile === built.fileName &&
      entry.cdiSpec === undefined &&
      entry.devices.every(
        (d) => d.cdiDeviceIds.length === 1 && d.cdiDeviceIds[0] === built.cdiIds.get(claimDeviceKey(d)),
      );
    if (unchanged) return;
    await this.opts.checkpoint.update((doc) => {
      const current = recordedClaim(doc.claims, uid);
      if (!current) return;
      // Older versions stored the spec itself; the entry now names the file and device IDs only.
      const rest = Object.fromEntries(Object.entries(current).filter(([key]) => key !== 'cdiSpec'));
      doc.claims[uid] = {
        ...(rest as typeof current),
        cdiSpecFile: built.fileName,
        devices: current.devices.map((d) => {
          const again = remade.get(d.deviceName);
          return {
            ...d,
            ...(again
              ? {
                  uuid: again.device.uuid,
                  migInstance: { ...again.migInstance, placement: { ...again.migInstance.placement } },
                }
              : {}),
            cdiDeviceIds: [built.cdiIds.get(claimDeviceKey(d)) ?? ''],
          };
        }),
        updated: new Date().toISOString(),
      };
    });
  }

  /**
   * The MIG devices a prepared claim had the driver make, as NVML has them now. After a reboot
   * they are gone (GPU instances do not survive a GPU reset) while the claim's pod may still
   * start: each is made again in its slot, with a new UUID (`remade`). NVML is asked rather than
   * the last discovery, which may predate the device.
   */
  private async madeDevices(
    uid: string,
    entry: ReadonlyCheckpointClaim,
    inventory: NodeInventory,
  ): Promise<Map<string, { device: MigDevice; migInstance: RecordedMigInstance; remade: boolean }>> {
    const out = new Map<string, { device: MigDevice; migInstance: RecordedMigInstance; remade: boolean }>();
    const minors = readMigMinors(this.opts.hostPaths);
    for (const d of entry.devices) {
      if (!d.migInstance) continue;
      const slot = recordedSlot(inventory, d.migInstance);
      if (!slot) continue; // not a slot any more: rebuild reports the device gone
      const mig = this.migFor(uid);
      let live = (await mig.list(slot.parentUuid)).find(inSameSlot(slot));
      const remade = live === undefined;
      live ??= (await createInSlots(mig, [slot], uid, this.opts.logger))[0];
      if (!live) continue;
      out.set(d.deviceName, {
        device: createdMigDevice(slot, live, minors),
        migInstance: {
          ...intendedInstance(slot),
          gpuInstanceId: live.gpuInstanceId,
          computeInstanceId: live.computeInstanceId,
        },
        remade,
      });
    }
    return out;
  }

  /**
   * Start-up: load the checkpoint, finish or undo what a previous run left, and remove spec
   * files of ours that no claim owns. Must run before the sockets are served. A checkpoint that
   * could not be read is rebuilt from the API instead (rebuildFromSpecs), retried in the
   * background while the API cannot answer.
   *
   * With another plugin instance running (a rolling update), all of it runs under the node-wide
   * lock, so the other instance is between calls: an entry still PrepareStarted, a spec or MIG
   * device or MPS daemon no entry owns, is debris of a failed or crashed attempt, never the
   * other's work in progress (it makes such things only inside a call, under the lock).
   */
  async recover(): Promise<RecoveryReport> {
    const report = await this.exclusive(() => this.recoverExclusive());
    this.scheduleRebuild();
    return report;
  }

  private async recoverExclusive(): Promise<RecoveryReport> {
    const log = this.opts.logger;
    const loaded = await this.opts.checkpoint.load();
    failpoint('recovery-loaded');
    const bootId = readBootId(this.opts.hostPaths);
    const doc = this.opts.checkpoint.current();
    const rebooted = doc.bootId !== undefined && bootId !== undefined && doc.bootId !== bootId;
    const report = {
      rolledBack: [] as string[],
      restored: [] as string[],
      rebuilt: [] as string[],
      dropped: [] as string[],
    };

    for (const [uid, entry] of Object.entries(doc.claims).sort(([a], [b]) => a.localeCompare(b))) {
      const clog = log.child({ claimUid: uid, namespace: entry.namespace, name: entry.name });
      if (!isValidClaimUid(uid)) {
        await this.opts.checkpoint.update((d) => {
          // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
          delete d.claims[uid];
        });
        report.dropped.push(uid);
        continue;
      }
      if (claimState(entry) !== 'PrepareCompleted') {
        await this.rollback(uid, entry, clog);
        report.rolledBack.push(uid);
        clog.warn({ state: entry.state }, 'rolled back an unfinished prepare');
        continue;
      }
      try {
        if (rebooted) {
          await this.rebuild(uid, entry);
          // A reboot reset the GPUs' time slices and compute modes; MPS daemon pods come back by themselves.
          if (sharingChangesHost(entry))
            await this.sharingFor(uid).applyGpuSettings(sharedDevices(entry), clog);
          report.rebuilt.push(uid);
          clog.info('node rebooted: rebuilt CDI spec from the checkpoint');
        } else if (await this.ensureSpecFile(uid, entry, clog)) {
          report.restored.push(uid);
        }
      } catch (err) {
        clog.error({ err }, 'cannot restore prepared claim; dropping it so the next prepare starts afresh');
        await this.rollback(uid, entry, clog);
        report.dropped.push(uid);
      }
    }
    if (bootId !== undefined && this.opts.checkpoint.current().bootId !== bootId) {
      await this.opts.checkpoint.update((d) => {
        d.bootId = bootId;
      });
    }

    if (this.opts.checkpoint.current().rebuild) {
      // The checkpoint was lost (now, or by a run that did not finish rebuilding): specs, MPS
      // daemons and MIG devices may belong to running pods' claims; nothing is swept until each
      // claim is rebuilt from the API or known gone (rebuildNow sweeps then).
      const { tally, sweeps } = await this.rebuildNow();
      return { checkpoint: loaded.status, rebooted, ...report, ...sweeps, fromApi: tally };
    }
    return { checkpoint: loaded.status, rebooted, ...report, ...(await this.sweep(true)) };
  }

  /** Removes what no recorded claim owns; MPS daemons and MIG devices only if `hostToo`. */
  private async sweep(hostToo: boolean): Promise<Sweeps> {
    const log = this.opts.logger;
    const orphansRemoved: string[] = [];
    const owned = new Set(
      Object.entries(this.opts.checkpoint.current().claims).map(
        ([uid, c]) => c.cdiSpecFile ?? claimSpecFileName(this.opts.driverName, uid),
      ),
    );
    for (const file of await this.opts.cdi.list()) {
      if (owned.has(file)) continue;
      await this.opts.cdi.remove(file);
      failpoint('orphan-cdi-removed');
      orphansRemoved.push(file);
    }
    if (orphansRemoved.length > 0)
      log.info({ files: orphansRemoved }, 'removed CDI specs no prepared claim owns');
    const metadataRemoved = await this.sweepMetadata();
    const mpsDaemonsRemoved = hostToo ? await this.sweepMpsDaemons() : [];
    const migDevicesRemoved = hostToo ? await this.sweepMigDevices() : [];
    return { orphansRemoved, mpsDaemonsRemoved, migDevicesRemoved, metadataRemoved };
  }

  /**
   * One rebuild attempt, shared by every caller that asks while it runs (start-up, the retry
   * timer, prepares waiting for it). Runs within the caller's `exclusive`.
   */
  private rebuildNow(): Promise<{ tally: RebuildTally; sweeps: Sweeps }> {
    this.rebuilding ??= this.rebuildFromSpecs().finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  /**
   * Rebuilds the claims of a lost checkpoint from the spec files they left: each names its
   * claim (cdi/spec.ts claimAnnotations), which is read from the API (GET only: the plugin may
   * not list claims) and, if still allocated here, planned again and recorded PrepareCompleted,
   * adopting the MIG devices in its slots and the MPS daemons its plan implies, so that its
   * devices are held again and nothing of its pod is swept. A claim the API says is gone,
   * replaced or allocated elsewhere leaves debris, removed like an orphan's. When every spec is
   * settled, the sweeps run and the marker is cleared; until then the API is asked again later.
   */
  private async rebuildFromSpecs(): Promise<{ tally: RebuildTally; sweeps: Sweeps }> {
    const log = this.opts.logger;
    const none: Sweeps = {
      orphansRemoved: [],
      mpsDaemonsRemoved: [],
      migDevicesRemoved: [],
      metadataRemoved: [],
    };
    const marker = this.opts.checkpoint.current().rebuild;
    if (!marker) return { tally: { ...this.rebuildTally, pending: [] }, sweeps: none };
    this.rebuildAttempts++;
    const pending: string[] = [];
    // Once one GET fails (not a 404), the rest wait for the next attempt: at start-up, a
    // blackholed API must cost one timeout, not one per claim, before the sockets are served.
    const api = { down: false };
    for (const file of await this.opts.cdi.list()) {
      const uid = claimUidOfSpecFile(this.opts.driverName, file);
      // Not a name this version writes (a .yaml): left to the sweep, as at any start.
      if (uid === undefined || recordedClaim(this.opts.checkpoint.current().claims, uid)) continue;
      const outcome: RebuildOutcome = await this.rebuildOne(
        uid,
        file,
        api,
        log.child({ claimUid: uid, cdiSpec: file }),
      );
      if (outcome === 'pending') pending.push(uid);
      else this.rebuildTally[outcome].push(uid);
    }
    const tally = { ...this.rebuildTally, pending };
    if (pending.length > 0) {
      log.warn(
        { pending, rebuilt: tally.rebuilt.length, attempt: this.rebuildAttempts },
        'cannot reach the API for every prepared claim: prepares wait, nothing is swept, retrying',
      );
      return { tally, sweeps: none };
    }
    // Specs, metadata files and MPS daemons of claims that are gone go now. A kept spec may be a
    // pod's whose MPS daemon or MIG device we cannot name: leave those until the next start.
    const sweeps = await this.sweep(tally.kept.length === 0);
    await this.opts.checkpoint.update((d) => {
      d.rebuild = undefined;
    });
    const summary: RebuildSummary = {
      ...tally,
      file: this.opts.checkpoint.file,
      marker,
      attempts: this.rebuildAttempts,
    };
    log.warn(
      {
        reason: marker.reason,
        problem: marker.problem,
        keptAs: marker.movedTo,
        rebuilt: tally.rebuilt,
        dropped: tally.dropped,
        kept: tally.kept,
        attempts: this.rebuildAttempts,
      },
      rebuildNote(summary),
    );
    const report = this.opts.onCheckpointRebuilt;
    if (report) {
      void report(summary).catch((err: unknown) => {
        log.warn({ err }, 'cannot post the CheckpointRebuilt event; the log line above says the same');
      });
    }
    return { tally, sweeps };
  }

  /** Rebuilds the claim of one spec file; see rebuildFromSpecs. */
  private async rebuildOne(
    uid: string,
    file: string,
    api: { down: boolean },
    clog: Logger,
  ): Promise<RebuildOutcome> {
    let raw: unknown;
    try {
      raw = JSON.parse((await this.opts.cdi.read(file)) ?? 'null');
    } catch {
      raw = undefined;
    }
    const named = claimOfSpec(raw, this.opts.driverName);
    const identity = named?.uid === uid ? named : undefined;
    const keep = async (why: string, err?: unknown): Promise<RebuildOutcome> => {
      const held = heldFromSpec(uid, raw, this.opts.poolName, identity, file);
      await this.opts.checkpoint.update((d) => {
        d.claims[uid] = held;
      });
      clog.error(
        { ...(err === undefined ? {} : { err }), devices: held.devices.map((d) => d.deviceName) },
        `cannot rebuild the claim of a CDI spec (${why}); kept the spec, its devices stay held until it is unprepared`,
      );
      return 'kept';
    };
    const drop = async (why: string): Promise<RebuildOutcome> => {
      await this.opts.cdi.remove(file);
      await this.opts.metadata?.remove(uid);
      clog.warn(
        { namespace: identity?.namespace, name: identity?.name },
        `removed the CDI spec of a claim that ${why}`,
      );
      return 'dropped';
    };
    if (!identity) return keep('the spec names no claim: written by an older version');
    if (!this.opts.claims) return keep('no API client to read the claim');
    if (api.down) return 'pending';
    let claim: ResourceClaim;
    try {
      claim = await withDeadline(
        this.opts.claims.get(identity.namespace, identity.name),
        this.opts.rebuildGetTimeoutMs ?? 10_000,
        `GET of claim ${identity.namespace}/${identity.name}`,
      );
    } catch (err) {
      if (isClaimNotFound(err)) return drop('no longer exists');
      api.down = true;
      clog.warn({ err }, 'cannot read the claim to rebuild it; trying again later');
      return 'pending';
    }
    if (claim.metadata?.uid !== uid) return drop('was replaced (another UID)');
    const here = (claim.status?.allocation?.devices?.results ?? []).some(
      (r) => r.driver === this.opts.driverName && r.pool === this.opts.poolName,
    );
    if (!here) return drop('is no longer allocated devices on this node');
    try {
      await this.adopt(identity, claim);
    } catch (err) {
      return keep(errorMessage(err), err);
    }
    clog.info(
      { namespace: identity.namespace, name: identity.name },
      'rebuilt a prepared claim from the API',
    );
    return 'rebuilt';
  }

  /**
   * Records a claim found prepared (its spec exists, the API still allocates it here) as
   * PrepareCompleted, from the same plan a prepare makes; its MIG devices must exist in their
   * slots (they are adopted, not made), its MPS daemons are named as its plan names them.
   */
  private async adopt(ref: ClaimIdentity, claim: ResourceClaim): Promise<CheckpointClaim> {
    const { planned: planning, inventory } = await this.plan(ref.uid, claim);
    const mode = this.opts.migPartitioning ?? 'static';
    const slots = planning.map((p) => slotToMake(p.device, p.adminAccess, mode));
    const made: LiveMigInstance[] = [];
    for (const slot of slots) {
      if (!slot) continue;
      const live = (await this.migFor(ref.uid).list(slot.parentUuid)).find(inSameSlot(slot));
      if (!live)
        throw new GpuDraError('DEVICE_CHANGED', `the MIG device of ${slot.name} no longer exists`, {
          claimUid: ref.uid,
        });
      made.push(live);
    }
    const planned =
      made.length > 0
        ? withCreatedDevices(planning, slots, made, readMigMinors(this.opts.hostPaths))
        : (planning as PlannedDevice[]);
    const { metadata, built, record } = this.compose(ref, planned, inventory, podClaimNameOf(claim));
    if (metadata) await metadata.store.write(ref.uid, metadata.files);
    await this.opts.cdi.write(built.fileName, built.spec);
    await this.opts.checkpoint.update((d) => {
      d.claims[ref.uid] = record;
    });
    return record;
  }

  /** Tries the rebuild again later, with jittered backoff, until it is done or we close. */
  private scheduleRebuild(): void {
    if (this.closed || this.rebuildTimer || !this.opts.checkpoint.current().rebuild) return;
    const delay = backoffDelay(
      this.rebuildAttempts - 1,
      this.opts.rebuildBackoff ?? { initialDelayMs: 1_000, maxDelayMs: 60_000 },
    );
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = undefined;
      if (this.closed) return;
      this.exclusive(() => this.rebuildNow()).then(
        () => {
          this.scheduleRebuild();
        },
        (err: unknown) => {
          this.opts.logger.error({ err }, 'checkpoint rebuild attempt failed; trying again');
          this.scheduleRebuild();
        },
      );
    }, delay);
    this.rebuildTimer.unref();
  }

  /**
   * While a lost checkpoint's claims are not all rebuilt, a claim not recorded must not be
   * handed devices an unrebuilt one may hold, nor unprepared without knowing what it holds: try
   * the rebuild now (the API answers the caller's own claim GET too, most likely), and refuse
   * with a retryable error if claims are still pending. A per-conflict API check would need the
   * unrebuilt claims' devices, which only the API can tell.
   */
  private async awaitRebuild(claimUid: string): Promise<void> {
    if (!this.opts.checkpoint.current().rebuild) return;
    const { tally } = await this.rebuildNow();
    if (!this.opts.checkpoint.current().rebuild) return;
    throw new GpuDraError(
      'CHECKPOINT_REBUILD_PENDING',
      `the checkpoint was lost and ${String(tally.pending.length)} prepared claim(s) are not yet rebuilt from the API; retry later`,
      { claimUid },
    );
  }

  /** Metadata directories of claims the checkpoint does not record (a crash before step 4). */
  private async sweepMetadata(): Promise<string[]> {
    const store = this.opts.metadata;
    if (!store) return [];
    const recorded = this.opts.checkpoint.current().claims;
    const removed: string[] = [];
    for (const uid of await store.list()) {
      if (Object.hasOwn(recorded, uid)) continue;
      await store.remove(uid);
      removed.push(uid);
    }
    if (removed.length > 0)
      this.opts.logger.info({ claims: removed }, 'removed device metadata files no prepared claim owns');
    return removed;
  }

  /**
   * MPS daemons of this node that no recorded claim owns (a crash between creating one and
   * recording it, or a lost checkpoint) are removed. The API may be unreachable at start-up:
   * then they stay until the next start, and the claims' own unprepares remove theirs.
   */
  private async sweepMpsDaemons(): Promise<string[]> {
    const mps = this.opts.sharing?.mpsDaemons;
    if (!mps) return [];
    const owned = new Set<string>();
    for (const [uid, entry] of Object.entries(this.opts.checkpoint.current().claims)) {
      for (const id of entry.mpsDaemons ?? []) owned.add(id);
      for (const g of mpsGroups(uid, sharedDevices(entry))) owned.add(g.id);
    }
    try {
      const removed = await mps.sweep(owned, this.opts.logger);
      if (removed.length > 0)
        this.opts.logger.info({ mpsDaemons: removed }, 'removed MPS daemons no prepared claim owns');
      return removed;
    } catch (err) {
      this.opts.logger.warn(
        { err },
        'cannot list MPS daemons to remove orphans; trying again at the next start',
      );
      return [];
    }
  }

  /**
   * MIG devices on GPUs in dynamic mode that no recorded claim owns are destroyed (a crash
   * between making one and recording it, a lost checkpoint). Not after an unreadable checkpoint:
   * running pods may be using them.
   */
  private async sweepMigDevices(): Promise<string[]> {
    const mig = this.opts.mig;
    const mode = this.opts.migPartitioning ?? 'static';
    if (!mig || mode !== 'dynamic') return [];
    const gpus = this.opts.inventory
      .current()
      .gpus.filter((g) => isDynamicMigGpu(g, mode))
      .map((g) => g.uuid);
    const owned = Object.values(this.opts.checkpoint.current().claims).flatMap(recordedMigInstances);
    return sweepUnowned(mig, gpus, owned, this.opts.logger);
  }

  /** Removes every spec and the checkpoint (for `--cleanup-on-exit`). */
  cleanupAll(): Promise<void> {
    return this.exclusive(() => this.cleanupAllExclusive());
  }

  private async cleanupAllExclusive(): Promise<void> {
    for (const [uid, entry] of Object.entries(this.opts.checkpoint.current().claims)) {
      const instances = recordedMigInstances(entry);
      if (instances.length > 0 && this.opts.mig)
        await destroyRecorded(this.opts.mig, instances, uid, this.opts.logger);
    }
    for (const file of await this.opts.cdi.list()) await this.opts.cdi.remove(file);
    await this.opts.metadata?.removeAll();
    await this.opts.checkpoint.removeFile();
  }
}

export interface DeviceStateSetup {
  /** Applies sharing settings; see {@link DeviceStateOptions.sharing}. */
  readonly sharing?: SharingApplier;
  readonly driverName: string;
  readonly nodeName: string;
  readonly hostPaths: HostPaths;
  readonly cdiRoot: string;
  /** The plugin's own directory (`<plugins dir>/<driver>`), where the checkpoint lives. */
  readonly pluginDir: string;
  readonly inventory: InventorySource;
  /** Reads other claims' allocation when a record holds devices a new claim wants. */
  readonly claims?: ClaimGetter;
  /** See {@link DeviceStateOptions.migPartitioning}. */
  readonly migPartitioning?: MigPartitioning;
  /** See {@link DeviceStateOptions.mig}. */
  readonly mig?: MigInstanceControl;
  /** See {@link DeviceStateOptions.claimStatus}. */
  readonly claimStatus?: ClaimStatusSink;
  /** `--device-metadata`: files under `<pluginDir>/dra-device-metadata`. */
  readonly deviceMetadata?: boolean;
  /** See {@link DeviceStateOptions.onCheckpointRebuilt}. */
  readonly onCheckpointRebuilt?: DeviceStateOptions['onCheckpointRebuilt'];
  readonly logger: Logger;
}

/** The node-wide lock files, in the plugin's directory next to the checkpoint they guard. */
export const STATE_LOCK_FILE = 'state.lock';
export const STATE_QUEUE_LOCK_FILE = 'state-queue.lock';

/**
 * The lock that serializes the plugin instances of a node over `checkpoint` (lock files in
 * `pluginDir`), re-reading the checkpoint each time this instance takes it.
 */
export function instanceLock(pluginDir: string, checkpoint: CheckpointStore, logger: Logger): InstanceLock {
  const log = logger.child({ component: 'instance-lock' });
  return new InstanceLock({
    main: FileLock.open(path.join(pluginDir, STATE_LOCK_FILE)),
    queue: FileLock.open(path.join(pluginDir, STATE_QUEUE_LOCK_FILE)),
    onAcquired: async () => {
      if (await checkpoint.refresh()) log.debug('checkpoint changed by another plugin instance; re-read it');
    },
  });
}

/**
 * The device state a node runs: CDI specs under `cdiRoot`, the checkpoint in `pluginDir`, and
 * the lock that lets a second plugin instance (a rolling update) share them.
 */
export function createDeviceState(setup: DeviceStateSetup): DeviceState {
  const checkpoint = new CheckpointStore(
    path.join(setup.pluginDir, CHECKPOINT_FILE),
    setup.logger.child({ component: 'checkpoint' }),
  );
  const lock = instanceLock(setup.pluginDir, checkpoint, setup.logger);
  return new DeviceState({
    driverName: setup.driverName,
    poolName: setup.nodeName,
    hostPaths: setup.hostPaths,
    cdi: new CdiStore(setup.cdiRoot, setup.driverName),
    checkpoint,
    lock,
    inventory: setup.inventory,
    ...(setup.claims ? { claims: setup.claims } : {}),
    ...(setup.sharing ? { sharing: setup.sharing } : {}),
    ...(setup.migPartitioning ? { migPartitioning: setup.migPartitioning } : {}),
    ...(setup.mig ? { mig: setup.mig } : {}),
    ...(setup.claimStatus ? { claimStatus: setup.claimStatus } : {}),
    // The store also exists with metadata off, so that files from a run with it on are swept.
    metadata: new MetadataStore(path.join(setup.pluginDir, METADATA_HOST_SUBDIR)),
    deviceMetadata: setup.deviceMetadata ?? false,
    ...(setup.onCheckpointRebuilt ? { onCheckpointRebuilt: setup.onCheckpointRebuilt } : {}),
    logger: setup.logger.child({ component: 'state' }),
  });
}
