/**
 * MPS control daemons: one per MPS group of a claim (plan.ts), each a Deployment of one pod
 * pinned to this node, running `gpu-dra mps-control-daemon` (cli/actions/mpsDaemon.ts) from the
 * plugin's own image.
 *
 * Why a Deployment and not a child process: a process the plugin spawns lives in the plugin's
 * container and dies with it, so every plugin restart or upgrade would kill the MPS servers
 * under running pods. A pod of its own outlives the plugin, the kubelet restarts it if it
 * crashes, and the Deployment recreates it if it is evicted or deleted. NVIDIA's driver made
 * the same choice.
 *
 * Readiness is a file, not the API: the daemon writes `<dir>/ready` once the control daemon
 * answers and its limits are set, and the plugin (which shares the directory through the host)
 * polls it. So prepare needs no pod RBAC and no kubelet status round trip, and on a timeout the
 * error quotes the daemon's own log lines from the same directory.
 *
 * Layout on the host, under the plugin's directory (the same path inside the plugin's
 * container), named by the daemon id (claim UID + hash: never the claim's name):
 *   mps/<id>/pipe   CUDA_MPS_PIPE_DIRECTORY, bound into the workload at /tmp/nvidia-mps
 *   mps/<id>/log    CUDA_MPS_LOG_DIRECTORY (control.log, server.log)
 *   mps/<id>/shm    the daemon's and the workload's /dev/shm (a tmpfs the daemon mounts)
 *   mps/<id>/ready  written by the daemon when it serves; removed when it stops
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpuDraError, errorMessage } from '../util/errors.js';
import { failpoint } from '../util/failpoint.js';
import type { Logger } from '../util/log.js';
import { KubeApiError, type KubeClient } from '../kube/client.js';
import type { CdiContainerEdits } from '../cdi/spec.js';
import type { MpsGroup } from './plan.js';

/** Where the workload finds the daemon's pipes (NVIDIA's driver uses the same path). */
export const MPS_PIPE_CONTAINER_PATH = '/tmp/nvidia-mps';
export const MPS_DEPLOYMENT_PREFIX = 'gpu-dra-mps-';
const COMPONENT = 'mps-control-daemon';
const LABEL_COMPONENT = 'app.kubernetes.io/component';
const LABEL_NODE = 'gpu-dra.dev/node';
const LABEL_CLAIM = 'gpu-dra.dev/claim-uid';
const LABEL_DAEMON = 'gpu-dra.dev/mps-daemon';

/** What every daemon of this plugin shares. */
export interface MpsDaemonSettings {
  /** The plugin's namespace (the daemons live next to it). */
  readonly namespace: string;
  /** The plugin's image: the daemon runs `gpu-dra mps-control-daemon` from it. */
  readonly image: string;
  readonly nodeName: string;
  readonly driverName: string;
  /** The plugin's directory; the same path on the host and in the plugin's container. */
  readonly pluginDir: string;
  /** The driver root as the host sees it (mounted into the daemon at /driver-root). */
  readonly hostDriverRoot: string;
  /** Size of the daemon's shared /dev/shm tmpfs in bytes; 0 = use the directory as it is. */
  readonly shmSizeBytes: number;
}

export interface MpsDirs {
  readonly root: string;
  readonly pipe: string;
  readonly log: string;
  readonly shm: string;
  readonly ready: string;
}

export function mpsDirs(pluginDir: string, id: string): MpsDirs {
  return daemonDirs(path.join(pluginDir, 'mps', id));
}

/** The layout below one daemon's directory, as the plugin and the daemon (its `--dir`) see it. */
export function daemonDirs(root: string): MpsDirs {
  return {
    root,
    pipe: path.join(root, 'pipe'),
    log: path.join(root, 'log'),
    shm: path.join(root, 'shm'),
    ready: path.join(root, 'ready'),
  };
}

export function mpsDeploymentName(id: string): string {
  return `${MPS_DEPLOYMENT_PREFIX}${id}`;
}

/** The daemon's command line (after the image's `gpu-dra`), in container paths. */
export function mpsDaemonArgs(
  group: MpsGroup,
  pinnedLimitsMiB: Readonly<Record<string, number>>,
  shmSizeBytes: number,
): string[] {
  const args = [
    'mps-control-daemon',
    '--driver-root=/driver-root',
    '--dir=/mps',
    `--visible-devices=${group.uuids.join(',')}`,
    `--shm-size=${String(shmSizeBytes)}`,
  ];
  const pct = group.mps.defaultActiveThreadPercentage;
  if (pct !== undefined) args.push(`--active-thread-percentage=${String(pct)}`);
  for (const uuid of group.uuids) {
    const mib = pinnedLimitsMiB[uuid];
    if (mib !== undefined) args.push(`--pinned-mem-limit=${uuid}=${String(mib)}M`);
  }
  if (group.mps.multiUser) args.push('--multi-user');
  return args;
}

