/**
 * The driver's configuration: flags (each with an environment twin) validated once with zod
 * into a frozen DriverConfig, reporting every bad flag at once with its name.
 */
import path from 'node:path';
import * as z from 'zod';
import { DEFAULT_HOST_PATHS, type HostPaths } from '../util/hostPaths.js';
import { ConfigError } from '../util/errors.js';
import { DRIVER_DEFAULTS } from './defaults.js';

export interface DriverConfig {
  readonly nodeName: string;
  /** Kubeconfig file; undefined = in-cluster service account. */
  readonly kubeconfig?: string;
  readonly driverName: string;
  readonly kubeletRegistryDir: string;
  readonly kubeletPluginsDir: string;
  readonly cdiRoot: string;
  readonly nvmlLib?: string;
  readonly hostPaths: HostPaths;
  /** `host:port` for /healthz, /readyz, /metrics; undefined = no HTTP server. */
  readonly httpListen?: { readonly host: string; readonly port: number };
  /** On exit, delete our ResourceSlices, CDI specs and checkpoint (uninstall/demo only). */
  readonly cleanupOnExit: boolean;
  readonly logLevel: string;
  /** Re-discover GPUs this often to republish changes (MIG layout, lost GPUs); 0 = never. */
  readonly deviceCheckIntervalMs: number;
  /** Watch NVML events: XIDs taint devices, MIG changes trigger a re-discovery. */
  readonly deviceEvents: boolean;
}

/** Raw option values as commander hands them over (flag, else env twin, else undefined). */
export interface DriverFlags {
  nodeName?: string;
  kubeconfig?: string;
  driverName?: string;
  kubeletRegistryDir?: string;
  kubeletPluginsDir?: string;
  cdiRoot?: string;
  nvmlLib?: string;
  devRoot?: string;
  procRoot?: string;
  sysRoot?: string;
  driverRoot?: string;
  hostDriverRoot?: string;
  httpListen?: string;
  cleanupOnExit?: boolean | string;
  logLevel?: string;
  deviceCheckInterval?: string;
  deviceEvents?: boolean | string;
}

/** Flag name of each config field, for error messages. */
const FLAG_OF: Readonly<Record<string, string>> = {
  nodeName: '--node-name',
  kubeconfig: '--kubeconfig',
  driverName: '--driver-name',
  kubeletRegistryDir: '--kubelet-registry-dir',
  kubeletPluginsDir: '--kubelet-plugins-dir',
  cdiRoot: '--cdi-root',
  nvmlLib: '--nvml-lib',
  devRoot: '--dev-root',
  procRoot: '--proc-root',
  sysRoot: '--sys-root',
  driverRoot: '--driver-root',
  hostDriverRoot: '--host-driver-root',
  httpListen: '--http-listen',
  cleanupOnExit: '--cleanup-on-exit',
  logLevel: '--log-level',
  deviceCheckInterval: '--device-check-interval',
  deviceEvents: '--device-events',
};

const absPath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path');
const dnsSubdomain = z
  .string()
  .max(63, 'must be at most 63 characters')
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'must be a lowercase DNS subdomain',
  );
const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:]*):\d{1,5}$/, 'must be host:port (e.g. :8080 or 127.0.0.1:8080)')
  .transform((s) => {
    const i = s.lastIndexOf(':');
    return { host: s.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(s.slice(i + 1)) };
  })
  .refine((l) => l.port <= 65535, 'port must be at most 65535');
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
/** A Go-style duration (`30s`, `1m`, `500ms`; a bare number is seconds) in milliseconds. */
const duration = z
  .string()
  .regex(/^\d+(\.\d+)?(ms|s|m|h)?$/, 'must be a duration such as 30s, 2m or 0 (off)')
  .transform((s) => {
    const unit = /(ms|s|m|h)$/.exec(s)?.[1] ?? 's';
    return Math.round(Number.parseFloat(s) * (DURATION_UNITS_MS[unit] ?? 1_000));
  });
