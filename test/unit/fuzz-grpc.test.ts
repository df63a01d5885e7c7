/**
 * Fuzzes dra.sock through the real gRPC server: generated NodePrepareResources /
 * NodeUnprepareResources calls (hostile claim references, many claims, fuzzed opaque configs on
 * the claims the API would return), raw protobuf with unknown fields and wrong wire types, and
 * garbage written straight to the socket. Fixed seeds, so CI sees the same inputs every run.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuzzRuns, fuzzSeed, reportFuzzInputs } from '../support/fuzz.js';
import type { ResourceClaim } from '../../src/api/resource.js';
import { MemoryClaimGetter, type ClaimGetter } from '../../src/driver/claims.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import { startKubeletPlugin, type KubeletPlugin } from '../../src/kubelet/plugin.js';
import { DRA_V1_SERVICE, loadProtos, type ClaimRef } from '../../src/kubelet/proto.js';
import { MAX_CLAIMS_PER_CALL, replyBytesBound } from '../../src/kubelet/draService.js';
import { SharingApplier } from '../../src/sharing/apply.js';
import { silentLogger } from '../../src/util/log.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testDeviceState,
  TEST_DRIVER,
  type TestHost,
} from '../support/driverFixtures.js';

const SEED = 20261202;
/** Generated names that try to leave the test's directories carry this, to be searched for. */
const MARK = 'fuzzesc';
/** Per claim: the kubelet takes 4 MiB per reply, and a pod event shows one claim's error. */
const MAX_CLAIM_ERROR = 8 * 1024;
/** Every call is answered well before this; a hang fails the call with DEADLINE_EXCEEDED. */
const DEADLINE_MS = 5_000;

/** Records what reached the API (the getter), so that refused refs can be shown not to. */
class RecordingGetter implements ClaimGetter {
  readonly asked: { namespace: string; name: string }[] = [];
  readonly inner = new MemoryClaimGetter();
  get(namespace: string, name: string): Promise<ResourceClaim> {
    this.asked.push({ namespace, name });
    return this.inner.get(namespace, name);
  }
}

let host: TestHost;
let plugin: KubeletPlugin;
let getter: RecordingGetter;
let v1: KubeletClient;
let v1beta1: KubeletClient;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const validRef = (r: ClaimRef): boolean =>
  r.namespace.length <= 63 &&
  DNS_LABEL.test(r.namespace) &&
  r.name.length <= 253 &&
  DNS_SUBDOMAIN.test(r.name);

/**
 * A full GC, so that heap figures compare what is still held: vitest runs without --expose-gc,
 * and V8 takes the flag at run time, exposing gc() to contexts made after it.
 */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

/** Every path under `dir`, relative, directories marked with a trailing slash. */
function tree(dir: string): Set<string> {
  const out = new Set<string>();
  const walk = (d: string, rel: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      out.add(e.isDirectory() ? `${r}/` : r);
      if (e.isDirectory()) walk(path.join(d, e.name), r);
    }
  };
  walk(dir, '');
  return out;
}

/** Names carrying MARK within two levels of the system temp dir (where `../..` from a host leads). */
function escapedIntoTmp(): string[] {
  const found: string[] = [];
  const tmp = os.tmpdir();
  for (const e of fs.readdirSync(tmp, { withFileTypes: true })) {
    if (e.name.includes(MARK)) found.push(e.name);
    if (e.isDirectory() && e.name.startsWith('gdra-')) {
      try {
        for (const f of fs.readdirSync(path.join(tmp, e.name)))
          if (f.includes(MARK)) found.push(path.join(e.name, f));
      } catch {
        // another test's host, removed while we looked
      }
    }
  }
  return found;
}

const UIDS = Array.from({ length: 8 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);

// ---- generators ----

/** Strings a hostile or buggy client could put in a claim reference field. */
const hostileString = fc.oneof(
  fc.constantFrom(
    '',
    '.',
    '..',
    `../${MARK}`,
    `../../${MARK}`,
    `/tmp/${MARK}`,
    `a\0${MARK}`,
    '__proto__',
    'constructor',
    'default',
    'UPPER',
    '-leading',
    'x'.repeat(64),
    'y'.repeat(254),
    'z'.repeat(100_000),
    'é🎉\u202e',
  ),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/),
);

