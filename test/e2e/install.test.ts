// The newcomer's journey on a real control plane: apply deploy/ as `kubectl apply -k deploy/`
// does; the DaemonSet controller puts the plugin pod on each GPU node (two kubelet-dra
// harnesses: an H100 node and an A100 node in MIG mode, plus a CPU node); the driver process
// runs as that pod would (its args, env and hostPath mounts, with the ServiceAccount token the
// kubelet would project: TokenRequest bound to the pod); then the examples run, and the
// README's uninstall steps (CLEANUP_ON_EXIT rollout, foreground DaemonSet delete, the rest).
//
// The plugin's mounts are reproduced as symlinks into the simulated node, so a DaemonSet that
// mounts the wrong host paths fails here: the MIG test caught /proc/driver/nvidia-caps missing
// (only /proc/driver/nvidia was mounted), which left MIG devices without their capability nodes.
//
// Pod-bound tokens carry the node (`authentication.kubernetes.io/node-name`, Kubernetes 1.32+),
// so here, unlike rbac.test.ts with its static tokens, the admission policy is exercised the
// way it works in a cluster: own node's slices allowed, any other node's refused.
import fs from 'node:fs';
import path from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  type V1Pod,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import {
  createSimulatedNode,
  migCapMinor,
  simCallLog,
  simGpuSettingsFile,
  type SimulatedNode,
} from '../../src/sim/fakeHost.js';
import { runDaemonPods } from './support/daemonPods.js';
import {
  applyObjects,
  deployManifests,
  DEPLOY_DIR,
  EXAMPLES_DIR,
  GPU_NODE_LABEL,
  INSTALL_APISERVER_ARGS,
  INSTALL_CONTROLLERS,
  loadYaml,
  nodeNameOf,
  PLUGIN_NAMESPACE,
  PLUGIN_POD_SELECTOR,
  PLUGIN_USER,
  requestPodBoundToken,
  runPluginProcess,
  simulatedHostLayout,
  simulatedHostPath,
  waitForDefaultServiceAccount,
  waitForPluginPod,
  whoAmI,
  type PluginProcess,
} from '../playground/install.js';
import { fakeNvmlLib } from '../support/sim.js';
import { DEFAULT_CONTROLLERS } from './support/cluster.js';
import { useCluster } from './support/fixture.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';
import { eventually } from './support/wait.js';

const DRIVER = 'gpu.dra.dev';
const H100 = 'gpu-a';
const A100 = 'gpu-b';
const CPU = 'cpu-c';
const PROFILES: Record<string, string> = { [H100]: 'h100-8x', [A100]: 'a100-mig' };

interface OciSpec {
  linux?: { devices?: { path: string; type: string; major: number; minor: number }[] };
  mounts?: { destination: string; source: string; type?: string }[];
  hooks?: { createContainer?: { path: string }[] };
}

type SliceBody = Parameters<ResourceV1Api['createResourceSlice']>[0]['body'];
function slice(name: string, nodeName: string, driver = DRIVER): SliceBody {
  return {
    metadata: { name },
    spec: {
      driver,
      nodeName,
      pool: { name: `${nodeName}-probe`, generation: 1, resourceSliceCount: 1 },
      devices: [{ name: 'probe-0' }],
    },
  };
}

/** The API error's body (the apiserver's Status message), or the error itself. */
async function refusal(call: Promise<unknown>): Promise<string> {
  try {
    await call;
  } catch (err) {
    return String((err as { body?: unknown }).body ?? err);
  }
  throw new Error('the request was allowed');
}