const deviceCheckInterval = duration.refine(
  (ms) => ms === 0 || (ms >= 1_000 && ms <= 86_400_000),
  'must be 0 (off) or between 1s and 24h',
);
const bool = z.union([
  z.boolean(),
  z.enum(['true', 'false', '1', '0', '']).transform((s) => s === 'true' || s === '1'),
]);

const flagsSchema = z.strictObject({
  nodeName: z
    .string({ error: 'is required (env NODE_NAME)' })
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a node name (DNS subdomain)'),
  kubeconfig: z.string().min(1).optional(),
  driverName: dnsSubdomain.default(DRIVER_DEFAULTS.driverName),
  kubeletRegistryDir: absPath.default(DRIVER_DEFAULTS.kubeletRegistryDir),
  kubeletPluginsDir: absPath.default(DRIVER_DEFAULTS.kubeletPluginsDir),
  cdiRoot: absPath.default(DRIVER_DEFAULTS.cdiRoot),
  nvmlLib: z.string().min(1).optional(),
  devRoot: absPath.default(DEFAULT_HOST_PATHS.devRoot),
  procRoot: absPath.default(DEFAULT_HOST_PATHS.procRoot),
  sysRoot: absPath.default(DEFAULT_HOST_PATHS.sysRoot),
  driverRoot: absPath.default(DEFAULT_HOST_PATHS.driverRoot),
  hostDriverRoot: absPath.optional(),
  httpListen: listen.optional(),
  cleanupOnExit: bool.default(false),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  deviceCheckInterval: deviceCheckInterval.default(DRIVER_DEFAULTS.deviceCheckIntervalMs),
  deviceEvents: bool.default(true),
});

function deepFreeze<T extends object>(o: T): Readonly<T> {
  for (const v of Object.values(o)) if (v && typeof v === 'object') deepFreeze(v as object);
  return Object.freeze(o);
}

/**
 * Validates raw flags into a frozen DriverConfig. Empty strings count as unset (an env twin
 * defined but empty). Throws one ConfigError naming every bad flag.
 */
export function parseDriverConfig(flags: DriverFlags, env: NodeJS.ProcessEnv = process.env): DriverConfig {
  const cleaned = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = flagsSchema.safeParse(cleaned);
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const keys = issue.code === 'unrecognized_keys' ? issue.keys : [String(issue.path[0] ?? '')];
      for (const k of keys)
        problems.push(
          `${FLAG_OF[k] ?? k}: ${issue.code === 'unrecognized_keys' ? 'unknown option' : issue.message}`,
        );
    }
  }
  if (parsed.success && !parsed.data.kubeconfig && !env['KUBERNETES_SERVICE_HOST']) {
    problems.push('--kubeconfig: required when not running in a cluster (env KUBECONFIG)');
  }
  if (!parsed.success || problems.length > 0) {
    const n = problems.length;
    throw new ConfigError(
      'flags',
      `${String(n)} invalid option${n === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`,
    );
  }
  const d = parsed.data;
  return deepFreeze({
    nodeName: d.nodeName,
    ...(d.kubeconfig ? { kubeconfig: d.kubeconfig } : {}),
    driverName: d.driverName,
    kubeletRegistryDir: d.kubeletRegistryDir,
    kubeletPluginsDir: d.kubeletPluginsDir,
    cdiRoot: d.cdiRoot,
    ...(d.nvmlLib ? { nvmlLib: d.nvmlLib } : {}),
    hostPaths: {
      devRoot: d.devRoot,
      procRoot: d.procRoot,
      sysRoot: d.sysRoot,
      driverRoot: d.driverRoot,
      ...(d.hostDriverRoot ? { hostDriverRoot: d.hostDriverRoot } : {}),
    },
    ...(d.httpListen ? { httpListen: d.httpListen } : {}),
    cleanupOnExit: d.cleanupOnExit,
    logLevel: d.logLevel,
    deviceCheckIntervalMs: d.deviceCheckInterval,
    deviceEvents: d.deviceEvents,
  });
}
