/**
 * What the CDI builder needs to know about the host, read from the filesystem: the NVIDIA
 * driver's user-space files under the driver root, and whether (and as what) each device node
 * exists. Read-only and uncached: the device state decides how long a driver-root scan may
 * serve (driver/state.ts), device nodes are checked on every prepare.
 */
import fs from 'node:fs';
import path from 'node:path';
import { GpuDraError } from '../util/errors.js';
import { underRoot, type HostPaths } from '../util/hostPaths.js';
import type { CdiDeviceNode, DeviceNodeInfo, DriverFiles } from './spec.js';

const LIBRARY_DIRS = [
  'usr/lib/x86_64-linux-gnu',
  'usr/lib/aarch64-linux-gnu',
  'usr/lib64',
  'usr/lib',
  'lib/x86_64-linux-gnu',
  'lib/aarch64-linux-gnu',
  'lib64',
];
/** Compute/utility libraries a CUDA container needs (sonames without `.so`). */
const LIBRARIES = [
  'libcuda',
  'libcudadebugger',
  'libnvidia-ml',
  'libnvidia-ptxjitcompiler',
  'libnvidia-nvvm',
  'libnvidia-cfg',
  'libnvidia-opencl',
  'libnvidia-gpucomp',
  'libnvidia-allocator',
  'libnvidia-pkcs11',
  'libnvidia-pkcs11-openssl3',
];
const BINARY_DIRS = ['usr/bin', 'usr/local/bin', 'bin'];
const BINARIES = [
  'nvidia-smi',
  'nvidia-debugdump',
  'nvidia-persistenced',
  'nvidia-cuda-mps-control',
  'nvidia-cuda-mps-server',
];
const FIRMWARE_DIRS = ['lib/firmware/nvidia', 'usr/lib/firmware/nvidia'];

function exists(p: string, want: 'file' | 'dir'): boolean {
  try {
    const st = fs.statSync(p);
    return want === 'dir' ? st.isDirectory() : st.isFile();
  } catch {
    return false;
  }
}

function listDir(p: string): string[] {
  try {
    return fs.readdirSync(p);
  } catch {
    return [];
  }
}

/**
 * Finds the driver's files under `hostPaths.driverRoot`. Paths come back as container paths
 * (`/usr/lib/...`), sorted. A library is every `<name>.so.<digits...>` (the versioned file and
 * its soname link; the bare `.so` development link is skipped). A directory listed twice through
 * a symlink (`/lib` → `/usr/lib`) is reported once.
 */
export function scanDriverFiles(
  hostPaths: Pick<HostPaths, 'driverRoot'>,
  driverVersion: string,
): DriverFiles {
  const root = hostPaths.driverRoot;
  const seenDirs = new Set<string>();
  const libraries: string[] = [];
  const libPattern = new RegExp(
    `^(${LIBRARIES.map((l) => l.replace(/[-]/g, '\\-')).join('|')})\\.so\\.\\d[\\w.]*$`,
  );
  for (const dir of LIBRARY_DIRS) {
    const abs = underRoot(root, dir);
    let real: string;
    try {
      real = fs.realpathSync(abs);
    } catch {
      continue;
    }
    if (seenDirs.has(real)) continue;
    seenDirs.add(real);
    for (const name of listDir(abs)) {
      if (libPattern.test(name) && exists(path.join(abs, name), 'file')) libraries.push(`/${dir}/${name}`);
    }
  }
  const binaries: string[] = [];
  for (const name of BINARIES) {
    const dir = BINARY_DIRS.find((d) => exists(underRoot(root, d, name), 'file'));
    if (dir) binaries.push(`/${dir}/${name}`);
  }
  const firmware = FIRMWARE_DIRS.map((d) => `/${d}/${driverVersion}`).filter((d) =>
    exists(underRoot(root, d), 'dir'),
  );
  let hook: DriverFiles['hook'];
  for (const kind of ['nvidia-cdi-hook', 'nvidia-ctk'] as const) {
    const dir = BINARY_DIRS.find((d) => exists(underRoot(root, d, kind), 'file'));
    if (dir) {
      hook = { path: `/${dir}/${kind}`, kind };
      break;
    }
  }
  return {
    libraries: libraries.sort(),
    binaries: binaries.sort(),
    firmware: [...new Set(firmware)].sort(),
    ...(hook ? { hook } : {}),
  };
}

export class DeviceNodeMissingError extends GpuDraError {
  readonly missing: readonly string[];

  constructor(missing: readonly string[]) {
    super('DEVICE_NODE_MISSING', `device node(s) missing on the host: ${missing.join(', ')}`);
    this.missing = missing;
  }
}

