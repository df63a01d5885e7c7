// The CDI spec is enough to use the GPU, end to end: the scheduler allocates one GPU of eight,
// the kubelet's DRA manager prepares it through the driver, the CDI library (Go, the one
// container runtimes use) injects the returned ids into the OCI spec, and that OCI spec is then
// turned into a container filesystem the way a runtime would (test/support/runtime.ts: private
// mount namespace, tmpfs rootfs, mknod'ed nodes, read-only bind mounts) and inspected from inside.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, ResourceV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseDriverConfig } from '../../src/node/config.js';
import { runDriver } from '../../src/node/run.js';
import { injectCdiDevices } from '../../src/cdi/inject.js';
import type { CdiSpec } from '../../src/cdi/spec.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import { createLogger } from '../../src/util/log.js';
import { buildContainerRootfs, sharedLibraries, type OciLikeSpec } from '../support/runtime.js';
import { fakeNvmlLib, simHostOptions } from '../support/sim.js';
import { useCluster } from './support/fixture.js';
import {
  createNamespace,
  createPodWithClaims,
  oneDeviceTemplate,
  createDriverDeviceClass,
} from './support/workloads.js';
import { preparedContainers, type KubeletEvent, type NodeHarness } from './support/node.js';

const DRIVER = 'gpu.dra.dev';
const NODE = 'node-a';
const NS = 'runtime';

interface OciSpec extends OciLikeSpec {
  hooks?: { createContainer?: { path: string; args?: string[] }[] };
}

/** What the container checks from inside: its /dev, its env, that the driver files are usable. */
const INSIDE = [
  'for f in /dev/* /dev/nvidia-caps/*; do [ -e "$f" ] && [ ! -d "$f" ] && echo "dev $f"; done',
  // Every per-device variable, with shell builtins only (the container has just /bin/sh).
  'export -p | while read -r _ kv; do k=${kv%%=*}; case "$k" in GPU_DRA_DEVICE_*) eval "echo \\"visible $k=\\$$k\\"";; esac; done',
  '[ -s /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1 ] && echo "nvml present"',
  '( : > /usr/lib/x86_64-linux-gnu/libcuda.so.1 ) 2>/dev/null && echo "libcuda writable" || echo "libcuda read-only"',
  '/usr/bin/nvidia-smi',
].join('\n');

