// Runs the MPS daemon pods the driver creates on a simulated node, in place of a container
// runtime: each pod's container becomes a `gpu-dra mps-control-daemon` process with the pod's
// args, its hostPath mounts reproduced as symlinks (pluginContainer, as for the plugin pod), and
// is stopped with SIGTERM when the pod is deleted, after which the pod is removed as a kubelet
// removes a terminated pod. What the daemon does to the GPU goes through the simulated driver
// root's recording nvidia-cuda-mps-control.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';

import type { SimulatedNode } from '../../../src/sim/fakeHost.js';
import { DRIVER_BUNDLE, pluginContainer, ROOT, simulatedHostLayout } from '../../playground/install.js';
import type { Cluster } from './cluster.js';
import type { NodeHarness } from './node.js';
import { describeExit, spawnPeer, stopPeer, tailFile, type PeerProcess } from './process.js';

export interface DaemonPodRunner {
  /** Pods started so far, by name (current and stopped). */
  readonly started: ReadonlyMap<string, { pod: V1Pod; peer: PeerProcess; logFile: string }>;
  stop(): Promise<void>;
}

/**
 * Watches (polls) `namespace` for pods on `node` matching `labelSelector` and runs them. A
 * hostPath that is already a path of the simulation (the plugin names its own directory, which
 * in the simulated container view lies below the test's temp dir) is used as it is.
 */
export function runDaemonPods(opts: {
  cluster: Cluster;
  node: NodeHarness;
  sim: SimulatedNode;
  namespace: string;
  labelSelector: string;
}): DaemonPodRunner {
  const core = opts.cluster.kubeConfig.makeApiClient(CoreV1Api);
  const started = new Map<string, { pod: V1Pod; peer: PeerProcess; logFile: string }>();
  const layout = simulatedHostLayout(opts.node, opts.sim);
  let stopped = false;

  const start = (pod: V1Pod): void => {
    const name = pod.metadata?.name ?? '';
    const dir = path.join(opts.cluster.dir, 'daemons', name);
    const simPaths: Record<string, string> = { ...layout };
    for (const v of pod.spec?.volumes ?? []) {
      const p = v.hostPath?.path;
      if (p === undefined || !p.startsWith(`${opts.cluster.dir}/`)) continue;
      if (v.hostPath?.type === 'DirectoryOrCreate') fs.mkdirSync(p, { recursive: true });
      // Resolved now: the plugin's container view (links) is rebuilt when the plugin restarts,
      // and a host directory does not move under a running container.
      simPaths[p] = fs.realpathSync(p);
    }
    const container = pluginContainer(pod, simPaths, path.join(dir, 'root'), {
      token: '',
      caData: '',
      httpListen: '127.0.0.1:0',
    });
    const args = container.args.map((a) => {
      const m = /^(--[a-z-]+=)(\/.*)$/.exec(a);
      return m?.[1] &&
        m[2] &&
        container.mounts.some((mt) => m[2] === mt.mountPath || m[2]?.startsWith(`${mt.mountPath}/`))
        ? `${m[1]}${path.join(container.root, m[2])}`
        : a;
    });
    const logFile = path.join(dir, 'daemon.out');
    const peer = spawnPeer({
      name: `mps daemon ${name}`,
      command: process.execPath,
      args: ['--enable-source-maps', path.join(ROOT, DRIVER_BUNDLE), ...args],
      logFile,
      cwd: dir,
      env: {
        PATH: process.env['PATH'] ?? '/usr/bin:/bin',
        HOME: process.env['HOME'] ?? '/',
        ...container.env,
      },
    });
    started.set(name, { pod, peer, logFile });
    opts.cluster.attach({
      name: peer.name,
      logs: (lines) => `===== ${peer.name} (${describeExit(peer)}) ${logFile}\n${tailFile(logFile, lines)}`,
      stop: () => stopPeer(peer, 15_000),
    });
  };

  const finish = async (pod: V1Pod): Promise<void> => {
    const name = pod.metadata?.name ?? '';
    const run = started.get(name);
    if (run && run.peer.exit === undefined) await stopPeer(run.peer, 15_000);
    await core
      .deleteNamespacedPod({ namespace: opts.namespace, name, gracePeriodSeconds: 0 })
      .catch(() => undefined);
  };

  const loop = (async () => {
    while (!stopped) {
      try {
        const list = await core.listNamespacedPod({
          namespace: opts.namespace,
          labelSelector: opts.labelSelector,
          fieldSelector: `spec.nodeName=${opts.node.nodeName}`,
        });
        const present = new Set<string>();
        for (const pod of list.items) {
          const name = pod.metadata?.name ?? '';
          present.add(name);
          if (pod.metadata?.deletionTimestamp) await finish(pod);
          else if (!started.has(name)) start(pod);
        }
        for (const [name, run] of started) {
          if (!present.has(name) && run.peer.exit === undefined) await stopPeer(run.peer, 15_000);
        }
      } catch {
        // the apiserver may be restarting; poll again
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();

  return {
    started,
    async stop() {
      stopped = true;
      await loop;
      for (const run of started.values()) if (run.peer.exit === undefined) await stopPeer(run.peer, 15_000);
    },
  };
}
