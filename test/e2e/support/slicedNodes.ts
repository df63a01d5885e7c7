// Nodes that carry the ResourceSlices our driver's model publishes for a fake NVML profile,
// without a driver or kubelet: for tests where allocation, the scheduler's job, is the subject.
import { CoreV1Api, ResourceV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { ResourceSlice } from '../../../src/api/resource.js';
import { discoverInventory } from '../../../src/nvml/discover.js';
import { buildSlices } from '../../../src/resourceslice/model.js';
import { toClientSlice } from '../../support/clientSlice.js';
import { withSimulatedNode } from '../../support/sim.js';

/** The slices a node with fake NVML `profile` publishes (pool and node named `placeholder`). */
export async function profileSlices(profile: string, driverName: string): Promise<ResourceSlice[]> {
  const inventory = await withSimulatedNode(profile, (node) =>
    discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }),
  );
  return buildSlices(inventory, { nodeName: 'placeholder', driverName }).slices as unknown as ResourceSlice[];
}

/** A Ready Node named `nodeName`, labelled for pinning, publishing `slices` as its pool. */
export async function addSlicedNode(
  kubeConfig: KubeConfig,
  nodeName: string,
  slices: readonly ResourceSlice[],
): Promise<void> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const resource = kubeConfig.makeApiClient(ResourceV1Api);
  await core.createNode({
    body: { metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName } } },
  });
  const now = new Date();
  // Read-modify-write: a status PUT carries the whole object, labels included.
  const node = await core.readNode({ name: nodeName });
  node.status = {
    capacity: { cpu: '64', memory: '512Gi', pods: '110' },
    allocatable: { cpu: '64', memory: '512Gi', pods: '110' },
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'KubeletReady',
        message: 'e2e',
        lastHeartbeatTime: now,
        lastTransitionTime: now,
      },
    ],
  };
  await core.replaceNodeStatus({ name: nodeName, body: node });
  for (const s of slices) {
    const slice: ResourceSlice = {
      ...s,
      metadata: { name: `${nodeName}-${s.metadata.name.split('-').pop() ?? '0'}` },
      spec: { ...s.spec, nodeName, pool: { ...s.spec.pool, name: nodeName } },
    };
    await resource.createResourceSlice({ body: toClientSlice(slice) });
  }
}