/** The Deployment running one daemon. Pure. */
export function mpsDeployment(
  settings: MpsDaemonSettings,
  claimUid: string,
  group: MpsGroup,
  pinnedLimitsMiB: Readonly<Record<string, number>>,
): Record<string, unknown> {
  const name = mpsDeploymentName(group.id);
  const dirs = mpsDirs(settings.pluginDir, group.id);
  const labels = {
    'app.kubernetes.io/name': 'gpu-dra',
    [LABEL_COMPONENT]: COMPONENT,
    [LABEL_NODE]: settings.nodeName,
    [LABEL_CLAIM]: claimUid,
    [LABEL_DAEMON]: group.id,
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: settings.namespace, labels },
    spec: {
      replicas: 1,
      // Never two daemons on one pipe directory, not even during a replacement.
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { [LABEL_DAEMON]: group.id } },
      template: {
        metadata: { labels },
        spec: {
          nodeName: settings.nodeName,
          // MPS clients in other pods must see the server's processes and it theirs.
          hostPID: true,
          automountServiceAccountToken: false,
          // The daemon serves pods already running here: no taint may keep it off or evict it.
          tolerations: [{ operator: 'Exists' }],
          terminationGracePeriodSeconds: 15,
          containers: [
            {
              name: COMPONENT,
              image: settings.image,
              imagePullPolicy: 'IfNotPresent',
              args: mpsDaemonArgs(group, pinnedLimitsMiB, settings.shmSizeBytes),
              // Device nodes of the claim's GPUs, and mounting its /dev/shm tmpfs.
              securityContext: { privileged: true },
              readinessProbe: { exec: { command: ['test', '-f', '/mps/ready'] }, periodSeconds: 2 },
              resources: { requests: { cpu: '10m', memory: '32Mi' } },
              volumeMounts: [
                { name: 'driver-root', mountPath: '/driver-root', readOnly: true },
                // Bidirectional: the tmpfs the daemon mounts on /mps/shm must reach the host, where
                // the workload's CDI mount picks it up.
                { name: 'mps', mountPath: '/mps', mountPropagation: 'Bidirectional' },
              ],
            },
          ],
          volumes: [
            { name: 'driver-root', hostPath: { path: settings.hostDriverRoot, type: 'Directory' } },
            { name: 'mps', hostPath: { path: dirs.root, type: 'DirectoryOrCreate' } },
          ],
        },
      },
    },
  };
}

/** What a workload using the group's devices gets: the daemon's pipes and /dev/shm. */
export function mpsContainerEdits(pluginDir: string, id: string): CdiContainerEdits {
  const dirs = mpsDirs(pluginDir, id);
  return {
    env: [`CUDA_MPS_PIPE_DIRECTORY=${MPS_PIPE_CONTAINER_PATH}`],
    mounts: [
      {
        hostPath: dirs.pipe,
        containerPath: MPS_PIPE_CONTAINER_PATH,
        options: ['rw', 'nosuid', 'nodev', 'bind'],
      },
      { hostPath: dirs.shm, containerPath: '/dev/shm', options: ['rw', 'nosuid', 'nodev', 'bind'] },
    ],
  };
}

/** The last `n` lines of a daemon's logs (its own and MPS's control.log), for an error message. */
export function lastLogLines(dirs: MpsDirs, n = 8): string[] {
  const lines: string[] = [];
  for (const file of [path.join(dirs.root, 'daemon.log'), path.join(dirs.log, 'control.log')]) {
    try {
      const text = fs.readFileSync(file, 'utf8');
      lines.push(
        ...text
          .split('\n')
          .filter((l) => l.trim() !== '')
          .slice(-n),
      );
    } catch {
      // not written yet
    }
  }
  return lines.slice(-n).map((l) => (l.length > 200 ? `${l.slice(0, 200)}…` : l));
}

export interface MpsDaemonsOptions {
  readonly kube: KubeClient;
  readonly settings: MpsDaemonSettings;
  /** How long prepare waits for a daemon to report ready; default 60 s. */
  readonly readyTimeoutMs?: number;
  /** How long unprepare waits for a daemon to stop before removing its directory; default 20 s. */
  readonly stopTimeoutMs?: number;
  readonly pollMs?: number;
}

/** Starts, stops and sweeps the daemons through the API and their directories. */
export class MpsDaemons {
  constructor(private readonly opts: MpsDaemonsOptions) {}

  get settings(): MpsDaemonSettings {
    return this.opts.settings;
  }

