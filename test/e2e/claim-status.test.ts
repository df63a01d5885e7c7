// What a prepared claim shows, on the real peers: the driver (in process, --device-metadata on)
// runs on a simulated H100 node (GPU 0 whole, GPU 1 in MIG mode with one 1g.10gb device) with a
// service-account token bound to that node, as a DaemonSet pod has, and the RBAC it ships with.
// A pod's claim asks for a GPU and a MIG device; once the kubelet's DRA manager prepared it:
// - the claim's status.devices has an entry per device, written by the driver: UUID, product,
//   for the MIG device its parent GPU and profile, and a Ready condition;
// - each request has a metadata file (KEP-5304) in the plugin directory, and the container's OCI
//   spec, after the CDI injection the harness does as the runtime would, mounts it read-only at
//   the path the kubeletplugin helper uses for a claim made from a template;
// - deleting the pod unprepares the claim: the files are gone and so are our entries.
// Runs on 1.37 (default) and on 1.34 (GPU_DRA_K8S_VERSION=v1.34.4), where status.devices is beta
// (on by default) and no per-driver authorization exists.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseDriverConfig } from '../../src/node/config.js';
import { runDriver, type RunningDriver } from '../../src/node/run.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile } from '../../src/sim/fakeNvml.js';
import { fakeNvmlLib, simHostOptions } from '../support/sim.js';
import { recordingLogger, type LogRecord } from './support/driverLog.js';
import { useCluster } from './support/fixture.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { grantDriverRbac, nodeBoundToken } from './support/rbac.js';
import { eventually } from './support/wait.js';
import { createNamespace, createPodWithClaims, createTypedDeviceClasses } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const MIG_CLASS = `mig.${DRIVER}`;
const NODE = 'node-a';
const NS = 'status';
const H100 = 'NVIDIA H100 80GB HBM3';
const MIG_UUID = 'MIG-5e1a0c2b-7d3f-4a91-8c6e-2b4f9d0a1e37';
const CONTAINER_DIR = '/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpus';

interface OciSpec {
  mounts?: { destination: string; source: string; options?: string[] }[];
}

