// status.devices of a prepared claim: the entries built from the devices (pure), and the
// background writer against a scripted apiserver: retries, give-ups, and when it stops for good.
import { describe, expect, it } from 'vitest';
import {
  describeDevices,
  deviceStatusEntries,
  statusApplyBody,
  statusKept,
  type DescribedDevice,
} from '../../src/driver/deviceStatus.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import {
  ClaimStatusWriter,
  claimStatusRbacRules,
  type ClaimStatusSink,
} from '../../src/driver/statusWriter.js';
import {
  KubeApiError,
  KubeRequestError,
  type KubeClient,
  type RequestOptions,
} from '../../src/kube/client.js';
import { buildDevices } from '../../src/resourceslice/model.js';
import { silentLogger, type Logger } from '../../src/util/log.js';
import { capturingLogger } from '../support/capturingLogger.js';
import {
  createTestHost,
  testClaim,
  testDeviceState,
  testInventory,
  testMig,
  TEST_DRIVER,
  TEST_NODE,
} from '../support/driverFixtures.js';

const NOW = new Date('2026-12-02T10:00:00.123Z');
const CLAIM = { namespace: 'ns', name: 'claim-a', uid: '6a1f2c3d-0000-4000-8000-000000000001' };

function published(): Map<string, Readonly<Record<string, never>>> {
  return new Map(buildDevices(testInventory()).devices.map((d) => [d.name, d.attributes as never]));
}

function described(): DescribedDevice[] {
  const mig = testMig(1, 1);
  return describeDevices(published(), [
    { requestNames: ['gpu'], poolName: TEST_NODE, deviceName: 'gpu-0', uuid: testInventory().gpus[0]?.uuid },
    {
      requestNames: ['mig'],
      poolName: TEST_NODE,
      deviceName: 'gpu-1-mig-1g10gb-19-1',
      uuid: mig.uuid,
    },
  ]);
}

describe('status.devices entries', () => {
  it('carry UUID and product; a MIG device also its parent and profile', () => {
    const entries = deviceStatusEntries(TEST_DRIVER, described(), NOW);
    const [gpu, mig] = entries;
    expect(gpu).toEqual({
      driver: TEST_DRIVER,
      pool: TEST_NODE,
      device: 'gpu-0',
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Prepared',
          message: expect.any(String) as unknown,
          lastTransitionTime: '2026-12-02T10:00:00Z',
        },
      ],
      data: { uuid: testInventory().gpus[0]?.uuid, productName: 'NVIDIA H100 80GB HBM3' },
    });
    expect(mig?.device).toBe('gpu-1-mig-1g10gb-19-1');
    expect(mig?.data).toEqual({
      uuid: testMig(1, 1).uuid,
      productName: 'NVIDIA H100 80GB HBM3',
      parentUUID: testInventory().gpus[1]?.uuid,
      profile: '1g.10gb',
    });
  });

  it('the prepared UUID wins over the published one (a MIG device made at prepare has none)', () => {
    const [d] = describeDevices(published(), [
      { requestNames: ['gpu'], poolName: TEST_NODE, deviceName: 'gpu-0', uuid: 'GPU-made-now' },
    ]);
    expect(d?.attributes['uuid']).toEqual({ string: 'GPU-made-now' });
    // Unknown to the model: described by its UUID alone.
    const [unknown] = describeDevices(new Map(), [
      { requestNames: ['gpu'], poolName: TEST_NODE, deviceName: 'gpu-9', uuid: 'GPU-x' },
    ]);
    expect(deviceStatusEntries(TEST_DRIVER, unknown ? [unknown] : [], NOW)[0]?.data).toEqual({
      uuid: 'GPU-x',
    });
  });

  it('key shares by share ID, one entry per key, sorted', () => {
    const base = described()[0] as DescribedDevice;
    const entries = deviceStatusEntries(
      TEST_DRIVER,
      [
        { ...base, shareId: 'bbbb' },
        { ...base, shareId: 'aaaa' },
        { ...base, shareId: 'aaaa', requestNames: ['other'] },
      ],
      NOW,
    );
    expect(entries.map((e) => e.shareID)).toEqual(['aaaa', 'bbbb']);
  });

  it('apply body names the claim by UID and holds only the status', () => {
    const entries = deviceStatusEntries(TEST_DRIVER, described(), NOW);
    expect(statusApplyBody(CLAIM, entries)).toEqual({
      apiVersion: 'resource.k8s.io/v1',
      kind: 'ResourceClaim',
      metadata: CLAIM,
      status: { devices: entries },
    });
  });

  it('statusKept tells an apiserver that dropped the field', () => {
    const entries = deviceStatusEntries(TEST_DRIVER, described(), NOW);
    expect(statusKept({ status: { devices: entries } }, entries)).toBe(true);
    expect(statusKept({ status: { devices: entries.slice(1) } }, entries)).toBe(false);
    expect(statusKept({ status: {} }, entries)).toBe(false);
    expect(statusKept({ status: {} }, [])).toBe(true);
  });

  it('RBAC rules: status patch, and associated-node:patch for this driver only', () => {
    expect(claimStatusRbacRules('gpu.example.com')).toEqual([
      { apiGroups: ['resource.k8s.io'], resources: ['resourceclaims/status'], verbs: ['patch'] },
      {
        apiGroups: ['resource.k8s.io'],
        resources: ['resourceclaims/driver'],
        resourceNames: ['gpu.example.com'],
        verbs: ['associated-node:patch'],
      },
    ]);
  });
});

