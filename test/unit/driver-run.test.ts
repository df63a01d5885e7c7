import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDriverConfig, type DriverConfig } from '../../src/node/config.js';
import { runDriver, type RunningDriver, type SlicePublisher } from '../../src/node/run.js';
import type { CdiSpec } from '../../src/cdi/spec.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import { testClaim, TEST_DRIVER } from '../support/driverFixtures.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { ConfigError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/log.js';
import { fakeNvmlLib, withSimulatedNode, type TempSimulatedNode } from '../support/sim.js';

describe('parseDriverConfig', () => {
  const inCluster = { KUBERNETES_SERVICE_HOST: '10.0.0.1' };

  it('applies defaults and freezes the result', () => {
    const config = parseDriverConfig({ nodeName: 'node-a' }, inCluster);
    expect(config).toEqual({
      nodeName: 'node-a',
      driverName: 'gpu.dra.dev',
      kubeletRegistryDir: '/var/lib/kubelet/plugins_registry',
      kubeletPluginsDir: '/var/lib/kubelet/plugins',
      cdiRoot: '/var/run/cdi',
      hostPaths: { devRoot: '/dev', procRoot: '/proc', sysRoot: '/sys', driverRoot: '/' },
      cleanupOnExit: false,
      logLevel: 'info',
      deviceCheckIntervalMs: 30_000,
      mpsShmSizeBytes: 2 ** 30,
      mpsReadyTimeoutMs: 60_000,
      deviceEvents: true,
      consumableShares: 'disabled',
      migPartitioning: 'static',
      claimStatus: true,
      deviceMetadata: false,
    });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.hostPaths)).toBe(true);
  });

  it('parses every option', () => {
    const config = parseDriverConfig(
      {
        nodeName: 'n1',
        kubeconfig: '/k',
        driverName: 'gpu.example.com',
        kubeletRegistryDir: '/r',
        kubeletPluginsDir: '/p',
        cdiRoot: '/c',
        nvmlLib: '/lib/libnvidia-ml.so.1',
        devRoot: '/h/dev',
        procRoot: '/h/proc',
        sysRoot: '/h/sys',
        driverRoot: '/run/nvidia/driver',
        httpListen: ':8080',
        cleanupOnExit: 'true',
        logLevel: 'debug',
        deviceCheckInterval: '2m',
        deviceEvents: 'false',
        consumableShares: '4',
        claimStatus: 'false',
        deviceMetadata: 'true',
      },
      {},
    );
    expect(config.claimStatus).toBe(false);
    expect(config.deviceMetadata).toBe(true);
    expect(config.deviceCheckIntervalMs).toBe(120_000);
    expect(config.deviceEvents).toBe(false);
    expect(config.consumableShares).toBe(4);
    expect(config.httpListen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.cleanupOnExit).toBe(true);
    expect(config.hostPaths.driverRoot).toBe('/run/nvidia/driver');
  });

  it('reports every bad flag at once', () => {
    let caught: unknown;
    try {
      parseDriverConfig(
        {
          driverName: 'Bad_Name',
          kubeletRegistryDir: 'relative/dir',
          cdiRoot: 'cdi',
          httpListen: 'nope',
          cleanupOnExit: 'maybe',
          logLevel: 'loud',
          deviceCheckInterval: '5 minutes',
        },
        {},
      );
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const message = (caught as Error).message;
    for (const flag of [
      '--node-name',
      '--driver-name',
      '--kubelet-registry-dir',
      '--cdi-root',
      '--http-listen',
      '--cleanup-on-exit',
      '--log-level',
      '--device-check-interval',
    ]) {
      expect(message).toContain(`${flag}:`);
    }
  });

  it.each([
    ['30', 30_000],
    ['45s', 45_000],
    ['1.5m', 90_000],
    ['1h', 3_600_000],
    ['1500ms', 1_500],
    ['0', 0],
  ])('reads --device-check-interval %s as %d ms', (value, ms) => {
    const config = parseDriverConfig({ nodeName: 'n', deviceCheckInterval: value }, inCluster);
    expect(config.deviceCheckIntervalMs).toBe(ms);
  });

  it.each(['500ms', '25h', '-1s', '10x'])('refuses --device-check-interval %s, naming the flag', (value) => {
    expect(() => parseDriverConfig({ nodeName: 'n', deviceCheckInterval: value }, inCluster)).toThrow(
      /--device-check-interval: must be/,
    );
  });

  it('takes --pod-uid only as a pod UID, since it names socket files', () => {
    const uid = '0f6f3e0e-1111-4a4a-8b8b-aaaaaaaaaaaa';
    expect(parseDriverConfig({ nodeName: 'n', podUid: uid }, inCluster).podUid).toBe(uid);
    expect(parseDriverConfig({ nodeName: 'n' }, inCluster).podUid).toBeUndefined();
    for (const bad of ['../../x', 'not-a-uid', uid.toUpperCase()]) {
      expect(() => parseDriverConfig({ nodeName: 'n', podUid: bad }, inCluster)).toThrow(
        /--pod-uid: must be/,
      );
    }
  });

  it('needs a kubeconfig outside a cluster', () => {
    expect(() => parseDriverConfig({ nodeName: 'n' }, {})).toThrow(/--kubeconfig: required/);
  });
});

