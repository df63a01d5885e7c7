/**
 * The node plugin process: `runDriver` wires discovery, recovery, the kubelet sockets, the
 * ResourceSlice publisher, the device monitor and the HTTP endpoints, and returns a handle whose
 * `stop()` undoes it all.
 *
 * Start order: discover (retried until GPUs appear, so no empty pool is ever published) → start
 * publishing slices → once the first write landed (or after 1 s) load the serving half
 * (./serving.ts) → recover the checkpoint (before any socket exists, so the kubelet never sees
 * half-recovered state) → DRA socket → registration socket → HTTP → periodic re-discovery and
 * the NVML event watch.
 *
 * Rolling updates (`--pod-uid`): the new pod starts beside the old one. Its sockets carry its
 * UID (kubelet/plugin.ts), the two share the checkpoint and CDI specs under a node-wide lock
 * (driver/state.ts), and only one publishes the slices (./publisherRole.ts). Stopping removes
 * the registration socket first, lets calls in flight finish, and stops publishing without
 * deleting anything, so the new pod carries on with no gap.
 */
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import { createKubeClient, type KubeClient } from '../kube/client.js';
import { postNodeEvent } from '../kube/events.js';
import { rebuildNote, type RebuildSummary } from '../driver/rebuild.js';
import { loadInClusterConfig, type KubeConfig } from '../kube/config.js';
import { kubeClaimGetter, type ClaimGetter } from '../driver/claims.js';
import type { DriverConfig } from './config.js';
import { createDriverMetrics, type DriverMetrics } from './metrics.js';
import type { KubeletPlugin } from '../kubelet/plugin.js';
import type { DeviceState, RecoveryReport } from '../driver/state.js';
import type { ClaimStatusWriter } from '../driver/statusWriter.js';
import { DeviceMonitor } from './deviceMonitor.js';
import { ADMIN_API_VERSION } from './adminSocket.js';
import { watchDeviceEvents, type DeviceEvent, type DeviceEventWatch } from '../nvml/events.js';
import { discoverInventory } from '../nvml/discover.js';
import { libraryCandidates } from '../nvml/library.js';
import type { NodeInventory } from '../nvml/types.js';
import { discoverWithRetry } from './discoveryRetry.js';
import type { TaintMap } from '../resourceslice/model.js';
import { ResourceSlicePublisher } from '../resourceslice/publisher.js';
import { FileLock } from '../util/fileLock.js';
import { PUBLISHER_LOCK_FILE, PublisherRole } from './publisherRole.js';

import { createLogger, silentLogger, type Logger } from '../util/log.js';

/** What the driver needs from a ResourceSlice publisher (src/resourceslice/publisher.ts). */
export interface SlicePublisher {
  start(inventory: NodeInventory): void;
  update(inventory: NodeInventory, taints?: TaintMap): Promise<void>;
  isReady(): boolean;
  /** Resolves once the first publish has landed; rejects if the publisher stops first. */
  whenReady(): Promise<void>;
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
  /** Periodic re-discovery; default `config.deviceCheckIntervalMs`. */
  readonly deviceCheckIntervalMs?: number;
  /**
   * Starts the NVML event watch (XIDs, MIG changes); `null` = none. Default: NVML's, when
   * `config.deviceEvents` is on and discovery is not injected.
   */
  readonly watchDeviceEvents?:
    ((onEvent: (event: DeviceEvent) => void) => DeviceEventWatch | undefined) | null;
}

export interface RunningDriver {
  readonly config: DriverConfig;
  readonly plugin: KubeletPlugin;
  readonly state: DeviceState;
  /** Writes prepared claims' status.devices; absent with `--claim-status=false` or no API client. */
  readonly claimStatus?: ClaimStatusWriter;
  readonly recovery: RecoveryReport;
  readonly metrics: DriverMetrics;
  /** Bound HTTP address when `httpListen` was set. */
  readonly httpAddress?: { readonly host: string; readonly port: number };
  /** Self-check like the kubelet would: GetInfo on the registration socket, empty prepare on dra.sock. */
  healthCheck(): Promise<void>;
  stop(): Promise<void>;
}

/** Held shared by every running instance of the node (see `presence` in runDriver). */
export const INSTANCES_LOCK_FILE = 'instances.lock';

/** How long start-up waits for the first ResourceSlice write before bringing up the sockets. */
const FIRST_PUBLISH_WAIT_MS = 1_000;

/**
 * Stopping: how long gRPC calls in flight may take to be answered once the sockets are gone,
 * and then how long operations still running (a call the kubelet gave up on, an MPS daemon
 * starting) may take to finish. The DaemonSet's grace period covers both.
 */
