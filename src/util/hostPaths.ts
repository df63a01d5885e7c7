import path from 'node:path';
import { GpuDraError } from './errors.js';

/**
 * Where the driver finds the host's device nodes, procfs, sysfs and the NVIDIA driver's
 * user-space files. In the DaemonSet these are the host mounts; in tests and `demo` they point
 * into a simulated node's directory tree.
 */
export interface HostPaths {
  readonly devRoot: string;
  readonly procRoot: string;
  readonly sysRoot: string;
  readonly driverRoot: string;
  /**
   * The driver root as the container runtime on the host sees it, for CDI mount sources and
   * hook paths. In the DaemonSet the driver root is mounted at /driver-root but the runtime
   * resolves CDI paths on the host; defaults to `driverRoot` (same view, as on a plain host).
   */
  readonly hostDriverRoot?: string;
}

export const DEFAULT_HOST_PATHS: HostPaths = Object.freeze({
  devRoot: '/dev',
  procRoot: '/proc',
  sysRoot: '/sys',
  driverRoot: '/',
});

/** Resolves a path below a root without letting `..` segments escape it. */
export function underRoot(root: string, ...segments: string[]): string {
  const joined = path.resolve(root, ...segments.map((s) => s.replace(/^\/+/, '')));
  const base = path.resolve(root);
  if (joined !== base && !joined.startsWith(base.endsWith(path.sep) ? base : base + path.sep)) {
    throw new GpuDraError('PATH_ESCAPES_ROOT', `path ${segments.join('/')} escapes ${root}`);
  }
  return joined;
}
