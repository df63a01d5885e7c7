/**
 * The checkpoint file: read (missing = empty, unparsable = quarantined), and serialized
 * read-modify-write with atomic replacement. The in-memory copy is authoritative within the
 * process; it changes only after the file write succeeded.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, GpuDraError } from '../util/errors.js';
import { atomicWriteFile } from '../util/atomicWrite.js';
import type { Logger } from '../util/log.js';
import {
  CHECKPOINT_MIN_READER_VERSION,
  CHECKPOINT_VERSION,
  checkpointSchema,
  emptyCheckpoint,
  type CheckpointDocument,
} from './schema.js';

export class CheckpointError extends GpuDraError {}

export type LoadStatus = 'missing' | 'ok' | 'quarantined';

export interface LoadResult {
  readonly status: LoadStatus;
  /** Where an unreadable file was moved (status `quarantined`). */
  readonly quarantinedTo?: string;
}

export class CheckpointStore {
  private doc: CheckpointDocument = emptyCheckpoint();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly logger: Logger,
  ) {}

  /** Reads the file. Refuses (throws) only a document declaring itself unreadable by us. */
  async load(): Promise<LoadResult> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.doc = emptyCheckpoint();
        return { status: 'missing' };
      }
      throw new CheckpointError('CHECKPOINT_UNREADABLE', `cannot read checkpoint ${this.file}`, {
        cause: err,
      });
    }
    const problem = this.parse(text);
    if (problem === undefined) return { status: 'ok' };
    const quarantinedTo = `${this.file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '')}`;
    await fsp.rename(this.file, quarantinedTo);
    this.logger.error(
      { file: this.file, quarantinedTo, problem },
      'checkpoint unparsable; moved aside, starting empty',
    );
    this.doc = emptyCheckpoint();
    return { status: 'quarantined', quarantinedTo };
  }

  /** Returns a problem description, or undefined after adopting the document. */
  private parse(text: string): string | undefined {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      return `invalid JSON: ${(err as Error).message}`;
    }
    const minReader = (raw as { minReaderVersion?: unknown } | null)?.minReaderVersion;
    if (typeof minReader === 'number' && minReader > CHECKPOINT_VERSION) {
      throw new CheckpointError(
        'CHECKPOINT_TOO_NEW',
        `checkpoint ${this.file} needs reader version ${minReader}; this driver reads version ${CHECKPOINT_VERSION}: upgrade the driver or remove the file after draining the node`,
      );
    }
    const parsed = checkpointSchema.safeParse(raw);
    if (!parsed.success) {
      return parsed.error.issues.map((i) => `${i.path.join('.') || '<root>'}: ${i.message}`).join('; ');
    }
    this.doc = parsed.data;
    return undefined;
  }

  /** A deep copy of the current document. */
  snapshot(): CheckpointDocument {
    return structuredClone(this.doc);
  }

  /**
   * Applies `mutate` to a copy of the document and writes it. Calls are serialized; a throwing
   * mutator writes nothing and its error is returned to the caller.
   */
  update<T>(mutate: (doc: CheckpointDocument) => T): Promise<T> {
    const run = async (): Promise<T> => {
      const next = structuredClone(this.doc);
      const result = mutate(next);
      // The writer stamps its own format version; fields it does not know ride along untouched.
      next.version = CHECKPOINT_VERSION;
      next.minReaderVersion = CHECKPOINT_MIN_READER_VERSION;
      try {
        await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
        // Compact: it is written twice per prepare and read by programs (jq pretty-prints it).
        await atomicWriteFile(this.file, `${JSON.stringify(next)}\n`, { mode: 0o600 });
      } catch (err) {
        throw new CheckpointError(
          'CHECKPOINT_WRITE_FAILED',
          `cannot write checkpoint ${this.file}: ${errorMessage(err)}`,
          {
            cause: err,
          },
        );
      }
      this.doc = next;
      return result;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Deletes the file (for --cleanup-on-exit). */
  async removeFile(): Promise<void> {
    await fsp.rm(this.file, { force: true });
    this.doc = emptyCheckpoint();
  }
}
