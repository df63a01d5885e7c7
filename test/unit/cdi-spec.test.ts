import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  buildClaimCdiSpec,
  claimDeviceNodes,
  claimSpecFileName,
  deviceEnvKey,
  qualifiedCdiId,
  serializeCdiSpec,
  type ClaimCdiInput,
  type DriverFiles,
} from '../../src/cdi/spec.js';
import { isValidClaimUid } from '../../src/util/kubeNames.js';
import {
  DeviceNodeMissingError,
  inspectDeviceNodes,
  readCharDeviceMajors,
  scanDriverFiles,
} from '../../src/cdi/host.js';
import { CdiStore } from '../../src/cdi/store.js';
import {
  createTestHost,
  testGpu,
  testMig,
  TEST_DRIVER,
  TEST_DRIVER_VERSION,
  type TestHost,
} from '../support/driverFixtures.js';

const golden = (name: string): string => path.join(import.meta.dirname, '../fixtures/golden/cdi', name);

const DRIVER_FILES: DriverFiles = {
  libraries: [
    '/usr/lib/x86_64-linux-gnu/libcuda.so.1',
    `/usr/lib/x86_64-linux-gnu/libcuda.so.${TEST_DRIVER_VERSION}`,
    `/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.${TEST_DRIVER_VERSION}`,
  ],
  binaries: ['/usr/bin/nvidia-smi'],
  firmware: [`/lib/firmware/nvidia/${TEST_DRIVER_VERSION}`],
  hook: { path: '/usr/bin/nvidia-cdi-hook', kind: 'nvidia-cdi-hook' },
};

const base: Omit<ClaimCdiInput, 'devices' | 'claimUid'> = {
  driverName: TEST_DRIVER,
  hostPaths: { devRoot: '/host/dev', driverRoot: '/run/nvidia/driver' },
  driverFiles: DRIVER_FILES,
  driverVersion: TEST_DRIVER_VERSION,
};

const UID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';

