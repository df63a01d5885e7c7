// The kubelet plugin against the real peers: the kubelet's plugin manager registers our socket,
// the scheduler allocates from the slices we publish, the kubelet's DRA manager prepares through
// dra.sock, the CDI library resolves our ids into an OCI spec, and deleting the pod unprepares.
import fs from 'node:fs';
import path from 'node:path';
import {
  CoreV1Api,
  ResourceV1Api,
  type ResourceV1ResourceClaim,
  type V1ResourceClaimTemplateSpec,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseDriverConfig } from '../../src/node/config.js';
import { runDriver, type RunningDriver } from '../../src/node/run.js';
import { injectCdiDevices } from '../../src/cdi/inject.js';
import { deviceEnvKey, type CdiSpec } from '../../src/cdi/spec.js';
import type { NodePrepareResourcesRequest, NodePrepareResourcesResponse } from '../../src/kubelet/proto.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { MigDevice, NodeInventory } from '../../src/nvml/types.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, parseFakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { fakeNvmlLib, simHostOptions } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import { recordingLogger, type LogRecord } from './support/driverLog.js';
import { createNamespace, createPodWithClaims, type PodClaim } from './support/workloads.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';
import { grantDriverRbac } from './support/rbac.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'plugin';

interface OciSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string; type: string; major: number; minor: number }[] };
  mounts?: { destination: string; source: string; options?: string[] }[];
  hooks?: { createContainer?: { path: string; args?: string[] }[] };
}

/** Two full GPUs (H100 gpu-0, L4 gpu-1) next to an A100 in MIG mode (gpu-2 and its MIG devices). */
async function mixedMigConfig(): Promise<ReturnType<typeof parseFakeNvmlConfig>> {
  const mixed = await loadProfile('mixed');
  const mig = await loadProfile('a100-mig');
  const h100 = mixed.gpus[0];
  const l4 = mixed.gpus[1];
  const a100 = mig.gpus[0];
  if (!h100 || !l4 || !a100) throw new Error('profiles changed');
  return parseFakeNvmlConfig({
    ...mig,
    description: 'e2e: H100 and L4 (full GPUs) + A100 in MIG mode',
    giProfileTables: { ...mixed.giProfileTables, ...mig.giProfileTables },
    gpus: [
      { ...h100, minor: 0 },
      { ...l4, minor: 1 },
      { ...a100, minor: 2, pci: { ...a100.pci, bus: 0xc1 } },
    ],
  });
}

/** The per-device env entries (`GPU_DRA_DEVICE_<NAME>=<uuid>`) of a container, sorted. */
function deviceEnv(env: readonly string[]): string[] {
  return env.filter((e) => e.startsWith('GPU_DRA_DEVICE_')).sort();
}

/** How a MIG device's name ends: `-<profile id>-<placement start>`. */
function migSuffix(m: MigDevice): string {
  return `-${String(m.profileId)}-${String(m.placement.start)}`;
}

