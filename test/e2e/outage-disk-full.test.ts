// The disk fills up under a running driver (issue #17): its CDI dir and its plugin dir (the
// checkpoint) are each a small tmpfs of their own, filled to the last byte while the driver
// runs. A real full filesystem, not an injected error: the driver sees ENOSPC from the kernel
// where it would on a node.
//
// What must hold: the claim being prepared fails with an error naming ENOSPC and the file; no
// half-written spec, checkpoint or temp file remains; the checkpoint still parses and holds
// what it held; the driver stays up; and once space is freed, the kubelet's retry prepares it.
//
// Mounting needs root and a kernel that lets this process mount (a container may not): where
// `mount -t tmpfs` fails, the file is skipped and says why.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { CHECKPOINT_FILE } from '../../src/checkpoint/schema.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { errorMessage } from '../../src/util/errors.js';
import { fakeNvmlLib } from '../support/sim.js';
import { driverProcesses, type DriverProcess } from './support/driverProcess.js';
import { useCluster } from './support/fixture.js';
import type { NodeHarness } from './support/node.js';
import { peersLog } from './support/peers.js';
import { createNamespace, createPodWithOwnClaim, createTypedDeviceClasses } from './support/workloads.js';

const DRIVER = 'gpu.dra.dev';
const GPU_CLASS = `gpu.${DRIVER}`;
const NODE = 'node-a';
const NS = 'disk-full';

