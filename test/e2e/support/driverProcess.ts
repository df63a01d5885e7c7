// `gpu-dra driver` as its own process, the way the DaemonSet runs it, on a simulated node and a
// kubelet-dra node: for tests that kill, restart or SIGTERM the real process. Each process is
// killed when the fixture stops, so a failed test leaves none behind.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

import type { SimulatedNode } from '../../../src/sim/fakeHost.js';
import { simNodeFlags } from '../../support/sim.js';
import type { E2e } from './fixture.js';
import type { NodeHarness } from './node.js';
import { freePort } from './process.js';
import { driverReady } from './wait.js';

const repo = path.resolve(import.meta.dirname, '../../..');

export interface DriverProcess {
  readonly child: ChildProcess;
  /** Its /healthz and /readyz port on 127.0.0.1. */
  readonly port: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

export interface DriverProcessOptions {
  readonly nodeName: string;
  readonly driverName: string;
  readonly kubeconfig: string;
  readonly node: NodeHarness;
  readonly sim: SimulatedNode;
  /** More flags, e.g. `--cleanup-on-exit`. */
  readonly args?: readonly string[];
  /** More environment, e.g. `GPU_DRA_FAILPOINTS`. */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Armed to die (a failpoint): `start` resolves once it is ready or has exited, whichever comes
   * first, rather than failing when it exits during start-up.
   */
  readonly mayDie?: boolean;
}

/** Driver processes of one test file, killed with its cluster. */
export function driverProcesses(fx: E2e): {
  start(opts: DriverProcessOptions): Promise<DriverProcess>;
  /** The last one started, for the failure dump. */
  last(): DriverProcess | undefined;
} {
  const running = new Set<ChildProcess>();
  let latest: DriverProcess | undefined;
  fx.track({
    stop: () => {
      for (const child of running) child.kill('SIGKILL');
    },
  });
  fx.onFailure(() => `===== driver process stderr\n${latest?.stderr() ?? '(not started)'}`);

  /** Starts it and waits until it is ready: registered (not rejected) and slices published. */
  async function start(opts: DriverProcessOptions): Promise<DriverProcess> {
    const { node, sim } = opts;
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, FAKE_NVML_CONFIG: sim.configPath, ...opts.env };
    delete env['CLEANUP_ON_EXIT'];
    const child = spawn(
      process.execPath,
      [
        path.join(repo, 'dist/gpu-dra.mjs'),
        'driver',
        `--node-name=${opts.nodeName}`,
        `--kubeconfig=${opts.kubeconfig}`,
        `--driver-name=${opts.driverName}`,
        `--kubelet-registry-dir=${node.registryDir}`,
        `--kubelet-plugins-dir=${node.pluginsDir}`,
        `--cdi-root=${node.cdiDir}`,
        ...simNodeFlags(sim),
        `--http-listen=127.0.0.1:${String(port)}`,
        '--log-level=info',
        ...(opts.args ?? []),
      ],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    running.add(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr += chunk;
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
    });
    latest = { child, port, exited, stderr: () => stderr };
    const ready = driverReady(child, port, () => stderr);
    if (opts.mayDie) await Promise.race([ready.catch(() => undefined), exited]);
    else await ready;
    return latest;
  }

  return { start, last: () => latest };
}