interface Call {
  method: string;
  path: string;
  opts: RequestOptions;
}

/** A KubeClient whose answers a test scripts, one per request (the last repeats). */
function scriptedKube(answers: ((call: Call) => unknown)[]): KubeClient & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    source: 'test',
    calls,
    request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
      const call = { method, path, opts };
      calls.push(call);
      const answer = answers[Math.min(calls.length - 1, answers.length - 1)];
      // A throwing answer becomes the rejection, as the client's errors are.
      return new Promise<T>((resolve) => {
        resolve(answer?.(call) as T);
      });
    },
    watch: () => Promise.reject(new Error('no watch')),
    close: () => undefined,
  };
}

/** The apiserver's answer to an apply: the claim with the applied status. */
const echo = (call: Call): unknown => call.opts.body;
const apiError = (statusCode: number, status?: unknown) => (): never => {
  throw new KubeApiError({
    method: 'PATCH',
    path: '/x',
    statusCode,
    message: `answer ${statusCode}`,
    status,
  });
};

function writer(kube: KubeClient, maxAttempts = 4, logger: Logger = silentLogger()): ClaimStatusWriter {
  return new ClaimStatusWriter({
    kube,
    driverName: TEST_DRIVER,
    logger,
    maxAttempts,
    backoff: { initialDelayMs: 1, maxDelayMs: 2 },
    now: () => NOW,
  });
}

