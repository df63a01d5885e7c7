/**
 * The `gpu-dra driver` flags in one table: name, environment twin, default and help. The
 * commander options (src/cli/commands/driver.ts), the parsed config (config.ts, whose zod
 * schema is keyed by the same names) and README's flag table (`npm run docs`) all come
 * from here. Zod-free on purpose: `--help` and start-up load this module, not the validator.
 */
import { DEFAULT_DRIVER_NAME } from '../util/driverName.js';
import { DEFAULT_HOST_PATHS } from '../util/hostPaths.js';

export interface FlagSpec {
  /** Commander's value placeholder; absent for a switch that takes no value. */
  readonly value?: `<${string}>`;
  /** Read when the flag is not given: how the DaemonSet sets every flag. */
  readonly env: string;
  /** In flag syntax, validated like a given value; absent = unset (see `unset`). */
  readonly default?: string;
  /** The flag has no default and must be given. */
  readonly required?: true;
  /** What leaving the flag unset means, for help and README, when it has no default. */
  readonly unset?: string;
  readonly help: string;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** Keyed by the commander attribute name; the flag is its kebab-case (`flagName`). */
export const DRIVER_FLAGS = {
  nodeName: { value: '<name>', env: 'NODE_NAME', required: true, help: 'this node' },
  kubeconfig: {
    value: '<file>',
    env: 'KUBECONFIG',
    unset: 'in-cluster config',
    help: 'kubeconfig file for the apiserver',
  },
  driverName: { value: '<name>', env: 'DRIVER_NAME', default: DEFAULT_DRIVER_NAME, help: 'DRA driver name' },
  kubeletRegistryDir: {
    value: '<dir>',
    env: 'KUBELET_REGISTRY_DIR',
    default: '/var/lib/kubelet/plugins_registry',
    help: 'kubelet plugin-watcher dir',
  },
  kubeletPluginsDir: {
    value: '<dir>',
    env: 'KUBELET_PLUGINS_DIR',
    default: '/var/lib/kubelet/plugins',
    help: 'kubelet plugins dir; ours is the subdir named after the driver',
  },
  cdiRoot: { value: '<dir>', env: 'CDI_ROOT', default: '/var/run/cdi', help: 'where per-claim CDI specs go' },
  nvmlLib: {
    value: '<path>',
    env: 'NVML_LIB',
    unset: 'search the driver root and system dirs',
    help: 'path to libnvidia-ml.so.1',
  },
  devRoot: {
    value: '<dir>',
    env: 'DEV_ROOT',
    default: DEFAULT_HOST_PATHS.devRoot,
    help: 'host /dev as seen by the driver',
  },
  procRoot: {
    value: '<dir>',
    env: 'PROC_ROOT',
    default: DEFAULT_HOST_PATHS.procRoot,
    help: 'host /proc as seen by the driver',
  },
  sysRoot: {
    value: '<dir>',
    env: 'SYS_ROOT',
    default: DEFAULT_HOST_PATHS.sysRoot,
    help: 'host /sys as seen by the driver',
  },
  driverRoot: {
    value: '<dir>',
    env: 'NVIDIA_DRIVER_ROOT',
    default: DEFAULT_HOST_PATHS.driverRoot,
    help: "root of the NVIDIA driver's user-space install, as seen by the driver",
  },
  hostDriverRoot: {
    value: '<dir>',
    env: 'HOST_DRIVER_ROOT',
    unset: 'same as --driver-root',
    help: 'the driver root as the host sees it, for CDI mount sources',
  },
  httpListen: {
    value: '<host:port>',
    env: 'HTTP_LISTEN',
    unset: 'off',
    help: 'serve /healthz /readyz /metrics here',
  },
  cleanupOnExit: {
    env: 'CLEANUP_ON_EXIT',
    default: 'false',
    help: "on exit delete this node's ResourceSlices, CDI specs and checkpoint; uninstall/demo only",
  },
  logLevel: {
    value: '<level>',
    env: 'LOG_LEVEL',
    default: 'info',
    help: `log level: ${LOG_LEVELS.join('|')}`,
  },
  deviceCheckInterval: {
    value: '<duration>',
    env: 'DEVICE_CHECK_INTERVAL',
    // ~75 ms of NVML calls on an 8-GPU node (nvmlInit 11 ms + 8 ms a GPU) every 30 s.
    default: '30s',
    help: 're-discover GPUs this often and republish changes (MIG layout, lost GPUs); 0 = off',
  },
  deviceEvents: {
    value: '<true|false>',
    env: 'DEVICE_EVENTS',
    default: 'true',
    help: 'watch NVML events: XID errors taint devices, MIG changes trigger a re-discovery',
  },
  namespace: {
    value: '<name>',
    env: 'POD_NAMESPACE',
    unset: 'no MPS daemons',
    help: "the plugin's namespace (downward API), where it runs MPS daemons",
  },
  podUid: {
    value: '<uid>',
    env: 'POD_UID',
    unset: 'one instance at a time: sockets without a UID',
    help: "the plugin pod's UID (downward API); its sockets carry it, so the old and the new pod of a rolling update serve side by side (kubelet 1.33+)",
  },
  image: {
    value: '<image>',
    env: 'IMAGE',
    unset: 'no MPS daemons',
    help: "the plugin's own image; MPS daemons run `gpu-dra mps-control-daemon` from it",
  },
  mpsShmSize: {
    value: '<quantity>',
    env: 'MPS_SHM_SIZE',
    default: '1Gi',
    help: "size of each MPS daemon's shared /dev/shm tmpfs; 0 = the plain directory (simulated nodes)",
  },
  mpsReadyTimeout: {
    value: '<duration>',
    env: 'MPS_READY_TIMEOUT',
    default: '60s',
    help: 'how long a prepare waits for its MPS daemon to report ready',
  },
  consumableShares: {
    value: '<mode>',
    env: 'CONSUMABLE_SHARES',
    default: 'disabled',
    help: 'let claims share a full GPU (gate DRAConsumableCapacity): disabled|memory|unlimited|N',
  },
  migPartitioning: {
    value: '<mode>',
    env: 'MIG_PARTITIONING',
    default: 'static',
    help: 'static: publish the MIG devices that exist; dynamic: publish every profile and placement, create at prepare',
  },
  claimStatus: {
    value: '<true|false>',
    env: 'CLAIM_STATUS',
    default: 'true',
    help: "write each prepared claim's status.devices: UUID, product, MIG parent and profile",
  },
  deviceMetadata: {
    value: '<true|false>',
    env: 'DEVICE_METADATA',
    default: 'false',
    help: "mount a file with the devices' attributes into the claim's containers (KEP-5304)",
  },
} as const satisfies Readonly<Record<string, FlagSpec>>;

export type DriverFlagName = keyof typeof DRIVER_FLAGS;

/** Raw option values as commander hands them over (flag, else env twin, else undefined). */
export type DriverFlags = {
  [K in DriverFlagName]?: (typeof DRIVER_FLAGS)[K] extends { value: string } ? string : boolean | string;
};

/** `driverRoot` → `--driver-root`. */
export function flagName(name: DriverFlagName): string {
  return `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The flag's names in table order. */
export function driverFlagNames(): DriverFlagName[] {
  return Object.keys(DRIVER_FLAGS) as DriverFlagName[];
}

/** What the flag is when not given: `default X`, `required`, or its `unset` meaning. */
export function describeDefault(spec: FlagSpec): string {
  if (spec.default !== undefined) return `default ${spec.default}`;
  if (spec.required) return 'required';
  return `unset: ${spec.unset ?? 'none'}`;
}
