/* eslint-disable @typescript-eslint/no-unsafe-class-instance-assignment -- client-node 2.x models are
   data-only classes; plain object literals are the documented way to build request bodies. */
// The kubelet plugin against the real peers: the kubelet's plugin manager registers our socket,
// the scheduler allocates from the slices we publish, the kubelet's DRA manager prepares through
// dra.sock, the CDI library resolves our ids into an OCI spec, and deleting the pod unprepares.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CoreV1Api,
  RbacAuthorizationV1Api,
  ResourceV1Api,
  type ResourceV1ResourceClaim,
  type V1Pod,
  type V1ResourceClaimTemplateSpec,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

import { parseDriverConfig, runDriver, type RunningDriver } from '../../src/cli/commands/driver.js';
import type { CdiSpec } from '../../src/cdi/spec.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { PUBLISHER_RBAC_RULES } from '../../src/resourceslice/publisher.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, parseFakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { createLogger } from '../../src/util/log.js';
import { fakeNvmlLib } from '../support/sim.js';
import { startCluster, type Cluster } from './support/cluster.js';
import { preparedContainers, startNode, type KubeletEvent, type NodeHarness } from './support/node.js';
import { ensurePeersBinary, peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'plugin';

interface OciSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string; type: string; major: number; minor: number }[] };
  mounts?: { destination: string; source: string; options?: string[] }[];
  hooks?: { createContainer?: { path: string; args?: string[] }[] };
}

/** An H100 with MIG off (gpu-0) next to an A100 in MIG mode (gpu-1 and its MIG devices). */
async function mixedMigConfig(): Promise<ReturnType<typeof parseFakeNvmlConfig>> {
  const mixed = await loadProfile('mixed');
  const mig = await loadProfile('a100-mig');
  const h100 = mixed.gpus[0];
  const a100 = mig.gpus[0];
  if (!h100 || !a100) throw new Error('profiles changed');
  return parseFakeNvmlConfig({
    ...mig,
    description: 'e2e: H100 (full GPU) + A100 in MIG mode',
    giProfileTables: { ...mixed.giProfileTables, ...mig.giProfileTables },
    gpus: [
      { ...h100, minor: 0 },
      { ...a100, minor: 1, pci: { ...a100.pci, bus: 0x41 } },
    ],
  });
}

