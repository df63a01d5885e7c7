// The apiserver goes away for 60 s while claims arrive (issue #17): first hung (SIGSTOP: its
// port accepts connections and nothing answers), then dead (SIGKILL: connections refused), then
// back on the same port with the same etcd.
//
// The claims arrive as the outage starts: the driver process is frozen while four pods are
// scheduled, so the kubelet harness's NodePrepareResources calls wait on dra.sock; the apiserver
// hangs and the driver thaws, and each call meets the outage at the driver's own claim read.
// Two more claims, allocated by hand (no pod, so only this test asks for them), are prepared
// through dra.sock directly, timed, once while the apiserver hangs and once while it is dead.
//
// What must hold: every answer is a per-claim error naming the claim and the cause, within the
// kubelet's 45 s deadline; the driver never exits and its RSS stays flat; the slice publisher
// retries with jittered, capped backoff; once the apiserver is back, the kubelet's retries
// prepare every pod, and slices deleted or changed behind the driver's back are set right.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, type V1ResourceSlice } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

import { KubeletClient } from '../../src/kubelet/client.js';
import type { ClaimRef, NodePrepareResourcesResponse } from '../../src/kubelet/proto.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { backoffDelay } from '../../src/util/backoff.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses, type DriverProcess, type DriverProcessOptions } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import type { NodeHarness } from './support/node.js';
import { peersLog } from './support/peers.js';
import { httpGet, sleep } from './support/process.js';
import { eventually } from './support/wait.js';
import {
  createAllocatedClaim,
  createNamespace,
  createPodWithOwnClaim,
  createTypedDeviceClasses,
} from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const NODE = 'node-a';
const NS = 'outage';
const PODS = ['p0', 'p1', 'p2', 'p3'];
/** The outage: hung for HUNG_MS, then dead until OUTAGE_MS. */
const OUTAGE_MS = 60_000;
const HUNG_MS = 35_000;
/** The kubelet's deadline on each DRA call (defaultClientCallTimeout). */
const KUBELET_DEADLINE_MS = 45_000;
/** The publisher's retry backoff (publisher.ts loop): 200 ms doubling to 10 s, ±20 %. */
const PUBLISH_BACKOFF = { initialDelayMs: 200, maxDelayMs: 10_000 };