/** The JSON stream's objects, read as a streaming decoder would. */
function decodeStream(text: string): Record<string, unknown>[] {
  return text.split(/\n(?=\{)/).map((chunk) => JSON.parse(chunk) as Record<string, unknown>);
}

describe('what a prepared claim shows: status.devices and device metadata', () => {
  const fx = useCluster();
  let node: NodeHarness;
  let driver: RunningDriver;
  let inventory: NodeInventory | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const driverLog: LogRecord[] = [];
  let prepared: KubeletEvent;
  let claimName = '';
  let claimUid = '';

  beforeAll(async () => {
    const c = fx.cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: true });
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS, mig: MIG_CLASS });
    await createNamespace(core, NS);

    const profile = structuredClone(await loadProfile('h100-8x-mig'));
    const [gpu0, gpu1] = profile.gpus;
    if (!gpu0 || !gpu1) throw new Error('h100-8x-mig has fewer than two GPUs');
    gpu0.migMode = { current: 0, pending: 0 };
    gpu1.migDevices = [
      {
        uuid: MIG_UUID,
        gpuInstanceId: 9,
        computeInstanceId: 0,
        profileId: 19,
        placement: { start: 0, size: 1 },
      },
    ];
    const sim = await createSimulatedNode(profile, fx.tempDir('gdra-e2e-status-'), {
      libPath: fakeNvmlLib(),
    });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    node = await fx.startNode(NODE);
    // The user grantDriverRbac binds, with a token bound to a pod on this node.
    const [, namespace = '', serviceAccount = ''] = c.driverUser.split(':').slice(1);
    const token = await nodeBoundToken(c, { namespace, serviceAccount, nodeName: NODE });
    const config = parseDriverConfig(
      {
        nodeName: NODE,
        kubeconfig: c.makeKubeconfig(token, 'driver-status'),
        ...node.driverDirOptions(),
        ...simHostOptions(sim),
        deviceMetadata: 'true',
      },
      {},
    );
    driver = fx.track(
      await runDriver(config, {
        logger: recordingLogger(driverLog),
        discover: () => {
          inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: sim.hostPaths });
          return inventory;
        },
      }),
    );
    fx.onFailure(() => `===== driver log\n${driverLog.map((r) => JSON.stringify(r)).join('\n')}`);

    await eventually('published devices', async () => {
      const list = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` });
      const names = list.items.flatMap((s) => s.spec.devices ?? []).map((d) => d.name);
      return names.includes('gpu-0') && names.includes('gpu-1-mig-1g10gb-19-0') ? names : undefined;
    });
    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'trainer',
        claims: [
          {
            name: 'gpus',
            template: {
              spec: {
                devices: {
                  requests: [
                    { name: 'gpu', exactly: { deviceClassName: GPU_CLASS } },
                    { name: 'mig', exactly: { deviceClassName: MIG_CLASS } },
                  ],
                },
              },
            },
          },
        ],
      },
    );
    prepared = await node.waitForEvent(
      // Until the driver registered the kubelet retries; only the driver's own answer counts.
      (e) =>
        e['pod'] === `${NS}/trainer` &&
        (e.event === 'prepared' ||
          (e.event === 'prepareFailed' && String(e['error']).includes('NodePrepareResources'))),
      60_000,
    );
    claimName = await eventually('claim name', async () => {
      const p = await core.readNamespacedPod({ namespace: NS, name: 'trainer' });
      return p.status?.resourceClaimStatuses?.find((s) => s.name === 'gpus')?.resourceClaimName ?? undefined;
    });
    claimUid =
      (await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName })).metadata?.uid ?? '';
  });

  it('the claim shows each device with its UUID, product, and the MIG device its parent and profile', async () => {
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const gpu0 = inventory?.gpus.find((g) => g.minor === 0);
    const gpu1 = inventory?.gpus.find((g) => g.minor === 1);
    const devices = await eventually('status.devices', async () => {
      const claim = await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName });
      const d = claim.status?.devices ?? [];
      return d.length === 2 ? d : undefined;
    });
    expect(
      devices.map((d) => ({ driver: d.driver, pool: d.pool, device: d.device, data: d.data as unknown })),
    ).toEqual([
      { driver: DRIVER, pool: NODE, device: 'gpu-0', data: { uuid: gpu0?.uuid, productName: H100 } },
      {
        driver: DRIVER,
        pool: NODE,
        device: 'gpu-1-mig-1g10gb-19-0',
        data: { uuid: MIG_UUID, productName: H100, parentUUID: gpu1?.uuid, profile: '1g.10gb' },
      },
    ]);
    for (const d of devices) {
      expect(d.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([['Ready', 'True', 'Prepared']]);
    }
    expect(driver.claimStatus?.disabledReason).toBeUndefined();
  });

  it('each request has a metadata file, mounted read-only where the helper would mount it', () => {
    const metaDir = path.join(node.pluginsDir, DRIVER, 'dra-device-metadata', claimUid);
    const files = Object.fromEntries(
      ['gpu', 'mig'].map((r) => [r, path.join(metaDir, r, `${DRIVER}-metadata.json`)] as const),
    );
    const objects = decodeStream(fs.readFileSync(files['gpu'] ?? '', 'utf8'));
    expect(objects.map((o) => o['apiVersion'])).toEqual([
      'metadata.resource.k8s.io/v1beta1',
      'metadata.resource.k8s.io/v1alpha1',
    ]);
    expect(objects[0]).toMatchObject({
      kind: 'DeviceMetadata',
      metadata: { name: claimName, namespace: NS, uid: claimUid },
      podClaimName: 'gpus',
      requests: [
        {
          name: 'gpu',
          devices: [
            {
              driver: DRIVER,
              pool: NODE,
              name: 'gpu-0',
              attributes: {
                uuid: { string: inventory?.gpus.find((g) => g.minor === 0)?.uuid },
                productName: { string: H100 },
                type: { string: 'gpu' },
              },
            },
          ],
        },
      ],
    });
    const [mig] = decodeStream(fs.readFileSync(files['mig'] ?? '', 'utf8'));
    expect(mig).toMatchObject({
      requests: [
        {
          name: 'mig',
          devices: [
            {
              name: 'gpu-1-mig-1g10gb-19-0',
              attributes: { uuid: { string: MIG_UUID }, profile: { string: '1g.10gb' } },
            },
          ],
        },
      ],
    });

    const [ctr] = preparedContainers(prepared);
    expect(ctr?.cdiError).toBeUndefined();
    const mounts = (ctr?.ociSpec as OciSpec | undefined)?.mounts ?? [];
    for (const request of ['gpu', 'mig']) {
      const destination = `${CONTAINER_DIR}/${request}/${DRIVER}-metadata.json`;
      const mount = mounts.find((m) => m.destination === destination);
      expect(mount, destination).toBeDefined();
      expect(mount?.source).toBe(files[request]);
      expect(mount?.options).toContain('ro');
      expect(mounts.filter((m) => m.destination === destination)).toHaveLength(1);
    }
  });

  it('deleting the pod unprepares the claim: the files go, and our entries with them', async () => {
    expect(prepared.event, JSON.stringify(prepared)).toBe('prepared');
    const metaDir = path.join(node.pluginsDir, DRIVER, 'dra-device-metadata', claimUid);
    expect(fs.existsSync(metaDir)).toBe(true);
    await core.deleteNamespacedPod({ namespace: NS, name: 'trainer', gracePeriodSeconds: 0 });
    await node.waitForEvent((e) => e['pod'] === `${NS}/trainer` && e.event === 'unprepared', 60_000);
    expect(fs.existsSync(metaDir)).toBe(false);
    await driver.claimStatus?.idle();
    // The generated claim is deleted with its pod, or deallocated; either way no entry of ours stays.
    await eventually('entries gone', async () => {
      try {
        const claim = await resource.readNamespacedResourceClaim({ namespace: NS, name: claimName });
        return (claim.status?.devices ?? []).some((d) => d.driver === DRIVER) ? undefined : 'kept none';
      } catch (err) {
        return (err as { code?: number }).code === 404 ? 'claim gone' : undefined;
      }
    });
    expect(driver.claimStatus?.disabledReason).toBeUndefined();
  });
});
