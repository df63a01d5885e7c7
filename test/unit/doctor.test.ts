// `gpu-dra doctor` (src/doctor/): on a simulated node with a running admin socket, a checkpoint,
// a CDI spec and a containerd config, each fault is injected into the node's files and must
// come out as its finding; the healthy node gives none. The pure checks are also tested alone
// for what a simulated node cannot show (a kubelet's rejection, published slices, taints).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

import {
  buildClaimCdiSpec,
  claimSpecFileName,
  NO_DRIVER_FILES,
  validateCdiSpec,
} from '../../src/cdi/spec.js';
import { CdiStore } from '../../src/cdi/store.js';
import { CHECKPOINT_FILE, emptyCheckpoint } from '../../src/checkpoint/schema.js';
import {
  checkNvml,
  checkRegistration,
  checkSlices,
  checkTaints,
  hasErrors,
  parseKernelModuleVersion,
  runChecks,
  type CheckId,
  type CheckResult,
  type DoctorFacts,
  type Finding,
} from '../../src/doctor/checks.js';
import { doctorOptions } from '../../src/cli/actions/doctor.js';
import { gatherFacts, type DoctorOptions } from '../../src/doctor/gather.js';
import { doctorExitCode, doctorReport, renderDoctorText } from '../../src/doctor/render.js';
import {
  containerdCdi,
  crioCdi,
  parseTomlKeys,
  sameHostDir,
  tomlKey,
} from '../../src/doctor/runtimeConfig.js';
import {
  adminSocketPath,
  startAdminSocket,
  type AdminServer,
  type AdminStatus,
} from '../../src/node/adminSocket.js';
import type { FakeNvmlConfig } from '../../src/sim/fakeNvml.js';
import { loadProfile } from '../../src/sim/fakeNvml.js';
import { silentLogger } from '../../src/util/log.js';
import { withSimulatedNode, simNodeFlags, type TempSimulatedNode } from '../support/sim.js';

const DRIVER = 'gpu.dra.dev';
const CLAIM = '0b6f5a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
const ORPHAN = '9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a';
const repo = path.resolve(import.meta.dirname, '../..');

interface DoctorNode {
  readonly sim: TempSimulatedNode;
  readonly opts: DoctorOptions;
  readonly status: { current: AdminStatus };
  readonly containerdConfig: string;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(socket: string): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  );
}

/**
 * A healthy simulated node, as the doctor finds it with the plugin running: the plugin's
 * sockets and admin socket, one prepared claim with its CDI spec in the checkpoint, and a
 * containerd config that turns CDI on for the plugin's CDI directory.
 */
