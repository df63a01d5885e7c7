// The real driver process (`node dist/gpu-dra.mjs driver`) on a simulated node, against the real
// peers: it becomes ready, prepares a pod's claim, and on SIGTERM exits 0 with its sockets gone.
// Without --cleanup-on-exit (a rolling restart) the CDI spec, checkpoint and ResourceSlices stay
// for the pods still running; a restarted driver recovers them, and with --cleanup-on-exit
// (uninstall) SIGTERM removes them all.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import {
  createNamespace,
  createPodWithClaims,
  oneDeviceTemplate,
  createDriverDeviceClass,
} from './support/workloads.js';
import { preparedContainers, type NodeHarness } from './support/node.js';
import { httpGet } from './support/process.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'process';

describe('the driver process: readiness, SIGTERM, --cleanup-on-exit', () => {
  const fx = useCluster();
  let node: NodeHarness | undefined;
  let sim: SimulatedNode | undefined;
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  const drivers = driverProcesses(fx);

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createDriverDeviceClass(resource, `gpu.${DRIVER}`, DRIVER);
    await createNamespace(core, NS);
    sim = await createSimulatedNode('h100-8x', fx.tempDir('gdra-e2e-proc-'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
  });

  /** Starts `gpu-dra driver` the way the DaemonSet does, with every host path in the simulated node. */
  function startDriver(extraArgs: string[] = []): Promise<DriverProcess> {
    return drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node: node as NodeHarness,
      sim: sim as SimulatedNode,
      args: extraArgs,
    });
  }

  async function sigterm(
    p: DriverProcess,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const started = Date.now();
    p.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`driver did not exit within 15 s of SIGTERM:\n${p.stderr()}`));
      }, 15_000);
    });
    try {
      const result = await Promise.race([p.exited, timeout]);
      return { ...result, ms: Date.now() - started };
    } finally {
      clearTimeout(timer);
    }
  }

  const ourSlices = async (): Promise<string[]> =>
    (
      await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${NODE},spec.driver=${DRIVER}` })
    ).items.map((s) => s.metadata?.name ?? '');
  const sockets = (): string[] => [
    path.join((node as NodeHarness).registryDir, `${DRIVER}-reg.sock`),
    path.join((node as NodeHarness).pluginsDir, DRIVER, 'dra.sock'),
    // `gpu-dra taints` and the doctor's channel: it must go with the process too.
    path.join((node as NodeHarness).pluginsDir, DRIVER, 'admin.sock'),
  ];
  const checkpointFile = (): string => path.join((node as NodeHarness).pluginsDir, DRIVER, 'checkpoint.json');
  const specFiles = (): string[] => fs.readdirSync((node as NodeHarness).cdiDir);

  let claimUid = '';

  it('SIGTERM (rolling restart): exit 0, sockets removed, the running pod’s spec, checkpoint and slices kept', async () => {
    const n = node as NodeHarness;
    const p = await startDriver();
    for (const s of sockets()) expect(fs.existsSync(s), s).toBe(true);
    await n.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    expect((await ourSlices()).length).toBeGreaterThan(0);
    expect((await httpGet(`http://127.0.0.1:${String(p.port)}/healthz`)).status).toBe(200);

    // A pod gets a GPU through the process's sockets.
    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'worker',
        claims: [{ name: 'gpu', template: oneDeviceTemplate(`gpu.${DRIVER}`) }],
      },
    );
    const prepared = await n.waitForEvent(
      (e) => e['pod'] === `${NS}/worker` && e.event === 'prepared',
      60_000,
    );
    const cdiId = preparedContainers(prepared)[0]?.cdiDevices[0] ?? '';
    claimUid = /claim=([0-9a-f-]{36})-/.exec(cdiId)?.[1] ?? '';
    expect(claimUid).not.toBe('');
    expect(specFiles()).toEqual([`k8s.${DRIVER}-claim_${claimUid}.json`]);

    const exit = await sigterm(p);
    expect(exit, p.stderr()).toMatchObject({ code: 0, signal: null });
    expect(p.stderr()).toContain('SIGTERM, shutting down');
    for (const s of sockets()) expect(fs.existsSync(s), s).toBe(false);
    await n.waitForEvent((e) => e.event === 'deregistered' && e['driver'] === DRIVER, 30_000);
    // What the running pod depends on survives a driver restart.
    expect(specFiles()).toEqual([`k8s.${DRIVER}-claim_${claimUid}.json`]);
    const checkpoint = JSON.parse(fs.readFileSync(checkpointFile(), 'utf8')) as {
      claims: Record<string, unknown>;
    };
    expect(Object.keys(checkpoint.claims)).toEqual([claimUid]);
    expect((await ourSlices()).length).toBeGreaterThan(0);
  });

  it('restarted with --cleanup-on-exit it recovers the claim; SIGTERM then removes slices, specs and checkpoint', async () => {
    expect(claimUid).not.toBe('');
    const n = node as NodeHarness;
    const registrations = n.events.filter((e) => e.event === 'registered').length;
    const p = await startDriver(['--cleanup-on-exit']);
    await n.waitForEvent(
      (e) =>
        e.event === 'registered' &&
        n.events.filter((x) => x.event === 'registered').indexOf(e) >= registrations,
      30_000,
    );
    // Recovery kept the prepared claim: its spec is still there.
    expect(specFiles()).toEqual([`k8s.${DRIVER}-claim_${claimUid}.json`]);
    expect((await ourSlices()).length).toBeGreaterThan(0);

    const exit = await sigterm(p);
    expect(exit, p.stderr()).toMatchObject({ code: 0, signal: null });
    for (const s of sockets()) expect(fs.existsSync(s), s).toBe(false);
    expect(await ourSlices()).toEqual([]);
    expect(specFiles()).toEqual([]);
    expect(fs.existsSync(checkpointFile())).toBe(false);
  });
});
