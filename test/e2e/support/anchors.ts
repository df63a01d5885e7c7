// The "anchors" (issue 12): NVIDIA's gpu-kubelet-plugin and the example driver's kubelet plugin,
// the Go drivers gpu-dra is compared against, built by test/anchors/build.sh and started here as
// child processes on the same simulated node (src/sim/fakeHost.ts) our driver uses, registered
// with a kubelet-dra node of the e2e cluster or, in the benchmarks, with no kubelet at all (the
// bench calls their dra.sock itself). Their logs go to a file that the fixture's failure dump
// prints; they are stopped with the file's other tracked things. Needs root: mknod for the
// device nodes, a mount namespace for NVIDIA's /sys.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { RbacAuthorizationV1Api } from '@kubernetes/client-node';

import { SIM_MAJORS, simBusId, type SimulatedNode } from '../../../src/sim/fakeHost.js';
import type { Cluster } from './cluster.js';
import type { E2e } from './fixture.js';
import { buildOnce } from './peers.js';
import {
  describeExit,
  sleep,
  spawnPeer,
  stopPeer,
  tailFile,
  waitUntilReady,
  type PeerProcess,
} from './process.js';

export type AnchorName = 'nvidia' | 'example';

/** The driver name each anchor publishes and registers under. */
export const ANCHOR_DRIVER: Readonly<Record<AnchorName, string>> = {
  nvidia: 'gpu.nvidia.com',
  example: 'gpu.example.com',
};

/**
 * The identity the anchors run as: their own, because they need more than ours (NVIDIA's chart
 * grants nodes and pods reads, claim watches). Pass it in useCluster's `extraUsers`.
 */
export const ANCHOR_USER = 'system:serviceaccount:anchors:anchor-driver';

/**
 * The anchor's binary, built by test/anchors/build.sh when not cached (cold: ~9 min for NVIDIA's,
 * ~5 min for the example driver's on 2 cores; warm: seconds). GPU_DRA_ANCHOR_<NAME> (e.g.
 * GPU_DRA_ANCHOR_NVIDIA) names a prebuilt binary instead.
 */
export function ensureAnchorBinary(name: AnchorName): Promise<string> {
  const given = process.env[`GPU_DRA_ANCHOR_${name.toUpperCase()}`];
  if (given !== undefined && given !== '') return Promise.resolve(given);
  return buildOnce('test/anchors/build.sh', name, `anchor ${name}`);
}

/**
 * NVIDIA's mock NVML, built by `test/anchors/build.sh mocknvml` when not cached (cold: about a
 * minute on 2 cores; warm: instant): a directory with `libnvidia-ml.so.1`, the profile YAMLs in
 * `configs/` and `render-pci-sysfs`. GPU_DRA_MOCK_NVML names a prebuilt directory instead.
 */
export function ensureMockNvml(): Promise<string> {
  const given = process.env['GPU_DRA_MOCK_NVML'];
  if (given !== undefined && given !== '') return Promise.resolve(given);
  return buildOnce('test/anchors/build.sh', 'mocknvml', "NVIDIA's mock NVML");
}

/** Grants ANCHOR_USER the rules of NVIDIA's kubelet-plugin ClusterRole (a superset of the example's). */
export async function grantAnchorRbac(cluster: Cluster): Promise<void> {
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  const name = 'anchor-kubelet-plugin';
  await rbac.createClusterRole({
    body: {
      metadata: { name },
      rules: [
        { apiGroups: ['resource.k8s.io'], resources: ['resourceclaims'], verbs: ['get', 'list', 'watch'] },
        {
          apiGroups: ['resource.k8s.io'],
          resources: ['resourceslices'],
          verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'],
        },
        { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch', 'update'] },
        { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
        {
          apiGroups: ['resource.nvidia.com'],
          resources: ['computedomains'],
          verbs: ['get', 'list', 'watch'],
        },
      ],
    },
  });
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: ANCHOR_USER }],
    },
  });
}

/**
 * Makes the simulated node usable by NVIDIA's plugin, which reads more of a real host than ours:
 * real character devices under `<driver root>/dev` (its CDI spec generation stats them; plain files
 * give "empty device edits"), and a PCI `resource` file in each GPU's sysfs directory (go-nvlib's
 * PCI scan fails without one, and with it the NUMA node attribute goes missing), and a stand-in
 * nvidia-cdi-hook. Idempotent.
 * Needs root (mknod).
 */