/** UIDs: known claims' (so that some prepares get as far as the config), hostile ones, random. */
const uidArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...UIDS) },
  { weight: 2, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.uuid() },
);

const refArb: fc.Arbitrary<ClaimRef> = fc.oneof(
  // A known claim's own ref, so that prepares get as far as its config.
  {
    weight: 2,
    arbitrary: fc.constantFrom(...UIDS).map((uid) => ({ uid, namespace: 'default', name: `claim-${uid}` })),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      uid: uidArb,
      namespace: fc.oneof({ weight: 2, arbitrary: fc.constant('default') }, hostileString),
      name: fc.oneof(
        { weight: 2, arbitrary: fc.constantFrom(...UIDS.map((u) => `claim-${u}`)) },
        hostileString,
      ),
    }),
  },
);

/** Opaque parameters on the claims the API returns: valid, wrong, huge. */
const paramsArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant({
    apiVersion: 'gpu.dra.dev/v1alpha1',
    kind: 'GpuConfig',
    sharing: { strategy: 'TimeSlicing' },
  }),
  fc.record({
    apiVersion: fc.constantFrom('gpu.dra.dev/v1alpha1', 'x'.repeat(200_000)),
    kind: fc.constantFrom('GpuConfig', 'MigDeviceConfig', { deep: 'y'.repeat(200_000) }),
    sharing: fc.record({
      strategy: fc.constantFrom('MPS', 'TimeSlicing', 'Nope'),
      mps: fc.record({
        defaultPinnedDeviceMemoryLimit: fc.constantFrom(
          '1Gi',
          '99999999999999999999999999Ei',
          'q'.repeat(300_000),
        ),
        defaultActiveThreadPercentage: fc.integer({ min: -1000, max: 1000 }),
      }),
    }),
  }),
  fc.dictionary(fc.string({ maxLength: 2000 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 30 }),
);

/** A claim reference in protobuf (Claim: namespace=1, uid=2, name=3) with extras the server must skip. */
function rawClaim(fields: { tag: number; wire: number; body: Buffer }[]): Buffer {
  return Buffer.concat(fields.map((f) => Buffer.concat([varint((f.tag << 3) | f.wire), f.body])));
}
function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}
const lengthDelimited = (bytes: Uint8Array): Buffer =>
  Buffer.concat([varint(bytes.length), Buffer.from(bytes)]);

/** Raw request bodies: well-formed claims with unknown fields, wrong wire types, random bytes. */
const rawRequestArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc
    .array(
      fc.record({
        tag: fc.integer({ min: 1, max: 40 }),
        wire: fc.constantFrom(0, 1, 2, 5),
        payload: fc.uint8Array({ maxLength: 64 }),
      }),
      { maxLength: 8 },
    )
    .map((fields) => {
      const claim = rawClaim(
        fields.map(({ tag, wire, payload }) => ({
          tag,
          wire,
          body:
            wire === 2
              ? lengthDelimited(payload)
              : wire === 0
                ? varint(payload.length)
                : Buffer.alloc(wire === 1 ? 8 : 4, payload.length),
        })),
      );
      return rawClaim([{ tag: 1, wire: 2, body: lengthDelimited(claim) }]);
    }),
  fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
  // claims=1 with invalid UTF-8 in every string
  fc.constant(
    rawClaim([
      {
        tag: 1,
        wire: 2,
        body: lengthDelimited(
          rawClaim(
            [1, 2, 3].map((tag) => ({
              tag,
              wire: 2,
              body: lengthDelimited(Buffer.from([0xff, 0xfe, 0xc0])),
            })),
          ),
        ),
      },
    ]),
  ),
);

// ---- harness ----