describe('kubelet plugin end to end', () => {
  const fx = useCluster();
  let node: NodeHarness | undefined;
  let driver: RunningDriver | undefined;
  let sim: SimulatedNode | undefined;
  let inventory: NodeInventory | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const driverLog: LogRecord[] = [];

  beforeAll(async () => {
    const c = fx.cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);

    // The driver's identity may read claims and manage its slices: nothing more.
    await grantDriverRbac(c, { readClaims: true });
    for (const type of ['gpu', 'mig']) {
      await resource.createDeviceClass({
        body: {
          metadata: { name: `${type}.${DRIVER}` },
          spec: {
            selectors: [
              {
                cel: {
                  expression: `device.driver == "${DRIVER}" && device.attributes["${DRIVER}"].type == "${type}"`,
                },
              },
            ],
          },
        },
      });
    }

    await createNamespace(core, NS);

    sim = await createSimulatedNode(await mixedMigConfig(), fx.tempDir('gdra-e2e-sim-'), {
      libPath: fakeNvmlLib(),
    });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    // An ldcache hook binary where NVIDIA's toolkit would put it.
    fs.writeFileSync(path.join(sim.hostPaths.driverRoot, 'usr/bin/nvidia-cdi-hook'), '#!/bin/sh\n', {
      mode: 0o755,
    });

    node = await fx.startNode(NODE);
    const s = sim;
    const config = parseDriverConfig(
      {
        nodeName: NODE,
        kubeconfig: c.makeKubeconfig(c.driverToken, 'driver'),
        ...node.driverDirOptions(),
        ...simHostOptions(s),
      },
      {},
    );
    const started = Date.now();
    driver = await runDriver(config, {
      logger: recordingLogger(driverLog),
      discover: () => {
        inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: s.hostPaths });
        return inventory;
      },
    });
    fx.track(driver);
    peersLog(`driver serving after ${String(Date.now() - started)}ms`);
  });

  /** Creates one template per claim and a pod using them all; resolves with the node's verdict. */
  async function runPodWithClaims(
    name: string,
    podClaims: readonly PodClaim[],
  ): Promise<{ prepared: KubeletEvent; claims: Map<string, ResourceV1ResourceClaim>; uid: string }> {
    const created = await createPodWithClaims(
      { resource, core },
      { namespace: NS, pod: name, claims: podClaims },
    );
    const uid = created.metadata?.uid ?? '';
    const prepared = await (node as NodeHarness)
      .waitForEvent(
        // Early attempts can fail before the driver is even asked (the Node authorizer has not yet
        // seen the binding); only the outcome of a call to our socket counts.
        (e) =>
          e['pod'] === `${NS}/${name}` &&
          (e.event === 'prepared' ||
            (e.event === 'prepareFailed' && String(e['error']).includes('NodePrepareResources'))),
        60_000,
      )
      .catch(async (err: unknown) => {
        // Say where it got stuck: scheduling, allocation or the node.
        const p = await core.readNamespacedPod({ namespace: NS, name });
        const claims = await resource.listNamespacedResourceClaim({ namespace: NS });
        throw new Error(
          `${String(err)}\npod status: ${JSON.stringify(p.status)}\nclaims: ${JSON.stringify(claims.items.map((c) => ({ name: c.metadata?.name, status: c.status })))}`,
        );
      });
    const claims = new Map<string, ResourceV1ResourceClaim>();
    for (const c of podClaims) {
      const claimName = await eventually('claim name', async () => {
        const p = await core.readNamespacedPod({ namespace: NS, name });
        return p.status?.resourceClaimStatuses?.find((s) => s.name === c.name)?.resourceClaimName;
      });
      claims.set(c.name, await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName }));
    }
    return { prepared, claims, uid };
  }

  async function runPod(
    name: string,
    template: V1ResourceClaimTemplateSpec,
    claimRequests: string[] = [],
  ): Promise<{ prepared: KubeletEvent; claim: ResourceV1ResourceClaim; uid: string }> {
    const { prepared, claims, uid } = await runPodWithClaims(name, [
      { name: 'gpus', template, requests: claimRequests },
    ]);
    const claim = claims.get('gpus');
    if (!claim) throw new Error('claim gpus not found');
    return { prepared, claim, uid };
  }

  /** The driver's NodePrepareResources calls: request and response, paired by request id. */
  function prepareCalls(): {
    request: NodePrepareResourcesRequest;
    response?: NodePrepareResourcesResponse;
  }[] {
    const grpc = driverLog.filter((r) => r['method'] === 'NodePrepareResources');
    return grpc
      .filter((r) => r.msg === 'request')
      .map((req) => {
        const res = grpc.find((r) => r.msg === 'response' && r['requestId'] === req['requestId']);
        return {
          request: req['request'] as NodePrepareResourcesRequest,
          ...(res ? { response: res['response'] as NodePrepareResourcesResponse } : {}),
        };
      });
  }

  async function deletePodAndWaitUnprepared(name: string, uid: string): Promise<void> {
    await core.deleteNamespacedPod({ namespace: NS, name });
    await (node as NodeHarness).waitForEvent((e) => e.event === 'unprepared' && e['uid'] === uid, 60_000);
  }

  it('registers through the kubelet plugin manager and publishes the node’s devices', async () => {
    const n = node as NodeHarness;
    const registered = await n.waitForEvent(
      (e) => e.event === 'registered' && e['driver'] === DRIVER,
      60_000,
    );
    expect(registered['endpoint']).toBe(path.join(n.pluginsDir, DRIVER, 'dra.sock'));
    // The kubelet reports NotifyRegistrationStatus right after its RegisterPlugin handler ran.
    await eventually('NotifyRegistrationStatus', () =>
      Promise.resolve(driver?.plugin.registration.status.registered),
    );
    expect(driver?.plugin.registration.status.registered).toBe(true);
    expect(n.events.some((e) => e.event === 'registerFailed')).toBe(false);

    const names = await eventually('published devices', async () => {
      const slices = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` });
      const devices = slices.items.flatMap((s) => s.spec.devices?.map((d) => d.name) ?? []);
      return devices.length > 0 ? devices.sort() : undefined;
    });
    expect(names).toContain('gpu-0');
    expect(names).toContain('gpu-1');
    expect(names.some((d) => d.startsWith('gpu-2-mig-'))).toBe(true);
  });

  it('prepares a full GPU: CDI ids resolve to exactly its nodes and env, and unprepare removes the spec', async () => {
    const { prepared, claim, uid } = await runPod('one-gpu', {
      spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } }] } },
    });
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const claimUid = claim.metadata?.uid ?? '';
    const result = claim.status?.allocation?.devices?.results?.[0];
    expect(result).toMatchObject({ driver: DRIVER, pool: NODE, device: 'gpu-0' });

    const [ctr] = preparedContainers(prepared);
    expect(ctr?.cdiError).toBeUndefined();
    expect(ctr?.cdiDevices).toEqual([`k8s.${DRIVER}/claim=${claimUid}-gpu-0`]);
    const oci = ctr?.ociSpec as OciSpec;
    const devices = (oci.linux?.devices ?? [])
      .map((d) => `${d.path} ${d.type} ${String(d.major)}:${String(d.minor)}`)
      .sort();
    expect(devices).toEqual([
      '/dev/nvidia-uvm c 238:0',
      '/dev/nvidia-uvm-tools c 238:1',
      '/dev/nvidia0 c 195:0',
      '/dev/nvidiactl c 195:255',
    ]);
    const gpu0 = inventory?.gpus.find((g) => g.minor === 0);
    const env = oci.process?.env ?? [];
    expect(deviceEnv(env)).toEqual([`GPU_DRA_DEVICE_GPU_0=${gpu0?.uuid ?? '?'}`]);
    expect(env).toContain('NVIDIA_VISIBLE_DEVICES=void');
    expect(oci.mounts?.map((m) => m.destination)).toContain('/usr/lib/x86_64-linux-gnu/libcuda.so.1');
    // The CDI library turned the spec's hooks into OCI createContainer hooks, in the toolkit's order.
    expect(oci.hooks?.createContainer?.map((h) => h.args?.slice(0, 2).join(' '))).toEqual([
      'nvidia-cdi-hook create-symlinks',
      'nvidia-cdi-hook enable-cuda-compat',
      'nvidia-cdi-hook update-ldcache',
      'nvidia-cdi-hook disable-device-node-modification',
    ]);

    const specFile = path.join((node as NodeHarness).cdiDir, `k8s.${DRIVER}-claim_${claimUid}.json`);
    expect((JSON.parse(fs.readFileSync(specFile, 'utf8')) as CdiSpec).kind).toBe(`k8s.${DRIVER}/claim`);
    expect(driver?.state.preparedClaimUids()).toEqual([claimUid]);

    await deletePodAndWaitUnprepared('one-gpu', uid);
    expect(fs.existsSync(specFile)).toBe(false);
    expect(driver?.state.preparedClaimUids()).toEqual([]);
  });

  it('prepares two MIG devices of one GPU: parent node plus each device’s GI/CI caps', async () => {
    const { prepared, claim, uid } = await runPod('two-mig', {
      spec: {
        devices: { requests: [{ name: 'mig', exactly: { deviceClassName: `mig.${DRIVER}`, count: 2 } }] },
      },
    });
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const allocated = (claim.status?.allocation?.devices?.results ?? []).map((r) => r.device);
    expect(allocated).toHaveLength(2);
    const migs = inventory?.gpus.flatMap((g) => g.migDevices) ?? [];
    const chosen = migs.filter((m) => allocated.some((d) => d.endsWith(migSuffix(m))));
    expect(chosen).toHaveLength(2);

    const [ctr] = preparedContainers(prepared);
    const oci = ctr?.ociSpec as OciSpec;
    const paths = (oci.linux?.devices ?? []).map((d) => d.path).sort();
    const caps = chosen
      .flatMap((m) => [m.accessCaps?.gi, m.accessCaps?.ci])
      .map((n) => `/dev/nvidia-caps/nvidia-cap${String(n)}`);
    expect(paths).toEqual(
      ['/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia2', '/dev/nvidiactl', ...caps].sort(),
    );
    expect(deviceEnv(oci.process?.env ?? [])).toEqual(
      allocated
        .map((d) => `${deviceEnvKey(d)}=${chosen.find((m) => d.endsWith(migSuffix(m)))?.uuid ?? '?'}`)
        .sort(),
    );

    await deletePodAndWaitUnprepared('two-mig', uid);
    expect(fs.readdirSync((node as NodeHarness).cdiDir)).toEqual([]);
  });

  it('an invalid opaque config fails that claim’s prepare with the field named, and nothing is written', async () => {
    const { prepared, uid } = await runPod('bad-config', {
      spec: {
        devices: {
          requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } }],
          config: [
            {
              requests: ['gpu'],
              opaque: {
                driver: DRIVER,
                parameters: {
                  apiVersion: 'gpu.dra.dev/v1alpha1',
                  kind: 'GpuConfig',
                  sharing: { strategy: 'Sometimes' },
                },
              },
            },
          ],
        },
      },
    });
    expect(prepared.event).toBe('prepareFailed');
    expect(String(prepared['error'])).toMatch(/config\[0\]\.opaque\.parameters\.sharing\.strategy/);
    expect(fs.readdirSync((node as NodeHarness).cdiDir)).toEqual([]);
    await core.deleteNamespacedPod({ namespace: NS, name: 'bad-config' });
    await (node as NodeHarness).waitForEvent(
      (e) => (e.event === 'podDeleted' || e.event === 'podGone') && e['uid'] === uid,
      60_000,
    );
  });

  it('prepares a claim of two GPUs: both nodes injected, both UUIDs visible, one CDI device each', async () => {
    const { prepared, claim, uid } = await runPod('two-gpus', {
      spec: {
        devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}`, count: 2 } }] },
      },
    });
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const claimUid = claim.metadata?.uid ?? '';
    const allocated = (claim.status?.allocation?.devices?.results ?? []).map((r) => r.device).sort();
    expect(allocated).toEqual(['gpu-0', 'gpu-1']);

    const [ctr] = preparedContainers(prepared);
    expect(ctr?.cdiError).toBeUndefined();
    expect([...(ctr?.cdiDevices ?? [])].sort()).toEqual(
      allocated.map((d) => `k8s.${DRIVER}/claim=${claimUid}-${d}`),
    );
    const oci = ctr?.ociSpec as OciSpec;
    expect(
      (oci.linux?.devices ?? []).map((d) => `${d.path} ${String(d.major)}:${String(d.minor)}`).sort(),
    ).toEqual([
      '/dev/nvidia-uvm 238:0',
      '/dev/nvidia-uvm-tools 238:1',
      '/dev/nvidia0 195:0',
      '/dev/nvidia1 195:1',
      '/dev/nvidiactl 195:255',
    ]);
    const env = oci.process?.env ?? [];
    const uuid = (minor: number): string => inventory?.gpus.find((g) => g.minor === minor)?.uuid ?? '?';
    expect(deviceEnv(env)).toEqual([`GPU_DRA_DEVICE_GPU_0=${uuid(0)}`, `GPU_DRA_DEVICE_GPU_1=${uuid(1)}`]);

    const specFile = path.join((node as NodeHarness).cdiDir, `k8s.${DRIVER}-claim_${claimUid}.json`);
    const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as CdiSpec;
    expect(spec.devices.map((d) => d.name)).toEqual(allocated.map((d) => `${claimUid}-${d}`));

    await deletePodAndWaitUnprepared('two-gpus', uid);
    expect(fs.existsSync(specFile)).toBe(false);
  });

  it('a container using two claims (a GPU and a MIG device) sees every device of both', async () => {
    // The CDI library merges env by key across the specs of one container, later ones winning: a
    // per-claim value under a shared key would leave this container only the last claim's.
    const { prepared, claims, uid } = await runPodWithClaims('two-claims', [
      {
        name: 'gpu',
        template: {
          spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } }] } },
        },
      },
      {
        name: 'mig',
        template: {
          spec: { devices: { requests: [{ name: 'mig', exactly: { deviceClassName: `mig.${DRIVER}` } }] } },
        },
      },
    ]);
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const allocation = (name: string): { claimUid: string; device: string } => {
      const c = claims.get(name);
      return {
        claimUid: c?.metadata?.uid ?? '',
        device: c?.status?.allocation?.devices?.results?.[0]?.device ?? '',
      };
    };
    const gpu = allocation('gpu');
    const mig = allocation('mig');
    expect(gpu.device).toMatch(/^gpu-[01]$/);
    expect(mig.device).toMatch(/^gpu-2-mig-/);
    expect(gpu.claimUid).not.toBe(mig.claimUid);
    const gpuDevice = inventory?.gpus.find((g) => `gpu-${String(g.minor)}` === gpu.device);
    const migDevice = inventory?.gpus
      .flatMap((g) => g.migDevices)
      .find((m) => mig.device.endsWith(migSuffix(m)));
    if (!gpuDevice || !migDevice) throw new Error(`not in the inventory: ${gpu.device}, ${mig.device}`);

    // One container, both claims' CDI devices, injected together by the CDI library.
    const [ctr] = preparedContainers(prepared);
    expect(ctr?.cdiError).toBeUndefined();
    expect([...(ctr?.cdiDevices ?? [])].sort()).toEqual(
      [
        `k8s.${DRIVER}/claim=${gpu.claimUid}-${gpu.device}`,
        `k8s.${DRIVER}/claim=${mig.claimUid}-${mig.device}`,
      ].sort(),
    );
    const oci = ctr?.ociSpec as OciSpec;
    const caps = [migDevice.accessCaps?.gi, migDevice.accessCaps?.ci].map(
      (n) => `/dev/nvidia-caps/nvidia-cap${String(n)}`,
    );
    expect((oci.linux?.devices ?? []).map((d) => d.path).sort()).toEqual(
      [
        '/dev/nvidia-uvm',
        '/dev/nvidia-uvm-tools',
        '/dev/nvidiactl',
        `/dev/nvidia${String(gpuDevice.minor)}`,
        '/dev/nvidia2',
        ...caps,
      ].sort(),
    );
    const env = oci.process?.env ?? [];
    expect(deviceEnv(env)).toEqual(
      [
        `${deviceEnvKey(gpu.device)}=${gpuDevice.uuid}`,
        `${deviceEnvKey(mig.device)}=${migDevice.uuid}`,
      ].sort(),
    );
    // Nothing of ours is keyed per claim any more: every GPU_DRA_ entry names one device.
    const keys = env.filter((e) => e.startsWith('GPU_DRA_')).map((e) => e.split('=')[0]);
    expect(keys.sort()).toEqual([deviceEnvKey(gpu.device), deviceEnvKey(mig.device)].sort());
    expect(env.filter((e) => e.startsWith('NVIDIA_VISIBLE_DEVICES='))).toEqual([
      'NVIDIA_VISIBLE_DEVICES=void',
    ]);

    // Our in-memory injector (demo, unit tests) merges the two specs as the library did.
    const specs = [gpu, mig].map(
      (a) =>
        JSON.parse(
          fs.readFileSync(
            path.join((node as NodeHarness).cdiDir, `k8s.${DRIVER}-claim_${a.claimUid}.json`),
            'utf8',
          ),
        ) as CdiSpec,
    );
    const ours = injectCdiDevices(specs, ctr?.cdiDevices ?? []);
    expect(ours.unresolved).toEqual([]);
    expect(env.filter((e) => !/^(PATH|HOSTNAME)=/.test(e))).toEqual(ours.edits.env);
    expect((oci.linux?.devices ?? []).map((d) => d.path)).toEqual(ours.edits.deviceNodes.map((n) => n.path));

    await deletePodAndWaitUnprepared('two-claims', uid);
    expect(fs.readdirSync((node as NodeHarness).cdiDir)).toEqual([]);
    expect(driver?.state.preparedClaimUids()).toEqual([]);
  });

  it('a bad claim next to a good one in one NodePrepareResources call fails alone; the good one is prepared', async () => {
    const gpu = { name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } };
    const { prepared, claims, uid } = await runPodWithClaims('pair', [
      { name: 'good', template: { spec: { devices: { requests: [gpu] } } } },
      {
        name: 'bad',
        template: {
          spec: {
            devices: {
              requests: [gpu],
              config: [
                {
                  requests: ['gpu'],
                  opaque: {
                    driver: DRIVER,
                    parameters: { apiVersion: 'gpu.dra.dev/v1alpha1', kind: 'GpuConfig', timeSlicing: {} },
                  },
                },
              ],
            },
          },
        },
      },
    ]);
    const good = claims.get('good');
    const bad = claims.get('bad');
    const goodUid = good?.metadata?.uid ?? '';
    const badUid = bad?.metadata?.uid ?? '';
    const goodDevice = good?.status?.allocation?.devices?.results?.[0]?.device ?? '';

    // The kubelet reports the pod's prepare as failed, naming the bad claim and the field.
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepareFailed');
    const error = String(prepared['error']);
    expect(error).toContain(bad?.metadata?.name ?? '?');
    expect(error).toMatch(/config\[0\]\.opaque\.parameters\.timeSlicing: unknown field/);
    expect(error).not.toContain(good?.metadata?.name ?? '?');

    // Both claims went to the driver in one call; its answer carried the good claim's devices
    // next to the bad claim's error (the kubelet gives up on the whole pod when any entry has one).
    const call = prepareCalls().find((c) => c.request.claims.some((r) => r.uid === badUid));
    expect(call?.request.claims.map((r) => r.uid).sort()).toEqual([goodUid, badUid].sort());
    expect(call?.response?.claims[goodUid]).toEqual({
      error: '',
      devices: [
        {
          request_names: ['gpu'],
          pool_name: NODE,
          device_name: goodDevice,
          cdi_device_ids: [`k8s.${DRIVER}/claim=${goodUid}-${goodDevice}`],
        },
      ],
    });
    expect(call?.response?.claims[badUid]?.devices).toEqual([]);
    expect(call?.response?.claims[badUid]?.error).toMatch(/timeSlicing: unknown field/);

    // The good claim stays prepared on the node; nothing was written for the bad one.
    const cdiDir = (node as NodeHarness).cdiDir;
    expect(fs.readdirSync(cdiDir)).toEqual([`k8s.${DRIVER}-claim_${goodUid}.json`]);
    expect(driver?.state.preparedClaimUids()).toEqual([goodUid]);

    // The kubelet retries with both claims (none is marked prepared on its side); the good one is
    // answered again, identically, from the checkpoint. (Wait for the driver's second call, not
    // the kubelet's second failure: a retry can also fail before it reaches the driver.)
    const retries = await eventually(
      'the kubelet retried through the driver',
      () => {
        const calls = prepareCalls().filter((c) => c.request.claims.some((r) => r.uid === badUid));
        return Promise.resolve(calls.length >= 2 ? calls : undefined);
      },
      30_000,
    );
    for (const r of retries) expect(r.response?.claims[goodUid]).toEqual(call?.response?.claims[goodUid]);
    expect(driver?.state.preparedClaimUids()).toEqual([goodUid]);

    // Deleting the pod unprepares both (the bad one was never prepared: a no-op) and removes the spec.
    await deletePodAndWaitUnprepared('pair', uid);
    expect(fs.readdirSync(cdiDir)).toEqual([]);
    expect(driver?.state.preparedClaimUids()).toEqual([]);
  });

  it('stopping the driver removes its sockets and the kubelet deregisters it', async () => {
    const sockets = [driver?.plugin.registrationSocket ?? '', driver?.plugin.draSocket ?? ''];
    await driver?.stop();
    for (const s of sockets) expect(fs.existsSync(s)).toBe(false);
    const dereg = await (node as NodeHarness).waitForEvent(
      (e) => e.event === 'deregistered' && e['driver'] === DRIVER,
      30_000,
    );
    expect(dereg['endpoint']).toBe(sockets[1]);
  });
});
