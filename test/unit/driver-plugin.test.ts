import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CdiStore } from '../../src/cdi/store.js';
import { CheckpointStore } from '../../src/checkpoint/store.js';
import type { ResourceClaim } from '../../src/api/resource.js';
import { MemoryClaimGetter, type ClaimGetter } from '../../src/driver/claims.js';
import { createDriverMetrics } from '../../src/node/metrics.js';
import {
  draSocketPath,
  registrationSocketPath,
  startKubeletPlugin,
  type KubeletPlugin,
} from '../../src/kubelet/plugin.js';
import { MAX_SOCKET_PATH_BYTES } from '../../src/kubelet/socketServer.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CLAIMS_IN_FLIGHT, DraService, MAX_CLAIMS_PER_CALL } from '../../src/kubelet/draService.js';
import type {
  NodePrepareResourcesRequest,
  NodePrepareResourcesResponse,
  NodeUnprepareResourcesResponse,
} from '../../src/kubelet/proto.js';
import { SharingApplier } from '../../src/sharing/apply.js';
import { DeviceState } from '../../src/driver/state.js';
import {
  createTestHost,
  opaque,
  testClaim,
  testDeviceState,
  testInventory,
  TEST_DRIVER,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';
import { silentLogger } from '../../src/util/log.js';

/** Counts GETs so tests can tell whether a prepare went to the API server. */
class CountingGetter implements ClaimGetter {
  gets = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly inner = new MemoryClaimGetter();
  set(claim: ResourceClaim): void {
    this.inner.set(claim);
  }
  async get(namespace: string, name: string): Promise<ResourceClaim> {
    this.gets++;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      await new Promise((resolve) => setImmediate(resolve)); // an answer takes a turn, as over the network
      return await this.inner.get(namespace, name);
    } finally {
      this.inFlight--;
    }
  }
}

let host: TestHost;
let plugin: KubeletPlugin;
let claims: CountingGetter;
let v1: KubeletClient;
let v1beta1: KubeletClient;
let reg: KubeletClient;
const clients: KubeletClient[] = [];

async function start(): Promise<void> {
  const logger = silentLogger();
  const cdi = new CdiStore(host.cdiRoot, TEST_DRIVER);
  const checkpoint = new CheckpointStore(path.join(host.pluginsDir, TEST_DRIVER, 'checkpoint.json'), logger);
  const inventory = testInventory();
  const state = new DeviceState({
    driverName: TEST_DRIVER,
    poolName: TEST_NODE,
    hostPaths: host.hostPaths,
    cdi,
    checkpoint,
    inventory: { current: () => inventory },
    // Time slices are "set" by a stand-in that accepts every nvidia-smi call.
    sharing: new SharingApplier({ nvidiaSmi: { run: () => Promise.resolve({ stdout: '', stderr: '' }) } }),
    logger,
  });
  await state.recover();
  plugin = await startKubeletPlugin({
    driverName: TEST_DRIVER,
    registryDir: host.registryDir,
    pluginsDir: host.pluginsDir,
    state,
    claims,
    logger,
    metrics: createDriverMetrics(),
  });
  const sockets = { draSocket: plugin.draSocket, registrationSocket: plugin.registrationSocket };
  v1 = new KubeletClient(sockets);
  v1beta1 = new KubeletClient({ ...sockets, version: 'v1beta1' });
  reg = v1;
  clients.push(v1, v1beta1);
}

const refsOf = (claims: ResourceClaim[]) =>
  claims.map((c) => ({
    uid: c.metadata?.uid ?? '',
    namespace: c.metadata?.namespace ?? '',
    name: c.metadata?.name ?? '',
  }));
const prepare = (client: KubeletClient, ...refs: ResourceClaim[]): Promise<NodePrepareResourcesResponse> =>
  client.prepare(refsOf(refs));
const unprepare = (
  client: KubeletClient,
  ...refs: ResourceClaim[]
): Promise<NodeUnprepareResourcesResponse> => client.unprepare(refsOf(refs));

const specPath = (uid: string): string => path.join(host.cdiRoot, `k8s.gpu.dra.dev-claim_${uid}.json`);