async function doctorNode(profile: string | FakeNvmlConfig = 'h100'): Promise<DoctorNode> {
  const sim = await withSimulatedNode(profile);
  cleanups.push(() => sim.cleanup());
  const pluginsDir = path.join(sim.dir, 'plugins');
  const registryDir = path.join(sim.dir, 'registry');
  const cdiRoot = path.join(sim.dir, 'cdi');
  const hostRoot = path.join(sim.dir, 'host');
  fs.mkdirSync(path.join(pluginsDir, DRIVER), { recursive: true, mode: 0o700 });
  fs.mkdirSync(registryDir, { recursive: true });
  const sockets = {
    dra: path.join(pluginsDir, DRIVER, 'dra.sock'),
    registration: path.join(registryDir, `${DRIVER}-reg.sock`),
  };
  await listen(sockets.dra);
  await listen(sockets.registration);
  const status: { current: AdminStatus } = {
    current: {
      apiVersion: 1,
      driverName: DRIVER,
      nodeName: 'node-a',
      pid: 1,
      registration: { registered: true, at: '2026-01-01T00:00:00.000Z' },
      sockets,
      slicesPublished: true,
      taints: {},
      xidTaints: {},
    },
  };
  const admin: AdminServer = await startAdminSocket(
    adminSocketPath(pluginsDir, DRIVER),
    { status: () => status.current, clearXidTaints: () => [] },
    silentLogger(),
  );
  cleanups.push(() => admin.close());

  // One prepared claim: its spec as the plugin builds it, and its checkpoint entry.
  const gpu = { kind: 'gpu' as const, minor: 0, uuid: sim.config.gpus[0]?.uuid ?? '' };
  const built = buildClaimCdiSpec({
    driverName: DRIVER,
    claimUid: CLAIM,
    devices: [
      {
        deviceName: 'gpu-0',
        device: {
          ...gpu,
          index: 0,
          productName: 'H100',
          pci: { busId: '0000:18:00.0', deviceId: 0, subsystemId: 0 },
          migProfiles: [],
          migDevices: [],
        },
      },
    ],
    hostPaths: sim.hostPaths,
    driverFiles: NO_DRIVER_FILES,
    driverVersion: sim.config.driverVersion,
  });
  await new CdiStore(cdiRoot, DRIVER).write(built.fileName, built.spec);
  const checkpoint = {
    ...emptyCheckpoint(),
    claims: {
      [CLAIM]: {
        state: 'PrepareCompleted',
        namespace: 'ns',
        name: 'c',
        cdiSpecFile: built.fileName,
        devices: [],
      },
    },
  };
  fs.writeFileSync(path.join(pluginsDir, DRIVER, CHECKPOINT_FILE), JSON.stringify(checkpoint));

  const containerdConfig = path.join(hostRoot, 'etc', 'containerd', 'config.toml');
  fs.mkdirSync(path.dirname(containerdConfig), { recursive: true });
  fs.writeFileSync(
    containerdConfig,
    [
      'version = 3',
      '[plugins."io.containerd.cri.v1.runtime"]',
      '  enable_cdi = true',
      `  cdi_spec_dirs = ["/etc/cdi", ${JSON.stringify(cdiRoot)}]`,
      '',
    ].join('\n'),
  );
  const opts: DoctorOptions = {
    driverName: DRIVER,
    kubeletPluginsDir: pluginsDir,
    cdiRoot,
    nvmlLib: sim.libPath,
    hostPaths: sim.hostPaths,
    migPartitioning: 'static',
    hostRoot,
    containerdConfig: '/etc/containerd/config.toml',
    crioConfig: '/etc/crio/crio.conf',
    timeoutMs: 2_000,
    env: {},
  };
  return { sim, opts, status, containerdConfig };
}

async function diagnose(node: DoctorNode): Promise<CheckResult[]> {
  return runChecks(await gatherFacts(node.opts));
}

function findings(results: readonly CheckResult[], id: CheckId): readonly Finding[] {
  return results.find((r) => r.id === id)?.findings ?? [];
}

function allFindings(results: readonly CheckResult[]): Finding[] {
  return results.flatMap((r) => r.findings.map((f) => ({ ...f, problem: `${r.id}: ${f.problem}` })));
}