export function prepareSimForAnchors(sim: SimulatedNode): void {
  const dev = path.join(sim.hostPaths.driverRoot, 'dev');
  const nodes: [string, number, number][] = [
    ['nvidiactl', SIM_MAJORS.frontend, 255],
    ['nvidia-uvm', SIM_MAJORS.uvm, 0],
    ['nvidia-uvm-tools', SIM_MAJORS.uvm, 1],
    ['nvidia-caps/nvidia-cap1', SIM_MAJORS.caps, 1],
    ['nvidia-caps/nvidia-cap2', SIM_MAJORS.caps, 2],
    ...sim.config.gpus.map((g): [string, number, number] => [
      `nvidia${g.minor}`,
      SIM_MAJORS.frontend,
      g.minor,
    ]),
  ];
  for (const [rel, major, minor] of nodes) {
    const file = path.join(dev, rel);
    if (fs.existsSync(file)) continue;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    execFileSync('mknod', ['-m', '0666', file, 'c', String(major), String(minor)]);
  }
  // BAR0 16 MiB, BAR1 64 GiB, BAR3 32 MiB, as an H100 shows them; the values only need to parse.
  const bar = (start: bigint, size: bigint, flags: number): string =>
    `0x${start.toString(16).padStart(16, '0')} 0x${(start + size - 1n).toString(16).padStart(16, '0')} 0x${flags.toString(16).padStart(16, '0')}`;
  const empty = `0x${'0'.repeat(16)} 0x${'0'.repeat(16)} 0x${'0'.repeat(16)}`;
  sim.config.gpus.forEach((gpu, i) => {
    const base = 0x200000000000n + BigInt(i) * 0x2000000000n;
    const lines = [
      bar(0xa0000000n + BigInt(i) * 0x2000000n, 0x1000000n, 0x40200),
      empty,
      bar(base, 0x1000000000n, 0x14220c),
      empty,
      bar(base + 0x1000000000n, 0x2000000n, 0x14220c),
      ...Array.from({ length: 8 }, () => empty),
    ];
    const file = path.join(sim.hostPaths.sysRoot, 'bus', 'pci', 'devices', simBusId(gpu), 'resource');
    if (!fs.existsSync(file)) fs.writeFileSync(file, `${lines.join('\n')}\n`);
  });
  // An nvidia-cdi-hook where NVIDIA's container toolkit installs it: our driver adds its hooks to
  // CDI specs only when it finds one; NVIDIA's is told the path (never run here).
  const hook = path.join(sim.hostPaths.driverRoot, 'usr', 'bin', 'nvidia-cdi-hook');
  if (!fs.existsSync(hook)) fs.writeFileSync(hook, '#!/bin/sh\n', { mode: 0o755 });
}

/**
 * Where an anchor runs: its node and the kubelet-facing directories. A NodeHarness (kubelet-dra)
 * is one; a benchmark without a kubelet makes its own.
 */
export interface AnchorDirs {
  readonly nodeName: string;
  /** Its log goes here. */
  readonly rootDir: string;
  /** Where its registration socket goes (the kubelet's plugins_registry). */
  readonly registryDir: string;
  /** Parent of its dra.sock (`<pluginsDir>/<driver>/dra.sock`) and of its checkpoint. */
  readonly pluginsDir: string;
  readonly cdiDir: string;
}

export interface AnchorOptions {
  readonly name: AnchorName;
  /** The node and directories it runs with (e.g. the kubelet-dra node it registers with). */
  readonly dirs: AnchorDirs;
  /** The simulated node (NVIDIA's plugin only; the example driver has no NVML). */
  readonly sim?: SimulatedNode;
  /** Kubeconfig of the identity it runs as (see ANCHOR_USER). */
  readonly kubeconfig: string;
  /** klog `-v`; default 6 (tests read the logs). Benchmarks pass each chart's default. */
  readonly verbosity?: number;
  readonly extraArgs?: readonly string[];
}

export class AnchorProcess {
  readonly driver: string;
  readonly logFile: string;
  readonly draSocket: string;
  readonly registrationSocket: string;
  private peer: PeerProcess | undefined;
  /** `Date.now()` right before the spawn; NaN before it. */
  spawnedAt = Number.NaN;

  constructor(
    readonly binary: string,
    private readonly opts: AnchorOptions,
  ) {
    this.driver = ANCHOR_DRIVER[opts.name];
    this.logFile = path.join(opts.dirs.rootDir, `anchor-${opts.name}.log`);
    this.draSocket = path.join(opts.dirs.pluginsDir, this.driver, 'dra.sock');
    this.registrationSocket = path.join(opts.dirs.registryDir, `${this.driver}-reg.sock`);
  }