beforeAll(async () => {
  host = createTestHost();
  getter = new RecordingGetter();
  const logger = silentLogger();
  const state = testDeviceState(host, {
    sharing: new SharingApplier({ nvidiaSmi: { run: () => Promise.resolve({ stdout: '', stderr: '' }) } }),
    logger,
  });
  await state.recover();
  plugin = await startKubeletPlugin({
    driverName: TEST_DRIVER,
    registryDir: host.registryDir,
    pluginsDir: host.pluginsDir,
    state,
    claims: getter,
    logger,
  });
  v1 = new KubeletClient({ draSocket: plugin.draSocket, timeoutMs: DEADLINE_MS });
  v1beta1 = new KubeletClient({ draSocket: plugin.draSocket, version: 'v1beta1', timeoutMs: DEADLINE_MS });
});

afterAll(async () => {
  v1.close();
  v1beta1.close();
  await plugin.stop();
  host.cleanup();
});

/** Still answering a plain call: the server survived whatever came before. */
async function stillServing(): Promise<void> {
  const res = await v1.unprepare([
    { uid: UIDS[7] ?? '', namespace: 'default', name: `claim-${UIDS[7] ?? ''}` },
  ]);
  expect(res.claims[UIDS[7] ?? '']?.error).toBe('');
}