describe('buildClaimCdiSpec', () => {
  it('full GPUs: golden', async () => {
    const built = buildClaimCdiSpec({
      ...base,
      claimUid: UID,
      devices: [
        { deviceName: 'gpu-3', device: testGpu(3) },
        { deviceName: 'gpu-0', device: testGpu(0) },
      ],
    });
    await expect(serializeCdiSpec(built.spec)).toMatchFileSnapshot(golden('gpu-claim.json'));
    expect(built.fileName).toBe(`k8s.gpu.dra.dev-claim_${UID}.json`);
    expect(built.spec.kind).toBe('k8s.gpu.dra.dev/claim');
    expect([...built.cdiIds.entries()]).toEqual([
      ['gpu-0', `k8s.gpu.dra.dev/claim=${UID}-gpu-0`],
      ['gpu-3', `k8s.gpu.dra.dev/claim=${UID}-gpu-3`],
    ]);
  });

  it('MIG devices: golden (parent node + GI/CI access caps)', async () => {
    const built = buildClaimCdiSpec({
      ...base,
      claimUid: UID,
      devices: [
        { deviceName: 'gpu-1-mig-1g10gb-19-0', device: testMig(1, 0) },
        { deviceName: 'gpu-1-mig-1g10gb-19-1', device: testMig(1, 1) },
      ],
    });
    await expect(serializeCdiSpec(built.spec)).toMatchFileSnapshot(golden('mig-claim.json'));
    const nodes = built.spec.devices[0]?.containerEdits.deviceNodes?.map((n) => n.path);
    expect(nodes).toEqual([
      '/dev/nvidia1',
      '/dev/nvidia-caps/nvidia-cap100',
      '/dev/nvidia-caps/nvidia-cap101',
    ]);
    expect(built.spec.containerEdits?.env).toContain('NVIDIA_VISIBLE_DEVICES=void');
    expect(built.spec.devices.map((d) => d.containerEdits.env)).toEqual([
      [`GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_0=${testMig(1, 0).uuid}`],
      [`GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_1=${testMig(1, 1).uuid}`],
    ]);
  });

  it('the spec-level env holds only what every claim on the node shares (CDI merges env by key)', () => {
    const env = (uid: string, deviceName: string, index: number): string[] =>
      buildClaimCdiSpec({ ...base, claimUid: uid, devices: [{ deviceName, device: testGpu(index) }] }).spec
        .containerEdits?.env ?? [];
    const a = env(UID, 'gpu-0', 0);
    expect(a).toEqual(['NVIDIA_VISIBLE_DEVICES=void', 'NVIDIA_CTK_LIBCUDA_DIR=/usr/lib/x86_64-linux-gnu']);
    expect(env('1b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9', 'gpu-5', 5)).toEqual(a);
  });

  it('without driver files there are no mounts and no hook; nvidia-ctk gets its hook verb', () => {
    const bare = buildClaimCdiSpec({
      ...base,
      driverFiles: { libraries: [], binaries: [], firmware: [] },
      claimUid: UID,
      devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
    });
    expect(bare.spec.containerEdits?.mounts).toBeUndefined();
    expect(bare.spec.containerEdits?.hooks).toBeUndefined();
    const ctk = buildClaimCdiSpec({
      ...base,
      driverFiles: { ...DRIVER_FILES, hook: { path: '/usr/bin/nvidia-ctk', kind: 'nvidia-ctk' } },
      claimUid: UID,
      devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
    });
    for (const h of ctk.spec.containerEdits?.hooks ?? []) {
      expect(h.args?.slice(0, 2)).toEqual(['nvidia-ctk', 'hook']);
      expect(h.path).toBe('/run/nvidia/driver/usr/bin/nvidia-ctk');
    }
  });

  it("adds the toolkit's hooks in its order, and the libcuda.so link only with a versioned libcuda", () => {
    const verbs = (files: DriverFiles): (string | undefined)[] =>
      (
        buildClaimCdiSpec({
          ...base,
          driverFiles: files,
          claimUid: UID,
          devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
        }).spec.containerEdits?.hooks ?? []
      ).map((h) => h.args?.[1]);
    expect(verbs(DRIVER_FILES)).toEqual([
      'create-symlinks',
      'enable-cuda-compat',
      'update-ldcache',
      'disable-device-node-modification',
    ]);
    const noCuda = {
      ...DRIVER_FILES,
      libraries: DRIVER_FILES.libraries.filter((l) => !l.includes('libcuda')),
    };
    expect(verbs(noCuda)).toEqual([
      'enable-cuda-compat',
      'update-ldcache',
      'disable-device-node-modification',
    ]);
  });

  it('is deterministic and de-duplicates devices', () => {
    const devices = [
      { deviceName: 'gpu-0', device: testGpu(0) },
      { deviceName: 'gpu-0', device: testGpu(0) },
    ];
    const a = buildClaimCdiSpec({ ...base, claimUid: UID, devices });
    const b = buildClaimCdiSpec({ ...base, claimUid: UID, devices: [...devices].reverse() });
    expect(a.spec.devices).toHaveLength(1);
    expect(serializeCdiSpec(a.spec)).toBe(serializeCdiSpec(b.spec));
  });

  it('fills node numbers when known', () => {
    const built = buildClaimCdiSpec({
      ...base,
      claimUid: UID,
      devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
      nodeInfo: new Map([['/dev/nvidia0', { type: 'c', major: 195, minor: 0 }]]),
    });
    expect(built.spec.devices[0]?.containerEdits.deviceNodes?.[0]).toEqual({
      path: '/dev/nvidia0',
      hostPath: '/host/dev/nvidia0',
      type: 'c',
      major: 195,
      minor: 0,
    });
  });

  it('rejects UIDs that could escape the CDI root or break CDI names', () => {
    for (const bad of ['', '../x', 'a/b', 'a.b', '-a', 'x'.repeat(64)]) {
      expect(isValidClaimUid(bad), bad).toBe(false);
      expect(() => buildClaimCdiSpec({ ...base, claimUid: bad, devices: [] })).toThrow(/invalid claim UID/);
    }
    expect(isValidClaimUid(UID)).toBe(true);
    expect(claimSpecFileName('gpu.dra.dev', UID)).toBe(`k8s.gpu.dra.dev-claim_${UID}.json`);
    expect(qualifiedCdiId('gpu.dra.dev', UID, 'gpu-0')).toBe(`k8s.gpu.dra.dev/claim=${UID}-gpu-0`);
  });
});

