import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CHECKPOINT_VERSION, claimState, emptyCheckpoint } from '../../src/checkpoint/schema.js';
import { CheckpointStore } from '../../src/checkpoint/store.js';
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

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/checkpoint');
const UID = '5f0c7a2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b';

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

  it('reads the older format (full cdiSpec stored, no minReaderVersion) and keeps the spec on rewrite', async () => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.copyFileSync(path.join(FIXTURES, 'older-v1-with-spec.json'), file);
    const s = store();
    expect(await s.load()).toEqual({ status: 'ok' });
    const claim = s.current().claims[UID];
    expect(claim).toMatchObject({ state: 'PrepareCompleted', namespace: 'team-a', name: 'train-gpu' });
    expect(claim?.devices[0]).toMatchObject({ deviceName: 'gpu-0', adminAccess: false });
    expect((claim?.cdiSpec as { cdiVersion?: string } | undefined)?.cdiVersion).toBe('0.5.0');
    expect(s.current().minReaderVersion).toBe(1);
    await s.update((d) => {
      d.bootId = 'b2';
    });
    expect(readJson()).toMatchObject({ version: CHECKPOINT_VERSION, minReaderVersion: 1, bootId: 'b2' });
    expect((readJson()['claims'] as Record<string, { cdiSpec?: unknown }>)[UID]?.cdiSpec).toEqual(
      (
        JSON.parse(fs.readFileSync(path.join(FIXTURES, 'older-v1-with-spec.json'), 'utf8')) as {
          claims: Record<string, { cdiSpec: unknown }>;
        }
      ).claims[UID]?.cdiSpec,
    );
  });

  it('reads a newer format it may read (version 2, minReaderVersion 1) and rewrites it keeping every unknown field', async () => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(FIXTURES, 'newer-v2-readable.json'), 'utf8'),
    ) as Record<string, unknown>;
    writeJson(fixture);
    const s = store();
    expect(await s.load()).toEqual({ status: 'ok' });
    expect(s.current().claims[UID]?.devices[0]?.deviceName).toBe('gpu-0');
    await s.update((d) => {
      d.claims['u2'] = { state: 'PrepareStarted', namespace: 'ns', name: 'c2', devices: [] };
    });
    const raw = readJson();
    // Ours now (version 1), with everything version 2 wrote still there, at each level.
    const { claims: rawClaims, ...rawTop } = raw as { claims: Record<string, unknown> };
    const { claims: fixtureClaims, ...fixtureTop } = fixture as { claims: Record<string, unknown> };
    expect(rawTop).toEqual({ ...fixtureTop, version: CHECKPOINT_VERSION, minReaderVersion: 1 });
    expect(rawClaims[UID]).toEqual(fixtureClaims[UID]);
    expect(Object.keys(rawClaims)).toEqual([UID, 'u2']);
  });

  it('a newer format it may not read (minReaderVersion 2) takes the rebuild path, its file kept as it was', async () => {
    const text = fs.readFileSync(path.join(FIXTURES, 'newer-v2-unreadable.json'), 'utf8');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    const s = store();
    const result = await s.load();
    expect(result.status).toBe('tooNew');
    expect(fs.readFileSync(result.quarantinedTo ?? '', 'utf8')).toBe(text);
    expect(s.current().claims).toEqual({});
    expect(s.current().rebuild?.reason).toBe('tooNew');
  });

  it('a document that needs a newer reader is kept aside, not refused: the start rebuilds', async () => {
    const text = JSON.stringify({ kind: 'GpuDraCheckpoint', version: 7, minReaderVersion: 5, claims: {} });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    const s = store();
    const result = await s.load();
    expect(result.status).toBe('tooNew');
    expect(result.problem).toMatch(/needs reader version 5/);
    expect(result.quarantinedTo).toMatch(/checkpoint\.json\.too-new-\d{4}-\d{2}-\d{2}T\d{9}Z$/);
    expect(fs.readFileSync(result.quarantinedTo ?? '', 'utf8')).toBe(text);
    expect(s.current().rebuild).toMatchObject({ reason: 'tooNew', movedTo: result.quarantinedTo });
    expect(readJson()).toMatchObject({
      version: CHECKPOINT_VERSION,
      claims: {},
      rebuild: { reason: 'tooNew' },
    });
  });

  it('a rebuild marker survives a restart: the next start rebuilds too, not trusting the empty claims', async () => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '{"kind":"GpuDraCheckpoint","vers');
    const moved = (await store().load()).quarantinedTo;
    const again = store();
    expect(await again.load()).toEqual({ status: 'ok' });
    expect(again.current().rebuild).toMatchObject({ reason: 'corrupt', movedTo: moved });
    // Cleared by the device state once done, and then gone from the file.
    await again.update((d) => {
      d.rebuild = undefined;
    });
    expect(readJson()).not.toHaveProperty('rebuild');
  });

  const corruptCases: [string, Buffer][] = [
    ['zero-length', Buffer.alloc(0)],
    ['torn JSON', Buffer.from('{"kind": "GpuDraCheckpoint", "vers')],
    ['binary garbage', Buffer.from([0x00, 0xff, 0xfe, 0x7b, 0x22, 0x00, 0x80, 0xc3, 0x28, 0x0a, 0x1b])],
    ['NUL-filled (a block the filesystem lost)', Buffer.alloc(4096)],
    ['JSON, not an object', Buffer.from('[1,2,3]')],
    ['JSON null', Buffer.from('null')],
    ['wrong kind', Buffer.from(JSON.stringify({ kind: 'Other', version: 1 }))],
    ['version a string', Buffer.from(JSON.stringify({ kind: 'GpuDraCheckpoint', version: '1' }))],
    [
      'claims not an object',
      Buffer.from(JSON.stringify({ kind: 'GpuDraCheckpoint', version: 1, claims: 5 })),
    ],
    [
      'a claim without its state',
      Buffer.from(JSON.stringify({ kind: 'GpuDraCheckpoint', version: 1, claims: { u1: { devices: [] } } })),
    ],
  ];
  it.each(corruptCases)(
    'keeps an unreadable file (%s) aside byte for byte and starts a rebuild',
    async (_name, bytes) => {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, bytes);
      const s = store();
      const result = await s.load();
      expect(result.status).toBe('quarantined');
      expect(result.quarantinedTo).toMatch(/checkpoint\.json\.corrupt-/);
      expect(fs.readFileSync(result.quarantinedTo ?? '').equals(bytes)).toBe(true);
      expect(s.snapshot().claims).toEqual({});
      expect(s.current().rebuild).toMatchObject({ reason: 'corrupt', movedTo: result.quarantinedTo });
      expect(String(s.current().rebuild?.problem)).not.toBe('');
      // The file is never missing (a crash now would read "nothing prepared"): it is the marker.
      expect(readJson()).toMatchObject({ kind: 'GpuDraCheckpoint', rebuild: { reason: 'corrupt' } });
    },
  );

  it('a file torn at any byte offset is detected, kept aside, and never adopted in part', async () => {
    const full = fs.readFileSync(path.join(FIXTURES, 'newer-v2-readable.json'));
    const end = full.lastIndexOf('}'); // every shorter prefix is torn
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const moved = new Set<string>();
    for (let cut = 0; cut < end; cut++) {
      const torn = full.subarray(0, cut);
      fs.writeFileSync(file, torn);
      const s = store();
      const result = await s.load();
      expect(result.status, `cut at ${String(cut)}`).toBe('quarantined');
      expect(fs.readFileSync(result.quarantinedTo ?? '').equals(torn), `cut at ${String(cut)}`).toBe(true);
      expect(s.current().claims).toEqual({});
      moved.add(result.quarantinedTo ?? '');
    }
    // Each start's evidence kept, none written over another within the same millisecond.
    expect(moved.size).toBe(end);
    // The whole file, cut after its last brace, reads as it is.
    fs.writeFileSync(file, full.subarray(0, end + 1));
    expect(await store().load()).toEqual({ status: 'ok' });
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
