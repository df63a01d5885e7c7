// Tests the kubelet-dra harness itself with a tiny fake DRA plugin (no driver code): registration,
// prepare, CDI injection into the OCI spec, Running status, deletion, unprepare, deregistration.
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';

import { cdiEnvName, FakePlugin, writeCdiSpec } from './support/fakePlugin.js';
import { useCluster } from './support/fixture.js';
import { preparedContainers } from './support/node.js';
import { eventually } from './support/wait.js';
import { createNamespace, createDriverDeviceClass } from './support/workloads.js';

const DRIVER = 'fake.dra.dev';
const NODE = 'node-b';
const NS = 'harness';
const CDI_KIND = `${DRIVER}/gpu`;

describe('kubelet-dra harness', () => {
  const fx = useCluster();

  it('registers a plugin, prepares, injects CDI devices, runs, deletes and unprepares a pod', async () => {
    const c = fx.cluster;
    const core = c.kubeConfig.makeApiClient(CoreV1Api);
    const resource = c.kubeConfig.makeApiClient(ResourceV1Api);

    const n = await fx.startNode(NODE);
    writeCdiSpec(n.cdiDir, CDI_KIND, ['dev-0', 'dev-1']);
    const plugin = fx.track(
      new FakePlugin({
        driver: DRIVER,
        registryDir: n.registryDir,
        pluginsDir: n.pluginsDir,
        kubeConfig: c.kubeConfig,
        cdiKind: CDI_KIND,
      }),
    );
    await plugin.start();
    const registered = await n.waitForEvent(
      (e) => e.event === 'registered' && e['driver'] === DRIVER,
      30_000,
    );
    expect(registered['endpoint']).toBe(plugin.draSocket);
    await eventually(
      'registration status',
      () => Promise.resolve(plugin.registered ? true : undefined),
      10_000,
    );

    await createDriverDeviceClass(resource, 'fake', DRIVER);
    await resource.createResourceSlice({
      body: {
        metadata: { name: `${NODE}-fake` },
        spec: {
          driver: DRIVER,
          nodeName: NODE,
          pool: { name: NODE, generation: 1, resourceSliceCount: 1 },
          devices: [{ name: 'dev-0' }, { name: 'dev-1' }],
        },
      },
    });
    await createNamespace(core, NS);
    await resource.createNamespacedResourceClaimTemplate({
      namespace: NS,
      body: {
        metadata: { name: 'two' },
        spec: {
          spec: { devices: { requests: [{ name: 'r', exactly: { deviceClassName: 'fake', count: 2 } }] } },
        },
      },
    });
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'pod' },
        spec: {
          containers: [
            {
              name: 'with',
              image: 'example/image',
              command: ['/app'],
              resources: { claims: [{ name: 'c' }] },
            },
            { name: 'without', image: 'example/image' },
          ],
          resourceClaims: [{ name: 'c', resourceClaimTemplateName: 'two' }],
        },
      },
    });

    const prepared = await n.waitForEvent((e) => e.event === 'prepared' && e['pod'] === `${NS}/pod`, 60_000);
    const containers = preparedContainers(prepared);
    const withClaim = containers.find((ctr) => ctr.name === 'with');
    expect(withClaim?.cdiDevices.slice().sort()).toEqual([`${CDI_KIND}=dev-0`, `${CDI_KIND}=dev-1`]);
    const env = (withClaim?.ociSpec?.['process'] as { env?: string[] } | undefined)?.env ?? [];
    expect(env).toEqual(
      expect.arrayContaining([`${cdiEnvName('dev-0')}=1`, `${cdiEnvName('dev-1')}=1`, 'FAKE_CDI_SPEC=1']),
    );
    const without = containers.find((ctr) => ctr.name === 'without');
    expect(without?.cdiDevices).toEqual([]);
    expect((without?.ociSpec?.['process'] as { env?: string[] } | undefined)?.env).not.toContain(
      'FAKE_CDI_SPEC=1',
    );
    expect(plugin.prepared.map((ref) => ref.namespace)).toEqual([NS]);

    await n.waitForEvent((e) => e.event === 'running' && e['pod'] === `${NS}/pod`, 30_000);
    const running = await core.readNamespacedPod({ namespace: NS, name: 'pod' });
    expect(running.status?.phase).toBe('Running');
    expect(running.status?.containerStatuses?.map((s) => s.ready)).toEqual([true, true]);
    const claimName = running.status?.resourceClaimStatuses?.[0]?.resourceClaimName ?? '';

    // Graceful delete: the harness unprepares, then deletes with grace period 0.
    await core.deleteNamespacedPod({ namespace: NS, name: 'pod' });
    await n.waitForEvent((e) => e.event === 'unprepared' && e['pod'] === `${NS}/pod`, 30_000);
    expect(plugin.unprepared.map((ref) => ref.name)).toEqual([claimName]);
    await n.waitForEvent((e) => e.event === 'podGone' && e['pod'] === `${NS}/pod`, 30_000);
    // The resourceclaim-controller deletes the generated claim once the pod is gone.
    await eventually(
      'generated claim deleted',
      async () => {
        const list = await resource.listNamespacedResourceClaim({ namespace: NS });
        return list.items.length === 0 ? true : undefined;
      },
      30_000,
    );

    // Removing the registration socket deregisters the driver.
    await plugin.stop();
    await n.waitForEvent((e) => e.event === 'deregistered' && e['driver'] === DRIVER, 30_000);
  });
});
