// Dynamic MIG slices (KEP-4815 partitionable devices) on the real peers, in both layouts: on
// Kubernetes 1.37 (counter sets in a slice of their own; DRAPartitionableDevices is beta, on by
// default, from 1.36) and on 1.34 (counter sets beside their devices; the gate is alpha there and
// turned on). The publisher picks the layout from /version itself; the apiserver stores every
// slice as sent (nothing dropped), and the real scheduler honours the counters: seven 1g.10gb
// partitions of one H100 fit side by side, after which neither the whole GPU nor a 7g.80gb does.
// On 1.34 with the gate off the apiserver drops the counters, and the publisher says so, naming
// the gate.
//
// Each suite names its Kubernetes version, so the file runs once, in the main run; the run for
// another version (GPU_DRA_K8S_VERSION) skips it rather than repeat it.
import { CoreV1Api, ResourceV1Api, type ResourceV1ResourceClaim } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import type { ResourceSlice } from '../../src/api/resource.js';
import { kubeClientFromKubeConfig } from '../../src/kube/kubeconfig.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import type { CounterLayout } from '../../src/resourceslice/partitions.js';
import { ResourceSlicePublisher } from '../../src/resourceslice/publisher.js';
import { toWire } from '../../src/resourceslice/sliceWire.js';
import { capturingLogger } from '../support/capturingLogger.js';
import { h100Gpu, inventoryFixture, withMig } from '../support/inventoryFixture.js';
import { useCluster, type E2eOptions } from './support/fixture.js';
import { DEFAULT_K8S_VERSION } from './support/peers.js';
import { grantDriverRbac } from './support/rbac.js';
import { eventually } from './support/wait.js';
import { createTypedDeviceClasses, createNamespace } from './support/workloads.js';

const DRIVER = 'gpu.nvidia.com';
const ANOTHER_VERSION_RUN = process.env['GPU_DRA_K8S_VERSION'] !== undefined;