beforeEach(async () => {
  host = createTestHost();
  claims = new CountingGetter();
  await start();
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await plugin.stop();
  host.cleanup();
});

describe('sockets and registration', () => {
  it('GetInfo advertises the DRA socket and both API versions', async () => {
    const info = await reg.getInfo();
    expect(info).toEqual({
      type: 'DRAPlugin',
      name: TEST_DRIVER,
      endpoint: path.join(host.pluginsDir, TEST_DRIVER, 'dra.sock'),
      supported_versions: ['v1.DRAPlugin', 'v1beta1.DRAPlugin'],
    });
    expect(path.isAbsolute(info.endpoint)).toBe(true);
    expect(plugin.registrationSocket).toBe(path.join(host.registryDir, `${TEST_DRIVER}-reg.sock`));
  });

  it('records NotifyRegistrationStatus and errors when not registered', async () => {
    await reg.notifyRegistrationStatus({ plugin_registered: true, error: '' });
    expect(plugin.registration.status.registered).toBe(true);
    await expect(reg.notifyRegistrationStatus({ plugin_registered: false, error: 'boom' })).rejects.toThrow(
      /boom/,
    );
    expect(plugin.registration.status).toMatchObject({ registered: false, error: 'boom' });
  });

  it('sockets are 0600 in a 0700 plugin dir and vanish on stop', async () => {
    const mode = (p: string): string => (fs.statSync(p).mode & 0o777).toString(8);
    expect(mode(plugin.draSocket)).toBe('600');
    expect(mode(plugin.registrationSocket)).toBe('600');
    expect(mode(path.dirname(plugin.draSocket))).toBe('700');
    await plugin.stop();
    expect(fs.existsSync(plugin.draSocket)).toBe(false);
    expect(fs.existsSync(plugin.registrationSocket)).toBe(false);
  });

  it('replaces stale socket files but refuses to delete a non-socket', async () => {
    await plugin.stop();
    const sock = path.join(host.registryDir, `${TEST_DRIVER}-reg.sock`);
    const py = spawnSync('python3', [
      '-c',
      `import socket;socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`,
    ]);
    expect(py.status).toBe(0);
    expect(fs.lstatSync(sock).isSocket()).toBe(true);
    await start();
    expect(await reg.getInfo()).toMatchObject({ name: TEST_DRIVER });
    await plugin.stop();
    fs.writeFileSync(sock, 'not a socket');
    await expect(start()).rejects.toThrow(/not a socket/);
    expect(fs.existsSync(path.join(host.pluginsDir, TEST_DRIVER, 'dra.sock'))).toBe(false);
    fs.rmSync(sock);
    await start();
  });
});