/** `Character devices:` section of /proc/devices: driver name → major. Missing file → empty. */
export function readCharDeviceMajors(hostPaths: Pick<HostPaths, 'procRoot'>): Map<string, number> {
  const majors = new Map<string, number>();
  let text: string;
  try {
    text = fs.readFileSync(underRoot(hostPaths.procRoot, 'devices'), 'utf8');
  } catch {
    return majors;
  }
  let inChar = false;
  for (const line of text.split('\n')) {
    if (/^Character devices:/.test(line)) inChar = true;
    else if (/^Block devices:/.test(line)) inChar = false;
    else if (inChar) {
      const m = /^\s*(\d+)\s+(\S+)\s*$/.exec(line);
      if (m?.[1] && m[2]) majors.set(m[2], Number(m[1]));
    }
  }
  return majors;
}

/**
 * The numbers the NVIDIA kernel modules give a node, from its container path and the majors
 * in /proc/devices: `nvidia<N>` and `nvidiactl` (255) on the frontend major, `nvidia-uvm` (0)
 * and `nvidia-uvm-tools` (1) on the uvm major, `nvidia-caps/nvidia-cap<N>` on the caps major.
 */
export function nvidiaNodeNumbers(
  containerPath: string,
  majors: ReadonlyMap<string, number>,
): DeviceNodeInfo | undefined {
  const frontend = majors.get('nvidia-frontend') ?? majors.get('nvidia');
  let major: number | undefined;
  let minor: number | undefined;
  let m: RegExpExecArray | null;
  if (containerPath === '/dev/nvidiactl') [major, minor] = [frontend, 255];
  else if ((m = /^\/dev\/nvidia(\d+)$/.exec(containerPath))) [major, minor] = [frontend, Number(m[1])];
  else if (containerPath === '/dev/nvidia-uvm') [major, minor] = [majors.get('nvidia-uvm'), 0];
  else if (containerPath === '/dev/nvidia-uvm-tools') [major, minor] = [majors.get('nvidia-uvm'), 1];
  else if ((m = /^\/dev\/nvidia-caps\/nvidia-cap(\d+)$/.exec(containerPath)))
    [major, minor] = [majors.get('nvidia-caps'), Number(m[1])];
  return major === undefined || minor === undefined ? undefined : { type: 'c', major, minor };
}

const MIG_CAP_NODE = /^\/dev\/nvidia-caps\/nvidia-cap\d+$/;

/**
 * Checks every node exists at its host path and returns its type and numbers: from stat for
 * real device nodes; for anything else (plain files in tests and the simulated node) from
 * `majors` (/proc/devices) when the path is a known NVIDIA node, so the spec is complete and
 * CDI need not stat it. Throws naming every missing node.
 */
export function inspectDeviceNodes(
  nodes: readonly CdiDeviceNode[],
  majorsOf: ReadonlyMap<string, number> | (() => ReadonlyMap<string, number>) = new Map(),
): Map<string, DeviceNodeInfo> {
  // /proc/devices is needed only for nodes that are not real devices (the simulated node's).
  let majors: ReadonlyMap<string, number> | undefined;
  const known = (): ReadonlyMap<string, number> =>
    (majors ??= typeof majorsOf === 'function' ? majorsOf() : majorsOf);
  const info = new Map<string, DeviceNodeInfo>();
  const missing: string[] = [];
  for (const n of nodes) {
    const hostPath = n.hostPath ?? n.path;
    let st: fs.Stats;
    try {
      st = fs.statSync(hostPath);
    } catch {
      // A MIG access cap needs no host node: the kernel module grants access by its numbers,
      // and nodes for instances made after boot (dynamic MIG) exist only once something makes them.
      const cap = MIG_CAP_NODE.test(n.path) ? nvidiaNodeNumbers(n.path, known()) : undefined;
      if (cap) info.set(n.path, { ...cap, onHost: false });
      else missing.push(hostPath);
      continue;
    }
    if (st.isCharacterDevice() || st.isBlockDevice()) {
      const rdev = st.rdev;
      // Linux dev_t encoding (glibc gnu_dev_major / gnu_dev_minor).
      const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
      const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
      info.set(n.path, { type: st.isCharacterDevice() ? 'c' : 'b', major, minor });
    } else {
      const derived = nvidiaNodeNumbers(n.path, known());
      if (derived) info.set(n.path, derived);
    }
  }
  if (missing.length > 0) throw new DeviceNodeMissingError(missing);
  return info;
}
