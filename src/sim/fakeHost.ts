/**
 * A simulated GPU node on disk: the fake NVML's configuration plus the host files the driver
 * reads next to NVML (device nodes, /proc/devices, the MIG capability minors, sysfs PCI links,
 * and the driver's user-space files), all under one directory. Device nodes are plain files:
 * tests cannot mknod.
 */
import { copyFile, chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

import type { HostPaths } from '../util/hostPaths.js';
import { packageRoot } from '../util/packageRoot.js';
import {
  buildFakeNvml,
  type FakeGpu,
  type FakeNvmlConfig,
  gpuProfiles,
  intValue,
  loadProfile,
  parseFakeNvmlConfig,
} from './fakeNvml.js';

export interface SimulatedNode {
  /** The directory everything lives in. */
  readonly dir: string;
  /** The validated configuration the fake NVML reads. */
  readonly config: FakeNvmlConfig;
  /** Path of the JSON file the fake NVML reads (`FAKE_NVML_CONFIG`). */
  readonly configPath: string;
  /** The built fake `libnvidia-ml.so.1` (shared build cache). */
  readonly libPath: string;
  /** A copy of the fake NVML inside the driver root, where the real one would be. */
  readonly driverLibPath: string;
  readonly hostPaths: HostPaths;
  /** Environment the process loading the fake NVML needs. */
  readonly env: { readonly FAKE_NVML_CONFIG: string };
}

export interface SimulatedNodeOptions {
  /** A built fake NVML; default `$GPU_DRA_FAKE_NVML_LIB`, else {@link buildFakeNvml}. */
  readonly libPath?: string;
}

/** Multiarch directory of the driver's libraries inside the driver root. */
export const DRIVER_LIB_DIR = 'usr/lib/x86_64-linux-gnu';

/** The driver-root tools the simulated node replaces with recording stand-ins (src/sim/tools/). */
export const SIM_TOOLS = ['nvidia-smi', 'nvidia-cuda-mps-control'] as const;

/** Where the stand-ins record each call, one line per call (`nvidia-smi -i GPU-… -c DEFAULT`). */
export function simCallLog(driverRoot: string): string {
  return path.join(driverRoot, 'var', 'log', 'gpu-dra-sim', 'calls.log');
}

/** The settings a stand-in left on a GPU (`computeMode`, `timeslice`), as a real GPU would keep them. */
export function simGpuSettingsFile(driverRoot: string, uuid: string): string {
  return path.join(driverRoot, 'var', 'lib', 'gpu-dra-sim', 'gpus', uuid);
}

/** Lines `<tool> <text>` here make the stand-in fail every call whose arguments contain <text>. */
export function simFailFile(driverRoot: string): string {
  return path.join(driverRoot, 'etc', 'gpu-dra-sim', 'fail');
}

/** Character-device majors written to the simulated /proc/devices. */
export const SIM_MAJORS = { frontend: 195, uvm: 238, caps: 241 } as const;

/**
 * Minor of /dev/nvidia-caps/nvidia-cap<N> for a MIG GPU instance (`ci` undefined) or compute
 * instance, as the driver numbers them in /proc/driver/nvidia-caps/mig-minors: `config` 1,
 * `monitor` 2, then for each GPU minor 0..31, GI 0..14: the GI's access cap followed by its CIs 0..7.
 */
export function migCapMinor(gpuMinor: number, gi: number, ci?: number): number {
  const base = 3 + gpuMinor * MIG_GIS * (1 + MIG_CIS) + gi * (1 + MIG_CIS);
  return ci === undefined ? base : base + 1 + ci;
}

const MIG_GPUS = 32;
const MIG_GIS = 15;
const MIG_CIS = 8;

/** `/proc/driver/nvidia-caps/mig-minors` exactly as the kernel module writes it. */
export function migMinorsFile(): string {
  const lines = ['config 1', 'monitor 2'];
  for (let gpu = 0; gpu < MIG_GPUS; gpu++) {
    for (let gi = 0; gi < MIG_GIS; gi++) {
      lines.push(`gpu${gpu}/gi${gi}/access ${migCapMinor(gpu, gi)}`);
      for (let ci = 0; ci < MIG_CIS; ci++)
        lines.push(`gpu${gpu}/gi${gi}/ci${ci}/access ${migCapMinor(gpu, gi, ci)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Normalized bus id as sysfs names it: `0000:18:00.0`. */
export function simBusId(gpu: FakeGpu): string {
  const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return `${hex(gpu.pci.domain ?? 0, 4)}:${hex(gpu.pci.bus, 2)}:${hex(gpu.pci.device, 2)}.0`;
}

/**
 * Writes a simulated node for a bundled profile name (or a configuration object) under `dir`.
 * Existing simulated content in `dir` is replaced.
 */
export async function createSimulatedNode(
  profile: string | FakeNvmlConfig,
  dir: string,
  opts: SimulatedNodeOptions = {},
): Promise<SimulatedNode> {
  const parsed = typeof profile === 'string' ? await loadProfile(profile) : parseFakeNvmlConfig(profile);
  const libPath = opts.libPath ?? process.env.GPU_DRA_FAKE_NVML_LIB ?? (await buildFakeNvml());
  const root = path.resolve(dir);
  const hostPaths: HostPaths = {
    devRoot: path.join(root, 'dev'),
    procRoot: path.join(root, 'proc'),
    sysRoot: path.join(root, 'sys'),
    driverRoot: path.join(root, 'driver'),
  };
  // MIG devices the fake creates get their access-cap nodes here, as nvidia-modprobe makes them.
  const config: FakeNvmlConfig = {
    ...parsed,
    hostDevRoot: parsed.hostDevRoot ?? hostPaths.devRoot,
    hostProcRoot: parsed.hostProcRoot ?? hostPaths.procRoot,
  };
  await mkdir(root, { recursive: true });
  for (const p of [hostPaths.devRoot, hostPaths.procRoot, hostPaths.sysRoot, hostPaths.driverRoot])
    await rm(p, { recursive: true, force: true });
  const configPath = path.join(root, 'fake-nvml.json');
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
  // MIG instances a previous node in this directory made would override the new config's.
  await rm(`${configPath}.mig-state`, { force: true });

  const driverLoaded = config.initError === undefined;
  await writeDev(hostPaths.devRoot, config, driverLoaded);
  await writeProc(hostPaths.procRoot, config, driverLoaded);
  await writeSys(hostPaths.sysRoot, config);
  const driverLibPath = await writeDriverRoot(hostPaths.driverRoot, config.driverVersion, libPath);

  return {
    dir: root,
    config,
    configPath,
    libPath,
    driverLibPath,
    hostPaths,
    env: { FAKE_NVML_CONFIG: configPath },
  };
}

/** MIG devices that exist (MIG mode currently on). */
function activeMigDevices(gpu: FakeGpu) {
  return gpu.migCapable === true && gpu.migMode?.current === 1 ? (gpu.migDevices ?? []) : [];
}

async function touch(file: string, content = ''): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
}

async function writeDev(devRoot: string, config: FakeNvmlConfig, driverLoaded: boolean): Promise<void> {
  await mkdir(devRoot, { recursive: true });
  if (!driverLoaded) return;
  await touch(path.join(devRoot, 'nvidiactl'));
  await touch(path.join(devRoot, 'nvidia-uvm'));
  await touch(path.join(devRoot, 'nvidia-uvm-tools'));
  await touch(path.join(devRoot, 'nvidia-caps', 'nvidia-cap1'));
  await touch(path.join(devRoot, 'nvidia-caps', 'nvidia-cap2'));
  for (const gpu of config.gpus) {
    await touch(path.join(devRoot, `nvidia${gpu.minor}`));
    for (const mig of activeMigDevices(gpu)) {
      await touch(
        path.join(devRoot, 'nvidia-caps', `nvidia-cap${migCapMinor(gpu.minor, mig.gpuInstanceId)}`),
      );
      await touch(
        path.join(
          devRoot,
          'nvidia-caps',
          `nvidia-cap${migCapMinor(gpu.minor, mig.gpuInstanceId, mig.computeInstanceId)}`,
        ),
      );
    }
  }
}

/** A /proc/driver/nvidia/capabilities/.../access entry, as the kernel module writes it. */
function capEntry(minor: number): string {
  return `DeviceFileMinor: ${String(minor)}\nDeviceFileMode: 292\nDeviceFileModify: 1\n`;
}

async function writeProc(procRoot: string, config: FakeNvmlConfig, driverLoaded: boolean): Promise<void> {
  const nvidia = driverLoaded
    ? [
        `${SIM_MAJORS.frontend} nvidia-frontend`,
        `${SIM_MAJORS.uvm} nvidia-uvm`,
        `${SIM_MAJORS.caps} nvidia-caps`,
      ]
    : [];
  const chars = [
    '  1 mem',
    '  4 /dev/vc/0',
    '  4 tty',
    '  5 /dev/tty',
    '  5 /dev/console',
    ' 10 misc',
    ' 13 input',
    '128 ptm',
    '136 pts',
    '180 usb',
    ...nvidia,
    '245 hidraw',
    '254 rtc',
  ];
  await touch(
    path.join(procRoot, 'devices'),
    `Character devices:\n${chars.join('\n')}\n\nBlock devices:\n  7 loop\n  8 sd\n259 blkext\n`,
  );
  if (!driverLoaded) return;
  await touch(path.join(procRoot, 'driver', 'nvidia-caps', 'mig-minors'), migMinorsFile());
  await touch(
    path.join(procRoot, 'driver', 'nvidia', 'version'),
    `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  ${config.driverVersion}  Release Build  (simulated)\n` +
      'GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n',
  );
  for (const gpu of config.gpus) {
    // The kernel module's entry per existing GPU and compute instance (NVIDIA's driver reads
    // the access caps' minors here); the fake keeps them in step as instances come and go.
    for (const mig of activeMigDevices(gpu)) {
      const giDir = path.join(
        procRoot,
        'driver',
        'nvidia',
        'capabilities',
        `gpu${gpu.minor}`,
        'mig',
        `gi${mig.gpuInstanceId}`,
      );
      await touch(path.join(giDir, 'access'), capEntry(migCapMinor(gpu.minor, mig.gpuInstanceId)));
      await touch(
        path.join(giDir, `ci${mig.computeInstanceId}`, 'access'),
        capEntry(migCapMinor(gpu.minor, mig.gpuInstanceId, mig.computeInstanceId)),
      );
    }
    const profiles = gpuProfiles(config, gpu);
    await touch(
      path.join(procRoot, 'driver', 'nvidia', 'gpus', simBusId(gpu), 'information'),
      `Model: \t\t ${gpu.name}\nIRQ:   \t\t 0\nGPU UUID: \t ${gpu.uuid}\n` +
        `Device Minor: \t ${gpu.minor}\nBus Location: \t ${simBusId(gpu)}\n` +
        `MIG profiles: \t ${profiles.length}\n`,
    );
  }
}

async function writeSys(sysRoot: string, config: FakeNvmlConfig): Promise<void> {
  const bridges = new Map<string, number>();
  for (const gpu of config.gpus) {
    const busId = simBusId(gpu);
    const domain = busId.slice(0, 4);
    const root = gpu.pci.pcieRoot ?? `pci${domain}:00`;
    const rootBus = Number.parseInt(root.slice(-2), 16);
    let rel: string;
    if (gpu.pci.bus === rootBus) {
      rel = path.join(root, busId);
    } else {
      // One root port (bridge) per GPU below the root complex.
      const n = (bridges.get(root) ?? 0) + 1;
      bridges.set(root, n);
      const bridge = `${domain}:${root.slice(-2)}:${n.toString(16).padStart(2, '0')}.0`;
      rel = path.join(root, bridge, busId);
    }
    const devDir = path.join(sysRoot, 'devices', rel);
    const id = intValue(gpu.pci.pciDeviceId);
    const sub = intValue(gpu.pci.pciSubSystemId ?? 0);
    const hex = (n: number) => `0x${n.toString(16).padStart(4, '0')}\n`;
    await touch(path.join(devDir, 'vendor'), hex(id & 0xffff));
    await touch(path.join(devDir, 'device'), hex(id >>> 16));
    await touch(path.join(devDir, 'subsystem_vendor'), hex(sub & 0xffff));
    await touch(path.join(devDir, 'subsystem_device'), hex(sub >>> 16));
    await touch(path.join(devDir, 'class'), '0x030200\n');
    await touch(path.join(devDir, 'numa_node'), `${gpu.numaNode ?? -1}\n`);
    const link = path.join(sysRoot, 'bus', 'pci', 'devices', busId);
    await mkdir(path.dirname(link), { recursive: true });
    await symlink(path.relative(path.dirname(link), devDir), link);
    const drv = path.join(sysRoot, 'bus', 'pci', 'drivers', 'nvidia', busId);
    await mkdir(path.dirname(drv), { recursive: true });
    await symlink(path.relative(path.dirname(drv), devDir), drv);
  }
}

async function writeDriverRoot(driverRoot: string, version: string, libPath: string): Promise<string> {
  const lib = path.join(driverRoot, DRIVER_LIB_DIR);
  await mkdir(lib, { recursive: true });
  const stub = (name: string) => `fake ${name} from gpu-dra's simulated node (driver ${version})\n`;
  // name, soname link(s)
  const libs: [string, string[]][] = [
    ['libcuda.so', ['libcuda.so.1', 'libcuda.so']],
    ['libnvidia-ptxjitcompiler.so', ['libnvidia-ptxjitcompiler.so.1']],
    ['libnvidia-nvvm.so', ['libnvidia-nvvm.so.4']],
    ['libcudadebugger.so', ['libcudadebugger.so.1']],
  ];
  for (const [base, links] of libs) {
    const real = `${base}.${version}`;
    await writeFile(path.join(lib, real), stub(real));
    for (const l of links) await symlink(l === 'libcuda.so' ? 'libcuda.so.1' : real, path.join(lib, l));
  }
  // The fake NVML itself stands in for the driver's libnvidia-ml, so the driver root is loadable.
  const nvml = path.join(lib, `libnvidia-ml.so.${version}`);
  await copyFile(libPath, nvml);
  await symlink(`libnvidia-ml.so.${version}`, path.join(lib, 'libnvidia-ml.so.1'));

  const bin = path.join(driverRoot, 'usr', 'bin');
  await mkdir(bin, { recursive: true });
  for (const tool of ['nvidia-debugdump', 'nvidia-persistenced']) {
    const p = path.join(bin, tool);
    await writeFile(p, `#!/bin/sh\necho "${tool} (simulated, driver ${version})"\n`);
    await chmod(p, 0o755);
  }
  // Stand-ins that record what would run on a real node (sharing settings, MPS) and change nothing.
  for (const tool of SIM_TOOLS) {
    const p = path.join(bin, tool);
    const text = await readFile(path.join(packageRoot(), 'src', 'sim', 'tools', tool), 'utf8');
    await writeFile(p, text.replaceAll('@DRIVER_VERSION@', version), { mode: 0o755 });
    await chmod(p, 0o755);
  }
  const fw = path.join(driverRoot, 'lib', 'firmware', 'nvidia', version);
  await mkdir(fw, { recursive: true });
  for (const f of ['gsp_ga10x.bin', 'gsp_tu10x.bin']) await writeFile(path.join(fw, f), stub(f));
  return path.join(lib, 'libnvidia-ml.so.1');
}
