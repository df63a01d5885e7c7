/**
 * `gpu-dra driver`: the node plugin. Flags (each with an environment twin) are validated once
 * into a frozen DriverConfig that reports every bad flag at once; `runDriver` wires discovery,
 * recovery, the kubelet sockets, the ResourceSlice publisher and the HTTP endpoints, and
 * returns a handle whose `stop()` undoes it all. SIGTERM/SIGINT → stop → exit 0.
 *
 * Start order: discover (retried until GPUs appear, so no empty pool is ever published) →
 * recover the checkpoint (before any socket exists, so the kubelet never sees half-recovered
 * state) → DRA socket → registration socket → publish slices → HTTP.
 */
import http from 'node:http';
import path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import type { KubeConfig } from '@kubernetes/client-node';
import { CdiStore } from '../../cdi/store.js';
import { CheckpointStore } from '../../checkpoint/store.js';
import { CHECKPOINT_FILE } from '../../checkpoint/schema.js';
import { kubeClaimGetter, type ClaimGetter } from '../../driver/claims.js';
import { createDriverMetrics, type DriverMetrics } from '../../driver/metrics.js';
import { pluginDataDir, startKubeletPlugin, type KubeletPlugin } from '../../driver/plugin.js';
import { loadProtos, type NodePrepareResourcesResponse } from '../../driver/proto.js';
import { DeviceState, type InventorySource, type RecoveryReport } from '../../driver/state.js';
import { discoverInventory } from '../../nvml/discover.js';
import { DEFAULT_HOST_PATHS, type HostPaths } from '../../nvml/hostPaths.js';
import type { NodeInventory } from '../../nvml/types.js';
import { discoverWithRetry } from '../../resourceslice/discovery.js';
import { ResourceSlicePublisher } from '../../resourceslice/publisher.js';
import { ConfigError, errorMessage } from '../../util/errors.js';
import { createLogger, type Logger } from '../../util/log.js';
import { hostPathOptions } from '../hostFlags.js';

// ---------------------------------------------------------------- configuration

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
}

export const DRIVER_DEFAULTS = Object.freeze({
  driverName: 'gpu.dra.dev',
  kubeletRegistryDir: '/var/lib/kubelet/plugins_registry',
  kubeletPluginsDir: '/var/lib/kubelet/plugins',
  cdiRoot: '/var/run/cdi',
  logLevel: 'info',
});

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
  httpListen?: string;
  cleanupOnExit?: boolean | string;
  logLevel?: string;
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
  httpListen: '--http-listen',
  cleanupOnExit: '--cleanup-on-exit',
  logLevel: '--log-level',
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
  httpListen: listen.optional(),
  cleanupOnExit: bool.default(false),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
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
    hostPaths: { devRoot: d.devRoot, procRoot: d.procRoot, sysRoot: d.sysRoot, driverRoot: d.driverRoot },
    ...(d.httpListen ? { httpListen: d.httpListen } : {}),
    cleanupOnExit: d.cleanupOnExit,
    logLevel: d.logLevel,
  });
}

// ---------------------------------------------------------------- runtime

/** What the driver needs from a ResourceSlice publisher (src/resourceslice/publisher.ts). */
export interface SlicePublisher {
  start(inventory: NodeInventory): void;
  update(inventory: NodeInventory): Promise<void>;
  isReady(): boolean;
  stop(): Promise<void>;
  deleteAll(): Promise<number>;
}

/** Everything runDriver would otherwise build from the config; tests and `demo` inject them. */
export interface DriverDeps {
  readonly logger?: Logger;
  /** Synchronous discovery (default: NVML via discoverInventory). */
  readonly discover?: () => NodeInventory;
  readonly kubeConfig?: KubeConfig;
  readonly claims?: ClaimGetter;
  /** `null` = do not publish ResourceSlices (tests); default: ResourceSlicePublisher. */
  readonly publisher?: SlicePublisher | null;
  readonly metrics?: DriverMetrics;
  /** Aborts start-up (discovery retry) early, e.g. on SIGTERM during start. */
  readonly signal?: AbortSignal;
  /** Minimum time between re-discoveries triggered by unknown devices (default 5 s). */
  readonly rediscoverIntervalMs?: number;
}