describe('install: deploy/ and the plugin as its DaemonSet runs it, on a real control plane', () => {
  const fx = useCluster({
    nodeNames: [H100, A100, CPU],
    apiserverArgs: INSTALL_APISERVER_ARGS,
    controllers: [...DEFAULT_CONTROLLERS, ...INSTALL_CONTROLLERS],
    dumpLines: 80,
  });
  const nodes = new Map<string, NodeHarness>();
  const sims = new Map<string, SimulatedNode>();
  const pods = new Map<string, V1Pod>();
  const tokens = new Map<string, string>();
  const plugins = new Map<string, PluginProcess>();

  beforeAll(async () => {
    const simRoot = fx.tempDir('gpu-dra-install-');
    for (const [name, profile] of Object.entries(PROFILES)) {
      const sim = await createSimulatedNode(profile, path.join(simRoot, name), { libPath: fakeNvmlLib() });
      // The NVIDIA container toolkit's hook, where the host would have it.
      fs.writeFileSync(path.join(sim.hostPaths.driverRoot, 'usr/bin/nvidia-cdi-hook'), '#!/bin/sh\n', {
        mode: 0o755,
      });
      sims.set(name, sim);
    }
    for (const name of [H100, A100, CPU]) {
      const node = await fx.startNode(name, {
        // Terminating pods are removed by terminated() below, once "their containers" stopped:
        // the plugin process must still be able to use its pod-bound token while it stops.
        extraArgs: [
          '--delete-terminating-pods=false',
          ...(name === CPU ? [] : [`--node-labels=${GPU_NODE_LABEL}`]),
        ],
      });
      nodes.set(name, node);
    }
  });

  const get = <T>(m: Map<string, T>, key: string): T => {
    const v = m.get(key);
    if (v === undefined) throw new Error(`${key}: not set up (an earlier test failed)`);
    return v;
  };

  it('deploy/kustomization.yaml names every manifest in deploy/, and all of them apply', async () => {
    const manifests = deployManifests();
    const files = fs
      .readdirSync(DEPLOY_DIR)
      .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
      .sort();
    expect(manifests.map((m) => m.file).sort()).toEqual(files);
    const objects = manifests.flatMap((m) => m.objects);
    expect(objects.map((o) => o.kind)).toContain('DaemonSet');
    await applyObjects(fx.cluster.kubeConfig, objects);
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    expect(
      (
        await core.readNamespacedServiceAccount({
          namespace: PLUGIN_NAMESPACE,
          name: 'gpu-dra-kubelet-plugin',
        })
      ).metadata?.name,
    ).toBe('gpu-dra-kubelet-plugin');
  });

  it('the DaemonSet controller puts one plugin pod on each GPU node and none on the CPU node', async () => {
    for (const name of [H100, A100]) pods.set(name, await waitForPluginPod(fx.cluster.kubeConfig, name));
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const all = await core.listNamespacedPod({
      namespace: PLUGIN_NAMESPACE,
      labelSelector: PLUGIN_POD_SELECTOR,
    });
    expect(all.items.map((p) => p.spec?.nodeName).sort()).toEqual([H100, A100]);
    const pod = get(pods, H100);
    expect(pod.spec?.serviceAccountName).toBe('gpu-dra-kubelet-plugin');
    expect(pod.spec?.containers[0]?.securityContext?.privileged).toBe(true);
  });

  it('a token bound to the plugin pod, requested as the kubelet does, names the pod’s node', async () => {
    for (const name of [H100, A100]) {
      const kubelet = fx.cluster.kubeConfigFor(fx.cluster.nodeToken(name));
      const token = await requestPodBoundToken(kubelet, get(pods, name));
      tokens.set(name, token);
      const user = await whoAmI(fx.cluster.kubeConfigFor(token));
      expect(user.username).toBe(PLUGIN_USER);
      expect(nodeNameOf(user)).toBe(name);
      expect(user.extra?.['authentication.kubernetes.io/pod-name']).toEqual([get(pods, name).metadata?.name]);
    }
    // NodeRestriction: a kubelet gets tokens only for pods bound to its own node.
    const other = fx.cluster.kubeConfigFor(fx.cluster.nodeToken(A100));
    await expect(requestPodBoundToken(other, get(pods, H100))).rejects.toThrow();
  });

  it('with that token, the admission policy allows the node’s own slices and refuses every other node’s', async () => {
    const asPlugin = fx.cluster.kubeConfigFor(get(tokens, H100)).makeApiClient(ResourceV1Api);
    const asAdmin = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    // The policy is enforced once the apiserver has compiled it.
    const denied = await eventually(
      'the admission policy enforced',
      async () => {
        const name = `other-${String(Date.now())}`;
        try {
          await asPlugin.createResourceSlice({ body: slice(name, A100) });
        } catch (err) {
          return String((err as { body?: unknown }).body ?? err);
        }
        await asAdmin.deleteResourceSlice({ name });
        return undefined;
      },
      60_000,
      500,
    );
    expect(denied).toContain(
      `the gpu-dra plugin on node ${H100} may not write ResourceSlices of node ${A100}`,
    );

    // Its own node: create, update, delete.
    // (RBAC grants the plugin list and watch, not get: it reads slices through its informer.)
    const own = await asPlugin.createResourceSlice({ body: slice('own', H100) });
    own.spec.devices = [{ name: 'probe-0' }, { name: 'probe-1' }];
    await asPlugin.replaceResourceSlice({ name: 'own', body: own });
    // ...but not for another driver. (Moving a slice to another node is refused by validation
    // already: spec.nodeName is immutable.)
    expect(
      await refusal(asPlugin.createResourceSlice({ body: slice('foreign', H100, 'other.example.com') })),
    ).toContain('may only write ResourceSlices of driver gpu.dra.dev');
    await asPlugin.deleteResourceSlice({ name: 'own' });

    // Another node's existing slice: neither updated nor deleted.
    const theirs = await asAdmin.createResourceSlice({ body: slice('theirs', A100) });
    theirs.spec.devices = [];
    expect(await refusal(asPlugin.replaceResourceSlice({ name: 'theirs', body: theirs }))).toContain(
      `may not write ResourceSlices of node ${A100}`,
    );
    expect(await refusal(asPlugin.deleteResourceSlice({ name: 'theirs' }))).toContain(
      `may not write ResourceSlices of node ${A100}`,
    );
    await asAdmin.deleteResourceSlice({ name: 'theirs' });
  });

  it('the driver, run with the pod’s args, env, mounts and token, registers and publishes its node’s devices', async () => {
    for (const name of [H100, A100]) {
      const plugin = await startPlugin(name);
      expect(plugin.container.args).toEqual(['driver']);
      await get(nodes, name).waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    }
    const resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    const devices = async (nodeName: string): Promise<string[]> =>
      (await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${nodeName}` })).items
        .flatMap((s) => s.spec.devices?.map((d) => d.name) ?? [])
        .sort();
    expect(await devices(H100)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => `gpu-${String(i)}`));
    expect((await devices(A100)).filter((d) => d.includes('-mig-'))).toHaveLength(6);
    // Nothing was refused on the way: the plugin's own writes pass the policy.
    for (const p of plugins.values())
      expect(fs.readFileSync(p.logFile, 'utf8')).not.toMatch(/Forbidden|denied/);
  });

  /** The plugin process for a node's pod (a simulated node has no mount for a /dev/shm tmpfs). */
  async function startPlugin(name: string): Promise<PluginProcess> {
    const plugin = await runPluginProcess({
      cluster: fx.cluster,
      node: get(nodes, name),
      sim: get(sims, name),
      pod: get(pods, name),
      token: get(tokens, name),
      env: { MPS_SHM_SIZE: '0', MPS_READY_TIMEOUT: '30s' },
    });
    plugins.set(name, plugin);
    return plugin;
  }

  /** Applies an example in `default` and returns its pod's `prepared` and `running` events. */
  async function runExample(
    file: string,
    nodeName: string,
  ): Promise<{ prepared: KubeletEvent; pod: V1Pod; oci: OciSpec }> {
    const kc = fx.cluster.kubeConfig;
    await waitForDefaultServiceAccount(kc, 'default');
    const objects = loadYaml(path.join(EXAMPLES_DIR, file));
    await applyObjects(kc, objects, 'default');
    const podName = objects.find((o) => o.kind === 'Pod')?.metadata.name ?? '';
    const node = get(nodes, nodeName);
    const core = kc.makeApiClient(CoreV1Api);
    await node
      .waitForEvent((e) => e.event === 'running' && e['pod'] === `default/${podName}`, 90_000)
      .catch(async (err: unknown) => {
        const p = await core.readNamespacedPod({ namespace: 'default', name: podName });
        throw new Error(
          `${String(err)}\npod: ${JSON.stringify({ node: p.spec?.nodeName, status: p.status })}`,
        );
      });
    const prepared = await node.waitForEvent(
      (e) => e.event === 'prepared' && e['pod'] === `default/${podName}`,
    );
    const pod = await core.readNamespacedPod({ namespace: 'default', name: podName });
    const [ctr] = preparedContainers(prepared);
    expect(ctr?.cdiError).toBeUndefined();
    return { prepared, pod, oci: ctr?.ociSpec ?? {} };
  }

  async function allocation(
    pod: V1Pod,
  ): Promise<{ request: string; driver: string; pool: string; device: string }[]> {
    // A template's claim is named in the pod's status; a shared claim in its spec.
    const claimName =
      pod.status?.resourceClaimStatuses?.[0]?.resourceClaimName ??
      pod.spec?.resourceClaims?.[0]?.resourceClaimName ??
      '';
    const claim = await fx.cluster.kubeConfig
      .makeApiClient(ResourceV1Api)
      .readNamespacedResourceClaim({ namespace: 'default', name: claimName });
    return claim.status?.allocation?.devices?.results ?? [];
  }

  let singleGpuOci: OciSpec | undefined;

  it('examples/claims/single-gpu.yaml: the pod runs on the H100 node with exactly one GPU', async () => {
    const { pod, oci } = await runExample('single-gpu.yaml', H100);
    singleGpuOci = oci;
    expect(pod.spec?.nodeName).toBe(H100);
    expect(pod.status?.phase).toBe('Running');
    const results = await allocation(pod);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ request: 'gpu', driver: DRIVER, pool: H100 });
    const gpus = (oci.linux?.devices ?? []).filter((d) => /^\/dev\/nvidia\d+$/.test(d.path));
    expect(gpus).toHaveLength(1);
    expect(gpus[0]).toMatchObject({
      path: `/dev/nvidia${results[0]?.device.replace('gpu-', '') ?? '?'}`,
      type: 'c',
      major: 195,
    });
  });

  it('examples/claims/mig-1g.yaml: the pod runs on the A100 node with the MIG device’s GPU and GI/CI capability nodes', async () => {
    const { pod, oci } = await runExample('mig-1g.yaml', A100);
    expect(pod.spec?.nodeName).toBe(A100);
    const [result, ...more] = await allocation(pod);
    expect(more).toEqual([]);
    // gpu-<minor>-mig-<profile>-<profileId>-<placement start>
    const m = /^gpu-(\d+)-mig-1g5gb-(\d+)-(\d+)$/.exec(result?.device ?? '');
    expect(m, result?.device).not.toBeNull();
    const minor = Number(m?.[1]);
    const gpu = get(sims, A100).config.gpus.find((g) => g.minor === minor);
    const mig = gpu?.migDevices?.find(
      (d) => d.profileId === Number(m?.[2]) && d.placement.start === Number(m?.[3]),
    );
    expect(mig).toBeDefined();
    const paths = (oci.linux?.devices ?? []).map((d) => d.path).sort();
    expect(paths).toEqual(
      [
        `/dev/nvidia${String(minor)}`,
        '/dev/nvidiactl',
        '/dev/nvidia-uvm',
        '/dev/nvidia-uvm-tools',
        `/dev/nvidia-caps/nvidia-cap${String(migCapMinor(minor, mig?.gpuInstanceId ?? -1))}`,
        `/dev/nvidia-caps/nvidia-cap${String(migCapMinor(minor, mig?.gpuInstanceId ?? -1, mig?.computeInstanceId))}`,
      ].sort(),
    );
  });

  /** What the simulated node's nvidia-smi and nvidia-cuda-mps-control stand-ins were asked since `from`. */
  function toolCalls(nodeName: string, from = 0): string[] {
    const file = simCallLog(get(sims, nodeName).hostPaths.driverRoot);
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(from) : [];
  }

  async function deletePods(names: string[], nodeName: string): Promise<void> {
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const node = get(nodes, nodeName);
    for (const name of names) {
      const pod = await core.readNamespacedPod({ namespace: 'default', name });
      await core.deleteNamespacedPod({ namespace: 'default', name });
      await terminated(pod, async () => {
        await node.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === pod.metadata?.uid, 60_000);
      });
    }
  }

  it('examples/claims/time-slicing.yaml: two pods on one GPU at the Long slice, set through nvidia-smi and reset after the last', async () => {
    const before = toolCalls(H100).length;
    const { pod, oci } = await runExample('time-slicing.yaml', H100);
    const node = get(nodes, H100);
    await node.waitForEvent((e) => e.event === 'running' && e['pod'] === 'default/time-sliced-b', 60_000);
    const [result] = await allocation(pod);
    const minor = Number(result?.device.replace('gpu-', ''));
    const uuid = get(sims, H100).config.gpus.find((g) => g.minor === minor)?.uuid ?? '?';
    expect((oci.linux?.devices ?? []).map((d) => d.path)).toContain(`/dev/nvidia${String(minor)}`);
    // Prepared once for the claim (both pods share it): exactly NVIDIA's two calls.
    expect(toolCalls(H100, before)).toEqual([
      `nvidia-smi -i ${uuid} -c DEFAULT`,
      `nvidia-smi compute-policy -i ${uuid} --set-timeslice 3`,
    ]);
    const settings = () =>
      fs.readFileSync(simGpuSettingsFile(get(sims, H100).hostPaths.driverRoot, uuid), 'utf8');
    expect(settings()).toContain('timeslice=3');
    await deletePods(['time-sliced-a', 'time-sliced-b'], H100);
    await eventually(
      'time slice reset',
      () => Promise.resolve(settings().includes('timeslice=0') ? true : undefined),
      60_000,
      250,
    );
    expect(toolCalls(H100, before).at(-1)).toBe(`nvidia-smi compute-policy -i ${uuid} --set-timeslice 0`);
  });

  it('examples/claims/mps.yaml: the claim’s MPS daemon runs with its limits, survives a plugin restart, and goes at unprepare', async () => {
    const daemons = fx.track(
      runDaemonPods({
        cluster: fx.cluster,
        node: get(nodes, H100),
        sim: get(sims, H100),
        namespace: PLUGIN_NAMESPACE,
        labelSelector: 'app.kubernetes.io/component=mps-control-daemon',
      }),
    );
    const before = toolCalls(H100).length;
    const { pod, oci } = await runExample('mps.yaml', H100);
    const [result] = await allocation(pod);
    const minor = Number(result?.device.replace('gpu-', ''));
    const uuid = get(sims, H100).config.gpus.find((g) => g.minor === minor)?.uuid ?? '?';
    const apps = fx.cluster.kubeConfig.makeApiClient(AppsV1Api);
    const [deployment, ...others] = (await apps.listNamespacedDeployment({ namespace: PLUGIN_NAMESPACE }))
      .items;
    expect(others).toEqual([]);
    const name = deployment?.metadata?.name ?? '';
    expect(name).toMatch(/^gpu-dra-mps-[0-9a-f-]{36}-[0-9a-f]{5}$/);
    expect(deployment?.spec?.template.spec?.nodeName).toBe(H100);
    // What ran on the node: the GPU made exclusive to the daemon, the daemon for exactly that
    // GPU, then the claim's limits through its command interface.
    expect(toolCalls(H100, before)).toEqual([
      `nvidia-smi -i ${uuid} -c EXCLUSIVE_PROCESS`,
      `nvidia-cuda-mps-control -f (CUDA_VISIBLE_DEVICES=${uuid})`,
      'nvidia-cuda-mps-control < get_server_list',
      'nvidia-cuda-mps-control < set_default_active_thread_percentage 50',
      `nvidia-cuda-mps-control < set_default_device_pinned_mem_limit ${uuid} 10240M`,
    ]);
    // The container reaches the daemon: its pipe directory and /dev/shm, from the host.
    const env = (oci as { process?: { env?: string[] } }).process?.env ?? [];
    expect(env).toContain('CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps');
    const mounts = new Map((oci.mounts ?? []).map((m) => [m.destination, m.source]));
    const daemonDir = mounts.get('/tmp/nvidia-mps')?.replace(/\/pipe$/, '') ?? '?';
    expect(mounts.get('/dev/shm')).toBe(`${daemonDir}/shm`);
    const ready = path.join(daemonDir, 'ready');
    expect(fs.existsSync(ready)).toBe(true);

    // A plugin restart (an upgrade, a crash) leaves the daemon serving and the claim prepared.
    await stopPlugin(get(plugins, H100));
    await startPlugin(H100);
    await get(nodes, H100).waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    expect(fs.existsSync(ready)).toBe(true);
    expect([...daemons.started.values()].filter((d) => d.peer.exit === undefined)).toHaveLength(1);
    expect((await apps.listNamespacedDeployment({ namespace: PLUGIN_NAMESPACE })).items).toHaveLength(1);

    const mark = toolCalls(H100).length;
    await deletePods(['mps-a', 'mps-b'], H100);
    await eventually(
      'MPS daemon removed',
      async () =>
        (await apps.listNamespacedDeployment({ namespace: PLUGIN_NAMESPACE })).items.length === 0
          ? true
          : undefined,
      60_000,
      250,
    );
    expect(fs.existsSync(daemonDir)).toBe(false);
    expect(toolCalls(H100, mark)).toEqual([
      'nvidia-cuda-mps-control < quit',
      `nvidia-smi -i ${uuid} -c DEFAULT`,
    ]);
    expect(fs.readFileSync(get(plugins, H100).logFile, 'utf8')).not.toMatch(/Forbidden/);
  });

  // The plugin sees the driver's files at /driver-root inside its container, but the container
  // runtime resolves CDI mount sources and runs hooks on the host: the DaemonSet passes the
  // host's view as HOST_DRIVER_ROOT. (Device nodes carry their type and numbers, so the runtime
  // does not look at their host path.)
  it('every CDI mount source and hook path the pod got exists at that path on the host', () => {
    const oci = singleGpuOci;
    if (!oci) throw new Error('the single-gpu example did not run');
    const plugin = get(plugins, H100);
    const layout = simulatedHostLayout(get(nodes, H100), get(sims, H100));
    const hostPaths = [
      ...(oci.mounts ?? []).filter((mt) => mt.type !== 'proc').map((mt) => mt.source),
      ...(oci.hooks?.createContainer ?? []).map((h) => h.path),
    ];
    expect(hostPaths.length).toBeGreaterThan(0);
    for (const p of hostPaths) {
      // The runtime reads `p` on the host: it must be a host path (not one below the plugin's
      // container view), and the file must be there on the simulated host.
      expect(plugin.container.containerPath(p), `${p} is a path inside the plugin container`).toBeUndefined();
      const onHost = simulatedHostPath(layout, p);
      expect(fs.existsSync(onHost), `${p}: not on the host (simulated at ${onHost})`).toBe(true);
    }
  });

  /**
   * What the kubelet does when a pod it runs is deleted: wait for the deletionTimestamp, stop
   * the containers (`stop`), then remove the pod (grace period 0, UID precondition).
   */
  async function terminated(pod: V1Pod, stop: () => Promise<void>): Promise<void> {
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const namespace = pod.metadata?.namespace ?? '';
    const name = pod.metadata?.name ?? '';
    await eventually(
      `${namespace}/${name} terminating`,
      async () =>
        (await core.readNamespacedPod({ namespace, name })).metadata?.deletionTimestamp ? true : undefined,
      120_000,
      250,
    ).catch(async (err: unknown) => {
      const ds = await fx.cluster.kubeConfig
        .makeApiClient(AppsV1Api)
        .listNamespacedDaemonSet({ namespace: PLUGIN_NAMESPACE });
      const all = await core.listNamespacedPod({ namespace: PLUGIN_NAMESPACE });
      throw new Error(
        `${String(err)}\nDaemonSet status: ${JSON.stringify(ds.items.map((d) => d.status))}\npods: ${JSON.stringify(all.items.map((p) => ({ name: p.metadata?.name, node: p.spec?.nodeName, deleting: p.metadata?.deletionTimestamp, hash: p.metadata?.labels?.['controller-revision-hash'], status: p.status })))}`,
      );
    });
    await stop();
    await core.deleteNamespacedPod({
      namespace,
      name,
      // In the body: client-node drops a query parameter of 0.
      body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } },
    });
  }

  async function stopPlugin(plugin: PluginProcess): Promise<void> {
    await plugin.stop();
    expect(plugin.peer.exit, plugin.logs(40)).toMatchObject({ code: 0, signal: null });
  }

  it('uninstall, step 1: deleting the workloads unprepares their claims', async () => {
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    await Promise.all(
      [
        ['single-gpu', H100],
        ['mig-1g', A100],
      ].map(async ([name = '', nodeName = '']) => {
        const pod = await core.readNamespacedPod({ namespace: 'default', name });
        await core.deleteNamespacedPod({ namespace: 'default', name });
        const node = get(nodes, nodeName);
        await terminated(pod, async () => {
          await node.waitForEvent((e) => e.event === 'unprepared' && e['uid'] === pod.metadata?.uid, 60_000);
        });
        expect(fs.readdirSync(node.cdiDir)).toEqual([]);
      }),
    );
  });

  it('uninstall, step 2: CLEANUP_ON_EXIT=true rolls the plugin pods; a rolled pod’s exit keeps slices, specs and checkpoint', async () => {
    // `kubectl -n gpu-dra set env daemonset/gpu-dra-kubelet-plugin CLEANUP_ON_EXIT=true`
    const ds = deployManifests()
      .flatMap((m) => m.objects)
      .find((o) => o.kind === 'DaemonSet');
    if (!ds) throw new Error('no DaemonSet in deploy/');
    const ctr = (
      ds.spec as { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } }
    ).template.spec.containers[0];
    ctr?.env.push({ name: 'CLEANUP_ON_EXIT', value: 'true' });
    await applyObjects(fx.cluster.kubeConfig, [ds]);

    const resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    // The DaemonSet controller surges one node at a time (maxSurge 1, maxUnavailable 0): the new
    // pod starts beside the old one, whose "kubelet" then stops it once the new one is ready.
    await Promise.all(
      [H100, A100].map(async (nodeName) => {
        const old = get(pods, nodeName);
        const node = get(nodes, nodeName);
        const pod = await waitForPluginPod(fx.cluster.kubeConfig, nodeName, {
          replacing: old,
          timeoutMs: 120_000,
        });
        const token = await requestPodBoundToken(
          fx.cluster.kubeConfigFor(fx.cluster.nodeToken(nodeName)),
          pod,
        );
        const registrations = node.events.filter((e) => e.event === 'registered').length;
        const plugin = await runPluginProcess({
          cluster: fx.cluster,
          node,
          sim: get(sims, nodeName),
          pod,
          token,
        });
        expect(plugin.container.env['CLEANUP_ON_EXIT']).toBe('true');
        await eventually('registered beside the old plugin', () =>
          Promise.resolve(
            node.events.filter((e) => e.event === 'registered').length > registrations || undefined,
          ),
        );
        await terminated(old, () => stopPlugin(get(plugins, nodeName)));
        expect(
          (await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${nodeName}` })).items,
        ).not.toEqual([]);
        pods.set(nodeName, pod);
        plugins.set(nodeName, plugin);
      }),
    );
  });

  it('uninstall, step 3: deleting the DaemonSet (foreground) stops the plugins, which remove their slices, CDI specs and checkpoint; then the rest of deploy/ goes', async () => {
    const kc = fx.cluster.kubeConfig;
    const resource = kc.makeApiClient(ResourceV1Api);
    // `kubectl -n gpu-dra delete daemonset gpu-dra-kubelet-plugin --cascade=foreground`
    await kc.makeApiClient(AppsV1Api).deleteNamespacedDaemonSet({
      namespace: PLUGIN_NAMESPACE,
      name: 'gpu-dra-kubelet-plugin',
      propagationPolicy: 'Foreground',
    });
    await Promise.all(
      [H100, A100].map(async (nodeName) => {
        await terminated(get(pods, nodeName), () => stopPlugin(get(plugins, nodeName)));
        // Removed by the plugin as it exited (the kubelet's own sweep waits 30 s).
        expect(
          (await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${nodeName}` })).items,
        ).toEqual([]);
        const node = get(nodes, nodeName);
        expect(fs.readdirSync(node.cdiDir)).toEqual([]);
        expect(fs.existsSync(path.join(node.pluginsDir, DRIVER, 'checkpoint.json'))).toBe(false);
      }),
    );
    const apps = kc.makeApiClient(AppsV1Api);
    await eventually('DaemonSet gone', async () =>
      (await apps.listNamespacedDaemonSet({ namespace: PLUGIN_NAMESPACE })).items.length === 0
        ? true
        : undefined,
    );

    // `kubectl delete -k deploy/ --ignore-not-found`
    const objects = KubernetesObjectApi.makeApiClient(kc);
    for (const o of deployManifests().flatMap((m) => m.objects)) {
      if (o.kind === 'DaemonSet') continue;
      await objects.delete(o);
    }
    expect((await resource.listDeviceClass()).items).toEqual([]);
    expect((await resource.listResourceSlice()).items).toEqual([]);
  });
});