describe('kubelet plugin end to end', () => {
  let cluster: Cluster | undefined;
  let node: NodeHarness | undefined;
  let driver: RunningDriver | undefined;
  let sim: SimulatedNode | undefined;
  let simDir: string | undefined;
  let inventory: NodeInventory | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;

  beforeAll(async () => {
    const binary = await ensurePeersBinary();
    cluster = await startCluster({ binary });
    const c = cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);

    // The driver's identity may read claims and manage its slices: nothing more.
    const rbac = c.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createClusterRole({
      body: {
        metadata: { name: 'gpu-dra-driver' },
        rules: [
          { apiGroups: ['resource.k8s.io'], resources: ['resourceclaims'], verbs: ['get'] },
          ...PUBLISHER_RBAC_RULES.map((r) => ({
            apiGroups: [...r.apiGroups],
            resources: [...r.resources],
            verbs: [...r.verbs],
          })),
        ],
      },
    });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: 'gpu-dra-driver' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'gpu-dra-driver' },
        subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: c.driverUser }],
      },
    });
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

    await core.createNamespace({ body: { metadata: { name: NS } } });
    await eventually(
      'default ServiceAccount',
      async () =>
        (await core.readNamespacedServiceAccount({ namespace: NS, name: 'default' })).metadata?.name,
    );

    simDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-e2e-sim-'));
    sim = await createSimulatedNode(await mixedMigConfig(), simDir, { libPath: fakeNvmlLib() });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    // An ldcache hook binary where NVIDIA's toolkit would put it.
    fs.writeFileSync(path.join(sim.hostPaths.driverRoot, 'usr/bin/nvidia-cdi-hook'), '#!/bin/sh\n', {
      mode: 0o755,
    });

    node = await startNode(c, NODE);
    const s = sim;
    const config = parseDriverConfig(
      {
        nodeName: NODE,
        kubeconfig: c.makeKubeconfig(c.driverToken, 'driver'),
        kubeletRegistryDir: node.registryDir,
        kubeletPluginsDir: node.pluginsDir,
        cdiRoot: node.cdiDir,
        devRoot: s.hostPaths.devRoot,
        procRoot: s.hostPaths.procRoot,
        sysRoot: s.hostPaths.sysRoot,
        driverRoot: s.hostPaths.driverRoot,
      },
      {},
    );
    const started = Date.now();
    driver = await runDriver(config, {
      logger: createLogger({ level: process.env['GPU_DRA_E2E_LOG'] ?? 'warn', name: 'driver' }),
      discover: () => {
        inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: s.hostPaths });
        return inventory;
      },
    });
    peersLog(`driver serving after ${String(Date.now() - started)}ms`);
  }, 3_600_000);

  afterAll(async () => {
    await driver?.stop();
    await node?.stop();
    await cluster?.stop();
    if (simDir) fs.rmSync(simDir, { recursive: true, force: true });
  });

  function dumpOnFailure(): void {
    onTestFailed(() => {
      cluster?.dumpLogs();
      node?.dumpLogs();
    });
  }

  async function runPod(
    name: string,
    template: V1ResourceClaimTemplateSpec,
    claimRequests: string[] = [],
  ): Promise<{ prepared: KubeletEvent; claim: ResourceV1ResourceClaim; uid: string }> {
    await resource.createNamespacedResourceClaimTemplate({
      namespace: NS,
      body: { metadata: { name }, spec: template },
    });
    const pod: V1Pod = {
      metadata: { name, namespace: NS },
      spec: {
        containers: [
          {
            name: 'ctr',
            image: 'registry.k8s.io/pause:3.10',
            resources: {
              claims: claimRequests.length
                ? claimRequests.map((request) => ({ name: 'gpus', request }))
                : [{ name: 'gpus' }],
            },
          },
        ],
        resourceClaims: [{ name: 'gpus', resourceClaimTemplateName: name }],
      },
    };
    const created = await core.createNamespacedPod({ namespace: NS, body: pod });
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
    const claimName = await eventually('claim name', async () => {
      const p = await core.readNamespacedPod({ namespace: NS, name });
      return p.status?.resourceClaimStatuses?.find((s) => s.name === 'gpus')?.resourceClaimName;
    });
    const claim = await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName });
    return { prepared, claim, uid };
  }

  async function deletePodAndWaitUnprepared(name: string, uid: string): Promise<void> {
    await core.deleteNamespacedPod({ namespace: NS, name });
    await (node as NodeHarness).waitForEvent((e) => e.event === 'unprepared' && e['uid'] === uid, 60_000);
  }

  it('registers through the kubelet plugin manager and publishes the node’s devices', async () => {
    dumpOnFailure();
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
    expect(names.some((d) => d.startsWith('gpu-1-mig-'))).toBe(true);
  });

  it('prepares a full GPU: CDI ids resolve to exactly its nodes and env, and unprepare removes the spec', async () => {
    dumpOnFailure();
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
    expect(env).toContain(`NVIDIA_VISIBLE_DEVICES=${gpu0?.uuid ?? '?'}`);
    expect(env).toContain(`GPU_DRA_CLAIM_UID=${claimUid}`);
    expect(env).toContain('GPU_DRA_DEVICES=gpu-0');
    expect(oci.mounts?.map((m) => m.destination)).toContain('/usr/lib/x86_64-linux-gnu/libcuda.so.1');
    expect(oci.hooks?.createContainer?.[0]?.args?.slice(0, 2)).toEqual(['nvidia-cdi-hook', 'update-ldcache']);

    const specFile = path.join((node as NodeHarness).cdiDir, `k8s.${DRIVER}-claim_${claimUid}.json`);
    expect((JSON.parse(fs.readFileSync(specFile, 'utf8')) as CdiSpec).kind).toBe(`k8s.${DRIVER}/claim`);
    expect(driver?.state.preparedClaimUids()).toEqual([claimUid]);

    await deletePodAndWaitUnprepared('one-gpu', uid);
    expect(fs.existsSync(specFile)).toBe(false);
    expect(driver?.state.preparedClaimUids()).toEqual([]);
  });

  it('prepares two MIG devices of one GPU: parent node plus each device’s GI/CI caps', async () => {
    dumpOnFailure();
    const { prepared, claim, uid } = await runPod('two-mig', {
      spec: {
        devices: { requests: [{ name: 'mig', exactly: { deviceClassName: `mig.${DRIVER}`, count: 2 } }] },
      },
    });
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const allocated = (claim.status?.allocation?.devices?.results ?? []).map((r) => r.device);
    expect(allocated).toHaveLength(2);
    const migs = inventory?.gpus.flatMap((g) => g.migDevices) ?? [];
    const chosen = migs.filter((m) =>
      allocated.some((d) => d.endsWith(`-${String(m.profileId)}-${String(m.placement.start)}`)),
    );
    expect(chosen).toHaveLength(2);

    const [ctr] = preparedContainers(prepared);
    const oci = ctr?.ociSpec as OciSpec;
    const paths = (oci.linux?.devices ?? []).map((d) => d.path).sort();
    const caps = chosen
      .flatMap((m) => [m.accessCaps?.gi, m.accessCaps?.ci])
      .map((n) => `/dev/nvidia-caps/nvidia-cap${String(n)}`);
    expect(paths).toEqual(
      ['/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia1', '/dev/nvidiactl', ...caps].sort(),
    );
    const visible = (oci.process?.env ?? [])
      .find((e) => e.startsWith('NVIDIA_VISIBLE_DEVICES='))
      ?.split('=')[1]
      ?.split(',')
      .sort();
    expect(visible).toEqual(chosen.map((m) => m.uuid).sort());

    await deletePodAndWaitUnprepared('two-mig', uid);
    expect(fs.readdirSync((node as NodeHarness).cdiDir)).toEqual([]);
  });

  it('an invalid opaque config fails that claim’s prepare with the field named, and nothing is written', async () => {
    dumpOnFailure();
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

  it('stopping the driver removes its sockets and the kubelet deregisters it', async () => {
    dumpOnFailure();
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
