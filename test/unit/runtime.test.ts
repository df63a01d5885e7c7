// The CDI spec is enough to use the GPU: the kubelet plugin prepares a claim over its socket,
// the response's CDI ids are applied to a container the way the CDI library does, and the
// container's filesystem is then built as a runtime builds it (private mount namespace, tmpfs
// rootfs, mknod'ed device nodes, read-only bind mounts of the driver's files) and inspected
// from inside with chroot. See test/support/runtime.ts for what is real and what falls back.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

import type { ResourceClaim } from '../../src/api/resource.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import { DEFAULT_HOST_PATHS } from '../../src/util/hostPaths.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { deviceEnvKey } from '../../src/cdi/spec.js';
import { exampleClaim, runPreparedClaimDemo, type PreparedClaimDemo } from '../../src/sim/demoNode.js';
import { fakeNvmlLib, withSimulatedNode, type TempSimulatedNode } from '../support/sim.js';
import {
  buildContainerRootfs,
  namespaceSupport,
  ociSpecFromEdits,
  sharedLibraries,
  type ContainerRootfs,
} from '../support/runtime.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Lists the container's /dev and environment and runs the driver's nvidia-smi, from inside. */
const INSIDE = [
  'for f in /dev/* /dev/nvidia-caps/*; do [ -e "$f" ] && [ ! -d "$f" ] && echo "dev $f"; done',
  // Every per-device variable, with shell builtins only (the container has just /bin/sh).
  'export -p | while read -r _ kv; do k=${kv%%=*}; case "$k" in GPU_DRA_DEVICE_*) eval "echo \\"visible $k=\\$$k\\"";; esac; done',
  '( : > /usr/lib/x86_64-linux-gnu/libcuda.so.1 ) 2>/dev/null && echo "libcuda writable" || echo "libcuda read-only"',
  '/usr/bin/nvidia-smi',
].join('\n');

function claimFor(uid: string, devices: [request: string, device: string][]): ResourceClaim {
  return {
    metadata: { uid, namespace: 'default', name: `claim-${uid}` },
    status: {
      allocation: {
        devices: {
          results: devices.map(([request, device]) => ({ request, device, driver: DRIVER, pool: NODE })),
        },
      },
    },
  };
}

async function prepareOnSimulatedNode(
  node: TempSimulatedNode,
  claim: ResourceClaim,
): Promise<{ prepared: PreparedClaimDemo; inventory: NodeInventory }> {
  const inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: node.hostPaths });
  const prepared = await runPreparedClaimDemo({
    driverName: DRIVER,
    nodeName: NODE,
    inventory,
    hostPaths: node.hostPaths,
    dir: node.dir,
    claim,
  });
  expect(prepared.response.error).toBe('');
  return { prepared, inventory };
}

function build(prepared: PreparedClaimDemo, argv?: string[]): ContainerRootfs {
  const hostPathOf = (p: string): string | undefined =>
    prepared.container.deviceNodes.find((n) => n.path === p)?.hostPath;
  return buildContainerRootfs(ociSpecFromEdits(prepared.container, [PATH_ENV]), {
    hostPathOf,
    ...(argv ? { exec: { argv, baseFiles: ['/bin/sh', ...sharedLibraries('/bin/sh')] } } : {}),
  });
}

const paths = (rootfs: ContainerRootfs, prefix: string): string[] =>
  rootfs.entries.filter((e) => e.path.startsWith(prefix)).map((e) => e.path);
const devNodes = (rootfs: ContainerRootfs): string[] =>
  rootfs.entries.filter((e) => e.path.startsWith('/dev/') && e.type !== 'dir').map((e) => e.path);

