// The ResourceSlice publisher against a real kube-apiserver and kube-scheduler: the apiserver's
// validation accepts every slice we build, the publisher keeps the pool equal to the model
// (stale slices removed, outside deletes/edits/wipes repaired, no writes when nothing changed),
// runs with exactly PUBLISHER_RBAC_RULES, and the real scheduler allocates claims whose CEL
// (NVIDIA-style, driver gpu.nvidia.com) selects our devices by productName, memory, driverVersion
// and MIG profile.
import {
  CoreV1Api,
  ResourceV1Api,
  type ResourceV1ResourceClaim,
  type V1ResourceSlice,
} from '@kubernetes/client-node';
import { kubeClientFromKubeConfig } from '../../src/kube/kubeconfig.js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { NodeInventory } from '../../src/nvml/types.js';
import { inventoryFixture, type InventoryProfile } from '../support/inventoryFixture.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import { ResourceSlicePublisher } from '../../src/resourceslice/publisher.js';
import { useCluster } from './support/fixture.js';
import { peersLog } from './support/peers.js';
import { eventually } from './support/wait.js';
import { grantDriverRbac } from './support/rbac.js';
import { createTypedDeviceClasses, createNamespace } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const NVIDIA_DRIVER = 'gpu.nvidia.com';

/** The only place this file gets inventories from (switch to fake-NVML discovery here). */
/** client-node's models call an attribute's `int` field `_int`; the wire (and our model) say `int`. */
function asWire(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value), (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || !('_int' in v)) return v;
    const { _int: int, ...rest } = v as Record<string, unknown>;
    return { ...rest, int };
  });
}

function inventoryOf(profile: InventoryProfile): NodeInventory {
  return inventoryFixture(profile);
}

