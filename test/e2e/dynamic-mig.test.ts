// Dynamic MIG on the real peers: the driver process runs with --mig-partitioning=dynamic on a
// simulated node with an H100 80GB and an A100 40GB, both in MIG mode with no MIG devices. It
// publishes every (profile, placement) with counters; the real scheduler picks slots that do not
// overlap, the kubelet's DRA manager prepares them through dra.sock, and the fake NVML (a second
// process, as the kernel is on a real node) holds the MIG devices the driver made.
//
// DRAPartitionableDevices, and DRADeviceTaints for the XID taint, are alpha in 1.34 and 1.35 and
// on by default from 1.36; draFeatures turns them on where they are off, so the same test runs on
// every minor (GPU_DRA_K8S_VERSION, `npm run test:matrix`).
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, type V1Pod } from '@kubernetes/client-node';
import { readYamlObjects } from '../support/yamlObjects.js';
import { beforeAll, describe, expect, it } from 'vitest';

import { discoverInventory } from '../../src/nvml/discover.js';
import type { MigDevice } from '../../src/nvml/types.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import { draFeatures } from './support/k8sVersion.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { eventually } from './support/wait.js';
import {
  createTypedDeviceClasses,
  createNamespace,
  createPodWithClaims,
  type PodClaim,
} from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const MIG_CLASS = `mig.${DRIVER}`;
const NODE = 'node-a';
const NS = 'dynamic-mig';
const H100 = 'NVIDIA H100 80GB HBM3';
const repo = path.resolve(import.meta.dirname, '../..');

const profileIs = (profile: string): string => `device.attributes["${DRIVER}"].profile == "${profile}"`;

/** A claim template of one request per entry: `[request, profile, count]`. */
function migTemplate(
  requests: readonly (readonly [string, string, number?])[],
  sameGpu = false,
): PodClaim['template'] {
  return {
    spec: {
      devices: {
        requests: requests.map(([name, profile, count]) => ({
          name,
          exactly: {
            deviceClassName: MIG_CLASS,
            selectors: [{ cel: { expression: profileIs(profile) } }],
            ...(count === undefined ? {} : { count }),
          },
        })),
        ...(sameGpu ? { constraints: [{ matchAttribute: `${DRIVER}/parentUUID` }] } : {}),
      },
    },
  };
}