describe('a prepared claim’s CDI spec builds a usable container (simulated node)', () => {
  let node: TempSimulatedNode | undefined;
  afterEach(async () => {
    await node?.cleanup();
    node = undefined;
  });

  it('one GPU of eight: exactly its nodes, the driver files read-only, its UUID in the env', async () => {
    node = await withSimulatedNode('h100-8x');
    const { prepared, inventory } = await prepareOnSimulatedNode(
      node,
      claimFor('11111111-2222-4333-8444-555555555555', [['gpu', 'gpu-0']]),
    );
    const rootfs = build(prepared, ['/bin/sh', '-c', INSIDE]);
    const gpu0 = inventory.gpus.find((g) => g.minor === 0);
    const version = inventory.driverVersion;

    expect(devNodes(rootfs)).toEqual([
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia0',
      '/dev/nvidiactl',
    ]);
    const libs = paths(rootfs, '/usr/lib/x86_64-linux-gnu/');
    for (const lib of [
      'libcuda.so.1',
      `libcuda.so.${version}`,
      'libnvidia-ml.so.1',
      `libnvidia-ml.so.${version}`,
    ])
      expect(libs).toContain(`/usr/lib/x86_64-linux-gnu/${lib}`);
    expect(paths(rootfs, '/usr/bin/')).toContain('/usr/bin/nvidia-smi');
    expect(paths(rootfs, '/lib/firmware/')).toContain(`/lib/firmware/nvidia/${version}/gsp_ga10x.bin`);
    expect(prepared.container.env).toContain(`GPU_DRA_DEVICE_GPU_0=${gpu0?.uuid ?? '?'}`);
    expect(prepared.container.env).toContain('NVIDIA_VISIBLE_DEVICES=void');

    if (rootfs.mode === 'namespace') {
      // Real device nodes, numbered from the majors in the simulated node's /proc/devices.
      const byPath = new Map(rootfs.entries.map((e) => [e.path, e]));
      expect(byPath.get('/dev/nvidia0')).toMatchObject({ type: 'char', major: 195, minor: 0 });
      expect(byPath.get('/dev/nvidiactl')).toMatchObject({ type: 'char', major: 195, minor: 255 });
      expect(byPath.get('/dev/nvidia-uvm')).toMatchObject({ type: 'char', major: 238, minor: 0 });
      expect(byPath.get('/dev/nvidia-uvm-tools')).toMatchObject({ type: 'char', major: 238, minor: 1 });
      expect(Object.values(rootfs.devices).every((how) => how === 'mknod')).toBe(true);
      expect(rootfs.mounts['/usr/lib/x86_64-linux-gnu/libcuda.so.1']).toMatch(/^ro,nosuid,nodev/);

      // Inside the container (chroot, the spec's env only).
      const exec = rootfs.exec;
      expect(exec?.stderr ?? '').toBe('');
      expect(exec?.code).toBe(0);
      const out = exec?.stdout.split('\n') ?? [];
      expect(out.filter((l) => l.startsWith('dev ')).sort()).toEqual([
        'dev /dev/nvidia-uvm',
        'dev /dev/nvidia-uvm-tools',
        'dev /dev/nvidia0',
        'dev /dev/nvidiactl',
      ]);
      expect(out.filter((l) => l.startsWith('visible '))).toEqual([
        `visible GPU_DRA_DEVICE_GPU_0=${gpu0?.uuid ?? '?'}`,
      ]);
      expect(out).toContain('libcuda read-only');
      expect(out).toContain(`nvidia-smi (simulated, driver ${version})`);
    }
  });

  it('a MIG device: its parent’s node and its two access caps, nothing of the other GPU', async () => {
    node = await withSimulatedNode('a100-mig');
    const inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: node.hostPaths });
    const claim = exampleClaim({ driverName: DRIVER, nodeName: NODE, inventory });
    const mig = claim?.status?.allocation?.devices?.results?.[0]?.device ?? '';
    expect(mig).toMatch(/^gpu-0-mig-/);
    const { prepared } = await prepareOnSimulatedNode(
      node,
      claimFor('22222222-3333-4444-8555-666666666666', [['mig', mig]]),
    );
    const rootfs = build(prepared);
    const device = inventory.gpus[0]?.migDevices.find((m) =>
      mig.endsWith(`-${m.profileId}-${m.placement.start}`),
    );
    const caps = [device?.accessCaps?.gi, device?.accessCaps?.ci].map(
      (n) => `/dev/nvidia-caps/nvidia-cap${String(n)}`,
    );
    expect(devNodes(rootfs)).toEqual(
      ['/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia0', '/dev/nvidiactl', ...caps].sort((a, b) =>
        a.localeCompare(b),
      ),
    );
    if (rootfs.mode === 'namespace') {
      for (const c of caps)
        expect(rootfs.entries.find((e) => e.path === c)).toMatchObject({ type: 'char', major: 241 });
    }
    expect(prepared.container.env).toContain(`${deviceEnvKey(mig)}=${device?.uuid ?? '?'}`);
    expect(prepared.container.env).toContain('NVIDIA_VISIBLE_DEVICES=void');
  });

  it('the symlink fallback (no mount namespaces) still shows exactly the claimed nodes', async () => {
    node = await withSimulatedNode('h100-8x');
    const { prepared } = await prepareOnSimulatedNode(
      node,
      claimFor('33333333-4444-4555-8666-777777777777', [['gpu', 'gpu-3']]),
    );
    const hostPathOf = (p: string): string | undefined =>
      prepared.container.deviceNodes.find((n) => n.path === p)?.hostPath;
    const rootfs = buildContainerRootfs(ociSpecFromEdits(prepared.container), {
      hostPathOf,
      forceFallback: true,
    });
    expect(rootfs.mode).toBe('symlink-tree');
    expect(devNodes(rootfs)).toEqual([
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia3',
      '/dev/nvidiactl',
    ]);
    expect(paths(rootfs, '/usr/bin/')).toContain('/usr/bin/nvidia-smi');
  });
});

