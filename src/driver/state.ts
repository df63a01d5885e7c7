/**
 * Prepare / unprepare with side effects: per-claim locking, the two-phase checkpoint, CDI spec
 * files, the device-in-use check, and start-up recovery. What to prepare is computed by the
 * pure compute.ts and cdi/spec.ts; this module only sequences and records the I/O.
 *
 * Prepare of claim U (serialized per U, claims in parallel):
 *   1. checkpoint says U is PrepareCompleted → return its devices (restore the spec file first
 *      if it vanished). No API call, no rewrite.
 *   2. U is PrepareStarted (an earlier attempt died) → roll it back.
 *   3. fetch + check the claim, plan devices, build the spec, check every device node exists.
 *   4. checkpoint U = PrepareStarted {devices, spec file, spec} — atomically with the check that
 *      no other claim holds an overlapping device (unless sharing allows it).
 *   5. write the spec file; 6. checkpoint U = PrepareCompleted.
 * A crash after 4 leaves PrepareStarted, which recovery (or the next prepare) rolls back.
 */
import fs from 'node:fs';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { underRoot, type HostPaths } from '../util/hostPaths.js';
import type { NodeInventory } from '../nvml/types.js';
import {
  buildClaimCdiSpec,
  claimSpecFileName,
  isValidClaimUid,
  type ClaimCdiSpec,
  type DriverFiles,
} from '../cdi/spec.js';
import { inspectDeviceNodes, readCharDeviceMajors, scanDriverFiles } from '../cdi/host.js';
import type { CdiStore } from '../cdi/store.js';
import type { CheckpointStore, LoadStatus } from '../checkpoint/store.js';
import { claimState, type CheckpointClaim, type CheckpointDevice } from '../checkpoint/schema.js';
import { ClaimError, checkFetchedClaim, type ResourceClaim } from './claims.js';
import { devicesOverlap, mayShare, planClaim, type PlannedDevice } from './compute.js';
import { indexInventory, type AllocatableDevice } from './deviceNames.js';
import { KeyedMutex } from './keyedMutex.js';

export interface ClaimIdentity {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
}

/** What the kubelet gets back for one device. */
export interface PreparedDevice {
  readonly requestNames: readonly string[];
  readonly poolName: string;
  readonly deviceName: string;
  readonly cdiDeviceIds: readonly string[];
  readonly shareId?: string;
}

/**
 * The node's devices. `refresh` re-discovers (called once when an allocated device is not
 * known, e.g. a MIG device created after start-up).
 */
export interface InventorySource {
  current(): NodeInventory;
  refresh?(): NodeInventory;
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
}

export interface RecoveryReport {
  readonly checkpoint: LoadStatus;
  readonly rebooted: boolean;
  readonly rolledBack: readonly string[];
  readonly restored: readonly string[];
  readonly rebuilt: readonly string[];
  readonly dropped: readonly string[];
  readonly orphansRemoved: readonly string[];
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

function toPrepared(devices: readonly CheckpointDevice[]): PreparedDevice[] {
  return devices.map((d) => ({
    requestNames: [...d.requestNames],
    poolName: d.poolName,
    deviceName: d.deviceName,
    cdiDeviceIds: [...d.cdiDeviceIds],
    ...(d.shareId ? { shareId: d.shareId } : {}),
  }));
}

function claimLabel(entry: Pick<CheckpointClaim, 'namespace' | 'name'>, uid: string): string {
  return entry.namespace || entry.name ? `${entry.namespace}/${entry.name} (${uid})` : uid;
}

export class DeviceState {
  private readonly locks = new KeyedMutex();

  constructor(private readonly opts: DeviceStateOptions) {}

  /** UIDs of claims recorded as PrepareCompleted. */
  preparedClaimUids(): string[] {
    const doc = this.opts.checkpoint.snapshot();
    return Object.entries(doc.claims)
      .filter(([, c]) => claimState(c) === 'PrepareCompleted')
      .map(([uid]) => uid)
      .sort();
  }

  private driverFiles(driverVersion: string): DriverFiles {
    return (this.opts.scanDriverFiles ?? scanDriverFiles)(this.opts.hostPaths, driverVersion);
  }

  /** Builds the spec and checks every device node exists; node types and numbers go into the spec. */
  private buildSpec(
    uid: string,
    devices: readonly { deviceName: string; device: AllocatableDevice }[],
    driverVersion: string,
  ): ClaimCdiSpec {
    const input = {
      driverName: this.opts.driverName,
      claimUid: uid,
      devices,
      hostPaths: this.opts.hostPaths,
      driverFiles: this.driverFiles(driverVersion),
    };
    const draft = buildClaimCdiSpec(input);
    const nodeInfo = inspectDeviceNodes(draft.deviceNodes, readCharDeviceMajors(this.opts.hostPaths));
    return nodeInfo.size > 0 ? buildClaimCdiSpec({ ...input, nodeInfo }) : draft;
  }