describe('NodePrepareResources / NodeUnprepareResources', () => {
  it('an empty request answers {claims: {}} on both versions', async () => {
    expect(await prepare(v1)).toEqual({ claims: {} });
    expect(await prepare(v1beta1)).toEqual({ claims: {} });
    expect(await unprepare(v1)).toEqual({ claims: {} });
  });

  it('prepares a GPU claim: devices, CDI ids, spec file', async () => {
    const claim = testClaim({ uid: 'a0000000-0000-0000-0000-000000000001', devices: ['gpus/one:gpu-0'] });
    claims.set(claim);
    const res = await prepare(v1, claim);
    const uid = 'a0000000-0000-0000-0000-000000000001';
    expect(res.claims[uid]).toEqual({
      error: '',
      devices: [
        {
          request_names: ['gpus'],
          pool_name: TEST_NODE,
          device_name: 'gpu-0',
          cdi_device_ids: [`k8s.gpu.dra.dev/claim=${uid}-gpu-0`],
        },
      ],
    });
    const spec = JSON.parse(fs.readFileSync(specPath(uid), 'utf8')) as {
      devices: { name: string; containerEdits: { env: string[] } }[];
    };
    expect(spec.devices.map((d) => d.name)).toEqual([`${uid}-gpu-0`]);
    expect(spec.devices[0]?.containerEdits.env).toEqual([
      expect.stringMatching(/^GPU_DRA_DEVICE_GPU_0=GPU-/),
    ]);
  });

  it('two claims, one failing: the failure is that claim’s error only', async () => {
    const good = testClaim({ uid: 'good', devices: ['gpu-0'] });
    const unknownDevice = testClaim({ uid: 'bad1', devices: ['gpu-9'] });
    const notAllocated = testClaim({ uid: 'bad2', devices: [], allocated: false });
    const replaced = { ...testClaim({ uid: 'bad3-new', devices: ['gpu-1-mig-1g10gb-19-0'] }) };
    const badConfig = testClaim({
      uid: 'bad4',
      devices: ['gpu-1-mig-1g10gb-19-1'],
      config: [opaque({ apiVersion: 'gpu.dra.dev/v1alpha1', kind: 'MigDeviceConfig', bogus: 1 })],
    });
    for (const c of [good, unknownDevice, notAllocated, replaced, badConfig]) claims.set(c);
    const res = await prepare(v1, good, unknownDevice, notAllocated, badConfig, {
      metadata: { ...replaced.metadata, uid: 'bad3' },
    });
    expect(Object.keys(res.claims).sort()).toEqual(['bad1', 'bad2', 'bad3', 'bad4', 'good']);
    expect(res.claims['good']?.error).toBe('');
    expect(res.claims['good']?.devices).toHaveLength(1);
    // Each error says where, its catalog code (README's troubleshooting table), and why.
    expect(res.claims['bad1']?.error).toMatch(/default\/claim-bad1 \(bad1\): DEVICE_UNKNOWN: .*gpu-9/);
    expect(res.claims['bad2']?.error).toMatch(/CLAIM_NOT_ALLOCATED: .*not allocated/);
    expect(res.claims['bad3']?.error).toMatch(
      /CLAIM_REPLACED: .*has UID bad3-new, expected bad3: it was replaced/,
    );
    expect(res.claims['bad4']?.error).toMatch(
      /OPAQUE_CONFIG_INVALID: .*config\[0\]\.opaque\.parameters\.bogus: unknown field/,
    );
    for (const uid of ['bad1', 'bad2', 'bad3', 'bad4']) {
      expect(res.claims[uid]?.devices).toEqual([]);
      expect(fs.existsSync(specPath(uid))).toBe(false);
    }
  });

  it('a claim with none of our devices fails, and writes no (invalid, device-less) CDI spec', async () => {
    // The CDI library rejects a spec without devices ("invalid spec, no devices"); such a file in
    // the CDI root is an error on every refresh of every runtime's CDI cache.
    const foreign = testClaim({ uid: 'foreign', devices: [{ device: 'nic-0', driver: 'net.example.com' }] });
    const empty = testClaim({ uid: 'empty', devices: [] });
    for (const c of [foreign, empty]) claims.set(c);
    const res = await prepare(v1, foreign, empty);
    expect(res.claims['foreign']?.error).toMatch(
      /no devices of driver gpu\.dra\.dev \(allocated from net\.example\.com\)/,
    );
    expect(res.claims['empty']?.error).toMatch(/no devices of driver gpu\.dra\.dev \(no devices allocated\)/);
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
  });

  it('a claim the API server does not know is that claim’s error', async () => {
    const ghost = testClaim({ uid: 'ghost', devices: ['gpu-0'] });
    const res = await prepare(v1, ghost);
    expect(res.claims['ghost']?.error).toMatch(/not found/);
  });

  it('is idempotent: a repeat returns the same devices without a GET or a rewrite', async () => {
    const claim = testClaim({ uid: 'idem', devices: ['a:gpu-0', 'b:gpu-1-mig-1g10gb-19-0'] });
    claims.set(claim);
    const first = await prepare(v1, claim);
    const before = fs.statSync(specPath('idem'));
    const getsBefore = claims.gets;
    const second = await prepare(v1, claim);
    const third = await prepare(v1beta1, claim);
    expect(second).toEqual(first);
    expect(third.claims['idem']?.devices).toEqual(first.claims['idem']?.devices);
    expect(claims.gets).toBe(getsBefore);
    const after = fs.statSync(specPath('idem'));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
  });

  it('restores a prepared claim’s spec file if something deleted it', async () => {
    const claim = testClaim({ uid: 'restore', devices: ['gpu-0'] });
    claims.set(claim);
    await prepare(v1, claim);
    const content = fs.readFileSync(specPath('restore'), 'utf8');
    fs.rmSync(specPath('restore'));
    expect((await prepare(v1, claim)).claims['restore']?.error).toBe('');
    expect(fs.readFileSync(specPath('restore'), 'utf8')).toBe(content);
  });

  it('never hands one device to two claims without sharing, even when prepared concurrently', async () => {
    const a = testClaim({ uid: 'conc-a', name: 'a', devices: ['gpu-0'] });
    const b = testClaim({ uid: 'conc-b', name: 'b', devices: ['gpu-0'] });
    claims.set(a);
    claims.set(b);
    const [ra, rb] = await Promise.all([prepare(v1, a), prepare(v1, b)]);
    const results = [ra.claims['conc-a'], rb.claims['conc-b']];
    const winners = results.filter((r) => r?.error === '');
    const losers = results.filter((r) => r?.error !== '');
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(1);
    expect(losers[0]?.error).toMatch(/gpu-0.*already prepared for claim default\/[ab] \(conc-[ab]\)/);
    // Same thing inside one request, and a MIG device of a GPU another claim holds in full.
    const c = testClaim({ uid: 'conc-c', devices: ['gpu-1'] });
    const d = testClaim({ uid: 'conc-d', devices: ['gpu-1-mig-1g10gb-19-0'] });
    claims.set(c);
    claims.set(d);
    const rcd = await prepare(v1, c, d);
    expect([rcd.claims['conc-c']?.error, rcd.claims['conc-d']?.error].filter((e) => e === '')).toHaveLength(
      1,
    );
  });

  it('allows sharing when both claims time-slice at one interval, or with admin access', async () => {
    const mps = opaque({
      apiVersion: 'gpu.dra.dev/v1alpha1',
      kind: 'GpuConfig',
      sharing: { strategy: 'TimeSlicing', timeSlicing: { interval: 'Short' } },
    });
    const a = testClaim({ uid: 'share-a', devices: ['gpu-0'], config: [mps] });
    const b = testClaim({ uid: 'share-b', devices: ['gpu-0'], config: [mps] });
    const admin = testClaim({ uid: 'share-admin', devices: [{ device: 'gpu-0', adminAccess: true }] });
    for (const c of [a, b, admin]) claims.set(c);
    const res = await prepare(v1, a, b, admin);
    expect(Object.values(res.claims).map((r) => r.error)).toEqual(['', '', '']);
  });

  it('the same claim prepared concurrently is prepared once', async () => {
    const claim = testClaim({ uid: 'twice', devices: ['gpu-0'] });
    claims.set(claim);
    const [r1, r2] = await Promise.all([prepare(v1, claim), prepare(v1beta1, claim)]);
    expect(r1.claims['twice']?.error).toBe('');
    expect(r2.claims['twice']?.error).toBe('');
    expect(claims.gets).toBe(1);
  });

  it('a missing device node is that claim’s error, naming it', async () => {
    fs.rmSync(path.join(host.hostPaths.devRoot, 'nvidia1'));
    const claim = testClaim({ uid: 'nodes', devices: ['gpu-1-mig-1g10gb-19-0'] });
    claims.set(claim);
    const res = await prepare(v1, claim);
    expect(res.claims['nodes']?.error).toContain(path.join(host.hostPaths.devRoot, 'nvidia1'));
    expect(fs.existsSync(specPath('nodes'))).toBe(false);
  });

  it('a MIG access cap with no host node is injected by its numbers, without a host path', async () => {
    fs.rmSync(path.join(host.hostPaths.devRoot, 'nvidia-caps', 'nvidia-cap101'));
    const claim = testClaim({ uid: 'caps', devices: ['gpu-1-mig-1g10gb-19-0'] });
    claims.set(claim);
    const res = await prepare(v1, claim);
    expect(res.claims['caps']?.error).toBe('');
    const spec = JSON.parse(fs.readFileSync(specPath('caps'), 'utf8')) as {
      devices: { containerEdits: { deviceNodes?: unknown[] } }[];
    };
    expect(spec.devices[0]?.containerEdits.deviceNodes).toContainEqual({
      path: '/dev/nvidia-caps/nvidia-cap101',
      type: 'c',
      major: 241,
      minor: 101,
      fileMode: 0o444,
    });
  });

  it('unprepare removes the spec and frees the device; unknown claims succeed', async () => {
    const a = testClaim({ uid: 'un-a', devices: ['gpu-0'] });
    const b = testClaim({ uid: 'un-b', devices: ['gpu-0'] });
    claims.set(a);
    claims.set(b);
    await prepare(v1, a);
    expect((await prepare(v1, b)).claims['un-b']?.error).not.toBe('');
    const res = await unprepare(
      v1,
      a,
      testClaim({ uid: 'never-seen', devices: [] }),
      testClaim({ uid: '../evil', devices: [] }),
    );
    expect(res).toEqual({
      claims: { 'un-a': { error: '' }, 'never-seen': { error: '' }, '../evil': { error: '' } },
    });
    expect(fs.existsSync(specPath('un-a'))).toBe(false);
    expect((await prepare(v1, b)).claims['un-b']?.error).toBe('');
    expect((await unprepare(v1beta1, b)).claims['un-b']).toEqual({ error: '' });
    expect(fs.readdirSync(host.cdiRoot)).toEqual([]);
  });

  it('rejects a UID that is not a plain identifier before touching anything', async () => {
    const claim = testClaim({ uid: '../../etc', devices: ['gpu-0'] });
    claims.set(claim);
    const res = await prepare(v1, claim);
    expect(res.claims['../../etc']?.error).toMatch(/invalid claim UID/);
    expect(claims.gets).toBe(0);
  });

  it(`works on at most ${String(CLAIMS_IN_FLIGHT)} claims of one call at once, and answers every claim`, async () => {
    expect(MAX_CLAIMS_PER_CALL).toBeGreaterThan(CLAIMS_IN_FLIGHT);
    const many = Array.from({ length: MAX_CLAIMS_PER_CALL }, (_, i) =>
      testClaim({ uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, devices: ['gpu-0'] }),
    );
    for (const c of many) claims.set(c);
    const res = await prepare(v1, ...many);
    expect(Object.keys(res.claims)).toHaveLength(many.length);
    expect(claims.maxInFlight).toBeGreaterThan(1);
    expect(claims.maxInFlight).toBeLessThanOrEqual(CLAIMS_IN_FLIGHT);
    // gpu-0 went to exactly one of them; the others were told why.
    const errors = Object.values(res.claims).filter((c) => c.error !== '');
    expect(errors).toHaveLength(many.length - 1);
    for (const e of errors) expect(e.error).toContain('DEVICE_IN_USE');
  });

  it('refuses names over the Kubernetes limits before any API call, and never echoes them whole', async () => {
    const huge = 'x'.repeat(1_000_000);
    const refs = [
      { uid: '11111111-2222-4333-8444-555555555555', namespace: 'default', name: huge },
      { uid: '11111111-2222-4333-8444-666666666666', namespace: huge, name: 'c' },
    ];
    const res = await v1.prepare(refs);
    const un = await v1.unprepare(refs);
    for (const answer of [res.claims, un.claims]) {
      for (const ref of refs) {
        const error = answer[ref.uid]?.error ?? '';
        expect(error).toMatch(
          /CLAIM_REF_INVALID: claim reference (name|namespace) is 1000000 characters, over the Kubernetes limit of (253|63)/,
        );
        expect(error).toContain('…(1000000 characters)');
        expect(error.length).toBeLessThan(400);
      }
    }
    expect(claims.gets).toBe(0);
  });
});

