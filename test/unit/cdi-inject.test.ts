import { describe, expect, it } from 'vitest';
import { injectCdiDevices, parseQualifiedName } from '../../src/cdi/inject.js';
import { buildClaimCdiSpec, NO_DRIVER_FILES, type CdiSpec, type ClaimCdiSpec } from '../../src/cdi/spec.js';
import type { GpuDevice, MigDevice } from '../../src/nvml/types.js';
import { testGpu, testMig, TEST_DRIVER } from '../support/driverFixtures.js';

const UID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const OTHER_UID = '1c2d3e4f-5061-4728-93a4-b5c6d7e8f9a0';

describe('parseQualifiedName', () => {
  it('splits vendor/class=name and rejects unqualified ids', () => {
    expect(parseQualifiedName('k8s.gpu.dra.dev/claim=abc-gpu-0')).toEqual({
      vendor: 'k8s.gpu.dra.dev',
      class: 'claim',
      name: 'abc-gpu-0',
    });
    for (const bad of ['gpu-0', 'vendor/class', '=x', 'a/b=', 'a/b/c=d']) {
      expect(parseQualifiedName(bad), bad).toBeUndefined();
    }
  });
});

describe('injectCdiDevices (the CDI library’s merge, in memory)', () => {
  const spec = buildClaimCdiSpec({
    driverName: TEST_DRIVER,
    claimUid: UID,
    devices: [
      { deviceName: 'gpu-0', device: testGpu(0) },
      { deviceName: 'gpu-1-mig-1g10gb-19-0', device: testMig(1, 0) },
    ],
    hostPaths: { devRoot: '/host/dev', driverRoot: '/drv' },
    driverFiles: NO_DRIVER_FILES,
    driverVersion: '580.105.08',
  });

  it('adds the spec-wide edits once, then each device’s own nodes', () => {
    const ids = [...spec.cdiIds.values()];
    const { edits, unresolved } = injectCdiDevices([spec.spec], ids);
    expect(unresolved).toEqual([]);
    expect(edits.deviceNodes.map((n) => n.path)).toEqual([
      '/dev/nvidiactl',
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia0',
      '/dev/nvidia1',
      '/dev/nvidia-caps/nvidia-cap100',
      '/dev/nvidia-caps/nvidia-cap101',
    ]);
    expect(edits.deviceNodes[3]?.hostPath).toBe('/host/dev/nvidia0');
    expect(edits.env).toEqual([
      'NVIDIA_VISIBLE_DEVICES=void',
      `GPU_DRA_DEVICE_GPU_0=${testGpu(0).uuid}`,
      `GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_0=${testMig(1, 0).uuid}`,
    ]);
  });

  it('a container using two claims sees every device of both, not only the last claim’s', () => {
    const claim = (uid: string, deviceName: string, device: GpuDevice | MigDevice): ClaimCdiSpec =>
      buildClaimCdiSpec({
        driverName: TEST_DRIVER,
        claimUid: uid,
        devices: [{ deviceName, device }],
        hostPaths: { devRoot: '/host/dev', driverRoot: '/drv' },
        driverFiles: NO_DRIVER_FILES,
        driverVersion: '580.105.08',
      });
    const first = claim(UID, 'gpu-0', testGpu(0));
    const second = claim(OTHER_UID, 'gpu-1-mig-1g10gb-19-0', testMig(1, 0));
    const { edits, unresolved } = injectCdiDevices(
      [first.spec, second.spec],
      [...first.cdiIds.values(), ...second.cdiIds.values()],
    );
    expect(unresolved).toEqual([]);
    // (The second spec's control nodes replace the first's, moving them after gpu-0's node.)
    expect(edits.deviceNodes.map((n) => n.path).sort()).toEqual([
      '/dev/nvidia-caps/nvidia-cap100',
      '/dev/nvidia-caps/nvidia-cap101',
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia0',
      '/dev/nvidia1',
      '/dev/nvidiactl',
    ]);
    // Each device's UUID under its own key; the spec-wide value, the same in both, once.
    expect(edits.env).toEqual([
      'NVIDIA_VISIBLE_DEVICES=void',
      `GPU_DRA_DEVICE_GPU_0=${testGpu(0).uuid}`,
      `GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_0=${testMig(1, 0).uuid}`,
    ]);
  });

  it('two claims time-slicing one device write the same entry: one key, one value', () => {
    const build = (uid: string): ClaimCdiSpec =>
      buildClaimCdiSpec({
        driverName: TEST_DRIVER,
        claimUid: uid,
        devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
        hostPaths: { devRoot: '/host/dev', driverRoot: '/drv' },
        driverFiles: NO_DRIVER_FILES,
        driverVersion: '580.105.08',
      });
    const [a, b] = [build(UID), build(OTHER_UID)];
    const { edits } = injectCdiDevices([a.spec, b.spec], [...a.cdiIds.values(), ...b.cdiIds.values()]);
    expect(edits.env).toEqual(['NVIDIA_VISIBLE_DEVICES=void', `GPU_DRA_DEVICE_GPU_0=${testGpu(0).uuid}`]);
    expect(edits.deviceNodes.map((n) => n.path).sort()).toEqual([
      '/dev/nvidia-uvm',
      '/dev/nvidia-uvm-tools',
      '/dev/nvidia0',
      '/dev/nvidiactl',
    ]);
  });

  it('one device of the spec still gets the spec-wide edits; unknown ids are reported', () => {
    const id = spec.cdiIds.get('gpu-0') ?? '';
    const { edits, unresolved } = injectCdiDevices(
      [spec.spec],
      [id, `k8s.${TEST_DRIVER}/claim=${UID}-gpu-9`, 'not-qualified'],
    );
    expect(unresolved).toEqual([`k8s.${TEST_DRIVER}/claim=${UID}-gpu-9`, 'not-qualified']);
    expect(edits.deviceNodes.map((n) => n.path)).toContain('/dev/nvidiactl');
    expect(edits.deviceNodes.map((n) => n.path)).not.toContain('/dev/nvidia1');
  });

  it('later env values, nodes and mounts replace earlier ones by key; mounts sort by depth, stably', () => {
    const a: CdiSpec = {
      cdiVersion: '0.6.0',
      kind: 'example.com/a',
      containerEdits: {
        env: ['A=1', 'B=1'],
        mounts: [
          { hostPath: '/h/x', containerPath: '/usr/lib/x' },
          { hostPath: '/h/d', containerPath: '/opt' },
        ],
      },
      devices: [
        {
          name: 'one',
          containerEdits: {
            env: ['B=2', 'C=2'],
            deviceNodes: [{ path: '/dev/x', hostPath: '/h/dev/x1' }],
            hooks: [{ hookName: 'createContainer', path: '/bin/h1' }],
          },
        },
        {
          name: 'two',
          containerEdits: {
            deviceNodes: [{ path: '/dev/x', hostPath: '/h/dev/x2' }, { path: '/dev/y' }],
            mounts: [
              { hostPath: '/h/x2', containerPath: '/usr/lib/x' },
              { hostPath: '/h/b', containerPath: '/b' },
            ],
            hooks: [{ hookName: 'createContainer', path: '/bin/h2' }],
          },
        },
      ],
    };
    const { edits } = injectCdiDevices([a], ['example.com/a=one', 'example.com/a=two']);
    expect(edits.env).toEqual(['A=1', 'B=2', 'C=2']);
    expect(edits.deviceNodes).toEqual([{ path: '/dev/x', hostPath: '/h/dev/x2' }, { path: '/dev/y' }]);
    expect(edits.mounts.map((m) => `${m.containerPath}<-${m.hostPath}`)).toEqual([
      '/opt<-/h/d',
      '/b<-/h/b',
      '/usr/lib/x<-/h/x2',
    ]);
    expect(edits.hooks.map((h) => h.path)).toEqual(['/bin/h1', '/bin/h2']);
  });
});
