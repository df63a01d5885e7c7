// Installing gpu-dra on the e2e cluster the way an admin does, shared by `npm run playground`
// (main.ts) and test/e2e/install*.test.ts:
// - deploy/ applied as `kubectl apply -k deploy/` would (server-side apply, kustomization order);
// - the DaemonSet controller creates the plugin pod on every node labelled
//   nvidia.com/gpu.present=true and the kubelet-dra harness reports it Running. No container
//   runtime runs it: runPluginProcess() starts the `gpu-dra driver` process in its place, with
//   the pod's own args and env, its hostPath mounts reproduced as symlinks into the simulated
//   node (the "container view"), and the ServiceAccount token a kubelet would project into it
//   (TokenRequest bound to the pod, requested with the node's credentials).
import fs from 'node:fs';
import path from 'node:path';
import {
  AuthenticationV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  type KubeConfig,
  type KubernetesObject,
  type V1Pod,
  type V1UserInfo,
} from '@kubernetes/client-node';
import { parse, parseAllDocuments, stringify } from 'yaml';

import type { SimulatedNode } from '../../src/sim/fakeHost.js';
import type { Attachment, Cluster } from '../e2e/support/cluster.js';
import type { NodeHarness } from '../e2e/support/node.js';
import { repoRoot } from '../e2e/support/peers.js';
import {
  describeExit,
  freePort,
  httpGet,
  spawnPeer,
  stopPeer,
  tailFile,
  type PeerProcess,
} from '../e2e/support/process.js';
import { eventually } from '../e2e/support/wait.js';

export const ROOT = repoRoot;
/** The CLI bundle `npm run build` writes and the image runs. */
export const DRIVER_BUNDLE = 'dist/gpu-dra.mjs';
export const DEPLOY_DIR = path.join(ROOT, 'deploy');
export const EXAMPLES_DIR = path.join(ROOT, 'examples', 'claims');
export const PLUGIN_NAMESPACE = 'gpu-dra';
export const PLUGIN_SERVICE_ACCOUNT = 'gpu-dra-kubelet-plugin';
export const PLUGIN_USER = `system:serviceaccount:${PLUGIN_NAMESPACE}:${PLUGIN_SERVICE_ACCOUNT}`;
export const PLUGIN_POD_SELECTOR =
  'app.kubernetes.io/name=gpu-dra,app.kubernetes.io/component=kubelet-plugin';
/** The label the DaemonSet's nodeSelector asks for (NVIDIA's GPU feature discovery sets it). */
export const GPU_NODE_LABEL = 'nvidia.com/gpu.present=true';
/** Controllers the install needs besides the fixture's defaults. */
export const INSTALL_CONTROLLERS = [
  'daemonset-controller',
  // MPS daemons are Deployments (src/sharing/mps.ts).
  'deployment-controller',
  'replicaset-controller',
];
/** The DaemonSet's pod is privileged. */
export const INSTALL_APISERVER_ARGS = ['--allow-privileged=true'];
/** Where the kubelet projects the ServiceAccount token into a container. */
const SA_TOKEN_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type Obj = KubernetesObject & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
};

export function loadYaml(file: string): Obj[] {
  return parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
}

/** deploy/'s manifests in the order deploy/kustomization.yaml lists them. */
export function deployManifests(): { file: string; objects: Obj[] }[] {
  const kustomization = parse(fs.readFileSync(path.join(DEPLOY_DIR, 'kustomization.yaml'), 'utf8')) as {
    resources: string[];
  };
  return kustomization.resources.map((file) => ({
    file,
    objects: loadYaml(path.join(DEPLOY_DIR, file)),
  }));
}

/** Server-side apply (as `kubectl apply --server-side`), one object at a time, in order. */
export async function applyObjects(
  kc: KubeConfig,
  objects: readonly Obj[],
  namespace?: string,
): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (const o of objects) {
    const body = structuredClone(o);
    if (namespace !== undefined && body.kind !== 'Namespace' && body.metadata.namespace === undefined)
      body.metadata.namespace = namespace;
    await api.patch(body, undefined, undefined, 'gpu-dra-install', true, PatchStrategy.ServerSideApply);
  }
}

