/**
 * The CDI spec directory: atomic write, removal and listing of this driver's per-claim spec
 * files. File names come only from spec.ts naming (driver + validated UID).
 *
 * Writes are atomic but not fsynced: a spec is derived data. The checkpoint is the durable
 * record, and after a reboot (the only event that loses unsynced writes) recovery rebuilds
 * every spec from it against the host as it is then; most nodes keep /var/run/cdi on a tmpfs
 * anyway. Skipping the fsync takes a disk wait out of every prepare.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { atomicWriteFile, readDirIfExists, removeFile } from '../util/atomicWrite.js';
import { errorMessage, GpuDraError } from '../util/errors.js';
import { claimSpecFilePrefix, serializeCdiSpec, type CdiSpec } from './spec.js';

export class CdiStore {
  constructor(
    readonly root: string,
    readonly driverName: string,
  ) {}

  pathOf(fileName: string): string {
    if (fileName !== path.basename(fileName) || !fileName.startsWith(claimSpecFilePrefix(this.driverName))) {
      throw new GpuDraError('CDI_SPEC_INVALID', `refusing CDI spec file name ${JSON.stringify(fileName)}`);
    }
    return path.join(this.root, fileName);
  }

  /**
   * Writes a spec atomically, 0600: its one reader is the container runtime, which runs as root;
   * nobody else on the node needs to know which claim holds which GPU.
   */
  async write(fileName: string, spec: CdiSpec): Promise<void> {
    const file = this.pathOf(fileName);
    try {
      await atomicWriteFile(file, serializeCdiSpec(spec), { mode: 0o600, fsync: false, dirMode: 0o755 });
    } catch (err) {
      throw new GpuDraError('CDI_WRITE_FAILED', `cannot write CDI spec ${file}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  async exists(fileName: string): Promise<boolean> {
    try {
      await fsp.access(this.pathOf(fileName));
      return true;
    } catch {
      return false;
    }
  }

  async read(fileName: string): Promise<string | undefined> {
    try {
      return await fsp.readFile(this.pathOf(fileName), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Removes a spec; returns whether it existed. */
  remove(fileName: string): Promise<boolean> {
    // The executor turns a throw (a refused name, EACCES) into a rejection, as callers expect.
    return new Promise((resolve) => {
      resolve(removeFile(this.pathOf(fileName)));
    });
  }

  /** This driver's per-claim spec files (by prefix), sorted. */
  async list(): Promise<string[]> {
    const names = await readDirIfExists(this.root);
    const prefix = claimSpecFilePrefix(this.driverName);
    return names.filter((n) => n.startsWith(prefix) && (n.endsWith('.json') || n.endsWith('.yaml'))).sort();
  }
}