export interface RunningDriver {
  readonly config: DriverConfig;
  readonly plugin: KubeletPlugin;
  readonly state: DeviceState;
  readonly recovery: RecoveryReport;
  readonly metrics: DriverMetrics;
  /** Bound HTTP address when `httpListen` was set. */
  readonly httpAddress?: { readonly host: string; readonly port: number };
  /** Self-check like the kubelet would: GetInfo on the registration socket, empty prepare on dra.sock. */
  healthCheck(): Promise<void>;
  stop(): Promise<void>;
}

function loadKubeConfig(config: DriverConfig): Promise<KubeConfig> {
  return import('@kubernetes/client-node').then(({ KubeConfig: KC }) => {
    const kc = new KC();
    if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
    else kc.loadFromCluster();
    return kc;
  });
}

/** Caches the inventory; re-discovers at most once per interval when asked to. */
class InventoryCache implements InventorySource {
  private lastRefresh = Date.now();

  constructor(
    private inventory: NodeInventory,
    private readonly discover: () => NodeInventory,
    private readonly minIntervalMs: number,
    private readonly onChange: (inv: NodeInventory) => void,
  ) {}

  current(): NodeInventory {
    return this.inventory;
  }

  refresh(): NodeInventory {
    if (Date.now() - this.lastRefresh < this.minIntervalMs) return this.inventory;
    this.lastRefresh = Date.now();
    const next = this.discover();
    if (JSON.stringify(next) !== JSON.stringify(this.inventory)) {
      this.inventory = next;
      this.onChange(next);
    }
    return this.inventory;
  }
}

