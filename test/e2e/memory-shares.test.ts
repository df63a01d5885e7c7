// Shares of one GPU (DRA consumable capacity, KEP-5075) on the real peers: the driver runs with
// --consumable-shares=memory on a simulated 8×H100 node, the real scheduler allocates claims that
// each ask for part of a GPU's memory, the kubelet's DRA manager prepares them through dra.sock,
// and the CDI library resolves each share's own CDI device. Three claims of 20Gi fit one H100
// (81559Mi) and get distinct share IDs; a fourth of 30Gi does not fit beside them and goes to
// another GPU. Deleting the pods unprepares every share.
//
// The gate DRAConsumableCapacity is beta (on by default) from 1.36 and alpha in 1.34 and 1.35,
// where draFeatures turns it on, so the same test runs on every minor (GPU_DRA_K8S_VERSION).
// On 1.34 the fourth claim is skipped: the 1.34 scheduler checks a share's capacity against the
// slice's first device rather than the one it is placing it on (kubernetes/kubernetes#133705,
// fixed by #133706 for 1.35), so once gpu-0 is full no other GPU takes a share.
import fs from 'node:fs';
import path from 'node:path';
import {
  CoreV1Api,
  ResourceV1Api,
  type ResourceV1ResourceClaim,
  type V1DeviceRequestAllocationResult,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { shareSuffix } from '../../src/cdi/spec.js';
import type { NodePrepareResourcesResponse } from '../../src/kubelet/proto.js';
import { parseDriverConfig } from '../../src/node/config.js';
import { runDriver, type RunningDriver } from '../../src/node/run.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile } from '../../src/sim/fakeNvml.js';
import { fakeNvmlLib, simHostOptions } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import { draFeatures, k8sMinor } from './support/k8sVersion.js';
import { recordingLogger, type LogRecord } from './support/driverLog.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { grantDriverRbac } from './support/rbac.js';
import { eventually } from './support/wait.js';
import { createTypedDeviceClasses, createNamespace, createPodWithClaims } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const CLASS = `gpu.${DRIVER}`;
const NODE = 'node-a';
const NS = 'shares';
const GiB = 1024 ** 3;

interface OciSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string }[] };
}

interface Share {
  readonly pod: string;
  readonly podUid: string;
  readonly claimUid: string;
  readonly result: V1DeviceRequestAllocationResult;
  readonly prepared: KubeletEvent;
}

