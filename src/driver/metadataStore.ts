/**
 * The device metadata files (deviceMetadata.ts) on the host: `<root>/<claimUID>/<request>/
 * <driver>-metadata.json`, one directory per claim so that unprepare and the start-up sweep
 * remove a claim's files at once. Paths come from the validated claim UID and request names
 * (DNS labels) only, and stay below the root.
 *
 * Like the CDI specs, the files are derived data and written atomically without an fsync: the
 * checkpoint is the durable record, and after a reboot recovery writes them again with the
 * specs that mount them.
 */
import fsp from 'node:fs/promises';
import { atomicWriteFile, readDirIfExists } from '../util/atomicWrite.js';
import { errorMessage, GpuDraError } from '../util/errors.js';
import { underRoot } from '../util/hostPaths.js';
import { isValidClaimUid } from '../util/kubeNames.js';
import type { MetadataFile } from './deviceMetadata.js';

export class MetadataStore {
  constructor(readonly root: string) {}

  /** The claim's directory; throws for a UID no file may be named after. */
  claimDir(claimUid: string): string {
    if (!isValidClaimUid(claimUid))
      throw new GpuDraError('CLAIM_UID_INVALID', `invalid claim UID ${JSON.stringify(claimUid)}`, {
        claimUid,
      });
    return underRoot(this.root, claimUid);
  }

  pathOf(claimUid: string, file: Pick<MetadataFile, 'relativePath'>): string {
    return underRoot(this.claimDir(claimUid), file.relativePath);
  }

  /** Writes the claim's files (0644: the container runtime bind-mounts them for any user). */
  async write(claimUid: string, files: readonly MetadataFile[]): Promise<void> {
    for (const f of files) {
      const target = this.pathOf(claimUid, f);
      try {
        await atomicWriteFile(target, f.content, { mode: 0o644, fsync: false, dirMode: 0o755 });
      } catch (err) {
        throw new GpuDraError(
          'DEVICE_METADATA_FAILED',
          `cannot write device metadata ${target}: ${errorMessage(err)}`,
          { cause: err, claimUid },
        );
      }
    }
  }

  async exists(claimUid: string, files: readonly MetadataFile[]): Promise<boolean> {
    for (const f of files) {
      try {
        await fsp.access(this.pathOf(claimUid, f));
      } catch {
        return false;
      }
    }
    return true;
  }

  /** Removes the claim's files; returns whether there were any. */
  async remove(claimUid: string): Promise<boolean> {
    const dir = this.claimDir(claimUid);
    try {
      await fsp.access(dir);
    } catch {
      return false;
    }
    await fsp.rm(dir, { recursive: true, force: true });
    return true;
  }

  /** UIDs that have a directory here, sorted (entries that are not claim UIDs are left alone). */
  async list(): Promise<string[]> {
    const names = await readDirIfExists(this.root);
    return names.filter(isValidClaimUid).sort();
  }

  /** Removes every claim's files (for `--cleanup-on-exit`). */
  async removeAll(): Promise<void> {
    await fsp.rm(this.root, { recursive: true, force: true });
  }
}
