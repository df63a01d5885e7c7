// The one fixture of the e2e files. `useCluster()`, called in a describe block, starts a real
// control plane before its tests; whatever the tests start through the fixture (kubelet-dra
// nodes, drivers, child processes, temp dirs) is stopped or removed after them; and when a test
// fails, the logs of the control plane, of every node and of whatever else the file registered
// go to stderr, so a failure in CI can be read without re-running it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach } from 'vitest';

import { startCluster, type Cluster, type ClusterOptions } from './cluster.js';
import { NodeHarness, type NodeOptions } from './node.js';
import { ensurePeersBinary, peersLog } from './peers.js';

/** The first run compiles the peers (tens of minutes on 2 cores). */
const START_TIMEOUT_MS = 3_600_000;

export interface E2eOptions extends Omit<ClusterOptions, 'binary'> {
  /** Lines of each log a failed test prints. Default 60. */
  dumpLines?: number;
}

/** Something the fixture stops after the file's tests (an in-process driver, a child process). */
export interface Stoppable {
  stop(): void | Promise<void>;
}

export interface E2e {
  /** The control plane; throws when the fixture's beforeAll has not started it. */
  readonly cluster: Cluster;
  /**
   * Starts kubelet-dra for `name` (see startNode in node.ts), attached to the cluster: stopped
   * with it, its log in every failure dump.
   */
  startNode(name: string, opts?: NodeOptions): Promise<NodeHarness>;
  /** Stops `thing` after the tests, before the nodes and the control plane; last tracked first. */
  track<T extends Stoppable>(thing: T): T;
  /** A fresh temp dir, removed once everything is stopped (kept with GPU_DRA_KEEP_TMP=1). */
  tempDir(prefix: string): string;
  /** Adds `text()` to what a failed test prints, after the logs. */
  onFailure(text: () => string): void;
}

export function useCluster(opts: E2eOptions = {}): E2e {
  const { dumpLines = 60, ...clusterOpts } = opts;
  let cluster: Cluster | undefined;
  const tracked: Stoppable[] = [];
  const dirs: string[] = [];
  const extraDumps: (() => string)[] = [];

  const fixture: E2e = {
    get cluster(): Cluster {
      if (cluster === undefined) throw new Error('cluster not started (its beforeAll failed)');
      return cluster;
    },
    async startNode(name, nodeOpts = {}) {
      const c = fixture.cluster;
      const node = new NodeHarness(c, name, nodeOpts);
      // Attached before it starts, so a node that never gets ready is stopped and dumped too.
      c.attach({ name, logs: (lines) => node.logs(lines), stop: () => node.stop() });
      await node.start();
      return node;
    },
    track(thing) {
      tracked.push(thing);
      return thing;
    },
    tempDir(prefix) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
      dirs.push(dir);
      return dir;
    },
    onFailure(text) {
      extraDumps.push(text);
    },
  };

  beforeAll(async () => {
    const started = Date.now();
    const binary = await ensurePeersBinary(clusterOpts.version);
    peersLog(`ensurePeersBinary took ${String(Date.now() - started)}ms`);
    cluster = await startCluster({ ...clusterOpts, binary });
  }, START_TIMEOUT_MS);

  afterAll(async () => {
    // Tracked things first, last tracked first (a driver before the node it registered with),
    // then the control plane (which stops its attached nodes and processes before its peers),
    // then the temp dirs. One failing stop does not keep the others from running.
    const errors: unknown[] = [];
    const attempt = async (stop: () => void | Promise<void>): Promise<void> => {
      try {
        await stop();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const thing of tracked.splice(0).reverse()) await attempt(() => thing.stop());
    await attempt(() => cluster?.stop());
    const keep = process.env['GPU_DRA_KEEP_TMP'] === '1';
    for (const dir of dirs.splice(0)) {
      if (keep) peersLog(`keeping ${dir} (GPU_DRA_KEEP_TMP=1)`);
      else fs.rmSync(dir, { recursive: true, force: true });
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'e2e teardown failed');
  });

  // The context's onTestFailed (not the global one): it also works for concurrent tests.
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      cluster?.dumpLogs(dumpLines);
      for (const text of extraDumps) process.stderr.write(`${text()}\n`);
    });
  });

  return fixture;
}