describe('shares of one GPU by memory (DRA consumable capacity)', () => {
  const fx = useCluster(draFeatures(['DRAConsumableCapacity']));
  let node: NodeHarness;
  let driver: RunningDriver;
  let inventory: NodeInventory | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const driverLog: LogRecord[] = [];
  const shares: Share[] = [];

  beforeAll(async () => {
    const c = fx.cluster;
    core = c.kubeConfig.makeApiClient(CoreV1Api);
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: true });
    await createTypedDeviceClasses(resource, DRIVER, { gpu: CLASS });
    await createNamespace(core, NS);

    const sim = await createSimulatedNode(await loadProfile('h100-8x'), fx.tempDir('gdra-e2e-shares-'), {
      libPath: fakeNvmlLib(),
    });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    node = await fx.startNode(NODE);
    const config = parseDriverConfig(
      {
        nodeName: NODE,
        kubeconfig: c.makeKubeconfig(c.driverToken, 'driver-shares'),
        ...node.driverDirOptions(),
        ...simHostOptions(sim),
        consumableShares: 'memory',
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
  });

  /** A pod with one claim asking for `memory` of a GPU; resolves once the node prepared it. */
  async function runShare(pod: string, memory: string): Promise<Share> {
    const created = await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod,
        claims: [
          {
            name: 'gpu',
            template: {
              spec: {
                devices: {
                  requests: [
                    { name: 'gpu', exactly: { deviceClassName: CLASS, capacity: { requests: { memory } } } },
                  ],
                },
              },
            },
          },
        ],
      },
    );
    const podUid = created.metadata?.uid ?? '';
    const prepared = await node
      .waitForEvent(
        (e) =>
          e['pod'] === `${NS}/${pod}` &&
          (e.event === 'prepared' ||
            (e.event === 'prepareFailed' && String(e['error']).includes('NodePrepareResources'))),
        60_000,
      )
      .catch(async (err: unknown) => {
        const p = await core.readNamespacedPod({ namespace: NS, name: pod });
        throw new Error(`${String(err)}\npod status: ${JSON.stringify(p.status)}`);
      });
    const claimName = await eventually('claim name', async () => {
      const p = await core.readNamespacedPod({ namespace: NS, name: pod });
      return p.status?.resourceClaimStatuses?.find((s) => s.name === 'gpu')?.resourceClaimName;
    });
    const claim: ResourceV1ResourceClaim = await resource.readNamespacedResourceClaim({
      namespace: NS,
      name: claimName,
    });
    const result = claim.status?.allocation?.devices?.results?.[0];
    if (!result) throw new Error(`claim ${claimName} has no allocation result`);
    return { pod, podUid, claimUid: claim.metadata?.uid ?? '', result, prepared };
  }

  /** What the driver answered the kubelet for a claim (the last such NodePrepareResources reply). */
  function replyFor(claimUid: string): NodePrepareResourcesResponse['claims'][string] | undefined {
    const replies = driverLog
      .filter((r) => r['method'] === 'NodePrepareResources' && r.msg === 'response')
      .map((r) => (r['response'] as NodePrepareResourcesResponse).claims[claimUid])
      .filter((c) => c !== undefined);
    return replies.at(-1);
  }

  it('publishes every H100 as shareable by memory, and the apiserver keeps the fields', async () => {
    const devices = await eventually('published devices', async () => {
      const list = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` });
      const all = list.items.flatMap((s) => s.spec.devices ?? []);
      return all.length === 8 ? all : undefined;
    });
    for (const d of devices) {
      expect(d.allowMultipleAllocations, d.name).toBe(true);
      expect(d.capacity?.['memory']).toEqual({
        value: '81559Mi',
        requestPolicy: { _default: '81559Mi', validRange: { min: '1Mi', max: '81559Mi', step: '1Mi' } },
      });
    }
  });

  /** What the kubelet, the CDI spec and the driver say about one prepared share. */
  function expectPreparedShare(s: Share, bytes: number): void {
    expect(s.prepared.event, JSON.stringify(s.prepared)).toBe('prepared');
    const shareId = s.result.shareID ?? '';
    const device = s.result.device;
    expect(s.result).toMatchObject({
      driver: DRIVER,
      pool: NODE,
      consumedCapacity: { memory: `${String(bytes / GiB)}Gi` },
    });
    expect(shareId).toMatch(/^[0-9a-f-]{36}$/);
    const cdiName = `${s.claimUid}-${device}${shareSuffix(shareId)}`;
    const [ctr] = preparedContainers(s.prepared);
    expect(ctr?.cdiError).toBeUndefined();
    expect(ctr?.cdiDevices).toEqual([`k8s.${DRIVER}/claim=${cdiName}`]);
    // The share's own CDI device carries its memory limit, named after the GPU.
    const oci = ctr?.ociSpec as OciSpec;
    const envName = `GPU_DRA_MEMORY_LIMIT_${device.toUpperCase().replaceAll('-', '_')}`;
    expect(oci.process?.env).toContain(`${envName}=${String(bytes)}`);
    expect(oci.linux?.devices?.map((d) => d.path)).toContain(`/dev/nvidia${device.replace('gpu-', '')}`);
    // The driver told the kubelet the share ID (v1 share_id) along with the CDI id.
    expect(replyFor(s.claimUid)).toEqual({
      error: '',
      devices: [
        {
          request_names: ['gpu'],
          pool_name: NODE,
          device_name: device,
          cdi_device_ids: [`k8s.${DRIVER}/claim=${cdiName}`],
          share_id: shareId,
        },
      ],
    });
    expect(fs.existsSync(path.join(node.cdiDir, `k8s.${DRIVER}-claim_${s.claimUid}.json`))).toBe(true);
  }

  it('three claims of 20Gi share one GPU, each with its own share ID and CDI device', async () => {
    for (const pod of ['share-1', 'share-2', 'share-3']) shares.push(await runShare(pod, '20Gi'));
    const gpu = shares[0]?.result.device;
    for (const s of shares) {
      expectPreparedShare(s, 20 * GiB);
      expect(s.result.device).toBe(gpu);
    }
    expect(new Set(shares.map((s) => s.result.shareID)).size).toBe(3);
    expect(driver.state.preparedClaimUids()).toEqual(shares.map((s) => s.claimUid).sort());
    // 3 × 20Gi of the H100's 81559Mi leaves 19.6Gi.
    expect(inventory?.gpus.find((g) => `gpu-${String(g.minor)}` === gpu)?.memoryBytes).toBe(85_520_809_984);
  });

  it('a fourth claim of 30Gi does not fit beside them and goes to another GPU', async (ctx) => {
    const ready = node.events.find((e) => e.event === 'ready');
    const version = typeof ready?.['kubeletVersion'] === 'string' ? ready['kubeletVersion'] : '';
    ctx.skip(
      k8sMinor(version) < 35,
      `${version}: the scheduler checks a share against the slice's first device (kubernetes/kubernetes#133705, fixed in 1.35)`,
    );
    expect(shares).toHaveLength(3);
    const big = await runShare('share-big', '30Gi');
    shares.push(big);
    expectPreparedShare(big, 30 * GiB);
    expect(big.result.device).not.toBe(shares[0]?.result.device);
    expect(driver.state.preparedClaimUids()).toEqual(shares.map((s) => s.claimUid).sort());
  });

  it('deleting the pods unprepares every share and removes its CDI spec', async () => {
    expect(shares.length).toBeGreaterThanOrEqual(3);
    for (const s of shares) await core.deleteNamespacedPod({ namespace: NS, name: s.pod });
    for (const s of shares)
      await node.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === s.podUid, 60_000);
    for (const s of shares)
      expect(fs.existsSync(path.join(node.cdiDir, `k8s.${DRIVER}-claim_${s.claimUid}.json`))).toBe(false);
    expect(driver.state.preparedClaimUids()).toEqual([]);
  });
});