/** Resident set of a process, in MB, from /proc. */
function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${String(pid)}/status`);
  return Number(kb) / 1024;
}

/** The driver's JSON log lines (stderr) with message `msg`. */
function logRecords(driver: DriverProcess, msg: string): Record<string, unknown>[] {
  return driver
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes(msg))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r['msg'] === msg);
}

/**
 * The apiserver's audit log of the node's claim reads: the kubelet reads a pod's claims just
 * before it calls the driver, so once it read them all, its calls are on their way.
 */
const auditDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-e2e-audit-'));
const auditLog = path.join(auditDir, 'audit.log');
const auditPolicy = path.join(auditDir, 'policy.yaml');
fs.writeFileSync(
  auditPolicy,
  stringify({
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['RequestReceived'],
    rules: [
      {
        level: 'Metadata',
        users: [`system:node:${NODE}`],
        verbs: ['get'],
        resources: [{ group: 'resource.k8s.io', resources: ['resourceclaims'] }],
      },
      { level: 'None' },
    ],
  }),
);

/** Claims the node read successfully, by name, from the audit log. */
function claimsReadByNode(): Set<string> {
  const names = new Set<string>();
  const text = fs.existsSync(auditLog) ? fs.readFileSync(auditLog, 'utf8') : '';
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    const e = JSON.parse(line) as { objectRef?: { name?: string }; responseStatus?: { code?: number } };
    if (e.responseStatus?.code === 200 && e.objectRef?.name) names.add(e.objectRef.name);
  }
  return names;
}

describe('apiserver down for 60 s while claims arrive', () => {
  const fx = useCluster({
    apiserverArgs: [`--audit-policy-file=${auditPolicy}`, `--audit-log-path=${auditLog}`],
  });
  fx.track({
    stop: () => {
      fs.rmSync(auditDir, { recursive: true, force: true });
    },
  });
  const drivers = driverProcesses(fx);
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let node: NodeHarness;
  let driver: DriverProcess;
  let direct: KubeletClient;
  let driverOpts: DriverProcessOptions;

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS });
    await createNamespace(core, NS);
    const dir = fx.tempDir('gdra-e2e-outage-api-');
    const sim = await createSimulatedNode('h100-8x', path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
    driverOpts = {
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
    };
    driver = await drivers.start(driverOpts);
    // Registered on the kubelet's side too (its handler may finish after the driver is ready):
    // frozen before that, the driver would not be called at all.
    await node.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    // As the kubelet calls: v1, with its deadline.
    direct = new KubeletClient({
      draSocket: path.join(node.pluginsDir, DRIVER, 'dra.sock'),
      timeoutMs: KUBELET_DEADLINE_MS,
    });
    fx.track({
      stop: () => {
        direct.close();
      },
    });
  });

  async function ourSlices(): Promise<V1ResourceSlice[]> {
    const list = await resource.listResourceSlice({
      fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}`,
    });
    return list.items;
  }

  /** Prepares `refs` through dra.sock; the answer and how long it took. */
  async function timedPrepare(refs: ClaimRef[]): Promise<{ ms: number; res: NodePrepareResourcesResponse }> {
    const t0 = Date.now();
    const res = await direct.prepare(refs);
    return { ms: Date.now() - t0, res };
  }

  /** Each claim's error: names the claim and its UID, says CLAIM_FETCH_FAILED and `cause`. */
  function expectFetchFailed(res: NodePrepareResourcesResponse, refs: ClaimRef[], cause: RegExp): void {
    expect(Object.keys(res.claims).sort()).toEqual(refs.map((r) => r.uid).sort());
    for (const ref of refs) {
      const got = res.claims[ref.uid];
      expect(got?.devices ?? []).toEqual([]);
      expect(got?.error).toMatch(
        new RegExp(
          `^prepare claim ${NS}/${ref.name} \\(${ref.uid}\\): CLAIM_FETCH_FAILED: cannot read the claim: GET /apis/resource.k8s.io/v1/namespaces/${NS}/resourceclaims/${ref.name}: `,
        ),
      );
      expect(got?.error).toMatch(cause);
    }
  }

  it('answers every claim with its own error in time, stays up, and recovers every pod and slice', async () => {
    // A claim prepared by a plugin process that has since restarted, whose status.devices went
    // missing meanwhile (cleared here): its next prepare, answered from the checkpoint during
    // the outage, wants the status written again, and the outage must not cost that write (the
    // writer once gave up after six refused connections, ~15 s).
    const kept = await createAllocatedClaim(resource, {
      namespace: NS,
      name: 'kept-5',
      deviceClassName: GPU_CLASS,
      driver: DRIVER,
      pool: NODE,
      device: 'gpu-5',
      nodeName: NODE,
      podName: 'nobody-5',
    });
    expect((await direct.prepare([kept])).claims[kept.uid]?.error).toBe('');
    const statusOf = async (name: string): Promise<number> =>
      (await resource.readNamespacedResourceClaim({ namespace: NS, name })).status?.devices?.length ?? 0;
    await eventually('kept-5 status written', async () =>
      (await statusOf('kept-5')) > 0 ? true : undefined,
    );
    driver.child.kill('SIGKILL');
    await driver.exited;
    const restartedAt = node.events.length;
    driver = await drivers.start(driverOpts);
    await node.waitForEvent(
      (e) => e.event === 'registered' && e['driver'] === DRIVER && node.events.indexOf(e) >= restartedAt,
      30_000,
    );
    const keptClaim = await resource.readNamespacedResourceClaim({ namespace: NS, name: 'kept-5' });
    if (keptClaim.status) keptClaim.status.devices = [];
    await resource.replaceNamespacedResourceClaimStatus({ namespace: NS, name: 'kept-5', body: keptClaim });
    expect(await statusOf('kept-5')).toBe(0);

    const pid = driver.child.pid ?? 0;
    const handRefs = [
      await createAllocatedClaim(resource, {
        namespace: NS,
        name: 'hand-6',
        deviceClassName: GPU_CLASS,
        driver: DRIVER,
        pool: NODE,
        device: 'gpu-6',
        nodeName: NODE,
        podName: 'nobody-6',
      }),
      await createAllocatedClaim(resource, {
        namespace: NS,
        name: 'hand-7',
        deviceClassName: GPU_CLASS,
        driver: DRIVER,
        pool: NODE,
        device: 'gpu-7',
        nodeName: NODE,
        podName: 'nobody-7',
      }),
    ];
    const slicesBefore = await ourSlices();
    expect(slicesBefore.length).toBeGreaterThan(0);
    const baselineRss = rssMb(pid);

    // Claims arrive: the driver is frozen, so the kubelet's calls wait on dra.sock.
    driver.child.kill('SIGSTOP');
    for (const pod of PODS) {
      await createPodWithOwnClaim({ resource, core }, { namespace: NS, pod, deviceClassName: GPU_CLASS });
    }
    await eventually('pods bound to the node', async () => {
      const pods = (await core.listNamespacedPod({ namespace: NS })).items;
      return pods.length === PODS.length && pods.every((p) => p.spec?.nodeName === NODE) ? true : undefined;
    });
    // The harness read every claim (the audit log says so) and called the frozen driver, which
    // prepared nothing.
    await eventually('the kubelet read every claim', () =>
      Promise.resolve(PODS.every((p) => claimsReadByNode().has(`${p}-gpu`)) ? true : undefined),
    );
    await sleep(1_000);
    expect(node.events.filter((e) => e.event === 'prepared')).toEqual([]);

    // The outage: hung first.
    const outageStart = Date.now();
    fx.cluster.pausePeer('apiserver');
    driver.child.kill('SIGCONT');
    let maxRss = baselineRss;
    const sampler = setInterval(() => {
      if (driver.child.exitCode === null) maxRss = Math.max(maxRss, rssMb(pid));
    }, 500);
    try {
      const hungCall = timedPrepare(handRefs);
      // The liveness probe's endpoint does not depend on the apiserver, nor wait behind prepares
      // that do: a kubelet would restart a plugin whose /healthz failed, mid-outage.
      const healthz = (): Promise<number> =>
        httpGet(`http://127.0.0.1:${String(driver.port)}/healthz`).then((r) => r.status);
      expect(await healthz()).toBe(200);
      const hung = await hungCall;
      expectFetchFailed(hung.res, handRefs, /no answer within \d+ ms/);
      expect(hung.ms).toBeLessThan(KUBELET_DEADLINE_MS);

      // The kubelet's own calls, made before the outage, got the same per-claim errors. (An
      // earlier attempt may have failed in the kubelet itself: the Node authorizer lets a node
      // read a claim only once it has seen the pod bound there.)
      for (const pod of PODS) {
        const failed = await node.waitForEvent(
          (e) =>
            e.event === 'prepareFailed' &&
            e['pod'] === `${NS}/${pod}` &&
            String(e['error']).includes('NodePrepareResources failed'),
          KUBELET_DEADLINE_MS,
        );
        expect(String(failed['error'])).toMatch(
          new RegExp(
            `prepare claim ${NS}/${pod}-gpu \\(\\S+\\): CLAIM_FETCH_FAILED: cannot read the claim: .*no answer within`,
          ),
        );
        expect(String(failed['error'])).not.toMatch(/DeadlineExceeded/);
      }

      // Then dead: connections refused, answered at once.
      await sleep(outageStart + HUNG_MS - Date.now());
      await fx.cluster.stopPeer('apiserver');
      const refused = await timedPrepare(handRefs);
      expectFetchFailed(refused.res, handRefs, /ECONNREFUSED/);
      expect(refused.ms).toBeLessThan(5_000);
      peersLog(`outage: hung answer in ${String(hung.ms)} ms, refused answer in ${String(refused.ms)} ms`);
      expect(await healthz()).toBe(200);
      // A claim already prepared is answered from the checkpoint, apiserver or not.
      const fromCheckpoint = await timedPrepare([kept]);
      expect(fromCheckpoint.res.claims[kept.uid]?.error).toBe('');
      expect(fromCheckpoint.res.claims[kept.uid]?.devices.map((d) => d.device_name)).toEqual(['gpu-5']);
      expect(fromCheckpoint.ms).toBeLessThan(5_000);

      await sleep(outageStart + OUTAGE_MS - Date.now());
      expect(driver.child.exitCode).toBeNull();
      await fx.cluster.startPeer('apiserver');
    } finally {
      clearInterval(sampler);
    }
    const backAt = Date.now();
    const heldMs = backAt - outageStart;
    expect(heldMs).toBeGreaterThanOrEqual(OUTAGE_MS);

    // The driver answers at once: its next read goes through (no backoff of its own in the way).
    const after = await timedPrepare(handRefs);
    for (const ref of handRefs) {
      expect(after.res.claims[ref.uid]?.error).toBe('');
      expect(after.res.claims[ref.uid]?.devices).toHaveLength(1);
    }
    expect(after.ms).toBeLessThan(5_000);

    // Every pod prepared by the kubelet's retries: none lost.
    const preparedAt: number[] = [];
    for (const pod of PODS) {
      const e = await node.waitForEvent(
        (ev) => ev.event === 'prepared' && ev['pod'] === `${NS}/${pod}`,
        60_000,
      );
      preparedAt.push(Date.parse(e.time));
      await node.waitForEvent((ev) => ev.event === 'running' && ev['pod'] === `${NS}/${pod}`, 30_000);
    }
    const recoverMs = Math.max(...preparedAt) - backAt;
    // The harness retries at most every 10 s (--retry-max), plus its own reconnect: most of this
    // is the kubelet's backoff, not the driver's.
    expect(recoverMs).toBeLessThan(30_000);

    // The claim status writer survived the outage too: every claim's status.devices is written.
    const claimNames = [...PODS.map((p) => `${p}-gpu`), ...handRefs.map((r) => r.name), kept.name];
    await eventually(
      'status.devices of every prepared claim',
      async () => {
        const claims = (await resource.listNamespacedResourceClaim({ namespace: NS })).items;
        const written = claims.filter((c) => c.status?.devices?.some((d) => d.driver === DRIVER));
        return written.length === claimNames.length ? true : undefined;
      },
      30_000,
    );

    // The driver stayed up, its memory flat.
    expect(driver.child.exitCode).toBeNull();
    expect(maxRss - baselineRss).toBeLessThan(64);

    // The publisher retried with capped, jittered backoff while the apiserver was gone.
    const retries = logRecords(driver, 'ResourceSlice publish failed; retrying')
      .filter((r) => Date.parse(String(r['time'])) >= outageStart)
      .map((r) => Number(r['retryInMs']));
    expect(retries.length).toBeGreaterThanOrEqual(5);
    retries.forEach((ms, attempt) => {
      expect(ms).toBeGreaterThanOrEqual(backoffDelay(attempt, PUBLISH_BACKOFF, () => 0));
      expect(ms).toBeLessThanOrEqual(backoffDelay(attempt, PUBLISH_BACKOFF, () => 1));
    });
    // Jittered: not the bare doubling sequence (each delay equal to it has odds of about 1 in 400).
    const bare = retries.map((_, attempt) => backoffDelay(attempt, PUBLISH_BACKOFF, () => 0.5));
    expect(retries).not.toEqual(bare);
    // Capped: it reached the 10 s cap and went no further.
    expect(Math.max(...retries)).toBeGreaterThanOrEqual(8_000);

    // Slices: one deleted behind the driver's back is re-created, one edited is set right.
    const [first] = await ourSlices();
    const name = first?.metadata?.name ?? '';
    const devices = first?.spec.devices?.length ?? 0;
    expect(devices).toBeGreaterThan(1);
    const t0 = Date.now();
    await resource.deleteResourceSlice({ name });
    await eventually(
      'deleted slice re-created',
      async () => ((await ourSlices()).length === slicesBefore.length ? true : undefined),
      30_000,
      100,
    );
    const recreatedMs = Date.now() - t0;
    const [again] = await ourSlices();
    const againName = again?.metadata?.name ?? '';
    const edited = await resource.readResourceSlice({ name: againName });
    edited.spec.devices = edited.spec.devices?.slice(0, 1);
    await resource.replaceResourceSlice({ name: againName, body: edited });
    await eventually(
      'edited slice set right',
      async () =>
        (await resource.readResourceSlice({ name: againName })).spec.devices?.length === devices
          ? true
          : undefined,
      30_000,
      100,
    );
    peersLog(
      `outage held ${String(heldMs)} ms; driver prepared in ${String(after.ms)} ms once the apiserver was back, ` +
        `the kubelet's pods ${String(recoverMs)} ms after /readyz answered; ` +
        `publisher retries ${retries.join(',')} ms; RSS ${baselineRss.toFixed(1)} -> max ${maxRss.toFixed(1)} MB; ` +
        `deleted slice re-created in ${String(recreatedMs)} ms`,
    );
  }, 240_000);
});
