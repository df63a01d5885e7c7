// `gpu-dra driver` as a child process (`node dist/gpu-dra.mjs driver ...`) on a simulated node,
// the way a DaemonSet pod runs it: its own process, its own kubeconfig, metrics on loopback.
import { simNodeFlags } from '../../support/sim.js';
import fs from 'node:fs';
import path from 'node:path';

import type { SimulatedNode } from '../../../src/sim/fakeHost.js';
import {
  freePort,
  httpGet,
  sleep,
  spawnPeer,
  stopPeer,
  tailFile,
  type PeerProcess,
} from '../../e2e/support/process.js';
import { repoRoot } from '../../e2e/support/peers.js';
import { imageNodeFlags } from '../../support/image.js';

export const DRIVER_NAME = 'gpu.dra.dev';

export interface DriverProcessOptions {
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly sim: SimulatedNode;
  /** Directory for the kubelet-facing sockets, the CDI root and the log (unless given below). */
  readonly dir: string;
  readonly registryDir?: string;
  readonly pluginsDir?: string;
  readonly cdiRoot?: string;
  /** Default the simulated node's dev/ (plain files); the side-by-side bench passes real nodes. */
  readonly devRoot?: string;
  readonly logLevel?: string;
  /** Extra `node` flags before the script (e.g. `--expose-gc`), after the image's own. */
  readonly nodeArgs?: readonly string[];
  /** Serve /metrics and /readyz (default true). */
  readonly http?: boolean;
  /** More `gpu-dra driver` flags, e.g. `--mig-partitioning=dynamic`. */
  readonly driverArgs?: readonly string[];
}

export interface DriverProcess {
  readonly peer: PeerProcess;
  readonly pid: number;
  /** `Date.now()` right before spawn. */
  readonly spawnedAt: number;
  readonly draSocket: string;
  readonly registrationSocket: string;
  readonly cdiRoot: string;
  readonly logFile: string;
  readonly metricsUrl: string | undefined;
  /** Resolves once /readyz answers 200 (slices published, registration not rejected). */
  waitReady(timeoutMs?: number): Promise<void>;
  metrics(): Promise<string>;
  /** VmRSS of the process in bytes, from /proc/<pid>/status. */
  rssBytes(): number;
  logTail(lines?: number): string;
  stop(): Promise<void>;
}

/** The shipped entry point (the esbuild bundle), as the image runs it; BENCH_CLI overrides. */
export const CLI = process.env['BENCH_CLI'] ?? path.join(repoRoot, 'dist', 'gpu-dra.mjs');

export async function spawnDriver(opts: DriverProcessOptions): Promise<DriverProcess> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} missing: run npm run build first`);
  const registryDir = opts.registryDir ?? path.join(opts.dir, 'plugins_registry');
  const pluginsDir = opts.pluginsDir ?? path.join(opts.dir, 'plugins');
  const cdiRoot = opts.cdiRoot ?? path.join(opts.dir, 'cdi');
  for (const d of [opts.dir, registryDir, pluginsDir, cdiRoot]) fs.mkdirSync(d, { recursive: true });
  const port = opts.http === false ? undefined : await freePort();
  const logFile = path.join(opts.dir, `driver-${opts.nodeName}-${String(Date.now())}.log`);
  const env: NodeJS.ProcessEnv = { ...process.env, FAKE_NVML_CONFIG: opts.sim.configPath };
  delete env['NODE_OPTIONS'];
  const spawnedAt = Date.now();
  const peer = spawnPeer({
    name: `gpu-dra driver[${opts.nodeName}]`,
    command: process.execPath,
    args: [
      // As the image runs it (Dockerfile ENTRYPOINT), so memory figures are the pod's.
      ...imageNodeFlags(),
      ...(opts.nodeArgs ?? []),
      CLI,
      'driver',
      `--node-name=${opts.nodeName}`,
      `--kubeconfig=${opts.kubeconfig}`,
      `--kubelet-registry-dir=${registryDir}`,
      `--kubelet-plugins-dir=${pluginsDir}`,
      `--cdi-root=${cdiRoot}`,
      ...simNodeFlags(opts.sim, opts.devRoot),
      `--log-level=${opts.logLevel ?? 'info'}`,
      ...(port !== undefined ? [`--http-listen=127.0.0.1:${String(port)}`] : []),
      ...(opts.driverArgs ?? []),
    ],
    logFile,
    env,
  });
  const pid = peer.child.pid;
  if (pid === undefined) {
    await peer.exited;
    throw new Error(`driver did not start: ${tailFile(logFile, 40)}`);
  }
  const base = port !== undefined ? `http://127.0.0.1:${String(port)}` : undefined;
  return {
    peer,
    pid,
    spawnedAt,
    draSocket: path.join(pluginsDir, DRIVER_NAME, 'dra.sock'),
    registrationSocket: path.join(registryDir, `${DRIVER_NAME}-reg.sock`),
    cdiRoot,
    logFile,
    metricsUrl: base && `${base}/metrics`,
    async waitReady(timeoutMs = 60_000) {
      if (base === undefined) throw new Error('driver started without --http-listen');
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (peer.exit !== undefined) {
          throw new Error(`driver exited before ready:\n${tailFile(logFile, 60)}`);
        }
        const ok = await httpGet(`${base}/readyz`, undefined, 2_000).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) return;
        if (Date.now() > deadline)
          throw new Error(`driver not ready after ${String(timeoutMs)}ms:\n${tailFile(logFile, 60)}`);
        await sleep(50);
      }
    },
    async metrics() {
      if (base === undefined) throw new Error('driver started without --http-listen');
      const r = await httpGet(`${base}/metrics`);
      if (r.status !== 200) throw new Error(`/metrics answered ${String(r.status)}`);
      return r.body;
    },
    rssBytes() {
      const status = fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8');
      const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
      if (kb === undefined) throw new Error(`no VmRSS for pid ${String(pid)}`);
      return Number(kb) * 1024;
    },
    logTail(lines = 60) {
      return tailFile(logFile, lines);
    },
    async stop() {
      await stopPeer(peer);
    },
  };
}

/** The value of an unlabelled metric (or the first series of it) in Prometheus text format. */
export function metricValue(text: string, name: string): number | undefined {
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+([-+0-9.eE]+|NaN)`, 'm');
  const m = re.exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** Cumulative bucket counts (`le` in seconds → count) of one histogram series. */
export function histogramBuckets(text: string, name: string, labels: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`)) continue;
    if (!line.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(line)?.[1];
    const value = /\}\s+([0-9.eE+-]+)/.exec(line)?.[1];
    if (le === undefined || value === undefined) continue;
    out.set(le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), Number(value));
  }
  return out;
}

/** `after − before`, bucket by bucket. */
export function bucketDelta(after: Map<number, number>, before: Map<number, number>): Map<number, number> {
  return new Map([...after].map(([le, n]) => [le, n - (before.get(le) ?? 0)]));
}