function dynamicMigSuite(
  title: string,
  clusterOpts: E2eOptions,
  layout: CounterLayout,
  slices8x: number,
): void {
  describe.skipIf(ANOTHER_VERSION_RUN)(title, () => {
    const fx = useCluster(clusterOpts);
    let core: CoreV1Api;
    let resource: ResourceV1Api;

    beforeAll(async () => {
      core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
      resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
      await grantDriverRbac(fx.cluster, { readClaims: false });
    });

    /** Runs as the driver's identity, with only PUBLISHER_RBAC_RULES granted (and /version, open to all). */
    function publisher(nodeName: string): ResourceSlicePublisher {
      return fx.track(
        new ResourceSlicePublisher({
          nodeName,
          driverName: DRIVER,
          kubeConfig: kubeClientFromKubeConfig(fx.cluster.kubeConfigFor(fx.cluster.driverToken)),
          migPartitioning: 'dynamic',
          debounceMs: 50,
          backoff: { initialDelayMs: 100, maxDelayMs: 2000 },
        }),
      );
    }

    /** The stored slices as raw JSON (client-node's models may not know the counter fields). */
    async function storedSlices(nodeName: string): Promise<ResourceSlice[]> {
      const kube = kubeClientFromKubeConfig(fx.cluster.kubeConfig);
      const list = await kube.request<{ items: ResourceSlice[] }>(
        'GET',
        '/apis/resource.k8s.io/v1/resourceslices',
        {
          query: { fieldSelector: `spec.nodeName=${nodeName},spec.driver=${DRIVER}` },
        },
      );
      return list.items.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    }

    it(`publishes 8 dynamic H100s as ${String(slices8x)} slices, stored exactly as sent`, async () => {
      const nodeName = 'node-8x';
      await core.createNode({ body: { metadata: { name: nodeName } } });
      const inventory = inventoryFixture('h100-8x-mig-on');
      const pub = publisher(nodeName);
      pub.start(inventory);
      await pub.whenReady();
      const stored = await storedSlices(nodeName);
      const model = buildSlices(inventory, {
        nodeName,
        driverName: DRIVER,
        migPartitioning: 'dynamic',
        counterLayout: layout,
      });
      expect(model.devices).toHaveLength(208);
      expect(stored).toHaveLength(slices8x);
      const want = model.slices.map((s) => toWire(s, 'uid').spec);
      expect(stored.map((s) => s.spec.sharedCounters ?? null)).toEqual(
        want.map((s) => s.sharedCounters ?? null),
      );
      expect(stored.map((s) => s.spec.devices ?? null)).toEqual(want.map((s) => s.devices ?? null));
      expect(stored.every((s) => s.spec.pool.resourceSliceCount === slices8x)).toBe(true);
      expect(pub.counters.droppedFields).toBe(0);
    });

    it('lets the real scheduler co-allocate only partitions that fit', async () => {
      const nodeName = 'node-a'; // one of the nodes the cluster has kubelet tokens for
      const ns = 'dyn-mig';
      await fx.startNode(nodeName);
      const inventory: NodeInventory = { ...inventoryFixture('h100'), gpus: [withMig(h100Gpu(0), [])] };
      const pub = publisher(nodeName);
      pub.start(inventory);
      await pub.whenReady();
      // NVIDIA's DeviceClasses.
      await createTypedDeviceClasses(resource, DRIVER, { gpu: 'gpu.nvidia.com', mig: 'mig.nvidia.com' });
      await createNamespace(core, ns);

      async function claimWithPod(
        name: string,
        deviceClassName: string,
        count: number,
        cel?: string,
      ): Promise<void> {
        await resource.createNamespacedResourceClaim({
          namespace: ns,
          body: {
            metadata: { name },
            spec: {
              devices: {
                requests: [
                  {
                    name: 'dev',
                    exactly: {
                      deviceClassName,
                      allocationMode: 'ExactCount',
                      count,
                      ...(cel ? { selectors: [{ cel: { expression: cel } }] } : {}),
                    },
                  },
                ],
              },
            },
          },
        });
        await core.createNamespacedPod({
          namespace: ns,
          body: {
            metadata: { name: `pod-${name}` },
            spec: {
              containers: [
                {
                  name: 'ctr',
                  image: 'registry.k8s.io/pause:3.10',
                  resources: { claims: [{ name: 'dev' }] },
                },
              ],
              resourceClaims: [{ name: 'dev', resourceClaimName: name }],
            },
          },
        });
      }
      const devicesOf = async (name: string): Promise<string[] | undefined> => {
        const rc: ResourceV1ResourceClaim = await resource.readNamespacedResourceClaim({
          namespace: ns,
          name,
        });
        return rc.status?.allocation?.devices?.results?.map((r) => r.device).sort();
      };
      const unschedulable = (name: string): Promise<string> =>
        eventually(`pod-${name} unschedulable`, async () => {
          const p = await core.readNamespacedPod({ namespace: ns, name: `pod-${name}` });
          const c = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
          return c?.status === 'False' && c.reason === 'Unschedulable' ? (c.message ?? '') : undefined;
        });

      await claimWithPod('seven', 'mig.nvidia.com', 7, `device.attributes['${DRIVER}'].profile == '1g.10gb'`);
      const seven = await eventually('seven allocated', () => devicesOf('seven'));
      expect(seven).toEqual([0, 1, 2, 3, 4, 5, 6].map((s) => `gpu-0-mig-1g10gb-19-${s}`));

      await claimWithPod('whole', 'gpu.nvidia.com', 1);
      await claimWithPod('big', 'mig.nvidia.com', 1, `device.attributes['${DRIVER}'].profile == '7g.80gb'`);
      await unschedulable('whole');
      await unschedulable('big');
      expect(await devicesOf('whole')).toBeUndefined();
      expect(await devicesOf('big')).toBeUndefined();
    });
  });
}

dynamicMigSuite(
  'dynamic MIG slices on Kubernetes 1.37 (counter sets apart)',
  { version: DEFAULT_K8S_VERSION },
  'separate',
  5,
);
dynamicMigSuite(
  'dynamic MIG slices on Kubernetes 1.34 (counter sets beside their devices)',
  { version: 'v1.34.4', featureGates: 'DRAPartitionableDevices=true' },
  'combined',
  8,
);

describe.skipIf(ANOTHER_VERSION_RUN)(
  'dynamic MIG slices on Kubernetes 1.34 with DRAPartitionableDevices off',
  () => {
    const fx = useCluster({ version: 'v1.34.4' });

    it('reports the counters the apiserver dropped and names the gate', async () => {
      await grantDriverRbac(fx.cluster, { readClaims: false });
      const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
      await core.createNode({ body: { metadata: { name: 'node-b' } } });
      const { logger, lines } = capturingLogger('warn');
      const pub = fx.track(
        new ResourceSlicePublisher({
          nodeName: 'node-b',
          driverName: DRIVER,
          kubeConfig: kubeClientFromKubeConfig(fx.cluster.kubeConfigFor(fx.cluster.driverToken)),
          migPartitioning: 'dynamic',
          logger,
        }),
      );
      pub.start({ ...inventoryFixture('h100'), gpus: [withMig(h100Gpu(0), [])] });
      await pub.whenReady();
      expect(pub.counters.droppedFields).toBeGreaterThan(0);
      const warn = lines.find((l) => /dropped/.test(l.msg));
      expect(warn?.likelyFeatureGates).toEqual(['DRAPartitionableDevices']);
      expect(warn?.msg).toMatch(/without it --mig-partitioning=dynamic is unsafe/);
    });
  },
);