describe('the container a runtime builds from the injected OCI spec', () => {
  const fx = useCluster();
  let node: NodeHarness | undefined;
  let sim: SimulatedNode | undefined;
  let inventory: NodeInventory | undefined;
  let prepared: KubeletEvent | undefined;
  let claimUid = '';

  // What the node reported for the pod, printed when a test fails.
  fx.onFailure(() => `prepared event: ${JSON.stringify(prepared)}`);

  beforeAll(async () => {
    const c = fx.cluster;
    const core = c.kubeConfig.makeApiClient(CoreV1Api);
    const resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    await createDriverDeviceClass(resource, `gpu.${DRIVER}`, DRIVER);
    await createNamespace(core, NS);

    sim = await createSimulatedNode('h100-8x', fx.tempDir('gdra-e2e-rt-'), { libPath: fakeNvmlLib() });
    process.env['FAKE_NVML_CONFIG'] = sim.configPath;
    fs.writeFileSync(path.join(sim.hostPaths.driverRoot, 'usr/bin/nvidia-cdi-hook'), '#!/bin/sh\n', {
      mode: 0o755,
    });
    node = await fx.startNode(NODE);
    const s = sim;
    const driver = await runDriver(
      parseDriverConfig(
        {
          nodeName: NODE,
          kubeconfig: c.adminKubeconfigPath,
          ...node.driverDirOptions(),
          ...simHostOptions(s),
        },
        {},
      ),
      {
        logger: createLogger({ level: process.env['GPU_DRA_E2E_LOG'] ?? 'warn', name: 'driver' }),
        discover: () => {
          inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: s.hostPaths });
          return inventory;
        },
      },
    );
    fx.track(driver);

    await createPodWithClaims(
      { resource, core },
      {
        namespace: NS,
        pod: 'cuda',
        image: 'nvcr.io/nvidia/cuda:13.0.0-base-ubuntu24.04',
        claims: [{ name: 'gpu', template: oneDeviceTemplate(`gpu.${DRIVER}`) }],
      },
    );
    prepared = await node.waitForEvent(
      (e) =>
        e['pod'] === `${NS}/cuda` &&
        (e.event === 'prepared' ||
          (e.event === 'prepareFailed' && String(e['error']).includes('NodePrepareResources'))),
      60_000,
    );
    const id = preparedContainers(prepared)[0]?.cdiDevices[0] ?? '';
    claimUid = /claim=([0-9a-f-]{36})-/.exec(id)?.[1] ?? '';
  });

  function injected(): { oci: OciSpec; cdiSpec: CdiSpec; cdiDevices: string[] } {
    expect(prepared?.event, JSON.stringify(prepared)).toBe('prepared');
    const [ctr] = preparedContainers(prepared as KubeletEvent);
    expect(ctr?.cdiError).toBeUndefined();
    const specFile = path.join((node as NodeHarness).cdiDir, `k8s.${DRIVER}-claim_${claimUid}.json`);
    return {
      oci: ctr?.ociSpec as OciSpec,
      cdiSpec: JSON.parse(fs.readFileSync(specFile, 'utf8')) as CdiSpec,
      cdiDevices: ctr?.cdiDevices ?? [],
    };
  }

  it('our in-memory CDI injection (demo, unit tests) matches the CDI library’s', () => {
    const { oci, cdiSpec, cdiDevices } = injected();
    const ours = injectCdiDevices([cdiSpec], cdiDevices);
    expect(ours.unresolved).toEqual([]);
    expect(
      oci.linux?.devices?.map((d) => ({ path: d.path, type: d.type, major: d.major, minor: d.minor })),
    ).toEqual(
      ours.edits.deviceNodes.map((n) => ({ path: n.path, type: n.type, major: n.major, minor: n.minor })),
    );
    const base = new Set(['PATH', 'HOSTNAME']);
    expect(oci.process?.env?.filter((e) => !base.has(e.split('=')[0] ?? ''))).toEqual(ours.edits.env);
    expect(
      oci.mounts
        ?.filter((m) => m.type !== 'proc')
        .map((m) => ({ destination: m.destination, source: m.source, options: m.options })),
    ).toEqual(
      ours.edits.mounts.map((m) => ({
        destination: m.containerPath,
        source: m.hostPath,
        options: m.options,
      })),
    );
    expect(oci.hooks?.createContainer?.map((h) => ({ path: h.path, args: h.args }))).toEqual(
      ours.edits.hooks.map((h) => ({ path: h.path, args: h.args })),
    );
  });

  it('one GPU of eight: exactly its device nodes, the driver’s libraries, tools and firmware, its UUID', () => {
    const { oci, cdiSpec } = injected();
    const hostNodes = new Map(
      [
        ...(cdiSpec.containerEdits?.deviceNodes ?? []),
        ...cdiSpec.devices.flatMap((d) => d.containerEdits.deviceNodes ?? []),
      ].map((n) => [n.path, n.hostPath ?? n.path]),
    );
    const rootfs = buildContainerRootfs(oci, {
      hostPathOf: (p) => hostNodes.get(p),
      exec: { argv: ['/bin/sh', '-c', INSIDE], baseFiles: ['/bin/sh', ...sharedLibraries('/bin/sh')] },
    });
    const gpu0 = inventory?.gpus.find((g) => g.minor === 0);
    const version = inventory?.driverVersion ?? '?';
    const under = (prefix: string): string[] =>
      rootfs.entries.filter((e) => e.path.startsWith(prefix) && e.type !== 'dir').map((e) => e.path);

    expect(under('/dev/')).toEqual([
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia0',
      '/dev/nvidiactl',
    ]);
    for (const lib of [
      'libcuda.so.1',
      `libcuda.so.${version}`,
      'libnvidia-ml.so.1',
      `libnvidia-ml.so.${version}`,
    ])
      expect(under('/usr/lib/x86_64-linux-gnu/')).toContain(`/usr/lib/x86_64-linux-gnu/${lib}`);
    // The tools (the ldcache hook runs from the host and is not mounted).
    expect(under('/usr/bin/')).toEqual([
      '/usr/bin/nvidia-cuda-mps-control',
      '/usr/bin/nvidia-debugdump',
      '/usr/bin/nvidia-persistenced',
      '/usr/bin/nvidia-smi',
    ]);
    expect(under('/lib/firmware/')).toContain(`/lib/firmware/nvidia/${version}/gsp_ga10x.bin`);
    expect(oci.process?.env).toContain(`GPU_DRA_DEVICE_GPU_0=${gpu0?.uuid ?? '?'}`);
    expect(oci.process?.env).toContain('NVIDIA_VISIBLE_DEVICES=void');

    if (rootfs.mode === 'namespace') {
      const byPath = new Map(rootfs.entries.map((e) => [e.path, e]));
      expect(byPath.get('/dev/nvidia0')).toMatchObject({ type: 'char', major: 195, minor: 0 });
      expect(byPath.get('/dev/nvidiactl')).toMatchObject({ type: 'char', major: 195, minor: 255 });
      expect(rootfs.mounts['/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1']).toMatch(/^ro,nosuid,nodev/);
      const out = rootfs.exec?.stdout.split('\n') ?? [];
      expect(rootfs.exec?.code, rootfs.exec?.stderr).toBe(0);
      expect(out.filter((l) => l.startsWith('dev ')).sort()).toEqual([
        'dev /dev/nvidia-uvm',
        'dev /dev/nvidia-uvm-tools',
        'dev /dev/nvidia0',
        'dev /dev/nvidiactl',
      ]);
      expect(out.filter((l) => l.startsWith('visible '))).toEqual([
        `visible GPU_DRA_DEVICE_GPU_0=${gpu0?.uuid ?? '?'}`,
      ]);
      expect(out).toContain('nvml present');
      expect(out).toContain('libcuda read-only');
      expect(out).toContain(`nvidia-smi (simulated, driver ${version})`);
    } else {
      console.warn(`runtime e2e used the symlink fallback (no mount namespaces here)`);
    }
  });
});