describe('gpu-dra doctor on a simulated node', () => {
  it('finds nothing wrong with a healthy node, and says what it looked at', async () => {
    const results = await diagnose(await doctorNode());
    expect(allFindings(results)).toEqual([]);
    const skipped = Object.fromEntries(results.filter((r) => r.skipped).map((r) => [r.id, r.skipped]));
    // Only the apiserver comparison is skipped: no kubeconfig here.
    expect(Object.keys(skipped)).toEqual(['slices']);
    expect(skipped['slices']).toMatch(/node-name|kubeconfig/);
    expect(results.find((r) => r.id === 'nvml')?.ok).toBe('NVML and kernel module both 580.159.04');
    expect(doctorExitCode(doctorReport(results))).toBe(0);
  });

  it('finds a kernel module of another version than the NVIDIA library', async () => {
    const node = await doctorNode();
    const file = path.join(node.sim.hostPaths.procRoot, 'driver', 'nvidia', 'version');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('580.159.04', '580.95.05'));
    const results = await diagnose(node);
    expect(findings(results, 'nvml')).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: expect.stringMatching(/different versions/) as string,
        evidence: ['NVML reports driver 580.159.04', `${file} says 580.95.05`],
      }),
    ]);
    expect(allFindings(results)).toHaveLength(1);
    expect(doctorExitCode(doctorReport(results))).toBe(1);
  });

  it('names the mismatch when NVML itself refuses to start against the loaded module', async () => {
    const profile = await loadProfile('h100');
    const node = await doctorNode({ ...profile, initError: 'LIB_RM_VERSION_MISMATCH' });
    // The module of another version is loaded: the fake leaves /proc without it, as for a driver
    // that is not, so write what the kernel would show.
    const file = path.join(node.sim.hostPaths.procRoot, 'driver', 'nvidia', 'version');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(
      file,
      'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n',
    );
    const results = await diagnose(node);
    expect(findings(results, 'nvml')).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: expect.stringMatching(/NVML refuses to start: .* different versions/) as string,
        evidence: [
          expect.stringMatching(/LIB_RM_VERSION_MISMATCH/) as string,
          `kernel module 580.95.05 (${file})`,
        ],
      }),
    ]);
    expect(results.find((r) => r.id === 'device-nodes')?.skipped).toBeDefined();
  });

  it('finds a device node that is another device than the GPU', async () => {
    const node = await doctorNode();
    // A real character device (1:3) where /dev/nvidia0 (195:0) should be.
    const dev = path.join(node.sim.hostPaths.devRoot, 'nvidia0');
    fs.rmSync(dev);
    fs.symlinkSync('/dev/null', dev);
    expect(findings(await diagnose(node), 'device-nodes')).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: expect.stringMatching(/^\/dev\/nvidia0 is not GPU GPU-[0-9a-f-]+'s device node$/) as string,
        evidence: ['NVML: minor 0, major 195 (nvidia-frontend in /proc/devices)', `${dev}: 1:3`],
      }),
    ]);
  });

  it('finds a missing GPU device node and a missing nvidia-uvm', async () => {
    const node = await doctorNode();
    fs.rmSync(path.join(node.sim.hostPaths.devRoot, 'nvidia0'));
    fs.rmSync(path.join(node.sim.hostPaths.devRoot, 'nvidia-uvm'));
    const f = findings(await diagnose(node), 'device-nodes');
    expect(f.map((x) => [x.severity, x.problem])).toEqual([
      ['error', expect.stringMatching(/^\/dev\/nvidia0 is missing \(GPU GPU-[0-9a-f-]+ has minor 0\)$/)],
      ['error', expect.stringMatching(/^\/dev\/nvidia-uvm is missing/)],
    ]);
    expect(f[0]?.evidence).toEqual([`no file at ${path.join(node.sim.hostPaths.devRoot, 'nvidia0')}`]);
    expect(f[1]?.fix).toMatch(/nvidia-modprobe -u/);
  });

  it('finds a MIG mode change pending until the GPU is reset', async () => {
    const profile = await loadProfile('h100');
    const pending: FakeNvmlConfig = {
      ...profile,
      gpus: profile.gpus.map((g) => ({ ...g, migMode: { current: 0, pending: 1 } })),
    };
    const results = await diagnose(await doctorNode(pending));
    expect(findings(results, 'mig')).toEqual([
      expect.objectContaining({
        severity: 'warning',
        problem: expect.stringMatching(
          /GPU 0 .* MIG mode change pending: it is published as MIG off/,
        ) as string,
        fix: expect.stringMatching(/nvidia-smi -r -i 0/) as string,
      }),
    ]);
    // A warning only: the exit status stays 0.
    expect(doctorExitCode(doctorReport(results))).toBe(0);
  });

  it('finds CDI turned off in a containerd 1.7 config, and one that leaves it to the version', async () => {
    const node = await doctorNode();
    fs.writeFileSync(
      node.containerdConfig,
      'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  enable_cdi = false # off\n  sandbox_image = "pause:3.10"\n',
    );
    const off = findings(await diagnose(node), 'runtime');
    expect(off).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: expect.stringMatching(/containerd has CDI turned off/) as string,
        evidence: [`${node.containerdConfig}: [plugins."io.containerd.grpc.v1.cri"] enable_cdi = false`],
      }),
    ]);
    fs.writeFileSync(node.containerdConfig, 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n');
    expect(findings(await diagnose(node), 'runtime')).toEqual([
      expect.objectContaining({
        severity: 'warning',
        problem: expect.stringMatching(/containerd 1\.7 leaves it off/) as string,
      }),
    ]);
  });

  it('reads containerd imports and CRI-O drop-ins: the later file wins', async () => {
    const node = await doctorNode();
    const confD = path.join(path.dirname(node.containerdConfig), 'conf.d');
    fs.mkdirSync(confD);
    fs.writeFileSync(node.containerdConfig, 'version = 3\nimports = ["/etc/containerd/conf.d/*.toml"]\n');
    fs.writeFileSync(
      path.join(confD, '10-cdi.toml'),
      '[plugins."io.containerd.cri.v1.runtime"]\nenable_cdi = false\n',
    );
    expect(findings(await diagnose(node), 'runtime')[0]?.evidence[0]).toMatch(
      /10-cdi\.toml: .*enable_cdi = false/,
    );

    fs.rmSync(node.containerdConfig);
    const crio = path.join(node.opts.hostRoot, 'etc', 'crio');
    fs.mkdirSync(path.join(crio, 'crio.conf.d'), { recursive: true });
    fs.writeFileSync(
      path.join(crio, 'crio.conf'),
      `[crio.runtime]\ncdi_spec_dirs = [${JSON.stringify(node.opts.cdiRoot)}]\n`,
    );
    fs.writeFileSync(
      path.join(crio, 'crio.conf.d', '99-gpu.conf'),
      '[crio.runtime]\ncdi_spec_dirs = [\n  "/etc/cdi",\n]\n',
    );
    expect(findings(await diagnose(node), 'runtime')).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: `CRI-O does not read CDI specs from ${node.opts.cdiRoot}, where the plugin writes them`,
      }),
    ]);
  });

  it('finds an orphan CDI spec, an invalid one, and a prepared claim whose spec is gone', async () => {
    const node = await doctorNode();
    const store = new CdiStore(node.opts.cdiRoot, DRIVER);
    const good = JSON.parse((await store.read(claimSpecFileName(DRIVER, CLAIM))) ?? '{}') as {
      devices: { name: string }[];
    };
    const orphan = {
      ...good,
      devices: good.devices.map((d) => ({ ...d, name: d.name.replace(CLAIM, ORPHAN) })),
    };
    fs.writeFileSync(path.join(node.opts.cdiRoot, claimSpecFileName(DRIVER, ORPHAN)), JSON.stringify(orphan));
    const orphanFindings = findings(await diagnose(node), 'cdi');
    expect(orphanFindings).toEqual([
      expect.objectContaining({
        severity: 'warning',
        problem: `orphan CDI spec ${path.join(node.opts.cdiRoot, claimSpecFileName(DRIVER, ORPHAN))}: no claim in the checkpoint owns it`,
      }),
    ]);

    // A rebuild in progress: the spec is how the plugin finds its claim, not an orphan.
    const checkpointPath = path.join(node.opts.kubeletPluginsDir, DRIVER, CHECKPOINT_FILE);
    const recorded = fs.readFileSync(checkpointPath, 'utf8');
    fs.writeFileSync(
      checkpointPath,
      JSON.stringify({
        kind: 'GpuDraCheckpoint',
        version: 1,
        claims: {},
        rebuild: {
          reason: 'corrupt',
          problem: 'p',
          movedTo: `${checkpointPath}.corrupt-x`,
          since: '2026-12-02T00:00:00Z',
        },
      }),
    );
    expect(findings(await diagnose(node), 'cdi')).toEqual([
      expect.objectContaining({
        severity: 'warning',
        problem:
          'the plugin is rebuilding its prepared claims from the API (checkpoint unreadable); until done it prepares no other claim',
        evidence: [`since 2026-12-02T00:00:00Z; the old file is kept as ${checkpointPath}.corrupt-x`],
      }),
    ]);
    fs.writeFileSync(checkpointPath, recorded);

    fs.writeFileSync(
      path.join(node.opts.cdiRoot, claimSpecFileName(DRIVER, CLAIM)),
      JSON.stringify({ ...good, devices: [] }),
    );
    fs.rmSync(path.join(node.opts.cdiRoot, claimSpecFileName(DRIVER, ORPHAN)));
    const invalid = findings(await diagnose(node), 'cdi');
    expect(invalid.map((f) => [f.severity, f.evidence])).toEqual([
      ['error', ['no devices (CDI refuses a spec without any)']],
    ]);

    fs.rmSync(path.join(node.opts.cdiRoot, claimSpecFileName(DRIVER, CLAIM)));
    expect(findings(await diagnose(node), 'cdi')).toEqual([
      expect.objectContaining({
        severity: 'error',
        problem: `prepared claim ${CLAIM} has no CDI spec: its containers cannot start`,
      }),
    ]);
  });

  it('finds a CDI directory it cannot write, and an unreadable checkpoint', async () => {
    const node = await doctorNode();
    // Not writable even for root (the tests may run as root): a path below a regular file.
    const file = path.join(node.sim.dir, 'not-a-dir');
    fs.writeFileSync(file, '');
    const cdiRoot = path.join(file, 'cdi');
    fs.writeFileSync(path.join(node.opts.kubeletPluginsDir, DRIVER, CHECKPOINT_FILE), '{"kind":');
    const f = findings(await diagnose({ ...node, opts: { ...node.opts, cdiRoot } }), 'cdi');
    expect(f.map((x) => [x.problem, x.evidence[0]])).toEqual([
      [
        `the CDI directory ${cdiRoot} is not writable, so no claim can be prepared`,
        expect.stringMatching(/ENOTDIR/),
      ],
      [
        'the checkpoint cannot be read; the plugin will keep it aside and rebuild its claims from the API at its next start',
        expect.stringMatching(/checkpoint\.json: invalid JSON/),
      ],
    ]);
  });

  it('reports a plugin that does not answer, and the registration the kubelet has not confirmed', async () => {
    const node = await doctorNode();
    node.status.current = { ...node.status.current, registration: {} };
    expect(findings(await diagnose(node), 'registration')).toEqual([
      expect.objectContaining({
        severity: 'warning',
        problem: 'the kubelet has not confirmed the registration yet',
      }),
    ]);
    fs.rmSync(node.status.current.sockets.registration);
    expect(findings(await diagnose(node), 'registration').map((f) => f.severity)).toEqual([
      'warning',
      'error',
    ]);
    const absent = await diagnose({ ...node, opts: { ...node.opts, driverName: 'other.example.com' } });
    expect(findings(absent, 'registration')).toEqual([
      expect.objectContaining({
        severity: 'error',
        evidence: [
          expect.stringMatching(/no gpu-dra plugin listens on .*other\.example\.com\/admin\.sock/) as string,
        ],
      }),
    ]);
  });
});