function unaryCall<T>(client: object, method: string, request: unknown, deadlineMs: number): Promise<T> {
  const fn = (
    client as Record<string, (req: unknown, opts: object, cb: (e: Error | null, r: T) => void) => void>
  )[method];
  return new Promise((resolve, reject) => {
    if (!fn) {
      reject(new Error(`no method ${method}`));
      return;
    }
    fn.call(client, request, { deadline: Date.now() + deadlineMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}

async function startHttp(
  listen: { host: string; port: number },
  handlers: { health: () => Promise<void>; ready: () => string | undefined; metrics: DriverMetrics },
  logger: Logger,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url?.split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (url === '/healthz') {
      handlers.health().then(
        () => {
          reply(200, 'ok\n');
        },
        (err: unknown) => {
          reply(503, `unhealthy: ${errorMessage(err)}\n`);
        },
      );
    } else if (url === '/readyz') {
      const notReady = handlers.ready();
      reply(notReady ? 503 : 200, notReady ? `not ready: ${notReady}\n` : 'ok\n');
    } else if (url === '/metrics') {
      handlers.metrics.registry.metrics().then(
        (text) => {
          reply(200, text, handlers.metrics.registry.contentType);
        },
        (err: unknown) => {
          reply(500, errorMessage(err));
        },
      );
    } else {
      reply(404, 'not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  logger.info({ address: server.address() }, 'HTTP endpoints serving /healthz /readyz /metrics');
  return server;
}

export async function runDriver(config: DriverConfig, deps: DriverDeps = {}): Promise<RunningDriver> {
  const logger = (deps.logger ?? createLogger({ level: config.logLevel })).child({
    driver: config.driverName,
    node: config.nodeName,
  });
  const metrics = deps.metrics ?? createDriverMetrics({ defaultMetrics: true });
  const discover =
    deps.discover ??
    (() =>
      discoverInventory({
        nvmlLib: config.nvmlLib,
        hostPaths: config.hostPaths,
        logger: logger.child({ component: 'nvml' }),
      }));

  let kubeConfig = deps.kubeConfig;
  const needKube = !deps.claims || deps.publisher === undefined;
  if (needKube && !kubeConfig) kubeConfig = await loadKubeConfig(config);
  const claims = deps.claims ?? (await kubeClaimGetter(kubeConfig as KubeConfig));
  const publisher: SlicePublisher | undefined =
    deps.publisher === null
      ? undefined
      : (deps.publisher ??
        new ResourceSlicePublisher({
          nodeName: config.nodeName,
          driverName: config.driverName,
          ...(kubeConfig ? { kubeConfig } : {}),
          logger,
          registry: metrics.registry,
        }));

  const inventory = await discoverWithRetry(() => Promise.resolve().then(discover), {
    logger: logger.child({ component: 'discovery' }),
    ...(deps.signal ? { signal: deps.signal } : {}),
  });
  logger.info(
    {
      gpus: inventory.gpus.length,
      failures: inventory.failures.length,
      driverVersion: inventory.driverVersion,
    },
    'GPUs discovered',
  );
  const cache = new InventoryCache(inventory, discover, deps.rediscoverIntervalMs ?? 5_000, (inv) => {
    publisher?.update(inv).catch((err: unknown) => {
      logger.warn({ err: errorMessage(err) }, 'republish after re-discovery failed');
    });
  });

  const state = new DeviceState({
    driverName: config.driverName,
    poolName: config.nodeName,
    hostPaths: config.hostPaths,
    cdi: new CdiStore(config.cdiRoot, config.driverName),
    checkpoint: new CheckpointStore(
      path.join(pluginDataDir({ pluginsDir: config.kubeletPluginsDir }, config.driverName), CHECKPOINT_FILE),
      logger.child({ component: 'checkpoint' }),
    ),
    inventory: cache,
    logger: logger.child({ component: 'state' }),
  });
  const recovery = await state.recover();
  logger.info({ recovery }, 'checkpoint recovered');
  metrics.preparedClaims.set(state.preparedClaimUids().length);

  const plugin = await startKubeletPlugin({
    driverName: config.driverName,
    registryDir: config.kubeletRegistryDir,
    pluginsDir: config.kubeletPluginsDir,
    state,
    claims,
    logger: logger.child({ component: 'grpc' }),
    metrics,
  });
  publisher?.start(inventory);

  const protos = loadProtos();
  const { credentials } = await import('@grpc/grpc-js');
  const selfDra = new protos.draV1(`unix:${plugin.draSocket}`, credentials.createInsecure());
  const selfReg = new protos.registration(`unix:${plugin.registrationSocket}`, credentials.createInsecure());
  const healthCheck = async (): Promise<void> => {
    await unaryCall(selfReg, 'GetInfo', {}, 2_000);
    await unaryCall<NodePrepareResourcesResponse>(selfDra, 'NodePrepareResources', { claims: [] }, 2_000);
  };
  const notReady = (): string | undefined => {
    if (plugin.registration.status.registered === false)
      return `kubelet rejected registration: ${plugin.registration.status.error ?? ''}`;
    if (publisher && !publisher.isReady()) return 'ResourceSlices not published yet';
    return undefined;
  };

  let httpServer: http.Server | undefined;
  try {
    if (config.httpListen)
      httpServer = await startHttp(
        config.httpListen,
        { health: healthCheck, ready: notReady, metrics },
        logger,
      );
  } catch (err) {
    await plugin.stop();
    await publisher?.stop();
    throw err;
  }
  const address = httpServer?.address();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      logger.info('stopping');
      await plugin.stop();
      selfDra.close();
      selfReg.close();
      if (publisher) {
        if (config.cleanupOnExit) {
          await publisher.deleteAll().catch((err: unknown) => {
            logger.error({ err: errorMessage(err) }, 'deleting ResourceSlices failed');
          });
        } else {
          await publisher.stop();
        }
      }
      if (config.cleanupOnExit) await state.cleanupAll();
      if (httpServer) {
        httpServer.closeAllConnections();
        await new Promise<void>((resolve) =>
          httpServer?.close(() => {
            resolve();
          }),
        );
      }
      logger.info('stopped');
    })();
    return stopping;
  };

  return {
    config,
    plugin,
    state,
    recovery,
    metrics,
    ...(address && typeof address === 'object'
      ? { httpAddress: { host: address.address, port: address.port } }
      : {}),
    healthCheck,
    stop,
  };
}

// ---------------------------------------------------------------- commander

export function registerDriverCommand(program: Command): Command {
  const env = process.env;
  const cmd = program
    .command('driver')
    .description(
      'run the kubelet DRA plugin for this node (registration + DRA gRPC sockets, ResourceSlices, CDI specs)',
    )
    .option('--node-name <name>', 'this node (env NODE_NAME)', env['NODE_NAME'])
    .option(
      '--kubeconfig <file>',
      'kubeconfig; in-cluster config when unset (env KUBECONFIG)',
      env['KUBECONFIG'],
    )
    .option(
      '--driver-name <name>',
      `DRA driver name (env DRIVER_NAME, default ${DRIVER_DEFAULTS.driverName})`,
      env['DRIVER_NAME'],
    )
    .option(
      '--kubelet-registry-dir <dir>',
      `kubelet plugin-watcher dir (env KUBELET_REGISTRY_DIR, default ${DRIVER_DEFAULTS.kubeletRegistryDir})`,
      env['KUBELET_REGISTRY_DIR'],
    )
    .option(
      '--kubelet-plugins-dir <dir>',
      `kubelet plugins dir; ours is <dir>/<driver> (env KUBELET_PLUGINS_DIR, default ${DRIVER_DEFAULTS.kubeletPluginsDir})`,
      env['KUBELET_PLUGINS_DIR'],
    )
    .option(
      '--cdi-root <dir>',
      `where per-claim CDI specs go (env CDI_ROOT, default ${DRIVER_DEFAULTS.cdiRoot})`,
      env['CDI_ROOT'],
    )
    .option('--nvml-lib <path>', 'path to libnvidia-ml.so.1 (env NVML_LIB; default: search)', env['NVML_LIB'])
    .option(
      '--http-listen <host:port>',
      'serve /healthz /readyz /metrics here (env HTTP_LISTEN; default off)',
      env['HTTP_LISTEN'],
    )
    .option(
      '--cleanup-on-exit',
      "on exit delete this node's ResourceSlices, CDI specs and checkpoint; uninstall/demo only (env CLEANUP_ON_EXIT)",
      env['CLEANUP_ON_EXIT'] === 'true' || env['CLEANUP_ON_EXIT'] === '1',
    )
    .option(
      '--log-level <level>',
      'trace|debug|info|warn|error (env LOG_LEVEL, default info)',
      env['LOG_LEVEL'],
    );
  hostPathOptions(cmd);
  cmd.action(async (opts: DriverFlags) => {
    const config = parseDriverConfig(opts);
    const abort = new AbortController();
    let signalled = false;
    const done = new Promise<void>((resolve) => {
      const onSignal = (sig: NodeJS.Signals): void => {
        if (signalled) return;
        signalled = true;
        process.stderr.write(`gpu-dra driver: ${sig}, shutting down\n`);
        abort.abort(new Error(`${sig} during start-up`));
        resolve();
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
    });
    let running: RunningDriver;
    try {
      running = await runDriver(config, { signal: abort.signal });
    } catch (err) {
      if (signalled) {
        process.exitCode = 0;
        return;
      }
      throw err;
    }
    await done;
    await running.stop();
    process.exitCode = 0;
    // Lingering handles (watches, keep-alive sockets) must not hold the process after a clean stop.
    setTimeout(() => process.exit(0), 2_000).unref();
  });
  return cmd;
}