describe('rolling-update socket names (--pod-uid)', () => {
  const uid = 'ad4af911-5bcd-47c5-a554-f35cea869472';
  const reg = (registryDir: string, driver = TEST_DRIVER): string =>
    path.basename(registrationSocketPath({ registryDir }, driver, uid));

  it('carry the pod UID as the kubelet plugin library names them', () => {
    expect(reg('/var/lib/kubelet/plugins_registry')).toBe(`${TEST_DRIVER}-${uid}-reg.sock`);
    expect(draSocketPath({ pluginsDir: '/var/lib/kubelet/plugins' }, TEST_DRIVER, uid)).toBe(
      `/var/lib/kubelet/plugins/${TEST_DRIVER}/dra-${uid}.sock`,
    );
    // Without a UID, today's names.
    expect(registrationSocketPath({ registryDir: '/r' }, TEST_DRIVER)).toBe(`/r/${TEST_DRIVER}-reg.sock`);
    expect(draSocketPath({ pluginsDir: '/p' }, TEST_DRIVER)).toBe(`/p/${TEST_DRIVER}/dra.sock`);
  });

  it('fall back to the library’s hashed names when the path would not fit a Unix socket', () => {
    // Expected values computed independently (Python: sha256, urlsafe base64 without padding).
    const longish = `/var/lib/kubelet/${'x'.repeat(20)}/plugins_registry`;
    expect(reg(longish)).toBe(`${TEST_DRIVER}-Jk8-oymVURI-reg.sock`);
    // A long driver name: even its hashed-UID name does not fit, the shortest form does.
    const longDriver = 'gpu.a-very-long-driver-name.example.com';
    const longer = `/var/lib/kubelet/${'x'.repeat(30)}/plugins_registry`;
    expect(reg(longer, longDriver)).toBe('dra-k_GERy03fVebevObEFPyCA-reg.sock');
    // The DRA socket, which the library never shortens, gets the hashed UID too.
    const plugins = `/var/lib/kubelet/${'x'.repeat(40)}/plugins`;
    expect(draSocketPath({ pluginsDir: plugins }, TEST_DRIVER, uid)).toBe(
      `${plugins}/${TEST_DRIVER}/dra-Jk8-oymVURI.sock`,
    );
    for (const [dir, driver] of [
      [longish, TEST_DRIVER],
      [longer, longDriver],
    ] as const) {
      const full = registrationSocketPath({ registryDir: dir }, driver, uid);
      expect(Buffer.byteLength(full)).toBeLessThanOrEqual(MAX_SOCKET_PATH_BYTES);
    }
  });
});

