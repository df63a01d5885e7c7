// One "node" for e2e tests: the kubelet-dra harness of gpu-dra-peers. It creates the Node object,
// runs the kubelet's real plugin manager (watching <rootDir>/plugins_registry) and DRA manager,
// prepares the resources of pods bound to the node, resolves their CDI devices from its own CDI
// dir, and reports everything as JSON lines (see test/peers/README.md).
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

import type { Cluster } from './cluster.js';
import { describeExit, peerFailure, spawnPeer, stopPeer, tailFile, type PeerProcess } from './process.js';

/** One JSON line from kubelet-dra. Every event has `event` and `time`; other keys depend on it. */
export interface KubeletEvent {
  readonly event: string;
  readonly time: string;
  readonly [key: string]: unknown;
}

/** A container in a `prepared` event. */
export interface PreparedContainer {
  name: string;
  init?: boolean;
  cdiDevices: string[];
  /** The OCI runtime spec after CDI injection (absent when injection failed). */
  ociSpec?: Record<string, unknown>;
  cdiError?: string;
}

export interface NodeOptions {
  /** Extra kubelet-dra flags, e.g. `--feature-gates=ResourceHealthStatus=true`. */
  extraArgs?: string[];
  /** Token to authenticate with. Default: the cluster's token for system:node:<name>. */
  token?: string;
  readyTimeoutMs?: number;
}

type Waiter = {
  predicate: (e: KubeletEvent) => boolean;
  resolve: (e: KubeletEvent) => void;
};

export function isKubeletEvent(value: unknown): value is KubeletEvent {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Record<string, unknown>)['event'] === 'string' &&
    typeof (value as Record<string, unknown>)['time'] === 'string'
  );
}

/** The containers of a `prepared` event. */
export function preparedContainers(e: KubeletEvent): PreparedContainer[] {
  const containers = e['containers'];
  return Array.isArray(containers) ? (containers as PreparedContainer[]) : [];
}

export class NodeHarness {
  readonly events: KubeletEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private peer: PeerProcess | undefined;
  readonly rootDir: string;
  /** Where the kubelet watches for registration sockets. */
  readonly registryDir: string;
  /** Conventional parent of the drivers' DRA sockets (<rootDir>/plugins/<driver>/dra.sock). */
  readonly pluginsDir: string;
  /** The only directory the harness reads CDI specs from. */
  readonly cdiDir: string;
  readonly eventsFile: string;
  readonly kubeconfigPath: string;

  /** This node's directories as `gpu-dra driver` options (parseDriverConfig's input). */
  driverDirOptions(): { kubeletRegistryDir: string; kubeletPluginsDir: string; cdiRoot: string } {
    return { kubeletRegistryDir: this.registryDir, kubeletPluginsDir: this.pluginsDir, cdiRoot: this.cdiDir };
  }

  constructor(
    readonly cluster: Cluster,
    readonly nodeName: string,
    private readonly opts: NodeOptions = {},
  ) {
    this.rootDir = path.join(cluster.dir, 'nodes', nodeName);
    this.registryDir = path.join(this.rootDir, 'plugins_registry');
    this.pluginsDir = path.join(this.rootDir, 'plugins');
    this.cdiDir = path.join(this.rootDir, 'cdi');
    this.eventsFile = path.join(this.rootDir, 'events.jsonl');
    for (const dir of [this.rootDir, this.registryDir, this.pluginsDir, this.cdiDir]) {
      fs.mkdirSync(dir, { recursive: true });
    }
    this.kubeconfigPath = cluster.makeKubeconfig(
      opts.token ?? cluster.nodeToken(nodeName),
      `node-${nodeName}`,
    );
  }

  get logFile(): string {
    return path.join(this.rootDir, 'kubelet-dra.log');
  }