describe('dynamic MIG: slots published with counters, MIG devices made at prepare', () => {
  const fx = useCluster(draFeatures(['DRAPartitionableDevices', 'DRADeviceTaints']));
  let node: NodeHarness;
  let sim: SimulatedNode;
  let eventsFile: string;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const drivers = driverProcesses(fx);

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS, mig: MIG_CLASS });
    await createNamespace(core, NS);
    sim = await createSimulatedNode('mig-dynamic', fx.tempDir('gdra-e2e-dmig-'), { libPath: fakeNvmlLib() });
    // This process reads the fake too (what exists now), as nvidia-smi would beside the driver.
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    eventsFile = path.join(fx.tempDir('gdra-e2e-dmig-events-'), 'nvml-events');
    fs.writeFileSync(eventsFile, '');
    node = await fx.startNode(NODE);
  });

  function startDriver(env: NodeJS.ProcessEnv = {}): Promise<DriverProcess> {
    return drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      args: ['--mig-partitioning=dynamic'],
      env: { FAKE_NVML_EVENTS: eventsFile, ...env },
    });
  }

  /** The MIG devices that exist now, per GPU product, as NVML reports them. */
  function liveMig(): Map<string, MigDevice[]> {
    const inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: sim.hostPaths });
    return new Map(inventory.gpus.map((g) => [g.productName, [...g.migDevices]]));
  }
  const placements = (devices: readonly MigDevice[] | undefined): string[] =>
    (devices ?? []).map((d) => `${d.profile}@${String(d.placement.start)}`).sort();

  const preparedEvent = (pod: string): Promise<KubeletEvent> =>
    node.waitForEvent((e) => e['pod'] === `${NS}/${pod}` && e.event === 'prepared', 90_000);
  /** The GPU_DRA_DEVICE_* values (device UUIDs) the pod's container got. */
  function injectedUuids(prepared: KubeletEvent): string[] {
    const spec = preparedContainers(prepared)[0]?.ociSpec as { process?: { env?: string[] } } | undefined;
    return (spec?.process?.env ?? [])
      .filter((e) => e.startsWith('GPU_DRA_DEVICE_'))
      .map((e) => e.split('=')[1] ?? '');
  }
  async function unschedulable(pod: string): Promise<string> {
    return eventually(
      `${pod} reported unschedulable`,
      async () => {
        const p: V1Pod = await core.readNamespacedPod({ namespace: NS, name: pod });
        const cond = p.status?.conditions?.find((c) => c.type === 'PodScheduled');
        return cond?.status === 'False' && cond.reason === 'Unschedulable' ? (cond.message ?? '') : undefined;
      },
      60_000,
    );
  }
  async function deletePods(...pods: string[]): Promise<void> {
    for (const name of pods) await core.deleteNamespacedPod({ namespace: NS, name, gracePeriodSeconds: 0 });
    for (const name of pods)
      await node.waitForEvent((e) => e['pod'] === `${NS}/${name}` && e.event === 'unprepared', 60_000);
  }

  it('publishes every slot of both GPUs with counters, and the apiserver keeps them', async () => {
    await startDriver();
    const slices = (
      await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}` })
    ).items;
    const devices = slices.flatMap((s) => s.spec.devices ?? []);
    const counterSets = slices.flatMap((s) => s.spec.sharedCounters ?? []);
    // H100: 7 + 7 + 4 + 3 + 2 + 1 + 1 slots; A100 40GB: its profiles' placements; plus both GPUs.
    expect(devices.filter((d) => d.name.startsWith('gpu-0-mig-'))).toHaveLength(25);
    expect(devices.map((d) => d.name)).toEqual(
      expect.arrayContaining(['gpu-0', 'gpu-1', 'gpu-1-mig-3g20gb-9-4']),
    );
    expect(counterSets.map((c) => c.name).sort()).toEqual(['gpu-0-counter-set', 'gpu-1-counter-set']);
    const slot = devices.find((d) => d.name === 'gpu-0-mig-2g20gb-14-2');
    expect(slot?.consumesCounters?.[0]?.counters).toMatchObject({
      'memory-slice-2': { value: '1' },
      'memory-slice-3': { value: '1' },
    });
    expect(liveMig().get(H100)).toEqual([]);
  });

  it('three 2g.20gb claims get three non-overlapping MIG devices on the H100; a fourth waits', async () => {
    for (const pod of ['small-1', 'small-2', 'small-3']) {
      await createPodWithClaims(
        { resource, core },
        { namespace: NS, pod, claims: [{ name: 'mig', template: migTemplate([['mig', '2g.20gb']]) }] },
      );
    }
    const uuids: string[] = [];
    for (const pod of ['small-1', 'small-2', 'small-3'])
      uuids.push(...injectedUuids(await preparedEvent(pod)));
    const made = liveMig().get(H100) ?? [];
    expect(placements(made)).toEqual(['2g.20gb@0', '2g.20gb@2', '2g.20gb@4']);
    expect([...uuids].sort()).toEqual(made.map((d) => d.uuid).sort());

    // An XID in small-1's MIG device (scoped to its GPU instance) taints that device only.
    const first = made.find((d) => d.uuid === uuids[0]);
    const firstName = `gpu-0-mig-2g20gb-14-${String(first?.placement.start)}`;
    fs.appendFileSync(eventsFile, `0 8 48 ${String(first?.gpuInstanceId)} 0\n`);
    const tainted = await eventually(
      'the XID taint on the instance',
      async () => {
        const slices = (
          await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}` })
        ).items;
        const names = slices
          .flatMap((sl) => sl.spec.devices ?? [])
          .filter((d) => (d.taints ?? []).some((t) => t.key === `${DRIVER}/xid` && t.value === '48'))
          .map((d) => d.name);
        return names.length > 0 ? names : undefined;
      },
      30_000,
    );
    expect(tainted).toEqual([firstName]);

    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'small-4',
        claims: [{ name: 'mig', template: migTemplate([['mig', '2g.20gb']]) }],
      },
    );
    expect(await unschedulable('small-4')).toMatch(/cannot allocate all claims/);
    expect(liveMig().get(H100)).toHaveLength(3);

    // Freeing one lets the fourth in, in the slot just freed.
    await deletePods('small-2');
    const fourth = injectedUuids(await preparedEvent('small-4'));
    const after = liveMig().get(H100) ?? [];
    expect(placements(after)).toEqual(['2g.20gb@0', '2g.20gb@2', '2g.20gb@4']);
    expect(after.map((d) => d.uuid)).toEqual(expect.arrayContaining(fourth));
    expect(after.map((d) => d.uuid)).not.toEqual(expect.arrayContaining(uuids));
  });

  it('1g.5gb ×2 + 2g.10gb + 3g.20gb on one GPU (matchAttribute parentUUID) fill the A100 40GB', async () => {
    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'mixed',
        claims: [
          {
            name: 'migs',
            template: migTemplate(
              [
                ['small', '1g.5gb', 2],
                ['medium', '2g.10gb'],
                ['large', '3g.20gb'],
              ],
              true,
            ),
          },
        ],
      },
    );
    const uuids = injectedUuids(await preparedEvent('mixed'));
    const a100 = [...liveMig().entries()].find(([product]) => product.includes('A100'))?.[1] ?? [];
    expect(a100.map((d) => d.profile).sort()).toEqual(['1g.5gb', '1g.5gb', '2g.10gb', '3g.20gb']);
    expect(uuids.sort()).toEqual(a100.map((d) => d.uuid).sort());
    // Memory slices never overlap.
    const taken = a100.flatMap((d) =>
      Array.from({ length: d.placement.size }, (_, i) => d.placement.start + i),
    );
    expect(new Set(taken).size).toBe(taken.length);
  });

  it('a whole-GPU claim and MIG claims on the same GPU exclude each other', async () => {
    const wholeH100: PodClaim = {
      name: 'gpu',
      template: {
        spec: {
          devices: {
            requests: [
              {
                name: 'gpu',
                exactly: {
                  deviceClassName: GPU_CLASS,
                  selectors: [
                    { cel: { expression: `device.attributes["${DRIVER}"].productName == "${H100}"` } },
                  ],
                },
              },
            ],
          },
        },
      },
    };
    await createPodWithClaims({ resource, core }, { namespace: NS, pod: 'whole', claims: [wholeH100] });
    expect(await unschedulable('whole')).toMatch(/cannot allocate all claims/);
    await deletePods('small-1', 'small-3', 'small-4');
    // With MIG mode on, the whole GPU is the MIG device spanning it.
    const whole = injectedUuids(await preparedEvent('whole'));
    const spanning = liveMig().get(H100) ?? [];
    expect(placements(spanning)).toEqual(['7g.80gb@0']);
    expect(whole).toEqual([spanning[0]?.uuid]);
    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'after-whole',
        claims: [{ name: 'mig', template: migTemplate([['mig', '1g.20gb']]) }],
      },
    );
    expect(await unschedulable('after-whole')).toMatch(/cannot allocate all claims/);
    await deletePods('whole');
    await preparedEvent('after-whole');
    expect(placements(liveMig().get(H100))).toHaveLength(1);
    await deletePods('after-whole');
  });

  it('SIGKILL between the NVML create and the checkpoint write: the restart destroys it, the retry succeeds', async () => {
    const old = drivers.last() as DriverProcess;
    old.child.kill('SIGTERM');
    await old.exited;
    const dying = await startDriver({ GPU_DRA_FAILPOINTS: 'mig-created' });
    await createPodWithClaims(
      { resource, core },
      { namespace: NS, pod: 'crash', claims: [{ name: 'mig', template: migTemplate([['mig', '3g.40gb']]) }] },
    );
    expect(await dying.exited).toMatchObject({ signal: 'SIGKILL' });
    // The device was made, and no checkpoint entry says which it is.
    expect(placements(liveMig().get(H100))).toHaveLength(1);
    const checkpoint = JSON.parse(
      fs.readFileSync(path.join(node.pluginsDir, DRIVER, 'checkpoint.json'), 'utf8'),
    ) as { claims: Record<string, { state: string }> };
    // The `mixed` pod's claim, and this one's intent.
    expect(
      Object.values(checkpoint.claims)
        .map((c) => c.state)
        .sort(),
    ).toEqual(['PrepareCompleted', 'PrepareStarted']);

    const restarted = await startDriver();
    const uuids = injectedUuids(await preparedEvent('crash'));
    const made = liveMig().get(H100) ?? [];
    expect(made).toHaveLength(1);
    expect(uuids).toEqual([made[0]?.uuid]);
    expect(restarted.stderr()).toMatch(/rolled back an unfinished prepare/);
    await deletePods('crash', 'mixed');
    expect(liveMig().get(H100)).toEqual([]);
    expect([...liveMig().values()].flat()).toEqual([]);
  });

  it('examples/claims/mig-dynamic.yaml runs as written', async () => {
    const docs = readYamlObjects<{ kind: string; metadata: { name: string } }>(
      path.join(repo, 'examples/claims/mig-dynamic.yaml'),
    );
    for (const doc of docs) {
      if (doc.kind === 'ResourceClaimTemplate')
        await resource.createNamespacedResourceClaimTemplate({ namespace: NS, body: doc as never });
      else await core.createNamespacedPod({ namespace: NS, body: doc });
    }
    const uuids = injectedUuids(await preparedEvent('mig-dynamic'));
    expect(placements(liveMig().get(H100))).toEqual([expect.stringMatching(/^3g\.40gb@[04]$/)]);
    expect(uuids).toEqual(
      liveMig()
        .get(H100)
        ?.map((d) => d.uuid),
    );
    await deletePods('mig-dynamic');
    expect(liveMig().get(H100)).toEqual([]);
  });
});