describe('debug logs of calls', () => {
  it('show a call and its reply bounded: the first claims, each field cut, the rest counted', async () => {
    const host = createTestHost();
    try {
      const lines: string[] = [];
      const logger = pino(
        { level: 'debug' },
        new Writable({
          write(chunk: Buffer, _enc, done) {
            lines.push(chunk.toString());
            done();
          },
        }),
      );
      const claims = new MemoryClaimGetter();
      const service = new DraService({ state: testDeviceState(host, { logger }), claims, logger });
      const huge = 'n'.repeat(1_000_000);
      const refs = Array.from({ length: MAX_CLAIMS_PER_CALL }, (_, i) => ({
        uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        namespace: huge,
        name: huge,
      }));
      const handler = service.implementation('v1')['NodePrepareResources'] as grpc.handleUnaryCall<
        NodePrepareResourcesRequest,
        NodePrepareResourcesResponse
      >;
      const reply = await new Promise<NodePrepareResourcesResponse | undefined>((resolve, reject) => {
        handler(
          // The handler reads nothing of the call but its request.
          { request: { claims: refs } } as unknown as grpc.ServerUnaryCall<
            NodePrepareResourcesRequest,
            NodePrepareResourcesResponse
          >,
          (err, value) => {
            if (err) reject(new Error(String(err.details)));
            else resolve(value ?? undefined);
          },
        );
      });
      expect(Object.keys(reply?.claims ?? {})).toHaveLength(MAX_CLAIMS_PER_CALL);
      const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const request = records.find((r) => r['msg'] === 'request');
      const response = records.find((r) => r['msg'] === 'response');
      expect(request).toMatchObject({ claimsNotShown: MAX_CLAIMS_PER_CALL - 16 });
      expect((request?.['request'] as { claims: unknown[] }).claims).toHaveLength(16);
      expect(response).toMatchObject({ claimsNotShown: MAX_CLAIMS_PER_CALL - 16 });
      // 128 refs of 2 MB each went in; no line holds more than a few KB of them.
      for (const l of lines) expect(l.length).toBeLessThan(32 * 1024);
    } finally {
      fs.rmSync(host.root, { recursive: true, force: true });
    }
  });
});