class RecordingPublisher implements SlicePublisher {
  started?: NodeInventory;
  stopped = false;
  deleted = false;
  start(inventory: NodeInventory): void {
    this.started = inventory;
  }
  /** Like the real one, an update starts a publisher not started yet. */
  update(inventory: NodeInventory): Promise<void> {
    this.started ??= inventory;
    return Promise.resolve();
  }
  isReady(): boolean {
    return this.started !== undefined;
  }
  whenReady(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    this.stopped = true;
    return Promise.resolve();
  }
  deleteAll(): Promise<number> {
    this.deleted = true;
    return Promise.resolve(1);
  }
}

/** Flags placing a driver's directories under `dir` on simulated node `hostPaths`, HTTP on a free port. */
function simDriverFlags(dir: string, hostPaths: TempSimulatedNode['hostPaths']): Record<string, string> {
  return {
    nodeName: 'sim-node',
    kubeletRegistryDir: path.join(dir, 'reg'),
    kubeletPluginsDir: path.join(dir, 'plugins'),
    cdiRoot: path.join(dir, 'cdi'),
    devRoot: hostPaths.devRoot,
    procRoot: hostPaths.procRoot,
    sysRoot: hostPaths.sysRoot,
    driverRoot: hostPaths.driverRoot,
    httpListen: '127.0.0.1:0',
  };
}

