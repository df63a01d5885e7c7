/**
 * The checkpoint file: read (missing = empty, unreadable = kept aside and rebuilt), and read-modify-write
 * with atomic replacement, the data fsynced before the rename. The in-memory document is
 * authoritative within the process; it changes only after the file write succeeded.
 *
 * What survives what: a crash of the process loses nothing that was answered (the page cache
 * outlives it). A power loss can bring back the file as it was a few seconds earlier (the rename
 * is not forced to disk; that is a second fsync per write, of the directory), never a torn one.
 * Both ways that can go are safe after the reboot that follows: a prepare that went missing is
 * prepared again when the kubelet restarts its pod, and an unprepared claim that came back holds
 * its devices only until a claim that wants them finds, through the API, that it is gone
 * (driver/state.ts, stale holders).
 *
 * Group commit: updates that arrive while a write is in flight are applied together and written
 * once, each caller answered when the write holding its change is durable. A burst of prepares
 * costs one fsync pair per round, not one per claim.
 *
 * The document is immutable: `current()` hands out the live object (no copy per read; readers
 * must not change it, which the types enforce), and an update works on a fresh top level and
 * claims map, replacing the entries it changes.
 *
 * Two plugin instances (a rolling update) share the file. Each writes it only while holding the
 * node-wide lock (util/instanceLock.ts) and, on taking that lock, calls `refresh()`, which
 * re-reads the file when the other instance replaced it since this one last read or wrote it:
 * every update then starts from the latest document, never from a stale copy that would drop the
 * other's entries.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { errorMessage, GpuDraError } from '../util/errors.js';
import { atomicWriteFile } from '../util/atomicWrite.js';
import type { Logger } from '../util/log.js';
import {
  CHECKPOINT_MIN_READER_VERSION,
  CHECKPOINT_VERSION,
  checkpointSchema,
  emptyCheckpoint,
  type CheckpointClaim,
  type CheckpointDocument,
  type RebuildMarker,
} from './schema.js';

export class CheckpointError extends GpuDraError {}

/** `quarantined`: the file did not parse; `tooNew`: a newer driver's (see schema.ts). */
export type LoadStatus = 'missing' | 'ok' | 'quarantined' | 'tooNew';

export interface LoadResult {
  readonly status: LoadStatus;
  /** Where an unreadable file was kept (status `quarantined` or `tooNew`). */
  readonly quarantinedTo?: string;
  /** What was wrong with it. */
  readonly problem?: string;
}

/** The document as readers see it: nothing in it may be changed in place. */
export type ReadonlyCheckpoint = DeepReadonly<CheckpointDocument>;
type DeepReadonly<T> = T extends (infer E)[]
  ? readonly DeepReadonly<E>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

/**
 * What an update's mutator changes: the top-level fields and which claims exist. Entries are
 * replaced (`draft.claims[uid] = {...old, state}`), never edited, since readers share them.
 */
export interface CheckpointDraft {
  bootId?: string | undefined;
  /** See schema.ts; cleared (undefined) once every claim is rebuilt. */
  rebuild?: DeepReadonly<RebuildMarker> | undefined;
  claims: Record<string, ReadonlyCheckpointClaim>;
}
export type ReadonlyCheckpointClaim = DeepReadonly<CheckpointClaim>;