export function describeObject(o: Obj): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

/** Waits until namespace's `default` ServiceAccount exists (pods are refused before). */
export async function waitForDefaultServiceAccount(kc: KubeConfig, namespace: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await eventually(
    `ServiceAccount ${namespace}/default`,
    async () => (await core.readNamespacedServiceAccount({ namespace, name: 'default' })).metadata?.name,
  );
}

/**
 * The DaemonSet's pod on `nodeName`, once the node reports it Running; with `replacing`, a
 * pod other than that one (after a rolling update).
 */
export async function waitForPluginPod(
  kc: KubeConfig,
  nodeName: string,
  opts: { timeoutMs?: number; replacing?: V1Pod } = {},
): Promise<V1Pod> {
  const core = kc.makeApiClient(CoreV1Api);
  return eventually(
    `the gpu-dra plugin pod on ${nodeName} Running`,
    async () => {
      const pods = await core.listNamespacedPod({
        namespace: PLUGIN_NAMESPACE,
        labelSelector: PLUGIN_POD_SELECTOR,
        fieldSelector: `spec.nodeName=${nodeName}`,
      });
      return pods.items.find(
        (p) =>
          p.status?.phase === 'Running' &&
          !p.metadata?.deletionTimestamp &&
          (opts.replacing === undefined || p.metadata?.uid !== opts.replacing.metadata?.uid),
      );
    },
    opts.timeoutMs ?? 60_000,
    500,
  );
}

/**
 * A ServiceAccount token bound to `pod`, requested as its node's kubelet does for the projected
 * volume (TokenRequest with the node's own credentials; the Node authorizer and NodeRestriction
 * allow it only for pods bound to that node). Since Kubernetes 1.32 such a token names the
 * node, and requests made with it carry `authentication.kubernetes.io/node-name`.
 */
export async function requestPodBoundToken(
  kubeletKc: KubeConfig,
  pod: V1Pod,
  expirationSeconds = 3600,
): Promise<string> {
  const core = kubeletKc.makeApiClient(CoreV1Api);
  const name = pod.spec?.serviceAccountName ?? 'default';
  const namespace = pod.metadata?.namespace ?? 'default';
  const review = await core.createNamespacedServiceAccountToken({
    namespace,
    name,
    body: {
      spec: {
        audiences: [],
        expirationSeconds,
        boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name, uid: pod.metadata?.uid },
      },
    },
  });
  const token = review.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  return token;
}

/** Who the apiserver says `kc` is (SelfSubjectReview): user name, groups and extras. */
export async function whoAmI(kc: KubeConfig): Promise<V1UserInfo> {
  const review = await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
  return review.status?.userInfo ?? {};
}

export function nodeNameOf(user: V1UserInfo): string | undefined {
  return user.extra?.['authentication.kubernetes.io/node-name']?.[0];
}

/** Host path → where that host directory lives in the simulation (longest prefix wins). */
export type HostLayout = Readonly<Record<string, string>>;

/**
 * The simulated GPU node as a host file system: the NVIDIA driver's files at `/`, the fake
 * /dev, /proc and /sys, and the harness's kubelet and CDI directories at their usual paths.
 */
export function simulatedHostLayout(node: NodeHarness, sim: SimulatedNode): HostLayout {
  return {
    '/': sim.hostPaths.driverRoot,
    '/dev': sim.hostPaths.devRoot,
    '/proc': sim.hostPaths.procRoot,
    '/sys': sim.hostPaths.sysRoot,
    '/var/lib/kubelet/plugins_registry': node.registryDir,
    '/var/lib/kubelet/plugins': node.pluginsDir,
    '/var/run/cdi': node.cdiDir,
  };
}

/** Where host path `hostPath` is in the simulation. */
export function simulatedHostPath(layout: HostLayout, hostPath: string): string {
  const normalized = path.posix.resolve('/', hostPath);
  const prefix = Object.keys(layout)
    .filter((p) => p === '/' || normalized === p || normalized.startsWith(`${p}/`))
    .sort((a, b) => b.length - a.length)[0];
  if (prefix === undefined) throw new Error(`no host layout entry covers ${hostPath}`);
  return path.join(layout[prefix] ?? '/', path.posix.relative(prefix, normalized));
}