describe('runDriver on a simulated node', () => {
  let node: TempSimulatedNode | undefined;
  let running: RunningDriver | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await running?.stop();
    await node?.cleanup();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    running = undefined;
    node = undefined;
  });

  it('discovers, serves both sockets and HTTP, prepares a MIG claim with real caps, stops cleanly', async () => {
    node = await withSimulatedNode('a100-mig');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-run-'));
    const config: DriverConfig = parseDriverConfig(
      { ...simDriverFlags(dir, node.hostPaths), cleanupOnExit: true },
      { KUBERNETES_SERVICE_HOST: 'x' },
    );
    const hostPaths = node.hostPaths;
    const claims = new MemoryClaimGetter();
    const publisher = new RecordingPublisher();
    running = await runDriver(config, {
      logger: silentLogger(),
      discover: () => discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths }),
      claims,
      publisher,
    });
    expect(publisher.started?.gpus.length).toBeGreaterThan(0);

    const kubelet = new KubeletClient({
      draSocket: running.plugin.draSocket,
      registrationSocket: running.plugin.registrationSocket,
    });
    const info = await kubelet.getInfo();
    expect(info.endpoint).toBe(path.join(dir, 'plugins', TEST_DRIVER, 'dra.sock'));

    const base = `http://127.0.0.1:${running.httpAddress?.port ?? 0}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('gpu_dra_grpc_requests_total');

    const migName = 'gpu-0-mig-1g5gb-19-2';
    const claim = testClaim({ uid: 'run-1', devices: [{ device: migName, pool: 'sim-node' }] });
    claims.set(claim);
    const res = await kubelet.prepare([{ uid: 'run-1', namespace: 'default', name: 'claim-run-1' }]);
    kubelet.close();
    expect(res.claims['run-1']?.error).toBe('');
    const spec = JSON.parse(
      fs.readFileSync(path.join(dir, 'cdi', `k8s.gpu.dra.dev-claim_run-1.json`), 'utf8'),
    ) as CdiSpec;
    const nodes = spec.devices[0]?.containerEdits.deviceNodes ?? [];
    expect(nodes[0]?.path).toBe('/dev/nvidia0');
    expect(nodes.slice(1).map((n) => n.path)).toHaveLength(2);
    for (const n of nodes) expect(fs.existsSync(n.hostPath ?? '')).toBe(true);
    // The simulated driver root has the libraries: they are mounted.
    expect(spec.containerEdits?.mounts?.some((m) => m.containerPath.includes('libnvidia-ml.so'))).toBe(true);

    const sockets = [running.plugin.draSocket, running.plugin.registrationSocket];
    await running.stop();
    for (const s of sockets) expect(fs.existsSync(s)).toBe(false);
    expect(publisher.deleted).toBe(true);
    expect(fs.readdirSync(path.join(dir, 'cdi'))).toEqual([]);
  });

  it('sockets 0600 in 0700 directories, checkpoint and locks 0600, CDI specs 0600; only files mounted into containers are world-readable', async () => {
    node = await withSimulatedNode('a100-mig');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-modes-'));
    // The kubelet's directories exist before the plugin starts, with the kubelet's modes.
    fs.mkdirSync(path.join(dir, 'reg'), { mode: 0o750 });
    fs.mkdirSync(path.join(dir, 'plugins'), { mode: 0o750 });
    const hostPaths = node.hostPaths;
    const config = parseDriverConfig(
      {
        ...simDriverFlags(dir, hostPaths),
        deviceMetadata: 'true',
        podUid: '0f6f3e0e-1111-4a4a-8b8b-aaaaaaaaaaaa',
      },
      { KUBERNETES_SERVICE_HOST: 'x' },
    );
    const claims = new MemoryClaimGetter();
    // The process's umask must not be what makes the modes right.
    const umask = process.umask(0);
    try {
      running = await runDriver(config, {
        logger: silentLogger(),
        discover: () => discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths }),
        claims,
        publisher: new RecordingPublisher(),
        watchDeviceEvents: null,
      });
      claims.set(
        testClaim({ uid: 'modes-1', devices: [{ device: 'gpu-0-mig-1g5gb-19-2', pool: 'sim-node' }] }),
      );
      const kubelet = new KubeletClient({
        draSocket: running.plugin.draSocket,
        registrationSocket: running.plugin.registrationSocket,
      });
      try {
        const res = await kubelet.prepare([{ uid: 'modes-1', namespace: 'default', name: 'claim-modes-1' }]);
        expect(res.claims['modes-1']?.error).toBe('');
      } finally {
        kubelet.close();
      }
    } finally {
      process.umask(umask);
    }
    expect(hostFileModes(dir)).toEqual([
      // The CDI directory is shared with other drivers and the runtime: created 0755 if missing.
      'cdi dir 0755',
      // Read by the container runtime (root) only.
      'cdi/k8s.gpu.dra.dev-claim_modes-1.json file 0600',
      'plugins dir 0750', // the kubelet's, untouched
      'plugins/gpu.dra.dev dir 0700',
      'plugins/gpu.dra.dev/admin.sock socket 0600',
      'plugins/gpu.dra.dev/checkpoint.json file 0600',
      'plugins/gpu.dra.dev/dra-0f6f3e0e-1111-4a4a-8b8b-aaaaaaaaaaaa.sock socket 0600',
      // Bind-mounted into the claim's containers, whose processes may run as any user: readable.
      'plugins/gpu.dra.dev/dra-device-metadata dir 0755',
      'plugins/gpu.dra.dev/dra-device-metadata/modes-1 dir 0755',
      'plugins/gpu.dra.dev/dra-device-metadata/modes-1/gpu dir 0755',
      'plugins/gpu.dra.dev/dra-device-metadata/modes-1/gpu/gpu.dra.dev-metadata.json file 0644',
      'plugins/gpu.dra.dev/instances.lock file 0600',
      'plugins/gpu.dra.dev/publisher.lock file 0600',
      'plugins/gpu.dra.dev/state-queue.lock file 0600',
      'plugins/gpu.dra.dev/state.lock file 0600',
      'reg dir 0750', // the kubelet's, untouched
      'reg/gpu.dra.dev-0f6f3e0e-1111-4a4a-8b8b-aaaaaaaaaaaa-reg.sock socket 0600',
    ]);
  });
});

describe('two instances side by side (a rolling update with --pod-uid)', () => {
  const UID_A = '0f6f3e0e-1111-4a4a-8b8b-aaaaaaaaaaaa';
  const UID_B = '0f6f3e0e-2222-4b4b-8c8c-bbbbbbbbbbbb';
  let node: TempSimulatedNode | undefined;
  const running: RunningDriver[] = [];
  let dir: string | undefined;
  afterEach(async () => {
    for (const r of running.splice(0)) await r.stop();
    await node?.cleanup();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    node = undefined;
  });

  const claims = new MemoryClaimGetter();
  /** Starts an instance on the shared simulated node and directories (`dir`). */
  const start = async (
    podUid: string,
    publisher: RecordingPublisher,
    flags: { cleanupOnExit?: boolean } = {},
  ): Promise<RunningDriver> => {
    const root = dir as string;
    const hostPaths = (node as TempSimulatedNode).hostPaths;
    const config = parseDriverConfig(
      { ...simDriverFlags(root, hostPaths), podUid, ...flags },
      { KUBERNETES_SERVICE_HOST: 'x' },
    );
    const r = await runDriver(config, {
      logger: silentLogger(),
      discover: () => discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths }),
      claims,
      publisher,
      watchDeviceEvents: null,
    });
    running.push(r);
    return r;
  };

  it('serve on their own sockets, share the claims, publish one at a time, and hand over on stop', async () => {
    node = await withSimulatedNode('h100-8x');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-roll-'));
    dir = root;
    const pubA = new RecordingPublisher();
    const a = await start(UID_A, pubA);
    const pubB = new RecordingPublisher();
    const b = await start(UID_B, pubB);

    expect(a.plugin.registrationSocket).toBe(path.join(root, 'reg', `${TEST_DRIVER}-${UID_A}-reg.sock`));
    expect(a.plugin.draSocket).toBe(path.join(root, 'plugins', TEST_DRIVER, `dra-${UID_A}.sock`));
    expect(b.plugin.registrationSocket).toBe(path.join(root, 'reg', `${TEST_DRIVER}-${UID_B}-reg.sock`));
    expect(b.plugin.draSocket).toBe(path.join(root, 'plugins', TEST_DRIVER, `dra-${UID_B}.sock`));
    // A publishes; B stands by, and is ready all the same (the DaemonSet waits for that).
    expect(pubA.started).toBeDefined();
    expect(pubB.started).toBeUndefined();
    expect((await fetch(`http://127.0.0.1:${b.httpAddress?.port ?? 0}/readyz`)).status).toBe(200);

    const viaA = new KubeletClient({
      draSocket: a.plugin.draSocket,
      registrationSocket: a.plugin.registrationSocket,
    });
    const viaB = new KubeletClient({
      draSocket: b.plugin.draSocket,
      registrationSocket: b.plugin.registrationSocket,
    });
    try {
      for (const [uid, device] of [
        ['roll-1', 'gpu-0'],
        ['roll-2', 'gpu-1'],
      ] as const) {
        claims.set(testClaim({ uid, devices: [{ device, pool: 'sim-node' }] }));
      }
      const ref = (uid: string) => ({ uid, namespace: 'default', name: `claim-${uid}` });
      expect((await viaA.prepare([ref('roll-1')])).claims['roll-1']?.error).toBe('');
      expect((await viaB.prepare([ref('roll-2')])).claims['roll-2']?.error).toBe('');
      // Either instance answers for a claim the other prepared.
      const again = await viaB.prepare([ref('roll-1')]);
      expect(again.claims['roll-1']?.devices.map((d) => d.device_name)).toEqual(['gpu-0']);
      expect(b.state.preparedClaimUids()).toEqual(['roll-1', 'roll-2']);

      // A stops (SIGTERM, no --cleanup-on-exit): only its sockets go, nothing is deleted, B takes over.
      await a.stop();
      expect(fs.existsSync(a.plugin.registrationSocket)).toBe(false);
      expect(fs.existsSync(a.plugin.draSocket)).toBe(false);
      expect(fs.existsSync(b.plugin.registrationSocket)).toBe(true);
      expect(fs.existsSync(b.plugin.draSocket)).toBe(true);
      expect(pubA.stopped).toBe(true);
      expect(pubA.deleted).toBe(false);
      const deadline = Date.now() + 5_000;
      while (pubB.started === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(pubB.started).toBeDefined();

      expect((await viaB.unprepare([ref('roll-1'), ref('roll-2')])).claims).toEqual({
        'roll-1': { error: '' },
        'roll-2': { error: '' },
      });
      expect(fs.readdirSync(path.join(root, 'cdi'))).toEqual([]);
    } finally {
      viaA.close();
      viaB.close();
    }
  });

  it('--cleanup-on-exit removes nothing while another instance runs; the last one cleans up', async () => {
    node = await withSimulatedNode('h100-8x');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-roll-'));
    dir = root;
    const pubA = new RecordingPublisher();
    const a = await start(UID_A, pubA, { cleanupOnExit: true });
    const pubB = new RecordingPublisher();
    const b = await start(UID_B, pubB, { cleanupOnExit: true });
    const viaB = new KubeletClient({
      draSocket: b.plugin.draSocket,
      registrationSocket: b.plugin.registrationSocket,
    });
    try {
      claims.set(testClaim({ uid: 'keep-1', devices: [{ device: 'gpu-0', pool: 'sim-node' }] }));
      expect(
        (await viaB.prepare([{ uid: 'keep-1', namespace: 'default', name: 'claim-keep-1' }])).claims['keep-1']
          ?.error,
      ).toBe('');
    } finally {
      viaB.close();
    }
    const spec = path.join(root, 'cdi', 'k8s.gpu.dra.dev-claim_keep-1.json');
    const checkpoint = path.join(root, 'plugins', TEST_DRIVER, 'checkpoint.json');

    await a.stop();
    expect(pubA.deleted).toBe(false);
    expect(fs.existsSync(spec)).toBe(true);
    expect(fs.existsSync(checkpoint)).toBe(true);
    expect(b.state.preparedClaimUids()).toEqual(['keep-1']);

    // Alone now: B's exit removes the slices (it takes over publishing to delete), specs, checkpoint.
    await b.stop();
    expect(pubB.deleted).toBe(true);
    expect(fs.existsSync(spec)).toBe(false);
    expect(fs.existsSync(checkpoint)).toBe(false);
  });
});

/** Every entry under `root` with its type and permission bits, e.g. `plugins/x/dra.sock socket 0600`. */
function hostFileModes(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs
      .readdirSync(dir, { withFileTypes: true })
      .sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      const st = fs.lstatSync(p);
      const type = e.isDirectory() ? 'dir' : e.isSocket() ? 'socket' : e.isFile() ? 'file' : 'other';
      out.push(`${path.relative(root, p)} ${type} ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}