describe('dra.sock under fuzzed calls', () => {
  it('answers every claim of every generated call, briefly, within the deadline, writing only its own dirs', async () => {
    const before = tree(host.root);
    collectGarbage();
    const heapBefore = process.memoryUsage().heapUsed;
    let tried = 0;
    let answered = 0;
    // Calls that got as far as the claim's config, both ways: the fuzz reaches past the refs.
    let prepared = 0;
    let configRefused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(refArb, { minLength: 0, maxLength: 40 }),
        fc.array(paramsArb, { maxLength: 2 }),
        fc.constantFrom('prepare', 'unprepare'),
        fc.boolean(),
        async (refs, params, op, beta) => {
          tried++;
          // What the API would return for the known UIDs: claims for gpu-0, under the fuzzed configs.
          for (const uid of UIDS.slice(0, 6))
            getter.inner.set(testClaim({ uid, devices: ['gpu-0'], config: params.map((p) => opaque(p)) }));
          const asked = getter.asked.length;
          const client = beta ? v1beta1 : v1;
          const started = Date.now();
          const res = op === 'prepare' ? await client.prepare(refs) : await client.unprepare(refs);
          expect(Date.now() - started).toBeLessThan(DEADLINE_MS);
          // Every claim gets an answer (the reply is a map: duplicates share one; a Go kubelet
          // never sends a `__proto__` UID, and JS's decoder cannot hold one).
          for (const ref of refs) {
            if (ref.uid === '__proto__') continue;
            const answer = res.claims[ref.uid];
            expect(answer, `no answer for uid ${JSON.stringify(ref.uid.slice(0, 40))}`).toBeDefined();
            expect(answer?.error.length ?? 0).toBeLessThan(MAX_CLAIM_ERROR);
            // A prepared claim had a valid ref (one of them, where a call repeats its UID).
            if (answer?.error === '' && op === 'prepare')
              expect(refs.some((r) => r.uid === ref.uid && validRef(r))).toBe(true);
          }
          for (const a of Object.values(res.claims)) expect(a.error.length).toBeLessThan(MAX_CLAIM_ERROR);
          for (const a of Object.values(res.claims)) {
            if (op === 'prepare' && a.error === '') prepared++;
            if (a.error.includes('OPAQUE_CONFIG_INVALID')) configRefused++;
          }
          // A reference that is no Kubernetes name never reaches the API.
          for (const q of getter.asked.slice(asked)) expect(validRef({ uid: '', ...q })).toBe(true);
          answered++;
          // Leave no prepared claim behind, so the next run's prepares can get as far again.
          await v1.unprepare(UIDS.map((uid) => ({ uid, namespace: 'default', name: `claim-${uid}` })));
        },
      ),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(300) },
    );
    // 300 calls of up to 40 refs each (~6 000 refs); with the seed above 52 claims were prepared
    // and 81 refused for their config, so the fuzz gets past the refs both ways.
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(300));
    reportFuzzInputs('grpc-generated-calls', tried);
    expect(answered).toBe(tried);
    expect(prepared).toBeGreaterThan(10);
    expect(configRefused).toBeGreaterThan(10);

    const added = [...tree(host.root)].filter((p) => !before.has(p));
    const ours = [path.relative(host.root, host.cdiRoot), path.relative(host.root, host.pluginsDir)];
    expect(added.filter((p) => !ours.some((dir) => p.startsWith(`${dir}/`)))).toEqual([]);
    expect(added.filter((p) => p.includes(MARK))).toEqual([]);
    expect(escapedIntoTmp()).toEqual([]);

    collectGarbage();
    // The run allocates ~100 MB of strings; a leak of its inputs (300 calls holding up to 100 KB
    // names and 300 KB configs) would leave more than this behind.
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(32 * 1024 * 1024); // ~4 MB seen
    await stillServing();
  });

  it('answers huge calls (a 1 MB name, the most claims a call may name) with short errors, and refuses larger ones whole', async () => {
    const huge = `../${MARK}${'n'.repeat(1_000_000)}`;
    const res = await v1.prepare([{ uid: UIDS[0] ?? '', namespace: huge, name: huge }]);
    expect(res.claims[UIDS[0] ?? '']?.error).toMatch(/CLAIM_REF_INVALID/);
    expect(res.claims[UIDS[0] ?? '']?.error.length).toBeLessThan(400);

    // The most a call may name, each with names at the Kubernetes limits: every one answered, and
    // the reply fits the kubelet's 4 MiB (this client's default receive limit, as the kubelet's).
    const most = Array.from({ length: MAX_CLAIMS_PER_CALL }, (_, i) => ({
      uid: `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`,
      namespace: 'n'.repeat(63),
      name: `${'c'.repeat(250)}${String(i).padStart(3, '0')}`,
    }));
    const mostRes = await v1.prepare(most);
    expect(Object.keys(mostRes.claims)).toHaveLength(most.length);
    expect((await v1.unprepare(most)).claims).toEqual(
      Object.fromEntries(most.map((r) => [r.uid, { error: '' }])),
    );

    // 200 000 tiny refs (3 MB, under the 16 MiB receive limit): answered per claim, the reply
    // would be some 20 MB. Refused whole, before any work, in a fraction of a second.
    const tiny = Array.from({ length: 200_000 }, (_, i) => ({ uid: String(i), namespace: 'a', name: 'b' }));
    const askedBefore = getter.asked.length;
    const heapBefore = process.memoryUsage().heapUsed;
    for (const call of [() => v1.prepare(tiny), () => v1.unprepare(tiny)]) {
      await expect(call()).rejects.toMatchObject({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: expect.stringMatching(
          new RegExp(
            `^CALL_TOO_LARGE: Node(Unp|P)repareResources call names 200000 claims; one call may name at most ${String(MAX_CLAIMS_PER_CALL)}`,
          ),
        ) as unknown,
      });
    }
    // No claim of the refused calls was looked up (earlier properties may have asked for a 'b').
    expect(getter.asked.slice(askedBefore)).toEqual([]);
    collectGarbage();
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);

    // 17 MB: over the server's 16 MiB receive limit; refused as a whole, server unharmed.
    const tooBig = [{ uid: UIDS[0] ?? '', namespace: 'default', name: 'x'.repeat(17 * 1024 * 1024) }];
    await expect(v1.prepare(tooBig)).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    await stillServing();
  });

  it("bounds a reply's size from above, never below what goes on the wire", () => {
    const serialize = (
      loadProtos().draV1.service['NodePrepareResources'] as grpc.MethodDefinition<unknown, unknown>
    ).responseSerialize;
    const text = fc.string({ unit: 'grapheme', maxLength: 300 });
    const device = fc.record({
      request_names: fc.array(text, { maxLength: 3 }),
      pool_name: text,
      device_name: text,
      cdi_device_ids: fc.array(text, { maxLength: 2 }),
      share_id: fc.option(text, { nil: undefined }),
    });
    const reply = fc.dictionary(
      fc.string({ maxLength: 40 }),
      fc.record({ devices: fc.array(device, { maxLength: 32 }), error: text }),
      { maxKeys: 20 },
    );
    fc.assert(
      fc.property(reply, (claims) => {
        const wire = serialize({ claims }).length;
        const bound = replyBytesBound(claims);
        expect(bound).toBeGreaterThanOrEqual(wire);
        // Tight enough to mean something: tags and lengths are all it adds.
        expect(bound).toBeLessThanOrEqual(wire * 4 + 64);
      }),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(300) },
    );
    reportFuzzInputs('grpc-reply-bound', fuzzRuns(300));
  });

  it('prepares and unprepares claims whose UIDs are Object.prototype member names', async () => {
    // Valid UIDs by the pattern; the checkpoint once read them as claims prepared under another name.
    for (const uid of ['constructor', 'toString', 'valueOf', 'hasOwnProperty']) {
      const ref = { uid, namespace: 'default', name: uid.toLowerCase() };
      getter.inner.set(testClaim({ uid, name: ref.name, devices: ['gpu-0'] }));
      const prepared = await v1.prepare([ref]);
      expect(prepared.claims[uid]).toMatchObject({ error: '', devices: [{ device_name: 'gpu-0' }] });
      expect((await v1.unprepare([ref])).claims[uid]).toEqual({ error: '' });
    }
  });

  it('answers raw protobuf with unknown fields, wrong wire types and random bytes with a status or a reply', async () => {
    // A client that sends bytes as they are, where the typed client could not.
    const Raw = grpc.makeGenericClientConstructor(
      {
        NodePrepareResources: {
          path: `/${DRA_V1_SERVICE}/NodePrepareResources`,
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      'Raw',
    );
    const raw = new Raw(`unix:${plugin.draSocket}`, grpc.credentials.createInsecure());
    type RawUnary = (req: Buffer, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void) => void;
    const unary = (raw as unknown as Record<string, RawUnary>)['NodePrepareResources'];
    const send = (body: Buffer): Promise<{ code: number }> =>
      new Promise((resolve) => {
        unary?.call(raw, body, { deadline: Date.now() + DEADLINE_MS }, (err) => {
          resolve({ code: err ? err.code : grpc.status.OK });
        });
      });
    let tried = 0;
    try {
      await fc.assert(
        fc.asyncProperty(rawRequestArb, async (body) => {
          tried++;
          const { code } = await send(body);
          // Decoded (OK, every claim answered) or refused as malformed; never a hang or a crash.
          expect([grpc.status.OK, grpc.status.INTERNAL]).toContain(code);
        }),
        { seed: fuzzSeed(SEED), numRuns: fuzzRuns(200) },
      );
    } finally {
      raw.close();
    }
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(200));
    reportFuzzInputs('grpc-raw-protobuf', tried);
    await stillServing();
  });

  it('answers a registration status with a 1 MB error briefly, and keeps serving', async () => {
    const reg = new KubeletClient({
      draSocket: plugin.draSocket,
      registrationSocket: plugin.registrationSocket,
      timeoutMs: DEADLINE_MS,
    });
    try {
      const huge = `${MARK}${'e'.repeat(1_000_000)}`;
      const err = await reg.notifyRegistrationStatus({ plugin_registered: false, error: huge }).then(
        () => undefined,
        (e: unknown) => e as grpc.ServiceError,
      );
      expect(err?.code).toBe(grpc.status.UNKNOWN);
      expect(err?.details).toMatch(/^registration failed: fuzzesce+…\(1000007 characters\)$/);
      expect(await reg.getInfo()).toMatchObject({ name: TEST_DRIVER });
    } finally {
      reg.close();
    }
  });

  it('survives garbage written straight to the socket', async () => {
    let tried = 0;
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (bytes) => {
        tried++;
        // The server must drop a connection that is no HTTP/2, rather than hold it open.
        const closedByServer = await new Promise<boolean>((resolve) => {
          const s = net.connect(plugin.draSocket, () => {
            s.end(Buffer.from(bytes));
          });
          s.on('data', () => undefined);
          s.on('error', () => {
            resolve(true);
          });
          s.on('close', () => {
            resolve(true);
          });
          s.setTimeout(DEADLINE_MS, () => {
            resolve(false);
            s.destroy();
          });
        });
        expect(closedByServer).toBe(true);
      }),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(50) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(50));
    reportFuzzInputs('socket-garbage', tried);
    await stillServing();
  });
});