/** Why a tmpfs cannot be mounted here, or undefined when it can (tried once, on a scratch dir). */
function tmpfsProblem(): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs mounts need Linux';
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'gdra-probe', dir], { stdio: 'pipe' });
    execFileSync('umount', [dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `mount -t tmpfs is not permitted here: ${errorMessage(err).split('\n')[0] ?? ''}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const noTmpfs = tmpfsProblem();
if (noTmpfs !== undefined) process.stderr.write(`[disk-full] skipped: ${noTmpfs}\n`);

/** Fills the filesystem of `dir` to the last byte with one file, and returns that file. */
function fill(dir: string): string {
  const file = path.join(dir, 'filler');
  const fd = fs.openSync(file, 'w');
  const page = Buffer.alloc(4096, 0xab);
  try {
    for (;;) fs.writeSync(fd, page);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Temp files an atomic write left (`.<name>.<pid>-<n>.tmp`). */
function leftovers(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'));
}

describe.skipIf(noTmpfs !== undefined)('the disk fills up under a running driver', () => {
  const fx = useCluster();
  const drivers = driverProcesses(fx);
  let core: CoreV1Api;
  let resource: ResourceV1Api;
  let node: NodeHarness;
  let driver: DriverProcess;
  /** The driver's plugin dir: dra.sock, the lock files and the checkpoint. */
  let pluginDir: string;

  beforeAll(async () => {
    core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    await createTypedDeviceClasses(resource, DRIVER, { gpu: GPU_CLASS });
    await createNamespace(core, NS);
    const dir = fx.tempDir('gdra-e2e-disk-full-');
    const sim = await createSimulatedNode('h100-8x', path.join(dir, 'node'), { libPath: fakeNvmlLib() });
    node = await fx.startNode(NODE);
    pluginDir = path.join(node.pluginsDir, DRIVER);
    fs.mkdirSync(pluginDir, { recursive: true });
    for (const target of [node.cdiDir, pluginDir]) {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'gdra-disk-full', target]);
      // Lazy: the driver may still hold its sockets there when this runs (it is stopped later).
      fx.track({ stop: () => void execFileSync('umount', ['-l', target]) });
    }
    driver = await drivers.start({
      nodeName: NODE,
      driverName: DRIVER,
      kubeconfig: fx.cluster.adminKubeconfigPath,
      node,
      sim,
    });
  });

  async function startPod(pod: string): Promise<string> {
    return createPodWithOwnClaim({ resource, core }, { namespace: NS, pod, deviceClassName: GPU_CLASS });
  }

  /** The driver's error for `pod`, as the kubelet got it. */
  async function driverError(pod: string): Promise<string> {
    const e = await node.waitForEvent(
      (ev) =>
        ev.event === 'prepareFailed' &&
        ev['pod'] === `${NS}/${pod}` &&
        String(ev['error']).includes('NodePrepareResources failed'),
      60_000,
    );
    return String(e['error']);
  }

  /** The checkpoint as it is on disk: it must parse. (None yet reads as no claims.) */
  function checkpointClaims(): Record<string, { state?: string }> {
    const file = path.join(pluginDir, CHECKPOINT_FILE);
    if (!fs.existsSync(file)) return {};
    const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      claims: Record<string, { state?: string }>;
    };
    return doc.claims;
  }

  async function prepared(pod: string): Promise<void> {
    await node.waitForEvent((e) => e.event === 'prepared' && e['pod'] === `${NS}/${pod}`, 60_000);
  }

  it('a full CDI dir: the claim fails naming ENOSPC and the spec, nothing is left, and the retry succeeds once freed', async () => {
    const specsBefore = fs.readdirSync(node.cdiDir);
    const claimsBefore = checkpointClaims();
    const filler = fill(node.cdiDir);
    const uid = await startPod('d0');

    const error = await driverError('d0');
    expect(error).toMatch(
      new RegExp(
        `prepare claim ${NS}/d0-gpu \\(${uid}\\): CDI_WRITE_FAILED: cannot write CDI spec ${node.cdiDir}/[^ :]*${uid}[^ :]*: ENOSPC: no space left on device`,
      ),
    );
    // Nothing half-written: the dir holds what it held and the filler.
    expect(fs.readdirSync(node.cdiDir).sort()).toEqual([...specsBefore, 'filler'].sort());
    expect(checkpointClaims()).toEqual(claimsBefore);
    expect(leftovers(pluginDir)).toEqual([]);
    expect(driver.child.exitCode).toBeNull();

    fs.rmSync(filler);
    const t0 = Date.now();
    await prepared('d0');
    peersLog(`disk full (CDI): prepared ${String(Date.now() - t0)} ms after space was freed`);
    expect(fs.readdirSync(node.cdiDir).filter((n) => n.includes(uid))).toHaveLength(1);
    expect(checkpointClaims()[uid]?.state).toBe('PrepareCompleted');
  }, 120_000);

  it('a full plugin dir: the checkpoint write fails naming ENOSPC, its spec is removed, and the retry succeeds once freed', async () => {
    const specsBefore = fs.readdirSync(node.cdiDir).sort();
    const claimsBefore = checkpointClaims();
    const filler = fill(pluginDir);
    const uid = await startPod('d1');

    const error = await driverError('d1');
    expect(error).toMatch(
      new RegExp(
        `prepare claim ${NS}/d1-gpu \\(${uid}\\): CHECKPOINT_WRITE_FAILED: cannot write checkpoint ${pluginDir}/${CHECKPOINT_FILE}: ENOSPC: no space left on device`,
      ),
    );
    // The spec written before the checkpoint is gone again; no temp file anywhere; the checkpoint
    // on disk is the one before, whole.
    expect(fs.readdirSync(node.cdiDir).sort()).toEqual(specsBefore);
    expect(leftovers(pluginDir)).toEqual([]);
    expect(leftovers(node.cdiDir)).toEqual([]);
    expect(checkpointClaims()).toEqual(claimsBefore);
    expect(driver.child.exitCode).toBeNull();

    fs.rmSync(filler);
    const t0 = Date.now();
    await prepared('d1');
    peersLog(`disk full (checkpoint): prepared ${String(Date.now() - t0)} ms after space was freed`);
    expect(checkpointClaims()[uid]?.state).toBe('PrepareCompleted');
    expect(fs.readdirSync(node.cdiDir).filter((n) => n.includes(uid))).toHaveLength(1);
  }, 120_000);
});