  /** The command line, wrapped for NVIDIA's plugin in a private mount namespace with the simulated sys on /sys. */
  private commandLine(): { command: string; args: string[]; env: NodeJS.ProcessEnv } {
    const { dirs, name, sim } = this.opts;
    const common = [
      `--node-name=${dirs.nodeName}`,
      `--cdi-root=${dirs.cdiDir}`,
      `--kubelet-registrar-directory-path=${dirs.registryDir}`,
      `--kubelet-plugins-directory-path=${dirs.pluginsDir}`,
      `--kubeconfig=${this.opts.kubeconfig}`,
      // The defaults (qps 5, burst 10) make client-side throttling dominate every prepare.
      '--kube-api-qps=1000',
      '--kube-api-burst=1000',
      `-v=${String(this.opts.verbosity ?? 6)}`,
      ...(this.opts.extraArgs ?? []),
    ];
    if (name === 'example') return { command: this.binary, args: common, env: process.env };
    if (sim === undefined) throw new Error('the nvidia anchor needs the simulated node (sim)');
    const root = sim.hostPaths.driverRoot;
    const args = [
      ...common,
      `--nvidia-driver-root=${root}`,
      `--container-driver-root=${root}`,
      '--image-name=anchors.invalid/gpu-kubelet-plugin:unused',
      // Only written into CDI specs, never run here; where our driver finds it (prepareSimForAnchors).
      `--nvidia-cdi-hook-path=${path.join(root, 'usr', 'bin', 'nvidia-cdi-hook')}`,
    ];
    // It reads the hard-coded /sys/bus/pci/devices, and for MIG devices /proc/devices (the
    // nvidia-caps major) and /proc/driver/nvidia/capabilities (their minors): the simulated
    // node's, bound over the host's in a mount namespace of its own.
    const script =
      'mount --bind "$1" /sys && mount --bind "$2" /proc/driver && mount --bind "$3" /proc/devices && shift 3 && exec "$@"';
    return {
      command: 'unshare',
      args: [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        script,
        'sh',
        sim.hostPaths.sysRoot,
        path.join(sim.hostPaths.procRoot, 'driver'),
        path.join(sim.hostPaths.procRoot, 'devices'),
        this.binary,
        ...args,
      ],
      // It dlopens <driver root>/usr/lib/.../libnvidia-ml.so.1 (the fake), which reads this config.
      env: { ...process.env, ...sim.env },
    };
  }

  /**
   * Starts the process without waiting for it (a benchmark times what follows from
   * `spawnedAt`). The directories and the simulated node's extras are made first.
   */
  spawn(): PeerProcess {
    if (this.peer !== undefined) throw new Error(`anchor ${this.opts.name} already started`);
    // NVIDIA's plugin refuses to start without the registrar directory.
    for (const d of [path.join(this.opts.dirs.pluginsDir, this.driver), this.opts.dirs.registryDir])
      fs.mkdirSync(d, { recursive: true });
    if (this.opts.sim !== undefined) prepareSimForAnchors(this.opts.sim);
    const { command, args, env } = this.commandLine();
    fs.appendFileSync(this.logFile, `[fixture] ${command} ${args.join(' ')}\n`);
    this.spawnedAt = Date.now();
    this.peer = spawnPeer({
      name: `anchor-${this.opts.name}[${this.opts.dirs.nodeName}]`,
      command,
      args,
      env,
      logFile: this.logFile,
    });
    return this.peer;
  }

  /** The spawned process; throws before spawn(). */
  get process(): PeerProcess {
    if (this.peer === undefined) throw new Error(`anchor ${this.opts.name} not started`);
    return this.peer;
  }

  /**
   * The pid of the driver itself. NVIDIA's is spawned as `unshare … sh -c '… exec BINARY'`: the
   * shell execs the binary in the same process, but only after the bind mount, so this waits
   * until that pid (or, should a wrapper fork instead, a descendant) runs the binary.
   */
  async driverPid(timeoutMs = 10_000): Promise<number> {
    const root = this.process.child.pid;
    if (root === undefined) throw new Error(`anchor ${this.opts.name} has no pid`);
    const want = fs.realpathSync(this.binary);
    const exe = (pid: number): string | undefined => {
      try {
        return fs.readlinkSync(`/proc/${String(pid)}/exe`);
      } catch {
        return undefined;
      }
    };
    const children = (pid: number): number[] => {
      try {
        return fs
          .readFileSync(`/proc/${String(pid)}/task/${String(pid)}/children`, 'utf8')
          .split(/\s+/)
          .filter(Boolean)
          .map(Number);
      } catch {
        return [];
      }
    };
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const queue = [root];
      for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
        if (exe(pid) === want) return pid;
        queue.push(...children(pid));
      }
      if (this.peer?.exit !== undefined || Date.now() > deadline)
        throw new Error(`no process runs ${want} below pid ${String(root)}:\n${this.logs()}`);
      await sleep(5);
    }
  }

  /** Starts the process and waits for both sockets. */
  async start(timeoutMs = 60_000): Promise<void> {
    await waitUntilReady(
      this.spawn(),
      'serving dra.sock and the registration socket',
      () => Promise.resolve(fs.existsSync(this.draSocket) && fs.existsSync(this.registrationSocket)),
      timeoutMs,
    );
  }

  logs(lines = 60): string {
    const state = this.peer === undefined ? 'not started' : describeExit(this.peer);
    return `===== anchor ${this.opts.name}[${this.opts.dirs.nodeName}] (${state}) ${this.logFile}\n${tailFile(this.logFile, lines)}`;
  }

  async stop(): Promise<void> {
    if (this.peer !== undefined) await stopPeer(this.peer);
  }
}

/**
 * Builds (if needed) and starts an anchor attached to the fixture: its log is in every failure
 * dump and it is stopped with the cluster, before the nodes' temp dirs go.
 */
export async function startAnchor(fx: E2e, opts: AnchorOptions): Promise<AnchorProcess> {
  const anchor = new AnchorProcess(await ensureAnchorBinary(opts.name), opts);
  fx.cluster.attach({
    name: `anchor-${opts.name}`,
    logs: (lines) => anchor.logs(lines),
    stop: () => anchor.stop(),
  });
  await anchor.start();
  return anchor;
}