export const STOP_CALL_GRACE_MS = 10_000;
export const STOP_SETTLE_MS = 60_000;

/** Waits for `promise` to settle, or `ms`, whichever is first; never rejects. */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise.catch(() => undefined),
    new Promise((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}

/** Starts the NVML event watch feeding the device monitor; undefined when off or unavailable. */
function startEventWatch(
  config: DriverConfig,
  deps: DriverDeps,
  devices: DeviceMonitor,
  metrics: DriverMetrics,
  logger: Logger,
): DeviceEventWatch | undefined {
  const start =
    deps.watchDeviceEvents !== undefined
      ? deps.watchDeviceEvents
      : config.deviceEvents && !deps.discover
        ? (onEvent: (event: DeviceEvent) => void) =>
            watchDeviceEvents({ nvmlLib: config.nvmlLib, hostPaths: config.hostPaths, onEvent, logger })
        : null;
  if (!start) return undefined;
  try {
    const watch = start((event) => {
      if (event.kind === 'xid') metrics.xidEvents.inc({ xid: String(event.xid) });
      devices.recordEvent(event);
    });
    if (!watch) {
      logger.warn('this NVML has no event API: XID errors will not taint devices');
      return undefined;
    }
    for (const u of watch.unmonitored)
      logger.warn(u, 'GPU not registered for NVML events: its XID errors will not taint its devices');
    logger.info({ gpus: watch.monitored.length }, 'watching NVML events (XID errors, MIG changes)');
    return watch;
  } catch (err) {
    logger.warn({ err }, 'NVML event watch failed to start; XID errors will not taint devices');
    return undefined;
  }
}

/**
 * The in-cluster service account takes the lean client; only a kubeconfig file loads
 * @kubernetes/client-node (its evaluation would delay the DaemonSet's first publish).
 */
async function connectKube(config: DriverConfig): Promise<KubeClient> {
  if (!config.kubeconfig) return createKubeClient(loadInClusterConfig());
  const { loadKubeconfigClient } = await import('../kube/kubeconfig.js');
  return loadKubeconfigClient(config.kubeconfig);
}

/** nvidia-smi from the driver root, and MPS daemons when the plugin knows its namespace and image. */
function sharingApplier(
  serving: typeof import('./serving.js'),
  config: DriverConfig,
  pluginDir: string,
  kube: KubeClient | undefined,
  logger: Logger,
) {
  const nvidiaSmi = serving.createNvidiaSmi({
    driverRoot: config.hostPaths.driverRoot,
    // Looked up at the first call, not at start-up: most nodes never run nvidia-smi.
    findNvmlLib: () =>
      libraryCandidates({ nvmlLib: config.nvmlLib, driverRoot: config.hostPaths.driverRoot }).find(
        (p) => p.includes('/') && fs.existsSync(p),
      ),
  });
  if (!config.namespace || !config.image || !kube) {
    logger.info('MPS claims will be refused: --namespace and --image are not both set');
    return new serving.SharingApplier({ nvidiaSmi });
  }
  const mps = new serving.MpsDaemons({
    kube,
    settings: {
      namespace: config.namespace,
      image: config.image,
      nodeName: config.nodeName,
      driverName: config.driverName,
      pluginDir,
      hostDriverRoot: config.hostPaths.hostDriverRoot ?? config.hostPaths.driverRoot,
      shmSizeBytes: config.mpsShmSizeBytes,
    },
    readyTimeoutMs: config.mpsReadyTimeoutMs,
  });
  return new serving.SharingApplier({ nvidiaSmi, mps });
}

export async function runDriver(config: DriverConfig, deps: DriverDeps = {}): Promise<RunningDriver> {
  const logger = (deps.logger ?? createLogger({ level: config.logLevel })).child({
    driver: config.driverName,
    node: config.nodeName,
  });
  const metrics = deps.metrics ?? createDriverMetrics({ defaultMetrics: true });
  const nvmlDiscovery = (log: Logger) => (): NodeInventory =>
    discoverInventory({ nvmlLib: config.nvmlLib, hostPaths: config.hostPaths, logger: log });
  const discover = deps.discover ?? nvmlDiscovery(logger.child({ component: 'nvml' }));
  // Re-discoveries repeat every interval: the device monitor reports what changed, once, so
  // per-GPU errors there would only repeat it.
  const rediscover = deps.discover ?? nvmlDiscovery(silentLogger());

  const needKube = !deps.claims || deps.publisher === undefined;
  // One client, so claim GETs and the publisher share one keep-alive connection pool.
  const kubeClient = !needKube
    ? undefined
    : deps.kubeConfig
      ? createKubeClient(deps.kubeConfig)
      : await connectKube(config);
  const claims = deps.claims ?? (await kubeClaimGetter(kubeClient as KubeClient));
  const slicePublisher: SlicePublisher | undefined =
    deps.publisher === null
      ? undefined
      : (deps.publisher ??
        new ResourceSlicePublisher({
          nodeName: config.nodeName,
          driverName: config.driverName,
          ...(kubeClient ? { kubeConfig: kubeClient } : {}),
          logger,
          registry: metrics.registry,
          consumableShares: config.consumableShares,
          // Dynamic: the layout of counter sets follows the apiserver's version (read once).
          migPartitioning: config.migPartitioning,
        }));
  // The same directory as kubelet/plugin.ts's pluginDataDir (not imported: that module loads gRPC).
  const lockDir = path.resolve(config.kubeletPluginsDir, config.driverName);
  const publisher = slicePublisher
    ? new PublisherRole({
        publisher: slicePublisher,
        lock: FileLock.open(path.join(lockDir, PUBLISHER_LOCK_FILE)),
        logger: logger.child({ component: 'publisher-role' }),
      })
    : undefined;
  // Every running instance holds this shared, for its whole life: --cleanup-on-exit removes what
  // the instances share only when the exiting one finds itself alone (a rollout of pods with
  // --cleanup-on-exit set must not take the new pod's claims with the old one).
  const presence = FileLock.open(path.join(lockDir, INSTANCES_LOCK_FILE));
  if (!presence.tryLockShared())
    logger.warn('another plugin instance is cleaning up this node as this one starts');

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
  // Publish first: slices only need the inventory, and a node without them cannot be scheduled
  // on.
  publisher?.start(inventory);
  const devices = new DeviceMonitor({
    initial: inventory,
    discover: rediscover,
    driverName: config.driverName,
    migPartitioning: config.migPartitioning,
    intervalMs: deps.deviceCheckIntervalMs ?? config.deviceCheckIntervalMs,
    minRefreshIntervalMs: deps.rediscoverIntervalMs ?? 5_000,
    logger: logger.child({ component: 'devices' }),
    onCheck: (result) => {
      metrics.deviceChecks.inc({ result });
    },
    onChange: (view) => {
      metrics.unhealthyGpus.set(view.unhealthy.length);
      publisher?.update(view.inventory, view.taints).catch((err: unknown) => {
        logger.warn({ err }, 'republish after re-discovery failed');
      });
    },
  });
  // The serving half takes tens of milliseconds of CPU to evaluate (gRPC, protobuf); loaded
  // now it would hold up the first write's responses. Let that write land first, but do not
  // wait long: an unreachable apiserver must not keep the kubelet's sockets down.
  if (publisher) await settledWithin(publisher.whenReady(), FIRST_PUBLISH_WAIT_MS);
  const serving = await import('./serving.js');

  const pluginDir = serving.pluginDataDir({ pluginsDir: config.kubeletPluginsDir }, config.driverName);
  // Dynamic MIG: one NVML session for the plugin's life makes and removes MIG devices.
  const mig =
    config.migPartitioning === 'dynamic'
      ? serving.openMigInstanceControl({ nvmlLib: config.nvmlLib, driverRoot: config.hostPaths.driverRoot })
      : undefined;
  // status.devices needs the API; tests that inject a claim getter have no client, and no claims.
  const claimStatus =
    config.claimStatus && kubeClient
      ? new serving.ClaimStatusWriter({
          kube: kubeClient,
          driverName: config.driverName,
          logger: logger.child({ component: 'claim-status' }),
        })
      : undefined;
  const state = serving.createDeviceState({
    driverName: config.driverName,
    nodeName: config.nodeName,
    hostPaths: config.hostPaths,
    cdiRoot: config.cdiRoot,
    pluginDir,
    inventory: devices,
    claims,
    sharing: sharingApplier(serving, config, pluginDir, kubeClient, logger),
    migPartitioning: config.migPartitioning,
    ...(mig ? { mig } : {}),
    ...(claimStatus ? { claimStatus } : {}),
    deviceMetadata: config.deviceMetadata,
    ...(kubeClient
      ? {
          onCheckpointRebuilt: (summary: RebuildSummary) =>
            postNodeEvent(
              kubeClient,
              {
                type: 'Warning',
                reason: 'CheckpointRebuilt',
                action: 'RebuildCheckpoint',
                note: rebuildNote(summary),
              },
              { nodeName: config.nodeName, driverName: config.driverName },
            ),
        }
      : {}),
    logger,
  });
  const recovery = await state.recover();
  logger.info({ recovery }, 'checkpoint recovered');
  metrics.preparedClaims.set(state.preparedClaimCount());

  const plugin = await serving.startKubeletPlugin({
    driverName: config.driverName,
    ...(config.podUid ? { podUid: config.podUid } : {}),
    stopGraceMs: STOP_CALL_GRACE_MS,
    registryDir: config.kubeletRegistryDir,
    pluginsDir: config.kubeletPluginsDir,
    state,
    claims,
    logger: logger.child({ component: 'grpc' }),
    metrics,
    health: { source: devices, poolName: config.nodeName },
  });

  // /healthz asks our own sockets what the kubelet would: GetInfo, and an empty prepare.
  const self = new serving.KubeletClient({
    draSocket: plugin.draSocket,
    registrationSocket: plugin.registrationSocket,
    timeoutMs: 2_000,
  });
  const healthCheck = async (): Promise<void> => {
    await self.getInfo();
    await self.prepare([]);
  };
  const notReady = (): string | undefined => {
    if (plugin.registration.status.registered === false)
      return `kubelet rejected registration: ${plugin.registration.status.error ?? ''}`;
    if (publisher && !publisher.isReady()) return 'ResourceSlices not published yet';
    return undefined;
  };

  // Best effort: without it `gpu-dra taints clear` and the doctor's registration check fail,
  // but claims are served all the same.
  const admin = await serving
    .startAdminSocket(
      serving.adminSocketPath(config.kubeletPluginsDir, config.driverName),
      {
        status: () => ({
          apiVersion: ADMIN_API_VERSION,
          driverName: config.driverName,
          nodeName: config.nodeName,
          pid: process.pid,
          registration: {
            ...plugin.registration.status,
            at: plugin.registration.status.at?.toISOString(),
          },
          sockets: { dra: plugin.draSocket, registration: plugin.registrationSocket },
          slicesPublished: publisher ? publisher.isReady() : null,
          taints: devices.taints(),
          xidTaints: devices.xidTaintMap(),
        }),
        clearXidTaints: (names) => devices.clearXidTaints(names),
      },
      logger.child({ component: 'admin' }),
    )
    .catch((err: unknown) => {
      logger.warn({ err }, 'admin socket failed to start; `gpu-dra taints clear` cannot reach this plugin');
      return undefined;
    });

  let httpServer: http.Server | undefined;
  try {
    if (config.httpListen)
      httpServer = await serving.startHttp(
        config.httpListen,
        { health: healthCheck, ready: notReady, metrics },
        logger,
      );
  } catch (err) {
    await admin?.close();
    await plugin.stop();
    await publisher?.stop();
    throw err;
  }
  const address = httpServer?.address();
  devices.start();
  const watch = startEventWatch(config, deps, devices, metrics, logger.child({ component: 'events' }));

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      logger.info('stopping');
      devices.stop();
      await watch?.stop().catch((err: unknown) => {
        logger.warn({ err }, 'stopping the NVML event watch failed');
      });
      await admin?.close();
      // Unregisters (the registration socket goes first), then answers the calls in flight.
      await plugin.stop();
      let settled = false;
      await settledWithin(
        state.settle().then(() => {
          settled = true;
        }),
        STOP_SETTLE_MS,
      );
      if (!settled)
        logger.warn(
          { waitedMs: STOP_SETTLE_MS },
          'claim operations still running at exit; what they leave is undone by the claim’s next prepare or unprepare, or the next start-up',
        );
      await claimStatus?.stop();
      self.close();
      presence.unlock();
      const cleanup = config.cleanupOnExit && presence.tryLock();
      if (config.cleanupOnExit && !cleanup)
        logger.warn(
          'not cleaning up (--cleanup-on-exit): another plugin instance runs on this node and keeps the slices, CDI specs and checkpoint',
        );
      if (publisher) {
        if (cleanup) {
          await publisher.deleteAll().catch((err: unknown) => {
            logger.error({ err }, 'deleting ResourceSlices failed');
          });
        } else {
          await publisher.stop();
        }
      }
      if (cleanup) await state.cleanupAll();
      presence.close();
      state.close();
      mig?.close();
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
    ...(claimStatus ? { claimStatus } : {}),
    ...(address && typeof address === 'object'
      ? { httpAddress: { host: address.address, port: address.port } }
      : {}),
    healthCheck,
    stop,
  };
}