  /**
   * Starts kubelet-dra and waits for its `ready` event (node registered, startup slice wipe done).
   * After stop() it starts again on the same directories, as a restarted kubelet: same checkpoint
   * in <rootDir>/state, same registry dir; events keep accumulating in `events`.
   */
  async start(): Promise<void> {
    if (this.peer !== undefined && this.peer.exit === undefined)
      throw new Error(`kubelet-dra for ${this.nodeName} is already running`);
    const from = this.events.length;
    const peer = spawnPeer({
      name: `kubelet-dra[${this.nodeName}]`,
      command: this.cluster.binary,
      args: [
        'kubelet-dra',
        `--kubeconfig=${this.kubeconfigPath}`,
        `--node-name=${this.nodeName}`,
        `--root-dir=${this.rootDir}`,
        `--cdi-dir=${this.cdiDir}`,
        `--events=${this.eventsFile}`,
        ...(this.opts.extraArgs ?? []),
      ],
      logFile: this.logFile,
      cwd: this.rootDir,
      pipeStdout: true,
    });
    this.peer = peer;
    const stdout = peer.child.stdout;
    if (stdout === null) throw new Error('kubelet-dra stdout not piped');
    const rl = readline.createInterface({ input: stdout });
    rl.on('line', (line) => {
      this.onLine(line);
    });
    void peer.exited.then(() => {
      for (const w of this.waiters) w.resolve({ event: '__exited__', time: new Date().toISOString() });
    });
    await this.waitForEvent(
      (e) => e.event === 'ready' && this.events.indexOf(e) >= from,
      this.opts.readyTimeoutMs ?? 90_000,
    );
  }

  private onLine(line: string): void {
    const trimmed = line.trim();
    if (!trimmed.startsWith('{')) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      return;
    }
    if (!isKubeletEvent(parsed)) return;
    this.events.push(parsed);
    for (const w of this.waiters) {
      if (w.predicate(parsed)) w.resolve(parsed);
    }
  }

  /**
   * Resolves with the first event (already received or future) matching `predicate`. Rejects with
   * the harness log tail on timeout or when the harness exits.
   */
  waitForEvent(predicate: (e: KubeletEvent) => boolean, timeoutMs = 60_000): Promise<KubeletEvent> {
    const seen = this.events.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    const peer = this.peer;
    if (peer === undefined) return Promise.reject(new Error(`kubelet-dra for ${this.nodeName} not started`));
    if (peer.exit !== undefined)
      return Promise.reject(peerFailure(peer, 'exited while waiting for an event'));
    return new Promise<KubeletEvent>((resolve, reject) => {
      const waiter: Waiter = {
        predicate,
        resolve: (e) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          if (e.event === '__exited__') {
            reject(peerFailure(peer, 'exited while waiting for an event'));
          } else {
            resolve(e);
          }
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(
          peerFailure(
            peer,
            `did not emit the expected event within ${String(timeoutMs)}ms; events so far: ${this.events.map((e) => e.event).join(', ')}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Events for one pod (`namespace/name`). */
  eventsFor(pod: string): KubeletEvent[] {
    return this.events.filter((e) => e['pod'] === pod);
  }

  logTail(lines = 60): string {
    return tailFile(this.logFile, lines);
  }

  /** Log tail with a header, as Cluster.dumpLogs() prints it. */
  logs(lines = 60): string {
    const state = this.peer === undefined ? 'not started' : describeExit(this.peer);
    return `===== kubelet-dra[${this.nodeName}] (${state}) ${this.logFile}\n${this.logTail(lines)}`;
  }

  dumpLogs(lines = 60): void {
    process.stderr.write(`${this.logs(lines)}\n`);
  }

  async stop(): Promise<void> {
    if (this.peer !== undefined) await stopPeer(this.peer);
  }
}

export async function startNode(
  cluster: Cluster,
  nodeName: string,
  opts: NodeOptions = {},
): Promise<NodeHarness> {
  const node = new NodeHarness(cluster, nodeName, opts);
  await node.start();
  return node;
}