/** Facts of a healthy one-GPU node, for the checks that need no files. */
function facts(over: Partial<DoctorFacts> = {}): DoctorFacts {
  const inventory = {
    driverVersion: '580.159.04',
    cudaDriverVersion: '13.0',
    gpus: [
      {
        kind: 'gpu' as const,
        index: 0,
        minor: 0,
        uuid: 'GPU-0',
        productName: 'H100',
        pci: { busId: '0000:18:00.0', deviceId: 0, subsystemId: 0 },
        migProfiles: [],
        migDevices: [],
      },
    ],
    failures: [],
  };
  return {
    driverName: DRIVER,
    migPartitioning: 'static',
    nvml: { ok: true, inventory },
    kernelModule: { file: '/proc/driver/nvidia/version', version: '580.159.04' },
    cdi: { root: '/var/run/cdi', specs: [], checkpoint: { file: 'c', status: 'ok', claims: {} } },
    runtimes: [],
    runtimeConfigPaths: [],
    plugin: { socket: 's' },
    slices: { skipped: 'x' },
    ...over,
  };
}

describe('doctor checks', () => {
  it('names a library/module mismatch NVML itself refuses', () => {
    const r = checkNvml(
      facts({
        nvml: {
          ok: false,
          error: 'nvmlInit_v2 failed: (NVML_ERROR_LIB_RM_VERSION_MISMATCH)',
          code: 'LIB_RM_VERSION_MISMATCH',
        },
      }),
    );
    expect(r.findings[0]?.problem).toMatch(/different versions/);
    expect(r.findings[0]?.evidence).toContain('kernel module 580.159.04 (/proc/driver/nvidia/version)');
    expect(r.findings[0]?.fix).toMatch(/reboot/);
    expect(
      parseKernelModuleVersion(
        'NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n',
      ),
    ).toBe('550.54.15');
  });

  it('reports the kubelet rejecting the registration, with its error', () => {
    const status: AdminStatus = {
      apiVersion: 1,
      driverName: DRIVER,
      nodeName: 'n',
      pid: 7,
      registration: { registered: false, error: 'plugin version v9 not supported', at: 'T' },
      sockets: { dra: '/d', registration: '/r' },
      slicesPublished: false,
      taints: {},
      xidTaints: {},
    };
    const r = checkRegistration(
      facts({ plugin: { socket: 's', status, socketsOnDisk: { '/d': true, '/r': true } } }),
    );
    expect(r.findings.map((f) => [f.severity, f.problem])).toEqual([
      ['error', 'the kubelet rejected the plugin\u2019s registration'],
      ['warning', 'the plugin has not published its ResourceSlices yet'],
    ]);
    expect(r.findings[0]?.evidence).toEqual([
      'NotifyRegistrationStatus at T: plugin version v9 not supported',
    ]);
  });

  it('compares the published slices with discovery; a tainted lost GPU is no stale device', () => {
    const lost = { name: 'gpu-1', taints: [{ key: `${DRIVER}/gpu-lost`, effect: 'NoSchedule' }] };
    expect(
      checkSlices(facts({ slices: { devices: [{ name: 'gpu-0', taints: [] }, lost] } })).findings,
    ).toEqual([]);
    const r = checkSlices(facts({ slices: { devices: [{ name: 'gpu-7', taints: [] }] } }));
    expect(r.findings.map((f) => [f.severity, f.evidence[0]])).toEqual([
      ['error', 'missing: gpu-0'],
      ['warning', 'published but not discovered: gpu-7'],
    ]);
    expect(checkSlices(facts({ slices: { error: 'Forbidden' } })).findings[0]?.severity).toBe('warning');
  });

  it('explains each taint: the XID by its meaning, a lost GPU as an error', () => {
    const taints = {
      'gpu-0': [{ key: `${DRIVER}/xid`, value: '48', effect: 'NoSchedule' as const }],
      'gpu-1': [{ key: `${DRIVER}/gpu-lost`, effect: 'NoSchedule' as const }],
      'gpu-2': [{ key: `${DRIVER}/xid`, value: '1234', effect: 'NoSchedule' as const }],
    };
    const status = { ...({} as AdminStatus), taints };
    const r = checkTaints(facts({ plugin: { socket: 's', status } }));
    expect(r.findings.map((f) => [f.severity, f.problem])).toEqual([
      ['warning', 'gpu-0 is tainted by XID 48: double-bit ECC error: uncorrectable memory error'],
      ['error', 'gpu-1 is tainted: its GPU fell off the bus (GPU_IS_LOST)'],
      ['warning', "gpu-2 is tainted by XID 1234: XID 1234 (not in gpu-dra's table)"],
    ]);
    expect(r.findings[0]?.fix).toMatch(/gpu-dra taints clear --device gpu-0/);
    expect(r.findings[0]?.evidence).toEqual([`${DRIVER}/xid=48:NoSchedule`]);
    // Without the plugin, the taints come from the published slices.
    const fromSlices = checkTaints(
      facts({ slices: { devices: [{ name: 'gpu-0', taints: taints['gpu-0'] }] } }),
    );
    expect(fromSlices.findings).toHaveLength(1);
    expect(checkTaints(facts()).skipped).toBeDefined();
  });

  it('decides containerd and CRI-O CDI from their config keys', () => {
    const root = '/var/run/cdi';
    const v = (toml: string) => containerdCdi(parseTomlKeys(toml), root).state;
    expect(v('version = 3\n')).toBe('on');
    expect(v('version = 3\n[plugins."io.containerd.cri.v1.runtime"]\nenable_cdi = false\n')).toBe('off');
    expect(v('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nenable_cdi = true\n')).toBe('on');
    expect(v('version = 2\nplugins."io.containerd.grpc.v1.cri".enable_cdi = true\n')).toBe('on');
    expect(v('[plugins.cri]\nenable_cdi = true\n')).toBe('on');
    expect(
      v(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nenable_cdi = true\ncdi_spec_dirs = ["/etc/cdi"]\n',
      ),
    ).toBe('wrong-dirs');
    expect(
      v(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nenable_cdi = true\ncdi_spec_dirs = ["/run/cdi"]\n',
      ),
    ).toBe('on');
    expect(v('version = 2\n')).toBe('depends');
    expect(crioCdi(parseTomlKeys('[crio.runtime]\n'), root).state).toBe('on');
    expect(sameHostDir('/var/run/cdi/', '/run/cdi')).toBe(true);
    const keys = parseTomlKeys(
      'a = "x # not a comment" # comment\n[t."q.r"]\nlist = [\n "a", # one\n "b"\n]\n',
    );
    expect(keys.get(tomlKey('a'))).toBe('x # not a comment');
    expect(keys.get(tomlKey('t', 'q.r', 'list'))).toEqual(['a', 'b']);
  });

  it('validates CDI specs as the runtime and this driver need them', () => {
    const file = claimSpecFileName(DRIVER, CLAIM);
    const spec = {
      cdiVersion: '0.6.0',
      kind: `k8s.${DRIVER}/claim`,
      devices: [{ name: `${CLAIM}-gpu-0`, containerEdits: { env: ['A=1'] } }],
    };
    expect(validateCdiSpec(spec, DRIVER, file)).toEqual([]);
    expect(validateCdiSpec({ ...spec, kind: 'nvidia.com/gpu' }, DRIVER, file)).toEqual([
      `kind "nvidia.com/gpu" is not "k8s.${DRIVER}/claim"`,
    ]);
    expect(
      validateCdiSpec(
        { ...spec, devices: [{ name: 'other-gpu-0', containerEdits: { deviceNodes: [{ path: 'dev/x' }] } }] },
        DRIVER,
        file,
      ),
    ).toEqual([
      `devices[0]: name other-gpu-0 does not belong to claim ${CLAIM}`,
      'devices[0]: a device node has no absolute path',
    ]);
  });

  it('renders text and JSON, with the exit status of its errors', () => {
    const results = runChecks(
      facts({ kernelModule: { file: '/proc/driver/nvidia/version', version: '1.2.3' } }),
    );
    expect(hasErrors(results)).toBe(true);
    const report = doctorReport(results);
    expect(report).toMatchObject({ ok: false, errors: 2, warnings: 0 });
    const text = renderDoctorText(report);
    expect(text).toMatch(
      /^\[ERROR\] NVML loads and matches the kernel module\n {2}error: the NVIDIA library/m,
    );
    expect(text).toMatch(/^ {4}evidence: \/proc\/driver\/nvidia\/version says 1\.2\.3$/m);
    expect(text).toMatch(/^\[skip\] {2}published ResourceSlices match discovery: x$/m);
    expect(text.trimEnd().split('\n').at(-1)).toBe('2 errors, 0 warnings');
    expect(doctorExitCode(report)).toBe(1);
  });
});