/**
 * Runs the driver's `nvidia-smi` (with `args`) in a container built from the prepared claim,
 * adding what a runtime adds on its own (/proc, /sys) and what the NVIDIA toolkit adds: a procfs
 * params file with ModifyDeviceFiles: 0, so that NVML, running as root without the device cgroup
 * a real container has, cannot mknod the other GPUs' nodes into the container's /dev. The
 * update-ldcache hook is replaced by LD_LIBRARY_PATH over the same folders.
 */
function nvidiaSmiInContainer(
  prepared: PreparedClaimDemo,
  args: string[],
): { rootfs: ContainerRootfs; detail: string } | { skip: string } {
  const smi = prepared.container.mounts.find((m) => m.containerPath.endsWith('/nvidia-smi'));
  if (!smi) return { skip: 'the driver root has no nvidia-smi' };
  const libDirs = [
    ...new Set(
      prepared.container.mounts
        .filter((m) => /\.so\./.test(m.containerPath))
        .map((m) => path.dirname(m.containerPath)),
    ),
  ];
  const spec = ociSpecFromEdits(prepared.container, [PATH_ENV, `LD_LIBRARY_PATH=${libDirs.join(':')}`]);
  spec.mounts = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['ro'] },
    ...(spec.mounts ?? []),
  ];
  const paramsFile = '/proc/driver/nvidia/params';
  const params = fs.existsSync(paramsFile) ? fs.readFileSync(paramsFile, 'utf8') : '';
  const rootfs = buildContainerRootfs(spec, {
    hostPathOf: (p) => prepared.container.deviceNodes.find((n) => n.path === p)?.hostPath,
    ...(params
      ? {
          files: [
            {
              path: paramsFile,
              content: params.replace(/^ModifyDeviceFiles: \d+$/m, 'ModifyDeviceFiles: 0'),
            },
          ],
        }
      : {}),
    exec: {
      argv: [smi.containerPath, ...args],
      // The "image": a shell and the C library nvidia-smi links against.
      baseFiles: [...new Set(['/bin/sh', ...sharedLibraries('/bin/sh'), ...sharedLibraries(smi.hostPath)])],
    },
  });
  const detail = `nvidia-smi ${args.join(' ')} exited ${String(rootfs.exec?.code)}:\n${rootfs.exec?.stdout ?? ''}\n${rootfs.exec?.stderr ?? ''}`;
  return { rootfs, detail };
}