describe('ResourceSlice publisher against a real apiserver and scheduler', () => {
  const fx = useCluster();
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const publishers: ResourceSlicePublisher[] = [];

  /** A publisher running as the driver's identity, with only PUBLISHER_RBAC_RULES granted. */
  function publisher(nodeName: string, driverName = DRIVER): ResourceSlicePublisher {
    const p = new ResourceSlicePublisher({
      nodeName,
      driverName,
      kubeConfig: kubeClientFromKubeConfig(fx.cluster.kubeConfigFor(fx.cluster.driverToken)),
      debounceMs: 50,
      backoff: { initialDelayMs: 100, maxDelayMs: 2000 },
    });
    publishers.push(p);
    return p;
  }

  async function slicesOf(nodeName: string, driverName = DRIVER): Promise<V1ResourceSlice[]> {
    const list = await resource.listResourceSlice({
      fieldSelector: `spec.nodeName=${nodeName},spec.driver=${driverName}`,
    });
    return list.items.sort((a, b) => ((a.metadata?.name ?? '') < (b.metadata?.name ?? '') ? -1 : 1));
  }

  async function createNode(name: string): Promise<void> {
    await core.createNode({ body: { metadata: { name } } });
  }

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(fx.cluster, { readClaims: false });
  });

  afterEach(async () => {
    await Promise.all(publishers.splice(0).map((p) => p.stop()));
  });

  it('gets every slice of a 224-device, an 8-GPU and a MIG inventory accepted by the apiserver', async () => {
    await createNode('node-b');
    const pub = publisher('node-b');
    pub.start(inventoryOf('h100-mig-224'));
    await pub.whenReady();
    let slices = await slicesOf('node-b');
    expect(slices.map((s) => s.spec.devices?.length)).toEqual([128, 96]);
    const node = await core.readNode({ name: 'node-b' });
    for (const s of slices) {
      expect(s.spec.pool).toEqual({ name: 'node-b', generation: 1, resourceSliceCount: 2 });
      expect(s.metadata?.ownerReferences?.[0]).toMatchObject({
        kind: 'Node',
        name: 'node-b',
        uid: node.metadata?.uid,
      });
    }
    // What the apiserver stored is exactly the model: nothing dropped, quantities canonical.
    expect(pub.counters.droppedFields).toBe(0);
    const model = buildSlices(inventoryOf('h100-mig-224'), { nodeName: 'node-b' }).slices;
    expect(asWire(slices.map((s) => s.spec.devices))).toEqual(model.map((m) => m.spec.devices));

    for (const profile of ['h100-8x', 'a100-mig', 'h100'] as const) {
      await pub.update(inventoryOf(profile));
      slices = await slicesOf('node-b');
      const want = buildSlices(inventoryOf(profile), { nodeName: 'node-b' }).slices;
      expect(asWire(slices.map((s) => s.spec.devices))).toEqual(want.map((m) => m.spec.devices));
      expect(slices.every((s) => s.spec.pool.resourceSliceCount === want.length)).toBe(true);
    }
    expect(pub.counters.droppedFields).toBe(0);
    expect(new Set(slices.map((s) => s.spec.pool.generation))).toEqual(new Set([4]));
  });

  it('writes nothing when nothing changed, also after a restart', async () => {
    await createNode('node-c');
    const first = publisher('node-c');
    first.start(inventoryOf('h100-mig-224'));
    await first.whenReady();
    const before = (await slicesOf('node-c')).map((s) => s.metadata?.resourceVersion);
    const writes = { ...first.counters };
    await first.sync();
    await first.update(inventoryOf('h100-mig-224'));
    await new Promise((r) => setTimeout(r, 1000));
    expect(first.counters).toMatchObject({
      creates: writes.creates,
      updates: writes.updates,
      deletes: writes.deletes,
    });
    await first.stop();

    const second = publisher('node-c');
    second.start(inventoryOf('h100-mig-224'));
    await second.whenReady();
    await second.sync();
    expect(second.counters).toMatchObject({ creates: 0, updates: 0, deletes: 0 });
    expect((await slicesOf('node-c')).map((s) => s.metadata?.resourceVersion)).toEqual(before);
  });

  it('removes stale slices after a restart with fewer devices', async () => {
    await createNode('node-d');
    const old = publisher('node-d');
    old.start(inventoryOf('h100-mig-224'));
    await old.whenReady();
    await old.stop();
    expect(await slicesOf('node-d')).toHaveLength(2);

    const restarted = publisher('node-d');
    restarted.start(inventoryOf('h100-8x'));
    await restarted.whenReady();
    const slices = await slicesOf('node-d');
    expect(slices).toHaveLength(1);
    expect(slices[0]?.spec.devices?.map((d) => d.name)).toEqual(
      Array.from({ length: 8 }, (_, i) => `gpu-${i}`),
    );
    expect(slices[0]?.spec.pool).toEqual({ name: 'node-d', generation: 2, resourceSliceCount: 1 });
    expect(restarted.counters).toMatchObject({ deletes: 1, updates: 1, creates: 0 });
  });

  it('repairs outside deletes and edits, re-creates after a node-wide wipe, and cleans up on exit', async () => {
    await createNode('node-e');
    const pub = publisher('node-e');
    pub.start(inventoryOf('h100-mig-224'));
    await pub.whenReady();
    const [a, b] = await slicesOf('node-e');
    const nameA = a?.metadata?.name ?? '';
    const nameB = b?.metadata?.name ?? '';

    await resource.deleteResourceSlice({ name: nameB });
    const t0 = Date.now();
    await eventually(
      'deleted slice re-created',
      async () => ((await slicesOf('node-e')).length === 2 ? true : undefined),
      10_000,
      100,
    );
    peersLog(`outside delete repaired in ${String(Date.now() - t0)}ms`);

    const current = await resource.readResourceSlice({ name: nameA });
    current.spec.devices = current.spec.devices?.slice(0, 3);
    await resource.replaceResourceSlice({ name: nameA, body: current });
    await eventually(
      'edited slice repaired',
      async () =>
        (await resource.readResourceSlice({ name: nameA })).spec.devices?.length === 128 ? true : undefined,
      10_000,
      100,
    );

    // The kubelet's wipe: DeleteCollection with spec.nodeName (all drivers).
    await resource.deleteCollectionResourceSlice({ fieldSelector: 'spec.nodeName=node-e' });
    const t1 = Date.now();
    await eventually(
      'wiped slices re-created',
      async () => ((await slicesOf('node-e')).length === 2 ? true : undefined),
      10_000,
      100,
    );
    peersLog(`node-wide wipe repaired in ${String(Date.now() - t1)}ms`);
    const generations = new Set((await slicesOf('node-e')).map((s) => s.spec.pool.generation));
    expect(generations.size).toBe(1);
    expect([...generations][0]).toBeGreaterThanOrEqual(4);

    expect(await pub.deleteAll()).toBe(2);
    expect(await slicesOf('node-e')).toHaveLength(0);
  });

  it('lets the real scheduler allocate devices selected with NVIDIA-style CEL', async () => {
    const nodeName = 'node-a';
    const ns = 'rs-sched';
    await fx.startNode(nodeName); // registers a Ready node; wipes its slices first
    const pub = publisher(nodeName, NVIDIA_DRIVER);
    pub.start(inventoryOf('a100-mig'));
    await pub.whenReady();

    // NVIDIA's DeviceClasses, verbatim.
    await createTypedDeviceClasses(resource, 'gpu.nvidia.com', {
      gpu: 'gpu.nvidia.com',
      mig: 'mig.nvidia.com',
    });
    await createNamespace(core, ns);

    const claims: Record<string, { deviceClassName: string; cel: string }> = {
      'big-a100': {
        deviceClassName: 'gpu.nvidia.com',
        cel:
          "device.attributes['gpu.nvidia.com'].productName.matches('^NVIDIA A100') && " +
          "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0 && " +
          "device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('580.159.4')) >= 0 && " +
          "device.attributes['gpu.nvidia.com'].cudaComputeCapability.isGreaterThan(semver('7.9.0'))",
      },
      'mig-3g': {
        deviceClassName: 'mig.nvidia.com',
        cel:
          "device.attributes['gpu.nvidia.com'].profile == '3g.20gb' && " +
          "device.capacity['gpu.nvidia.com'].multiprocessors.compareTo(quantity('42')) == 0",
      },
    };
    for (const [name, { deviceClassName, cel }] of Object.entries(claims)) {
      await resource.createNamespacedResourceClaim({
        namespace: ns,
        body: {
          metadata: { name },
          spec: {
            devices: {
              requests: [
                { name: 'dev', exactly: { deviceClassName, selectors: [{ cel: { expression: cel } }] } },
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
              { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'dev' }] } },
            ],
            resourceClaims: [{ name: 'dev', resourceClaimName: name }],
          },
        },
      });
    }

    const allocated = async (name: string): Promise<string | undefined> => {
      const rc: ResourceV1ResourceClaim = await resource.readNamespacedResourceClaim({ namespace: ns, name });
      const r = rc.status?.allocation?.devices?.results?.[0];
      return r ? `${r.driver}/${r.pool}/${r.device}` : undefined;
    };
    /** Waits for the claim's allocation; on timeout the error carries the pod's scheduling verdict. */
    const allocation = async (name: string): Promise<string> => {
      try {
        return await eventually(`${name} allocated`, () => allocated(name), 60_000);
      } catch (err) {
        const p = await core.readNamespacedPod({ namespace: ns, name: `pod-${name}` });
        const cond = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
        const slices = await slicesOf(nodeName, NVIDIA_DRIVER);
        throw new Error(
          `${(err as Error).message}; PodScheduled=${JSON.stringify(cond)}; slices=${String(slices.length)}`,
          {
            cause: err,
          },
        );
      }
    };
    expect(await allocation('big-a100')).toBe(`${NVIDIA_DRIVER}/${nodeName}/gpu-1`);
    expect(await allocation('mig-3g')).toBe(`${NVIDIA_DRIVER}/${nodeName}/gpu-0-mig-3g20gb-9-4`);
    const bound = await eventually('pod bound', async () => {
      const p = await core.readNamespacedPod({ namespace: ns, name: 'pod-mig-3g' });
      return p.spec?.nodeName || undefined;
    });
    expect(bound).toBe(nodeName);
  });
});