describe('ClaimStatusWriter', () => {
  it('applies the entries to the status subresource as its own field manager, once per claim', async () => {
    const kube = scriptedKube([echo]);
    const w = writer(kube);
    w.prepared(CLAIM, described());
    w.prepared(CLAIM, described());
    await w.idle();
    w.prepared(CLAIM, described());
    await w.idle();
    expect(kube.calls).toHaveLength(1);
    const [call] = kube.calls;
    expect(call?.method).toBe('PATCH');
    expect(call?.path).toBe(`/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-a/status`);
    expect(call?.opts.contentType).toBe('application/apply-patch+yaml');
    expect(call?.opts.query).toEqual({ fieldManager: 'gpu-dra', force: true });
    expect((call?.opts.body as { status: { devices: unknown[] } }).status.devices).toHaveLength(2);
    expect(w.counts).toMatchObject({ writes: 1, retries: 0, failures: 0 });
  });

  it('returns before any request is sent: the prepare never waits for the apiserver', async () => {
    const kube = scriptedKube([echo]);
    const w = writer(kube);
    w.prepared(CLAIM, described());
    expect(kube.calls).toHaveLength(0);
    await w.idle();
    expect(kube.calls).toHaveLength(1);
  });

  it('retries a failing apiserver with backoff, then lands', async () => {
    const kube = scriptedKube([apiError(500), apiError(429), echo]);
    const w = writer(kube);
    w.prepared(CLAIM, described());
    await w.idle();
    expect(kube.calls).toHaveLength(3);
    expect(w.counts).toMatchObject({ writes: 1, retries: 2, failures: 0 });
    expect(w.disabledReason).toBeUndefined();
  });

  it('gives up on one claim after maxAttempts, and keeps writing others', async () => {
    const kube = scriptedKube([apiError(503), apiError(503), apiError(503), echo]);
    const w = writer(kube, 3);
    w.prepared(CLAIM, described());
    await w.idle();
    expect(kube.calls).toHaveLength(3);
    expect(w.counts.failures).toBe(1);
    w.prepared({ ...CLAIM, name: 'claim-b', uid: '6a1f2c3d-0000-4000-8000-000000000002' }, described());
    await w.idle();
    expect(w.counts.writes).toBe(1);
  });

  it('an apiserver that does not answer (an outage) costs no attempt: the write lands once it is back', async () => {
    // Regression: six refused connections (~15 s with the default backoff) gave the status up
    // for good, and the kubelet never prepares the claim again to bring it back.
    const refused = (): never => {
      throw new KubeRequestError('PATCH', '/x', 'connect ECONNREFUSED 127.0.0.1:6443');
    };
    const kube = scriptedKube([...Array<typeof refused>(10).fill(refused), apiError(503), echo]);
    const w = writer(kube, 3);
    w.prepared(CLAIM, described());
    await w.idle();
    expect(kube.calls).toHaveLength(12);
    expect(w.counts).toMatchObject({ writes: 1, retries: 11, failures: 0 });
  });

  it('a claim gone (404) or replaced (422) is not retried', async () => {
    for (const status of [404, 422]) {
      const kube = scriptedKube([apiError(status), echo]);
      const w = writer(kube);
      w.prepared(CLAIM, described());
      await w.idle();
      expect(kube.calls, String(status)).toHaveLength(1);
      expect(w.disabledReason).toBeUndefined();
    }
  });

  it.each([
    ['RBAC refuses the status patch (403)', apiError(403), /: .*answer 403/],
    ['no server-side apply (415)', apiError(415), /: .*answer 415/],
    [
      'the per-driver check refuses (422, Forbidden on status.devices)',
      apiError(422, {
        kind: 'Status',
        reason: 'Invalid',
        details: { causes: [{ reason: 'FieldValueForbidden', field: 'status.devices' }] },
      }),
      /: .*answer 422/,
    ],
    ['the apiserver drops the field', (): unknown => ({ status: {} }), /status\.devices/],
  ])('%s: stops writing for good, and says so once, in one line', async (_name, answer, apiserverSaid) => {
    const kube = scriptedKube([answer, echo]);
    const { logger, lines } = capturingLogger();
    const w = writer(kube, 4, logger);
    w.prepared(CLAIM, described());
    await w.idle();
    expect(w.disabledReason).toBeDefined();
    const errors = lines.filter((l) => l.level >= 50);
    expect(errors).toEqual([
      expect.objectContaining({ code: 'CLAIM_STATUS_WRITE_FAILED', error: expect.any(String) as string }),
    ]);
    expect(String(errors[0]?.['error'])).toContain(w.disabledReason);
    // The apiserver's own words follow ours, where it answered with an error.
    expect(String(errors[0]?.['error'])).toMatch(apiserverSaid);
    expect(JSON.stringify(errors[0])).not.toMatch(/"stack"|\bat \S+ \(/);
    w.prepared({ ...CLAIM, name: 'claim-b', uid: '6a1f2c3d-0000-4000-8000-000000000002' }, described());
    w.unprepared(CLAIM);
    await w.idle();
    expect(kube.calls).toHaveLength(1);
  });

  it('unprepare applies an empty list (our entries go, others stay) and supersedes a pending write', async () => {
    const kube = scriptedKube([echo]);
    const w = writer(kube);
    w.prepared(CLAIM, described());
    w.unprepared(CLAIM);
    await w.idle();
    expect(kube.calls).toHaveLength(1);
    expect((kube.calls[0]?.opts.body as { status: unknown }).status).toEqual({ devices: [] });
    expect(w.counts).toMatchObject({ writes: 0, clears: 1 });
    // Prepared again after the unprepare: written again.
    w.prepared(CLAIM, described());
    await w.idle();
    expect(w.counts.writes).toBe(1);
  });

  it('keeps at most maxInFlight writes in flight, so a burst of prepares does not queue behind them', async () => {
    let open = 0;
    let most = 0;
    const release: (() => void)[] = [];
    const kube = scriptedKube([
      (call) => {
        open++;
        most = Math.max(most, open);
        return new Promise((resolve) => {
          release.push(() => {
            open--;
            resolve(call.opts.body);
          });
        });
      },
    ]);
    const w = new ClaimStatusWriter({
      kube,
      driverName: TEST_DRIVER,
      logger: silentLogger(),
      maxInFlight: 2,
    });
    for (let i = 0; i < 5; i++)
      w.prepared({ ...CLAIM, uid: `${CLAIM.uid.slice(0, -1)}${String(i)}` }, described());
    const done = w.idle();
    while (w.counts.writes < 5) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      release.shift()?.();
    }
    await done;
    expect(kube.calls).toHaveLength(5);
    expect(most).toBe(2);
  });

  it('stop() ends retries', async () => {
    const kube = scriptedKube([apiError(500)]);
    const w = new ClaimStatusWriter({
      kube,
      driverName: TEST_DRIVER,
      logger: silentLogger(),
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
    });
    w.prepared(CLAIM, described());
    await new Promise((resolve) => setTimeout(resolve, 20));
    const started = Date.now();
    await w.stop();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(kube.calls).toHaveLength(1);
  });
});