describe('gpu-dra doctor, the command', () => {
  it("reads the runtime configs below the driver root when that is the host's / (the DaemonSet)", () => {
    const base = { containerdConfig: '/etc/containerd/config.toml', crioConfig: '/etc/crio/crio.conf' };
    expect(doctorOptions({ ...base, driverRoot: '/driver-root', hostDriverRoot: '/' }).hostRoot).toBe(
      '/driver-root',
    );
    expect(doctorOptions({ ...base, driverRoot: '/run/nvidia/driver' }).hostRoot).toBe('/');
    expect(doctorOptions({ ...base, hostRoot: '/host', hostDriverRoot: '/' }).hostRoot).toBe('/host');
    expect(() => doctorOptions({ ...base, driverName: 'Bad_Name', migPartitioning: 'sometimes' })).toThrow(
      /2 invalid options:\n {2}--driver-name: must be a lowercase DNS subdomain\n {2}--mig-partitioning: must be static or dynamic/,
    );
  });

  const run = promisify(execFile);
  const cli = path.join(repo, 'dist', 'gpu-dra.mjs');

  it('exits 0 on a healthy node, 1 with an error found, 2 on a bad flag; --json for tools', async () => {
    const node = await doctorNode();
    const args = [
      cli,
      'doctor',
      '--json',
      `--driver-name=${DRIVER}`,
      `--kubelet-plugins-dir=${node.opts.kubeletPluginsDir}`,
      `--cdi-root=${node.opts.cdiRoot}`,
      `--host-root=${node.opts.hostRoot}`,
      ...simNodeFlags(node.sim),
    ];
    const env = {
      ...process.env,
      ...node.sim.env,
      NODE_NAME: '',
      KUBECONFIG: '',
      KUBERNETES_SERVICE_HOST: '',
    };
    const ok = await run(process.execPath, args, { env });
    const report = JSON.parse(ok.stdout) as { ok: boolean; errors: number; checks: CheckResult[] };
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => c.id)).toEqual([
      'nvml',
      'device-nodes',
      'mig',
      'cdi',
      'runtime',
      'registration',
      'slices',
      'taints',
    ]);

    fs.rmSync(path.join(node.sim.hostPaths.devRoot, 'nvidiactl'));
    const bad = await run(
      process.execPath,
      args.filter((a) => a !== '--json'),
      { env },
    ).catch((e: unknown) => e as { code: number; stdout: string });
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stdout: string }).stdout).toMatch(/error: \/dev\/nvidiactl is missing/);

    const usage = await run(process.execPath, [...args, '--cdi-root=relative/cdi'], { env }).catch(
      (e: unknown) => e as { code: number; stderr: string },
    );
    expect(usage).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--cdi-root: must be an absolute path/) as string,
    });
  });
});