/** The plugin container as the process sees it. */
export interface PluginContainer {
  /** The directory standing for the container's `/`: every mount point is a symlink below it. */
  readonly root: string;
  readonly args: string[];
  /** The container's env, every path under a mount rewritten to lie below `root`. */
  readonly env: Record<string, string>;
  readonly mounts: { mountPath: string; hostPath: string; readOnly: boolean }[];
  /** The container path of a path the process uses (below `root`), else undefined. */
  containerPath(p: string): string | undefined;
}

/**
 * Reproduces the pod's only container: its hostPath mounts as symlinks below `root` to where
 * the host directories are in the simulation, the projected ServiceAccount token (`token`)
 * written where the kubelet would mount it, and its env with paths moved below `root` and
 * fieldRefs resolved. `httpListen` replaces HTTP_LISTEN (the pod's port is shared here).
 */
export function pluginContainer(
  pod: V1Pod,
  layout: HostLayout,
  root: string,
  opts: { token: string; caData: string; httpListen: string },
): PluginContainer {
  const ctr = pod.spec?.containers[0];
  if (!ctr || (pod.spec?.containers.length ?? 0) !== 1)
    throw new Error('the plugin pod should have exactly one container');
  const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
  const mounts: PluginContainer['mounts'] = [];
  fs.mkdirSync(root, { recursive: true });
  for (const m of [...(ctr.volumeMounts ?? [])].sort((a, b) => a.mountPath.length - b.mountPath.length)) {
    const volume = volumes.get(m.name);
    const at = path.join(root, m.mountPath);
    if (m.mountPath === SA_TOKEN_DIR) {
      // The projected kube-api-access volume the ServiceAccount admission plugin added.
      fs.mkdirSync(at, { recursive: true });
      fs.writeFileSync(path.join(at, 'token'), opts.token, { mode: 0o600 });
      fs.writeFileSync(path.join(at, 'ca.crt'), Buffer.from(opts.caData, 'base64'));
      fs.writeFileSync(path.join(at, 'namespace'), pod.metadata?.namespace ?? '');
      continue;
    }
    const hostPath = volume?.hostPath?.path;
    if (hostPath === undefined) throw new Error(`volume ${m.name} is not a hostPath volume`);
    if (fs.existsSync(at)) throw new Error(`mount ${m.mountPath} lies inside another mount`);
    fs.mkdirSync(path.dirname(at), { recursive: true });
    fs.symlinkSync(simulatedHostPath(layout, hostPath), at);
    mounts.push({ mountPath: m.mountPath, hostPath, readOnly: m.readOnly === true });
  }
  const underMount = (value: string): boolean =>
    path.isAbsolute(value) &&
    [...mounts.map((m) => m.mountPath), SA_TOKEN_DIR].some(
      (mp) => value === mp || value.startsWith(`${mp}/`),
    );
  const env: Record<string, string> = {};
  for (const e of ctr.env ?? []) {
    let value = e.value;
    const field = e.valueFrom?.fieldRef?.fieldPath;
    if (field === 'spec.nodeName') value = pod.spec?.nodeName;
    else if (field === 'metadata.name') value = pod.metadata?.name;
    else if (field === 'metadata.namespace') value = pod.metadata?.namespace;
    else if (field === 'metadata.uid') value = pod.metadata?.uid;
    else if (e.valueFrom !== undefined) throw new Error(`env ${e.name}: unsupported valueFrom`);
    if (value === undefined) continue;
    env[e.name] = underMount(value) ? path.join(root, value) : value;
  }
  if ('HTTP_LISTEN' in env) env['HTTP_LISTEN'] = opts.httpListen;
  return {
    root,
    args: [...(ctr.command ?? []), ...(ctr.args ?? [])],
    env,
    mounts,
    containerPath: (p) =>
      p === root || p.startsWith(`${root}/`) ? path.posix.join('/', path.relative(root, p)) : undefined,
  };
}

/** A `gpu-dra driver` process standing in for the plugin pod's container. */
export interface PluginProcess extends Attachment {
  readonly peer: PeerProcess;
  readonly container: PluginContainer;
  readonly httpUrl: string;
  readonly logFile: string;
  /** Replaces the projected token, as the kubelet does before it expires. */
  rotateToken(token: string): void;
}