  private plan(claim: ResourceClaim): { planned: PlannedDevice[]; inventory: NodeInventory } {
    const base = { driverName: this.opts.driverName, poolName: this.opts.poolName, claim };
    let inventory = this.opts.inventory.current();
    try {
      return { planned: planClaim({ ...base, devices: indexInventory(inventory) }), inventory };
    } catch (err) {
      if ((err as { code?: string }).code !== 'DEVICE_UNKNOWN' || !this.opts.inventory.refresh) throw err;
      inventory = this.opts.inventory.refresh();
      return { planned: planClaim({ ...base, devices: indexInventory(inventory) }), inventory };
    }
  }

  /**
   * Prepares one claim. `fetch` is called only when the claim is not already prepared. Throws
   * on failure (the caller turns it into that claim's error string).
   */
  prepare(
    ref: ClaimIdentity,
    fetch: () => Promise<ResourceClaim>,
    logger: Logger,
  ): Promise<PreparedDevice[]> {
    if (!isValidClaimUid(ref.uid)) {
      return Promise.reject(
        new ClaimError('CLAIM_UID_INVALID', ref.uid, `invalid claim UID ${JSON.stringify(ref.uid)}`),
      );
    }
    return this.locks.run(ref.uid, async () => {
      const existing = this.opts.checkpoint.snapshot().claims[ref.uid];
      if (existing && claimState(existing) === 'PrepareCompleted') {
        await this.ensureSpecFile(ref.uid, existing, logger);
        logger.debug({ devices: existing.devices.length }, 'claim already prepared');
        return toPrepared(existing.devices);
      }
      if (existing) await this.rollback(ref.uid, existing, logger);

      const claim = await fetch();
      checkFetchedClaim(claim, ref.uid);
      const { planned, inventory } = this.plan(claim);
      const built = this.buildSpec(ref.uid, planned, inventory.driverVersion);
      const devices: CheckpointDevice[] = planned.map((p) => ({
        requestNames: [...p.requestNames],
        poolName: p.poolName,
        deviceName: p.deviceName,
        cdiDeviceIds: [built.cdiIds.get(p.deviceName) ?? ''],
        uuid: p.device.uuid,
        adminAccess: p.adminAccess,
        ...(p.shareId ? { shareId: p.shareId } : {}),
        ...(p.sharing ? { sharing: { ...p.sharing } } : {}),
      }));

      await this.opts.checkpoint.update((doc) => {
        for (const [otherUid, other] of Object.entries(doc.claims)) {
          if (otherUid === ref.uid) continue;
          for (const held of other.devices) {
            for (const wanted of devices) {
              if (devicesOverlap(held.deviceName, wanted.deviceName) && !mayShare(held, wanted)) {
                throw new ClaimError(
                  'DEVICE_IN_USE',
                  ref.uid,
                  `device ${wanted.deviceName} overlaps ${held.deviceName}, already prepared for claim ${claimLabel(other, otherUid)}, and no sharing allows both`,
                );
              }
            }
          }
        }
        doc.claims[ref.uid] = {
          state: 'PrepareStarted',
          namespace: ref.namespace,
          name: ref.name,
          cdiSpecFile: built.fileName,
          devices,
          cdiSpec: built.spec,
          updated: new Date().toISOString(),
        };
      });
      try {
        await this.opts.cdi.write(built.fileName, built.spec);
        await this.opts.checkpoint.update((doc) => {
          const entry = doc.claims[ref.uid];
          if (entry) {
            entry.state = 'PrepareCompleted';
            entry.updated = new Date().toISOString();
          }
        });
      } catch (err) {
        const entry = this.opts.checkpoint.snapshot().claims[ref.uid];
        if (entry)
          await this.rollback(ref.uid, entry, logger).catch((e: unknown) => {
            logger.error({ err: e }, 'rollback failed');
          });
        throw err;
      }
      logger.info({ devices: devices.map((d) => d.deviceName), cdiSpec: built.fileName }, 'claim prepared');
      return toPrepared(devices);
    });
  }

  /** Unprepares one claim; a claim this driver does not know is a success. */
  unprepare(ref: ClaimIdentity, logger: Logger): Promise<void> {
    if (!isValidClaimUid(ref.uid)) return Promise.resolve(); // never ours: we only record valid UIDs
    return this.locks.run(ref.uid, async () => {
      const entry = this.opts.checkpoint.snapshot().claims[ref.uid];
      if (!entry) {
        // A spec without an entry can only be debris from a crash between steps: remove it too.
        if (await this.opts.cdi.remove(claimSpecFileName(this.opts.driverName, ref.uid))) {
          logger.warn('removed CDI spec of a claim missing from the checkpoint');
        }
        logger.debug('claim not prepared here; nothing to do');
        return;
      }
      await this.rollback(ref.uid, entry, logger);
      logger.info('claim unprepared');
    });
  }