interface PendingUpdate {
  readonly mutate: (draft: CheckpointDraft) => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Identifies one version of the file: every write renames a new inode into place, so another
 * instance's write changes the inode even within the timestamps' granularity.
 */
function fileStamp(file: string): string {
  try {
    const st = fs.statSync(file, { bigint: true });
    return `${String(st.dev)}:${String(st.ino)}:${String(st.size)}:${String(st.mtimeNs)}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
}

export class CheckpointStore {
  private doc: ReadonlyCheckpoint = emptyCheckpoint();
  private pending: PendingUpdate[] = [];
  private writing = false;
  private written = 0;
  private rereads = 0;
  /** The file as last read or written by us; undefined before `load()`. */
  private stamp: string | undefined;

  constructor(
    readonly file: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Reads the file. One that does not parse, or says it needs a newer reader, is copied aside
   * (`<file>.corrupt-<time>` / `<file>.too-new-<time>`, never deleted: it is the evidence) and
   * replaced by an empty document carrying a rebuild marker, which the device state acts on
   * (driver/state.ts, rebuildFromSpecs). Copy, then atomic replace: at no moment is the file
   * missing, which a crash would read as "nothing prepared" and sweep.
   */
  async load(): Promise<LoadResult> {
    let text: string;
    try {
      this.stamp = fileStamp(this.file);
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.doc = emptyCheckpoint();
        this.stamp = 'missing';
        return { status: 'missing' };
      }
      throw new CheckpointError('CHECKPOINT_UNREADABLE', `cannot read checkpoint ${this.file}`, {
        cause: err,
      });
    }
    const bad = this.parse(text);
    if (bad === undefined) return { status: 'ok' };
    const now = new Date();
    const base = `${this.file}.${bad.kind === 'tooNew' ? 'too-new' : 'corrupt'}-${now.toISOString().replace(/[:.]/g, '')}`;
    let quarantinedTo = base;
    try {
      // Never over an earlier one (two starts within a millisecond): each is evidence.
      for (let n = 1; ; n++) {
        try {
          await fsp.copyFile(this.file, quarantinedTo, fs.constants.COPYFILE_EXCL);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || n > 100) throw err;
          quarantinedTo = `${base}-${String(n)}`;
        }
      }
      const doc: CheckpointDocument = {
        ...emptyCheckpoint(),
        rebuild: { reason: bad.kind, problem: bad.problem, movedTo: quarantinedTo, since: now.toISOString() },
      };
      await this.write(doc);
      this.doc = doc;
      this.stamp = fileStamp(this.file);
    } catch (err) {
      throw new CheckpointError(
        'CHECKPOINT_UNREADABLE',
        `checkpoint ${this.file} is unreadable (${bad.problem}) and cannot be kept aside as ${quarantinedTo}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    this.logger.error(
      { file: this.file, quarantinedTo, problem: bad.problem, reason: bad.kind },
      bad.kind === 'tooNew'
        ? 'checkpoint written by a newer driver; kept it aside, rebuilding the prepared claims from the API'
        : 'checkpoint unreadable; kept it aside, rebuilding the prepared claims from the API',
    );
    return { status: bad.kind === 'tooNew' ? 'tooNew' : 'quarantined', quarantinedTo, problem: bad.problem };
  }

  /**
   * Re-reads the file if someone else (the other plugin instance) replaced or removed it since we
   * last read or wrote it. Call only under the node-wide lock, with no update of ours in flight.
   * An unparsable file is an error here, not quarantined: while running, forgetting every claim
   * would be worse than failing the call; the next start quarantines it. Returns whether it
   * re-read; before `load()` it does nothing.
   */
  async refresh(): Promise<boolean> {
    if (this.stamp === undefined) return false;
    if (this.writing || this.pending.length > 0) {
      throw new CheckpointError('INTERNAL', `refresh of ${this.file} while an update is in flight`);
    }
    const stamp = fileStamp(this.file);
    if (stamp === this.stamp) return false;
    if (stamp === 'missing') {
      this.doc = emptyCheckpoint();
    } else {
      let text: string;
      try {
        text = await fsp.readFile(this.file, 'utf8');
      } catch (err) {
        throw new CheckpointError('CHECKPOINT_UNREADABLE', `cannot read checkpoint ${this.file}`, {
          cause: err,
        });
      }
      const bad = this.parse(text);
      if (bad !== undefined) {
        throw new CheckpointError(
          bad.kind === 'tooNew' ? 'CHECKPOINT_TOO_NEW' : 'CHECKPOINT_UNREADABLE',
          `checkpoint ${this.file}, written by another plugin instance, is unreadable: ${bad.problem}`,
        );
      }
    }
    this.stamp = stamp;
    this.rereads++;
    return true;
  }

  /** How often `refresh()` found the file changed by someone else (tests, logs). */
  get reloads(): number {
    return this.rereads;
  }

  /** What is wrong with `text`, or undefined after adopting the document. */
  private parse(text: string): { readonly kind: 'corrupt' | 'tooNew'; readonly problem: string } | undefined {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      return { kind: 'corrupt', problem: `invalid JSON: ${(err as Error).message}` };
    }
    const minReader = (raw as { minReaderVersion?: unknown } | null)?.minReaderVersion;
    if (typeof minReader === 'number' && minReader > CHECKPOINT_VERSION) {
      return {
        kind: 'tooNew',
        problem: `needs reader version ${String(minReader)}; this driver reads version ${String(CHECKPOINT_VERSION)}`,
      };
    }
    const parsed = checkpointSchema.safeParse(raw);
    if (!parsed.success) {
      return {
        kind: 'corrupt',
        problem: parsed.error.issues.map((i) => `${i.path.join('.') || '<root>'}: ${i.message}`).join('; '),
      };
    }
    this.doc = parsed.data;
    return undefined;
  }

