import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CHECKPOINT_VERSION, claimState, emptyCheckpoint } from '../../src/checkpoint/schema.js';
import { CheckpointError, CheckpointStore } from '../../src/checkpoint/store.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { silentLogger } from '../../src/util/log.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-cp-'));
  file = path.join(dir, 'plugin', 'checkpoint.json');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const store = (): CheckpointStore => new CheckpointStore(file, silentLogger());
const readJson = (): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
const writeJson = (doc: unknown): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(doc));
};

const device = {
  requestNames: ['gpu'],
  poolName: 'node-a',
  deviceName: 'gpu-0',
  cdiDeviceIds: ['k8s.gpu.dra.dev/claim=u1-gpu-0'],
};

describe('CheckpointStore', () => {
  it('a missing file reads as empty', async () => {
    const s = store();
    expect(await s.load()).toEqual({ status: 'missing' });
    expect(s.snapshot()).toEqual(emptyCheckpoint());
  });

  it('round-trips through the file, atomically and 0600', async () => {
    const s = store();
    await s.load();
    await s.update((doc) => {
      doc.bootId = 'boot-1';
      doc.claims['u1'] = {
        state: 'PrepareCompleted',
        namespace: 'ns',
        name: 'c',
        devices: [{ ...device, adminAccess: false }],
      };
    });
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600');
    expect(fs.readdirSync(path.dirname(file))).toEqual(['checkpoint.json']);
    const again = store();
    expect(await again.load()).toEqual({ status: 'ok' });
    expect(again.snapshot()).toEqual(s.snapshot());
    expect(again.snapshot().claims['u1']?.devices[0]?.deviceName).toBe('gpu-0');
  });

  it('keeps unknown fields at every level across a rewrite (downgrade then upgrade loses nothing)', async () => {
    writeJson({
      kind: 'GpuDraCheckpoint',
      version: 3,
      minReaderVersion: 1,
      futureRoot: { nested: [1, 2] },
      claims: {
        u1: { state: 'PrepareCompleted', devices: [{ ...device, futureDevice: 'x' }], futureClaim: true },
      },
    });
    const s = store();
    expect(await s.load()).toEqual({ status: 'ok' });
    await s.update((doc) => {
      doc.claims['u2'] = { state: 'PrepareStarted', namespace: '', name: '', devices: [] };
    });
    const raw = readJson() as {
      version: number;
      futureRoot: unknown;
      claims: Record<string, { futureClaim?: unknown; devices: { futureDevice?: unknown }[] }>;
    };
    expect(raw.version).toBe(CHECKPOINT_VERSION);
    expect(raw.futureRoot).toEqual({ nested: [1, 2] });
    expect(raw.claims['u1']?.futureClaim).toBe(true);
    expect(raw.claims['u1']?.devices[0]?.futureDevice).toBe('x');
    expect(Object.keys(raw.claims)).toEqual(['u1', 'u2']);
  });

  it('reads an older document that lacks optional fields (no boot id, no spec, defaults)', async () => {
    writeJson({
      kind: 'GpuDraCheckpoint',
      version: 1,
      claims: { u1: { state: 'PrepareCompleted', devices: [{ poolName: 'p', deviceName: 'gpu-0' }] } },
    });
    const s = store();
    await s.load();
    const claim = s.snapshot().claims['u1'];
    expect(s.snapshot().bootId).toBeUndefined();
    expect(claim?.devices[0]).toEqual({
      poolName: 'p',
      deviceName: 'gpu-0',
      requestNames: [],
      cdiDeviceIds: [],
      adminAccess: false,
    });
  });

  it('refuses a document that says this version cannot read it', async () => {
    writeJson({ kind: 'GpuDraCheckpoint', version: 7, minReaderVersion: 5, claims: {} });
    await expect(store().load()).rejects.toThrow(CheckpointError);
    await expect(store().load()).rejects.toThrow(/needs reader version 5/);
    expect(fs.existsSync(file)).toBe(true);
  });

  it.each([
    ['torn JSON', '{"kind": "GpuDraCheckpoint", "vers'],
    ['wrong kind', JSON.stringify({ kind: 'Other', version: 1 })],
    ['claims not an object', JSON.stringify({ kind: 'GpuDraCheckpoint', version: 1, claims: 5 })],
  ])('quarantines an unreadable file (%s) and starts empty', async (_name, text) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    const s = store();
    const result = await s.load();
    expect(result.status).toBe('quarantined');
    expect(fs.existsSync(file)).toBe(false);
    expect(fs.readFileSync(result.quarantinedTo ?? '', 'utf8')).toBe(text);
    expect(s.snapshot().claims).toEqual({});
  });

  it('a throwing mutator writes nothing; updates are serialized', async () => {
    const s = store();
    await s.load();
    await expect(
      s.update(() => {
        throw new Error('conflict');
      }),
    ).rejects.toThrow('conflict');
    expect(fs.existsSync(file)).toBe(false);
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        s.update((doc) => {
          doc.claims[`u${i}`] = { state: 'PrepareStarted', namespace: '', name: '', devices: [] };
        }),
      ),
    );
    expect(Object.keys((readJson() as { claims: object }).claims)).toHaveLength(40);
  });

  it('group commit: updates arriving during a write share the next one; a throwing one drops out alone', async () => {
    const s = store();
    await s.load();
    const first = s.update((doc) => {
      doc.bootId = 'b1';
    });
    // These arrive while the first write is in flight.
    const rest = Array.from({ length: 10 }, (_, i) =>
      s.update((doc) => {
        if (i === 3) {
          doc.claims['poison'] = { state: 'PrepareCompleted', namespace: '', name: '', devices: [] };
          throw new Error('refused');
        }
        doc.claims[`u${i}`] = { state: 'PrepareCompleted', namespace: 'ns', name: `c${i}`, devices: [] };
        return i;
      }),
    );
    await first;
    const settled = await Promise.allSettled(rest);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'rejected'))).toEqual([
      0,
      1,
      2,
      'rejected',
      4,
      5,
      6,
      7,
      8,
      9,
    ]);
    expect(s.writes).toBe(2);
    const onDisk = readJson() as { bootId: string; claims: Record<string, unknown> };
    expect(onDisk.bootId).toBe('b1');
    expect(Object.keys(onDisk.claims).sort()).toEqual(['u0', 'u1', 'u2', 'u4', 'u5', 'u6', 'u7', 'u8', 'u9']);
    expect(s.current()).toEqual(onDisk);
  });

  it('a failed write rejects every update it held and leaves the document as it was', async () => {
    const s = store();
    await s.load();
    await s.update((doc) => {
      doc.bootId = 'kept';
    });
    fs.rmSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(path.dirname(file), ''); // a file where the directory was: no write can land
    const results = await Promise.allSettled([
      s.update((doc) => {
        doc.bootId = 'lost';
      }),
      s.update((doc) => {
        doc.claims['x'] = { state: 'PrepareCompleted', namespace: '', name: '', devices: [] };
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(String((results[0] as PromiseRejectedResult).reason)).toContain('cannot write checkpoint');
    expect(s.current().bootId).toBe('kept');
    expect(s.current().claims).toEqual({});
  });

  it('an unknown claim state counts as PrepareStarted', () => {
    expect(claimState({ state: 'PrepareCompleted' })).toBe('PrepareCompleted');
    expect(claimState({ state: 'UnprepareStarted' })).toBe('PrepareStarted');
  });
});

describe('atomicWrite', () => {
  it('replaces content and leaves no temp files', async () => {
    const target = path.join(dir, 'f.txt');
    await atomicWriteFile(target, 'one');
    await atomicWriteFile(target, 'two', { mode: 0o644 });
    expect(fs.readFileSync(target, 'utf8')).toBe('two');
    expect(fs.statSync(target).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(dir)).toEqual(['f.txt']);
  });

  it('cleans its temp file when the rename fails', async () => {
    const target = path.join(dir, 'adir');
    fs.mkdirSync(path.join(target, 'child'), { recursive: true });
    await expect(atomicWriteFile(target, 'x')).rejects.toThrow();
    expect(fs.readdirSync(dir)).toEqual(['adir']);
  });
});
