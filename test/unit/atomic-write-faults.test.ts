// atomicWriteFile when the disk fails under it: a write that stops part-way (ENOSPC after some
// bytes landed) and an fsync that fails (EIO). Both are injected through node:fs, which the
// module reads its calls from; everything else is the real filesystem. (A real full disk is in
// test/e2e/outage-disk-full.test.ts.)
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const faults = vi.hoisted(() => ({
  /** errno code the next writes fail with, after writing a part of their data. */
  write: undefined as string | undefined,
  /** errno code fsync fails with. */
  fsync: undefined as string | undefined,
  fsyncCalls: 0,
}));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const errnoError = (code: string, syscall: string): NodeJS.ErrnoException =>
    Object.assign(new Error(`${code}: injected failure, ${syscall}`), { code, syscall });
  const writeFileSync: typeof real.writeFileSync = (file, data, options) => {
    if (faults.write !== undefined && typeof file === 'number') {
      // Half the data lands, as when the disk fills during the write.
      const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data as Uint8Array);
      real.writeSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
      throw errnoError(faults.write, 'write');
    }
    real.writeFileSync(file, data, options);
  };
  const fsync = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void): void => {
    faults.fsyncCalls++;
    if (faults.fsync !== undefined) {
      callback(errnoError(faults.fsync, 'fsync'));
      return;
    }
    real.fsync(fd, callback);
  };
  const patched = { ...real, writeFileSync, fsync };
  return { ...patched, default: patched };
});

const fs = (await import('node:fs')).default;
const { atomicWriteFile } = await import('../../src/util/atomicWrite.js');

let dir: string;
let target: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-aw-'));
  target = path.join(dir, 'checkpoint.json');
  fs.writeFileSync(target, '{"old":true}\n');
  faults.write = undefined;
  faults.fsync = undefined;
  faults.fsyncCalls = 0;
});
afterEach(() => {
  faults.write = undefined;
  faults.fsync = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('atomicWriteFile on a failing disk', () => {
  it('a write that stops part-way (ENOSPC): the error reaches the caller, the temp file is gone, the target untouched', async () => {
    faults.write = 'ENOSPC';
    const err = await atomicWriteFile(target, '{"new":"a longer document than the old one"}\n').catch(
      (e: unknown) => e as NodeJS.ErrnoException,
    );
    expect(err).toMatchObject({ code: 'ENOSPC', syscall: 'write' });
    expect(fs.readdirSync(dir)).toEqual(['checkpoint.json']);
    expect(fs.readFileSync(target, 'utf8')).toBe('{"old":true}\n');
    // Nothing was flushed: the write failed first.
    expect(faults.fsyncCalls).toBe(0);
  });

  it('a failed fsync (EIO): the data may not be on disk, so nothing is renamed and the temp file is gone', async () => {
    faults.fsync = 'EIO';
    const err = await atomicWriteFile(target, '{"new":true}\n').catch(
      (e: unknown) => e as NodeJS.ErrnoException,
    );
    expect(err).toMatchObject({ code: 'EIO', syscall: 'fsync' });
    expect(faults.fsyncCalls).toBe(1);
    expect(fs.readdirSync(dir)).toEqual(['checkpoint.json']);
    expect(fs.readFileSync(target, 'utf8')).toBe('{"old":true}\n');
  });

  it('a new file on a failing disk is not created at all', async () => {
    faults.write = 'ENOSPC';
    const fresh = path.join(dir, 'spec.json');
    await expect(atomicWriteFile(fresh, '{}', { fsync: false })).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(fs.readdirSync(dir)).toEqual(['checkpoint.json']);
  });

  it('the next write after the disk recovers succeeds', async () => {
    faults.write = 'ENOSPC';
    await expect(atomicWriteFile(target, 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
    faults.write = undefined;
    await atomicWriteFile(target, '{"new":true}\n');
    expect(fs.readFileSync(target, 'utf8')).toBe('{"new":true}\n');
    expect(fs.readdirSync(dir)).toEqual(['checkpoint.json']);
  });
});
