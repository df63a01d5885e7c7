/** The driver's flag defaults; kept apart from config.ts so `--help` needs no validator. */
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';

export const DRIVER_DEFAULTS = Object.freeze({
  driverName: DEFAULT_DRIVER_NAME,
  kubeletRegistryDir: '/var/lib/kubelet/plugins_registry',
  kubeletPluginsDir: '/var/lib/kubelet/plugins',
  cdiRoot: '/var/run/cdi',
  logLevel: 'info',
  /** Re-discovery every 30 s: ~75 ms of NVML calls on an 8-GPU node (nvmlInit 11 ms + 8 ms a GPU). */
  deviceCheckIntervalMs: 30_000,
});