  private deploymentsPath(name?: string): string {
    const base = `/apis/apps/v1/namespaces/${encodeURIComponent(this.opts.settings.namespace)}/deployments`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  /**
   * Creates the daemon (an existing one of the same id is taken as is: a repeated prepare) and
   * waits until it reports ready. Throws MPS_DAEMON_FAILED or MPS_DAEMON_NOT_READY.
   */
  async start(
    claimUid: string,
    group: MpsGroup,
    pinnedLimitsMiB: Readonly<Record<string, number>>,
    logger: Logger,
  ): Promise<void> {
    const { settings } = this.opts;
    const dirs = mpsDirs(settings.pluginDir, group.id);
    for (const dir of [dirs.pipe, dirs.log]) fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    // Containers of any user must reach the server's shared memory, as with a host's /dev/shm.
    fs.mkdirSync(dirs.shm, { recursive: true });
    fs.chmodSync(dirs.shm, 0o1777);
    const name = mpsDeploymentName(group.id);
    try {
      await this.opts.kube.request('POST', this.deploymentsPath(), {
        body: mpsDeployment(settings, claimUid, group, pinnedLimitsMiB),
      });
      failpoint('mps-daemon-created');
      logger.info({ mpsDaemon: `${settings.namespace}/${name}`, devices: group.uuids }, 'MPS daemon created');
    } catch (err) {
      if (!(err instanceof KubeApiError && err.statusCode === 409)) {
        throw new GpuDraError(
          'MPS_DAEMON_FAILED',
          `cannot create MPS daemon ${settings.namespace}/${name}: ${errorMessage(err)}`,
          { cause: err, claimUid },
        );
      }
    }
    await this.waitReady(claimUid, name, dirs);
  }

  private async waitReady(claimUid: string, name: string, dirs: MpsDirs): Promise<void> {
    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 60_000);
    const poll = this.opts.pollMs ?? 100;
    for (;;) {
      if (fs.existsSync(dirs.ready)) return;
      if (Date.now() >= deadline) break;
      await sleep(poll);
    }
    const lines = lastLogLines(dirs);
    throw new GpuDraError(
      'MPS_DAEMON_NOT_READY',
      `MPS daemon ${this.opts.settings.namespace}/${name} not ready after ${String(Math.round((this.opts.readyTimeoutMs ?? 60_000) / 1000))} s` +
        (lines.length > 0
          ? `; its last log lines: ${lines.join(' | ')}`
          : '; it wrote no log yet (pod not started?)'),
      { claimUid },
    );
  }

  /**
   * Deletes the daemon (gone already is fine), waits a bounded time for it to stop, then removes
   * its directory. Throws MPS_DAEMON_FAILED when the API refuses, so the caller can retry.
   */
  async stop(id: string, logger: Logger): Promise<void> {
    const name = mpsDeploymentName(id);
    try {
      await this.opts.kube.request('DELETE', this.deploymentsPath(name), {
        body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Foreground' },
      });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.statusCode === 404)) {
        throw new GpuDraError(
          'MPS_DAEMON_FAILED',
          `cannot delete MPS daemon ${this.opts.settings.namespace}/${name}: ${errorMessage(err)}`,
          { cause: err },
        );
      }
    }
    failpoint('mps-daemon-deleted');
    const dirs = mpsDirs(this.opts.settings.pluginDir, id);
    const deadline = Date.now() + (this.opts.stopTimeoutMs ?? 20_000);
    while (fs.existsSync(dirs.ready) && Date.now() < deadline) await sleep(this.opts.pollMs ?? 100);
    if (fs.existsSync(dirs.ready)) {
      logger.warn(
        { mpsDaemon: name },
        'MPS daemon still running after its deletion; removing its directory anyway',
      );
    }
    removeDir(dirs.root, logger);
    logger.info({ mpsDaemon: `${this.opts.settings.namespace}/${name}` }, 'MPS daemon removed');
  }

  /**
   * Start-up: removes daemons of this node, and daemon directories, that no recorded claim owns
   * (a crash between creating one and recording it, or a checkpoint lost). Returns their ids.
   */
  async sweep(owned: ReadonlySet<string>, logger: Logger): Promise<string[]> {
    const { settings } = this.opts;
    const removed = new Set<string>();
    const list = await this.opts.kube.request<{
      items?: { metadata?: { labels?: Record<string, string> } }[];
    }>('GET', this.deploymentsPath(), {
      query: { labelSelector: `${LABEL_COMPONENT}=${COMPONENT},${LABEL_NODE}=${settings.nodeName}` },
    });
    for (const item of list.items ?? []) {
      const id = item.metadata?.labels?.[LABEL_DAEMON];
      if (id && !owned.has(id)) {
        await this.stop(id, logger);
        failpoint('orphan-mps-removed');
        removed.add(id);
      }
    }
    const root = path.join(settings.pluginDir, 'mps');
    let dirs: string[] = [];
    try {
      dirs = fs.readdirSync(root);
    } catch {
      // none yet
    }
    for (const id of dirs) {
      if (owned.has(id) || removed.has(id)) continue;
      removeDir(path.join(root, id), logger);
      removed.add(id);
    }
    return [...removed].sort();
  }
}

function removeDir(dir: string, logger: Logger): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    // A tmpfs still mounted by a dying daemon: the next sweep removes it.
    logger.warn({ dir, err: errorMessage(err) }, 'cannot remove an MPS daemon directory yet');
  }
}
