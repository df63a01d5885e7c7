// The driver keeps its ResourceSlices true after start-up: the fake NVML's configuration is
// rewritten under a running driver (it is re-read at every nvmlInit, as a real node's state
// would be read afresh), and the real apiserver must come to hold the new device set: a MIG
// device destroyed by an admin disappears, a GPU that fell off the bus stays published with a
// NoSchedule taint (KEP-5055, gated by DRADeviceTaints: alpha in 1.34/1.35, on from 1.36), and the
// taint goes when the GPU answers again. NVML events (lines appended to $FAKE_NVML_EVENTS) taint
// the device an XID concerns.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api, type V1ResourceSlice } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseDriverConfig } from '../../src/node/config.js';
import { runDriver, type RunningDriver } from '../../src/node/run.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { loadProfile, type FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { fakeNvmlLib, simHostOptions } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import { draFeatures } from './support/k8sVersion.js';
import { eventually } from './support/wait.js';
import { grantDriverRbac } from './support/rbac.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-changes';

describe('device changes after start-up reach the ResourceSlices', () => {
  const fx = useCluster(draFeatures(['DRADeviceTaints']));
  let resource: ResourceV1Api;
  let sim: SimulatedNode;
  let driver: RunningDriver | undefined;
  let profile: FakeNvmlConfig;
  let eventsFile: string;

  beforeAll(async () => {
    const c = fx.cluster;
    resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await grantDriverRbac(c, { readClaims: false });
    await c.kubeConfig.makeApiClient(CoreV1Api).createNode({ body: { metadata: { name: NODE } } });

    const dir = fx.tempDir('gdra-e2e-changes-');
    profile = await loadProfile('a100-mig');
    sim = await createSimulatedNode(profile, path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    eventsFile = path.join(dir, 'nvml-events');
    fs.writeFileSync(eventsFile, '');
    process.env['FAKE_NVML_EVENTS'] = eventsFile;
    const config = parseDriverConfig(
      {
        nodeName: NODE,
        kubeconfig: c.makeKubeconfig(c.driverToken, 'driver-changes'),
        kubeletRegistryDir: path.join(dir, 'registry'),
        kubeletPluginsDir: path.join(dir, 'plugins'),
        cdiRoot: path.join(dir, 'cdi'),
        nvmlLib: fakeNvmlLib(),
        ...simHostOptions(sim),
        deviceCheckInterval: '1s',
        logLevel: process.env['GPU_DRA_E2E_LOG'] ?? 'warn',
      },
      {},
    );
    driver = fx.track(await runDriver(config));
  });

  /** Rewrites the fake NVML's configuration; the driver's next re-discovery reads it. */
  async function rewrite(edit: (c: FakeNvmlConfig) => FakeNvmlConfig): Promise<void> {
    profile = edit(profile);
    await atomicWriteFile(sim.configPath, JSON.stringify(profile));
  }

  async function devices(): Promise<Map<string, NonNullable<V1ResourceSlice['spec']['devices']>[number]>> {
    const list = await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE}` });
    return new Map(list.items.flatMap((s) => s.spec.devices ?? []).map((d) => [d.name, d]));
  }

  it('publishes the MIG devices that exist at start', async () => {
    const names = await eventually('first slices', async () => {
      const d = await devices();
      return d.size > 0 ? [...d.keys()] : undefined;
    });
    expect(names).toContain('gpu-0-mig-1g5gb-19-3');
  });

  it('drops a MIG device an admin destroyed', async () => {
    await rewrite((c) => ({
      ...c,
      gpus: c.gpus.map((g, i) =>
        i === 0 ? { ...g, migDevices: (g.migDevices ?? []).filter((m) => m.gpuInstanceId !== 10) } : g,
      ),
    }));
    const names = await eventually('MIG device gone', async () => {
      const d = await devices();
      return d.has('gpu-0-mig-1g5gb-19-3') ? undefined : [...d.keys()];
    });
    expect(names).toContain('gpu-0-mig-1g5gb-19-2');
    const checks = await driver?.metrics.registry.getSingleMetricAsString('gpu_dra_device_checks_total');
    expect(checks).toMatch(/gpu_dra_device_checks_total\{result="changed"\} [1-9]/);
  });

  it('keeps a lost GPU published with a NoSchedule gpu-lost taint, and untaints it when it answers again', async () => {
    // GPU 1 is in MIG mode: its MIG devices are what it publishes, and what gets tainted.
    const lost = ['gpu-1-mig-3g20gb-9-0', 'gpu-1-mig-3g20gb-9-4'];
    for (const name of lost) expect((await devices()).has(name)).toBe(true);
    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g, i) => (i === 1 ? { ...g, lost: true } : g)) }));
    const published = await eventually('GPU 1 tainted', async () => {
      const d = await devices();
      return lost.every((n) => (d.get(n)?.taints ?? []).length > 0) ? d : undefined;
    });
    for (const name of lost) {
      const device = published.get(name);
      expect(device?.taints).toEqual([
        expect.objectContaining({ key: `${DRIVER}/gpu-lost`, effect: 'NoSchedule' }),
      ]);
      // The device keeps its attributes: claims that hold it still match it.
      expect(device?.attributes?.['parentUUID']).toEqual({ string: profile.gpus[1]?.uuid });
    }
    // Devices of healthy GPUs stay untainted.
    for (const [name, d] of published) if (!lost.includes(name)) expect(d.taints ?? []).toEqual([]);
    expect(await driver?.metrics.registry.getSingleMetricAsString('gpu_dra_unhealthy_gpus')).toMatch(
      /gpu_dra_unhealthy_gpus 1/,
    );

    await rewrite((c) => ({ ...c, gpus: c.gpus.map((g, i) => (i === 1 ? { ...g, lost: false } : g)) }));
    await eventually('GPU 1 untainted', async () => {
      const d = await devices();
      return lost.every((n) => d.has(n) && (d.get(n)?.taints ?? []).length === 0) ? true : undefined;
    });
  });

  it('taints the MIG device an XID is scoped to NoSchedule, and the whole GPU for an unscoped XID', async () => {
    // XID 48 (double-bit ECC) in GPU 0's GPU instance 2: the 3g.20gb device at placement 4.
    fs.appendFileSync(eventsFile, '0 8 48 2 0\n');
    const xidKey = `${DRIVER}/xid`;
    const published = await eventually('XID taint', async () => {
      const d = await devices();
      return (d.get('gpu-0-mig-3g20gb-9-4')?.taints ?? []).length > 0 ? d : undefined;
    });
    expect(published.get('gpu-0-mig-3g20gb-9-4')?.taints).toEqual([
      expect.objectContaining({ key: xidKey, value: '48', effect: 'NoSchedule' }),
    ]);
    for (const [name, d] of published)
      if (name !== 'gpu-0-mig-3g20gb-9-4') expect(d.taints ?? [], name).toEqual([]);

    // XID 13 (an application's fault) taints nothing; XID 79 on GPU 1, not MIG-scoped, taints
    // both its devices. (Events are delivered in order, so 13 was handled before 79 shows.)
    fs.appendFileSync(eventsFile, '1 8 13\n1 8 79\n');
    const gpu1 = ['gpu-1-mig-3g20gb-9-0', 'gpu-1-mig-3g20gb-9-4'];
    const after = await eventually('unscoped XID taints', async () => {
      const d = await devices();
      return gpu1.every((n) => d.get(n)?.taints?.[0]?.value === '79') ? d : undefined;
    });
    for (const n of gpu1) expect(after.get(n)?.taints).toHaveLength(1);
    const metric = await driver?.metrics.registry.getSingleMetricAsString('gpu_dra_xid_events_total');
    expect(metric).toMatch(/xid="13"\} 1/);
    expect(metric).toMatch(/xid="48"\} 1/);
  });
});