describe('nvidia-smi inside the container', () => {
  it('simulated node: the driver’s nvidia-smi runs from its read-only mount, with /proc and /sys', async (ctx) => {
    if (!namespaceSupport().ok) ctx.skip(`needs root and mount namespaces: ${namespaceSupport().reason}`);
    await withSimulatedNode('h100-8x', async (sim) => {
      const inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: sim.hostPaths });
      const claim = exampleClaim({ driverName: DRIVER, nodeName: NODE, inventory });
      const prepared = await runPreparedClaimDemo({
        driverName: DRIVER,
        nodeName: NODE,
        inventory,
        hostPaths: sim.hostPaths,
        dir: sim.dir,
        claim: claim as ResourceClaim,
      });
      const run = nvidiaSmiInContainer(prepared, ['-L']);
      if ('skip' in run) throw new Error(run.skip);
      expect(run.rootfs.exec?.code, run.detail).toBe(0);
      expect(run.rootfs.exec?.stdout).toBe(`nvidia-smi (simulated, driver ${inventory.driverVersion})\n`);
      expect(run.rootfs.entries.map((e) => e.path)).toEqual(expect.arrayContaining(['/proc', '/sys']));
      expect(run.rootfs.skippedMounts).toEqual([]);
    });
  });

  it('real GPU node: nvidia-smi -L sees exactly the claimed GPU', async (ctx) => {
    const gpu = realGpu();
    if ('skip' in gpu) ctx.skip(gpu.skip);
    if (!namespaceSupport().ok) ctx.skip(`needs root and mount namespaces: ${namespaceSupport().reason}`);
    const { inventory } = gpu as { inventory: NodeInventory };
    const claim = exampleClaim({ driverName: DRIVER, nodeName: NODE, inventory });
    if (!claim) ctx.skip('the node publishes no allocatable device');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-gpu-'));
    try {
      const prepared = await runPreparedClaimDemo({
        driverName: DRIVER,
        nodeName: NODE,
        inventory,
        hostPaths: DEFAULT_HOST_PATHS,
        dir,
        claim: claim as ResourceClaim,
      });
      expect(prepared.response.error).toBe('');
      const run = nvidiaSmiInContainer(prepared, ['-L']);
      if ('skip' in run) ctx.skip(run.skip);
      const { rootfs, detail } = run as { rootfs: ContainerRootfs; detail: string };
      expect(rootfs.exec?.code, detail).toBe(0);
      const listed = [...(rootfs.exec?.stdout ?? '').matchAll(/UUID: ((?:GPU|MIG)-[0-9a-fA-F-]+)/g)].map(
        (m) => m[1] ?? '',
      );
      // GPU_DRA_DEVICE_<NAME> holds each claimed UUID; nvidia-smi lists a MIG device under its GPU.
      const visible = prepared.container.env
        .filter((e) => e.startsWith('GPU_DRA_DEVICE_'))
        .map((e) => e.slice(e.indexOf('=') + 1));
      const parents = visible.map(
        (uuid) =>
          inventory.gpus.find((g) => g.uuid === uuid || g.migDevices.some((m) => m.uuid === uuid))?.uuid ??
          uuid,
      );
      expect(listed.filter((u) => u.startsWith('GPU-')).sort(), detail).toEqual([...new Set(parents)].sort());
      for (const uuid of visible) expect(listed, detail).toContain(uuid);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Real NVML on this machine, or why not. */
function realGpu(): { inventory: NodeInventory } | { skip: string } {
  if (!fs.existsSync('/dev/nvidiactl')) return { skip: 'no NVIDIA GPU here: /dev/nvidiactl is absent' };
  try {
    const inventory = discoverInventory({ hostPaths: DEFAULT_HOST_PATHS });
    if (inventory.gpus.length === 0) return { skip: 'NVML loaded but reports no GPU' };
    return { inventory };
  } catch (err) {
    return { skip: `real NVML not loadable: ${(err as Error).message}` };
  }
}