  /** File writes so far (one per group of updates), for tests and metrics. */
  get writes(): number {
    return this.written;
  }

  /** The current document, shared: never change it (the type says so). */
  current(): ReadonlyCheckpoint {
    return this.doc;
  }

  /** A deep copy of the current document (for callers that want to change their copy). */
  snapshot(): CheckpointDocument {
    return structuredClone(this.doc) as CheckpointDocument;
  }

  /**
   * Applies `mutate` to a draft of the document and writes it. Mutators run in call order; a
   * throwing mutator changes nothing and its error goes to its caller alone. A failed write
   * rejects every update it held, and the document stays as it was.
   */
  update<T>(mutate: (draft: CheckpointDraft) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ mutate, resolve: resolve as (value: unknown) => void, reject });
      if (!this.writing) void this.writeRounds();
    });
  }

  private async writeRounds(): Promise<void> {
    this.writing = true;
    try {
      while (this.pending.length > 0) {
        const round = this.pending.splice(0);
        let next: ReadonlyCheckpoint = this.doc;
        const applied: { readonly update: PendingUpdate; readonly result: unknown }[] = [];
        for (const update of round) {
          // A fresh top level and claims map per mutator, so a throwing one leaves no trace.
          const draft = { ...next, claims: { ...next.claims } };
          try {
            applied.push({ update, result: update.mutate(draft) });
            next = draft;
          } catch (err) {
            update.reject(err);
          }
        }
        if (applied.length === 0) continue;
        // The writer stamps its own format version; fields it does not know ride along untouched.
        const doc = { ...next, version: CHECKPOINT_VERSION, minReaderVersion: CHECKPOINT_MIN_READER_VERSION };
        try {
          await this.write(doc);
        } catch (err) {
          const failed = new CheckpointError(
            'CHECKPOINT_WRITE_FAILED',
            `cannot write checkpoint ${this.file}: ${errorMessage(err)}`,
            { cause: err },
          );
          for (const { update } of applied) update.reject(failed);
          continue;
        }
        this.doc = doc;
        // Under the node-wide lock nobody else writes between our rename and this stat.
        this.stamp = fileStamp(this.file);
        this.written++;
        for (const { update, result } of applied) update.resolve(result);
      }
    } finally {
      this.writing = false;
    }
  }

  private async write(doc: ReadonlyCheckpoint): Promise<void> {
    // Compact: it is written on every prepare and read by programs (jq pretty-prints it).
    await atomicWriteFile(this.file, `${JSON.stringify(doc)}\n`, { mode: 0o600, dirMode: 0o700 });
  }

  /** Deletes the file (for --cleanup-on-exit). */
  async removeFile(): Promise<void> {
    await fsp.rm(this.file, { force: true });
    this.doc = emptyCheckpoint();
    this.stamp = 'missing';
  }
}