export interface PluginProcessOptions {
  cluster: Cluster;
  node: NodeHarness;
  sim: SimulatedNode;
  pod: V1Pod;
  /** The pod-bound ServiceAccount token (requestPodBoundToken). */
  token: string;
  /** Extra environment, e.g. `LOG_LEVEL`. */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/**
 * Starts `node dist/cli/main.js <the pod's args>` with the pod's env in its container view, and
 * waits for /readyz. It reaches the apiserver through a kubeconfig whose user reads the
 * projected token file (in a real pod: in-cluster config over the same file). The process is
 * attached to the cluster, so cluster.stop() stops it and dumpLogs() shows its log.
 */
export async function runPluginProcess(opts: PluginProcessOptions): Promise<PluginProcess> {
  const { cluster, node, sim, pod, token } = opts;
  const nodeName = pod.spec?.nodeName ?? '';
  const dir = path.join(cluster.dir, 'plugin', nodeName, pod.metadata?.name ?? 'pod');
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const kubeconfig = cluster.makeKubeconfig(token, `plugin-${pod.metadata?.name ?? nodeName}`);
  // Short: the sockets below it must fit a Unix socket path (107 bytes).
  const containerRoot = path.join(cluster.dir, 'c', pod.metadata?.name?.split('-').at(-1) ?? nodeName);
  // A restarted container starts from its pod's mounts again (links only: their targets stay).
  fs.rmSync(containerRoot, { recursive: true, force: true });
  const container = pluginContainer(pod, simulatedHostLayout(node, sim), containerRoot, {
    token,
    caData: cluster.kubeConfig.getCurrentCluster()?.caData ?? '',
    httpListen: `127.0.0.1:${String(port)}`,
  });
  // In-cluster config reads the projected token; the kubeconfig points at the same file
  // (`tokenFile`, re-read by the driver as the token rotates).
  const text = parse(fs.readFileSync(kubeconfig, 'utf8')) as {
    users: { user: Record<string, string> }[];
  };
  const tokenFile = path.join(container.root, SA_TOKEN_DIR, 'token');
  if (text.users[0]) text.users[0].user = { tokenFile };
  fs.writeFileSync(kubeconfig, stringify(text), { mode: 0o600 });

  const logFile = path.join(dir, 'driver.log');
  const peer = spawnPeer({
    name: `gpu-dra driver[${nodeName}]`,
    command: process.execPath,
    // What the image runs: ENTRYPOINT ["node", "/app/dist/gpu-dra.mjs"], the pod's args.
    args: ['--enable-source-maps', path.join(ROOT, DRIVER_BUNDLE), ...container.args],
    logFile,
    cwd: dir,
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: process.env['HOME'] ?? '/',
      ...container.env,
      KUBECONFIG: kubeconfig,
      // The simulation's only addition: which GPUs the fake libnvidia-ml.so.1 reports.
      FAKE_NVML_CONFIG: sim.configPath,
      ...opts.env,
    },
  });
  const httpUrl = `http://127.0.0.1:${String(port)}`;
  const running: PluginProcess = {
    name: peer.name,
    peer,
    container,
    httpUrl,
    logFile,
    logs: (lines) => `===== ${peer.name} (${describeExit(peer)}) ${logFile}\n${tailFile(logFile, lines)}`,
    rotateToken: (next) => {
      fs.writeFileSync(`${tokenFile}.new`, next, { mode: 0o600 });
      fs.renameSync(`${tokenFile}.new`, tokenFile);
    },
    stop: () => stopPeer(peer, 15_000),
  };
  cluster.attach(running);
  const state = await eventually(
    `${peer.name} /readyz`,
    async () => {
      if (peer.exit !== undefined) return 'exited';
      return (await httpGet(`${httpUrl}/readyz`)).status === 200 ? 'ready' : undefined;
    },
    opts.readyTimeoutMs ?? 60_000,
    250,
  ).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${running.logs(40)}`);
  });
  if (state === 'exited') throw new Error(`${peer.name} exited before it was ready\n${running.logs(40)}`);
  return running;
}