describe('host I/O', () => {
  let host: TestHost | undefined;
  afterEach(() => {
    host?.cleanup();
    host = undefined;
  });

  it('scanDriverFiles finds versioned libraries, soname links, binaries, firmware and the hook', () => {
    host = createTestHost();
    const files = scanDriverFiles(host.hostPaths, TEST_DRIVER_VERSION);
    const lib = '/usr/lib/x86_64-linux-gnu';
    expect(files.libraries).toContain(`${lib}/libcuda.so.1`);
    expect(files.libraries).toContain(`${lib}/libcuda.so.${TEST_DRIVER_VERSION}`);
    expect(files.libraries).toContain(`${lib}/libnvidia-ptxjitcompiler.so.1`);
    expect(files.libraries).not.toContain(`${lib}/libcuda.so`);
    expect(files.libraries).not.toContain(`${lib}/libunrelated.so.1`);
    expect(files.binaries).toEqual(['/usr/bin/nvidia-debugdump', '/usr/bin/nvidia-smi']);
    expect(files.firmware).toEqual([`/lib/firmware/nvidia/${TEST_DRIVER_VERSION}`]);
    expect(files.hook).toEqual({ path: '/usr/bin/nvidia-cdi-hook', kind: 'nvidia-cdi-hook' });
  });

  it('scanDriverFiles on an empty driver root finds nothing', () => {
    host = createTestHost(undefined, { driverFiles: false });
    expect(scanDriverFiles(host.hostPaths, TEST_DRIVER_VERSION)).toEqual({
      libraries: [],
      binaries: [],
      firmware: [],
    });
  });

  it('inspectDeviceNodes names every missing node', () => {
    host = createTestHost();
    fs.rmSync(path.join(host.hostPaths.devRoot, 'nvidia-uvm'));
    const nodes = claimDeviceNodes({
      hostPaths: host.hostPaths,
      devices: [{ deviceName: 'gpu-7', device: testGpu(7) }],
    });
    let caught: unknown;
    try {
      inspectDeviceNodes(nodes);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(DeviceNodeMissingError);
    const missing = (caught as DeviceNodeMissingError).missing;
    expect(missing).toEqual([
      path.join(host.hostPaths.devRoot, 'nvidia7'),
      path.join(host.hostPaths.devRoot, 'nvidia-uvm'),
    ]);
  });

  it('inspectDeviceNodes reads numbers of real character devices', () => {
    const info = inspectDeviceNodes([{ path: '/dev/null', hostPath: '/dev/null' }]);
    expect(info.get('/dev/null')).toEqual({ type: 'c', major: 1, minor: 3 });
  });

  it('plain-file nodes get NVIDIA numbers from /proc/devices; unknown paths get none', () => {
    host = createTestHost();
    const majors = readCharDeviceMajors(host.hostPaths);
    expect(majors.get('nvidia-frontend')).toBe(195);
    const nodes = claimDeviceNodes({
      hostPaths: host.hostPaths,
      devices: [{ deviceName: 'gpu-1-mig-1g10gb-19-0', device: testMig(1, 0) }],
    });
    const info = inspectDeviceNodes(nodes, majors);
    expect(Object.fromEntries(info)).toEqual({
      '/dev/nvidia1': { type: 'c', major: 195, minor: 1 },
      '/dev/nvidia-caps/nvidia-cap100': { type: 'c', major: 241, minor: 100 },
      '/dev/nvidia-caps/nvidia-cap101': { type: 'c', major: 241, minor: 101 },
      '/dev/nvidiactl': { type: 'c', major: 195, minor: 255 },
      '/dev/nvidia-uvm': { type: 'c', major: 238, minor: 0 },
      '/dev/nvidia-uvm-tools': { type: 'c', major: 238, minor: 1 },
    });
    expect(inspectDeviceNodes(nodes).size).toBe(0);
  });

  it('CdiStore writes atomically, lists only our files and refuses foreign names', async () => {
    host = createTestHost();
    const store = new CdiStore(host.cdiRoot, TEST_DRIVER);
    const built = buildClaimCdiSpec({
      ...base,
      claimUid: UID,
      devices: [{ deviceName: 'gpu-0', device: testGpu(0) }],
    });
    await store.write(built.fileName, built.spec);
    fs.writeFileSync(path.join(host.cdiRoot, 'nvidia.yaml'), 'x');
    fs.writeFileSync(path.join(host.cdiRoot, 'k8s.other.dev-claim_x.json'), 'x');
    expect(await store.list()).toEqual([built.fileName]);
    expect(fs.readdirSync(host.cdiRoot).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(JSON.parse(fs.readFileSync(path.join(host.cdiRoot, built.fileName), 'utf8'))).toEqual(built.spec);
    expect((fs.statSync(path.join(host.cdiRoot, built.fileName)).mode & 0o777).toString(8)).toBe('600');
    expect(() => store.pathOf('../etc/passwd')).toThrow(/refusing/);
    expect(() => store.pathOf('nvidia.yaml')).toThrow(/refusing/);
    expect(await store.remove(built.fileName)).toBe(true);
    expect(await store.remove(built.fileName)).toBe(false);
  });
});

describe('deviceEnvKey', () => {
  it('uppercases the device name and turns every other character into _', () => {
    expect(deviceEnvKey('gpu-0')).toBe('GPU_DRA_DEVICE_GPU_0');
    expect(deviceEnvKey('gpu-1-mig-1g10gb-19-0')).toBe('GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_0');
    expect(deviceEnvKey('a.b/c')).toBe('GPU_DRA_DEVICE_A_B_C');
  });

  it('gives distinct device names distinct keys, each a portable shell variable name', () => {
    const names = ['gpu-0', 'gpu-1', 'gpu-10', 'gpu-1-0', 'gpu-1-mig-1g10gb-19-0', 'gpu-1-mig-1g10gb-19-1'];
    const keys = names.map(deviceEnvKey);
    expect(new Set(keys).size).toBe(names.length);
    for (const k of keys) expect(k).toMatch(/^[A-Z_][A-Z0-9_]*$/);
  });
});

describe('buildClaimCdiSpec refuses a spec CDI would reject', () => {
  it('no devices', () => {
    expect(() => buildClaimCdiSpec({ ...base, claimUid: UID, devices: [] })).toThrow(/no devices/);
  });
});