describe('device state tells the sink', () => {
  it('about a prepared claim (again when asked again: the sink skips repeats) and its unprepare', async () => {
    const host = createTestHost();
    try {
      const seen: string[] = [];
      const sink: ClaimStatusSink = {
        prepared: (claim, devices) => {
          const entries = deviceStatusEntries(TEST_DRIVER, devices, NOW);
          seen.push(
            `prepared ${claim.uid} ${entries.map((e) => `${e.device}=${e.data['uuid'] ?? ''}`).join(',')}`,
          );
        },
        unprepared: (claim) => seen.push(`unprepared ${claim.uid}`),
      };
      const getter = new MemoryClaimGetter();
      const state = testDeviceState(host, { claims: getter, claimStatus: sink });
      await state.recover();
      getter.set(
        testClaim({ uid: CLAIM.uid, name: CLAIM.name, namespace: CLAIM.namespace, devices: ['gpu-0'] }),
      );
      const fetch = () => getter.get(CLAIM.namespace, CLAIM.name);
      await state.prepare(CLAIM, fetch, silentLogger());
      await state.prepare(CLAIM, fetch, silentLogger());
      await state.unprepare(CLAIM, silentLogger());
      const uuid = testInventory().gpus[0]?.uuid ?? '';
      expect(seen).toEqual([
        `prepared ${CLAIM.uid} gpu-0=${uuid}`,
        `prepared ${CLAIM.uid} gpu-0=${uuid}`,
        `unprepared ${CLAIM.uid}`,
      ]);
    } finally {
      host.cleanup();
    }
  });

  it('nothing about a failed prepare', async () => {
    const host = createTestHost();
    try {
      const seen: string[] = [];
      const sink: ClaimStatusSink = {
        prepared: (claim) => seen.push(claim.uid),
        unprepared: (claim) => seen.push(claim.uid),
      };
      const getter = new MemoryClaimGetter();
      const state = testDeviceState(host, { claims: getter, claimStatus: sink });
      await state.recover();
      getter.set(
        testClaim({ uid: CLAIM.uid, name: CLAIM.name, namespace: CLAIM.namespace, devices: ['gpu-7'] }),
      );
      await expect(
        state.prepare(CLAIM, () => getter.get(CLAIM.namespace, CLAIM.name), silentLogger()),
      ).rejects.toMatchObject({ code: 'DEVICE_UNKNOWN' });
      expect(seen).toEqual([]);
    } finally {
      host.cleanup();
    }
  });
});
