// An XID taint that an admin clears: the real driver process (`gpu-dra driver`) on a simulated
// node, registered with the kubelet's plugin manager, gets an XID from the fake NVML
// ($FAKE_NVML_EVENTS); the taint reaches the ResourceSlices; `gpu-dra doctor` explains it (and
// sees the kubelet's registration and the published slices match discovery); `gpu-dra taints
// clear` removes it without a restart, and the next XID brings it back.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ResourceV1Api, type V1ResourceSlice } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import type { CheckResult } from '../../src/doctor/checks.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib, simNodeFlags } from '../support/sim.js';
import { driverProcesses } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import type { NodeHarness } from './support/node.js';
import { eventually } from './support/wait.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const repo = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);
/** GPU 1 of a100-mig is in MIG mode: an XID not scoped to an instance taints both its devices. */
const GPU1 = ['gpu-1-mig-3g20gb-9-0', 'gpu-1-mig-3g20gb-9-4'];

describe('XID taints an admin clears without restarting the plugin', () => {
  const fx = useCluster({
    featureGates: 'DRADeviceTaints=true',
    apiserverArgs: ['--runtime-config=resource.k8s.io/v1alpha3=true'],
  });
  const drivers = driverProcesses(fx);
  let resource: ResourceV1Api;
  let sim: SimulatedNode;
  let node: NodeHarness;
  let eventsFile: string;
  let hostRoot: string;

  beforeAll(async () => {
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    const dir = fx.tempDir('gdra-e2e-taints-');
    sim = await createSimulatedNode('a100-mig', path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    eventsFile = path.join(dir, 'nvml-events');
    fs.writeFileSync(eventsFile, '');
    // A host whose containerd runs 2.x's config: CDI on, reading the harness's CDI dir.
    node = await fx.startNode(NODE);
    hostRoot = path.join(dir, 'host');
    fs.mkdirSync(path.join(hostRoot, 'etc', 'containerd'), { recursive: true });
    fs.writeFileSync(
      path.join(hostRoot, 'etc', 'containerd', 'config.toml'),
      `version = 3\n[plugins."io.containerd.cri.v1.runtime"]\ncdi_spec_dirs = ["/etc/cdi", ${JSON.stringify(node.cdiDir)}]\n`,
    );
    await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
      env: { FAKE_NVML_EVENTS: eventsFile },
      args: ['--device-check-interval=1s'],
    });
  });

  async function taintsOf(): Promise<
    Map<string, NonNullable<V1ResourceSlice['spec']['devices']>[number]['taints']>
  > {
    const list = await resource.listResourceSlice({
      fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}`,
    });
    return new Map(list.items.flatMap((s) => s.spec.devices ?? []).map((d) => [d.name, d.taints ?? []]));
  }

  /** `gpu-dra <args>` as an admin runs it on the node, pointed at the harness's directories. */
  async function gpuDra(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await run(process.execPath, [path.join(repo, 'dist/gpu-dra.mjs'), ...args], {
        env: { ...process.env, FAKE_NVML_CONFIG: sim.configPath },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }

  it('taints on an XID, is explained by the doctor, clears on request, and taints again on the next XID', async () => {
    const flags = [`--driver-name=${DRIVER}`, `--kubelet-plugins-dir=${node.pluginsDir}`];
    fs.appendFileSync(eventsFile, '1 8 79\n');
    await eventually('XID 79 taint published', async () => {
      const t = await taintsOf();
      return GPU1.every((n) => t.get(n)?.[0]?.value === '79') ? t : undefined;
    });

    const doctorArgs = [
      'doctor',
      '--json',
      ...flags,
      `--node-name=${NODE}`,
      `--kubeconfig=${fx.cluster.adminKubeconfigPath}`,
      `--cdi-root=${node.cdiDir}`,
      `--host-root=${hostRoot}`,
      ...simNodeFlags(sim),
    ];
    // The kubelet's NotifyRegistrationStatus can come a moment after the slices: until then the
    // doctor rightly says "not confirmed yet".
    const { doctor, report } = await eventually('the doctor sees the registration confirmed', async () => {
      const d = await gpuDra(doctorArgs);
      const r = JSON.parse(d.stdout) as { ok: boolean; checks: CheckResult[] };
      const registration = r.checks.find((c) => c.id === 'registration');
      return registration?.findings.length === 0 ? { doctor: d, report: r } : undefined;
    });
    const check = (id: string): CheckResult | undefined => report.checks.find((c) => c.id === id);
    // The kubelet accepted the registration, the slices match discovery, the runtime reads CDI.
    for (const id of ['nvml', 'device-nodes', 'cdi', 'runtime', 'registration', 'slices'])
      expect(check(id), id).toMatchObject({ findings: [] });
    expect(check('registration')?.skipped).toBeUndefined();
    expect(check('slices')?.skipped).toBeUndefined();
    expect(check('taints')?.findings.map((f) => f.problem)).toEqual(
      GPU1.map((n) => `${n} is tainted by XID 79: GPU has fallen off the bus`),
    );
    // Taints are warnings: the exit status stays 0.
    expect(doctor.code, doctor.stderr).toBe(0);

    const list = await gpuDra(['taints', 'list', ...flags]);
    expect(list.stdout).toBe(GPU1.map((n) => `${n}  ${DRIVER}/xid=79:NoSchedule\n`).join(''));

    // The GPU's name clears both its MIG devices.
    const cleared = await gpuDra(['taints', 'clear', '--device', 'gpu-1', ...flags]);
    expect(cleared).toMatchObject({
      code: 0,
      stdout: `cleared XID taints of ${GPU1.join(', ')}; the plugin republishes its ResourceSlices\n`,
    });
    await eventually('taint cleared from the slices', async () => {
      const t = await taintsOf();
      return GPU1.every((n) => t.has(n) && (t.get(n) ?? []).length === 0) ? true : undefined;
    });
    // Nothing left to clear: exit 1, saying so.
    const again = await gpuDra(['taints', 'clear', '--all', ...flags]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no XID taint on any device/);

    fs.appendFileSync(eventsFile, '1 8 48\n');
    await eventually('XID 48 taints again', async () => {
      const t = await taintsOf();
      return GPU1.every((n) => t.get(n)?.[0]?.value === '48') ? t : undefined;
    });
  });
});