  /** Removes the claim's spec file, then its checkpoint entry. */
  private async rollback(uid: string, entry: CheckpointClaim, logger: Logger): Promise<void> {
    const fileName = claimSpecFileName(this.opts.driverName, uid);
    await this.opts.cdi.remove(fileName);
    if (entry.cdiSpecFile && entry.cdiSpecFile !== fileName) {
      await this.opts.cdi.remove(entry.cdiSpecFile).catch((err: unknown) => {
        logger.warn({ err }, 'cannot remove recorded spec file');
      });
    }
    await this.opts.checkpoint.update((doc) => {
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
      delete doc.claims[uid];
    });
  }

  /** Same boot: a completed claim's spec file must exist; restore it from the checkpoint if not. */
  private async ensureSpecFile(uid: string, entry: CheckpointClaim, logger: Logger): Promise<boolean> {
    const fileName = entry.cdiSpecFile ?? claimSpecFileName(this.opts.driverName, uid);
    if (await this.opts.cdi.exists(fileName)) return false;
    if (entry.cdiSpec && typeof entry.cdiSpec === 'object') {
      await this.opts.cdi.write(
        claimSpecFileName(this.opts.driverName, uid),
        entry.cdiSpec as ClaimCdiSpec['spec'],
      );
    } else {
      await this.rebuild(uid, entry);
    }
    logger.warn({ claimUid: uid }, 'CDI spec of a prepared claim was missing; restored it');
    return true;
  }

  /**
   * Recomputes a completed claim's spec from its checkpointed devices against today's host
   * (after a reboot: device nodes, driver files and even minors may differ). Throws when a
   * device is gone or is now a different device (UUID changed).
   */
  private async rebuild(uid: string, entry: CheckpointClaim): Promise<void> {
    const inventory = this.opts.inventory.current();
    const index = indexInventory(inventory);
    const devices = entry.devices.map((d) => {
      const device = index.get(d.deviceName);
      if (!device) throw new Error(`device ${d.deviceName} no longer exists`);
      if (d.uuid && d.uuid !== device.uuid) {
        throw new Error(`device ${d.deviceName} is now ${device.uuid}, was ${d.uuid}`);
      }
      return { deviceName: d.deviceName, device };
    });
    const built = this.buildSpec(uid, devices, inventory.driverVersion);
    await this.opts.cdi.write(built.fileName, built.spec);
    await this.opts.checkpoint.update((doc) => {
      const current = doc.claims[uid];
      if (!current) return;
      current.cdiSpecFile = built.fileName;
      current.cdiSpec = built.spec;
      for (const d of current.devices) d.cdiDeviceIds = [built.cdiIds.get(d.deviceName) ?? ''];
      current.updated = new Date().toISOString();
    });
  }

  /**
   * Start-up: load the checkpoint, finish or undo what a previous run left, and remove spec
   * files of ours that no claim owns. Must run before the sockets are served.
   */
  async recover(): Promise<RecoveryReport> {
    const log = this.opts.logger;
    const loaded = await this.opts.checkpoint.load();
    const bootId = readBootId(this.opts.hostPaths);
    const doc = this.opts.checkpoint.snapshot();
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
          report.rebuilt.push(uid);
          clog.info('node rebooted: rebuilt CDI spec from the checkpoint');
        } else if (await this.ensureSpecFile(uid, entry, clog)) {
          report.restored.push(uid);
        }
      } catch (err) {
        clog.error(
          { err: errorMessage(err) },
          'cannot restore prepared claim; dropping it so the next prepare starts afresh',
        );
        await this.rollback(uid, entry, clog);
        report.dropped.push(uid);
      }
    }
    if (bootId !== undefined && this.opts.checkpoint.snapshot().bootId !== bootId) {
      await this.opts.checkpoint.update((d) => {
        d.bootId = bootId;
      });
    }

    const orphansRemoved: string[] = [];
    if (loaded.status === 'quarantined') {
      log.warn('checkpoint was unreadable: keeping existing CDI specs (running pods may still need them)');
    } else {
      const owned = new Set(
        Object.entries(this.opts.checkpoint.snapshot().claims).map(
          ([uid, c]) => c.cdiSpecFile ?? claimSpecFileName(this.opts.driverName, uid),
        ),
      );
      for (const file of await this.opts.cdi.list()) {
        if (owned.has(file)) continue;
        await this.opts.cdi.remove(file);
        orphansRemoved.push(file);
      }
      if (orphansRemoved.length > 0)
        log.info({ files: orphansRemoved }, 'removed CDI specs no prepared claim owns');
    }
    return { checkpoint: loaded.status, rebooted, ...report, orphansRemoved };
  }

  /** Removes every spec and the checkpoint (for `--cleanup-on-exit`). */
  async cleanupAll(): Promise<void> {
    for (const file of await this.opts.cdi.list()) await this.opts.cdi.remove(file);
    await this.opts.checkpoint.removeFile();
  }
}
