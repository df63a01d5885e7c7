/**
 * The kubelet plugin: the DRA server on `<plugins dir>/<driver>/dra.sock` (v1 + v1beta1, and
 * the v1 + v1alpha1 health stream when given a health source) and then the registration server
 * on `<registry dir>/<driver>-reg.sock`. Stopping removes the
 * registration socket first, so the kubelet deregisters before dra.sock goes away.
 *
 * Rolling updates: given its pod's UID, the plugin names both sockets after it, as the kubelet
 * plugin library (k8s.io/dynamic-resource-allocation/kubeletplugin, RollingUpdate) does, so the
 * old and the new pod of the DaemonSet register side by side. The kubelet (1.33 and later) keeps
 * every registered endpoint of a driver and sends each call to the newest connected one; the old
 * pod's removing its registration socket deregisters only that endpoint.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../util/log.js';
import type { ClaimGetter } from '../driver/claims.js';
import { HEALTH_V1_SERVICE, HEALTH_V1ALPHA1_SERVICE, loadProtos, SUPPORTED_VERSIONS } from './proto.js';
import { HealthService, type HealthSource } from './healthService.js';
import { RegistrationService } from './registration.js';
import { DraService, type DraServiceMetrics } from './draService.js';
import { MAX_SOCKET_PATH_BYTES, startUnixServer, type UnixServer } from './socketServer.js';
import type { DeviceState } from '../driver/state.js';

export interface PluginPaths {
  /** The kubelet's plugin-watcher directory (`/var/lib/kubelet/plugins_registry`). */
  readonly registryDir: string;
  /** The kubelet's plugins directory (`/var/lib/kubelet/plugins`); ours is `<dir>/<driver>`. */
  readonly pluginsDir: string;
}

export function pluginDataDir(paths: Pick<PluginPaths, 'pluginsDir'>, driverName: string): string {
  return path.resolve(paths.pluginsDir, driverName);
}
/** base64url of the first `bytes` of SHA-256(`data`), as the library shortens names. */
function shortHash(data: string, bytes: number): string {
  return createHash('sha256').update(data).digest().subarray(0, bytes).toString('base64url');
}

/**
 * `dra.sock`, or `dra-<pod UID>.sock` in rolling-update mode (the library's name). Where that
 * path would not fit a Unix socket, `dra-<hash of the UID>.sock`: the library has no such
 * fallback (it fails to listen), and the kubelet learns the path from GetInfo, whatever it is.
 */
export function draSocketPath(
  paths: Pick<PluginPaths, 'pluginsDir'>,
  driverName: string,
  podUid?: string,
): string {
  const dir = pluginDataDir(paths, driverName);
  if (!podUid) return path.join(dir, 'dra.sock');
  const full = path.join(dir, `dra-${podUid}.sock`);
  return Buffer.byteLength(full) <= MAX_SOCKET_PATH_BYTES
    ? full
    : path.join(dir, `dra-${shortHash(podUid, 8)}.sock`);
}

/**
 * `<driver>-reg.sock`, or in rolling-update mode the first of the library's names whose path
 * fits a Unix socket: `<driver>-<pod UID>-reg.sock`, `<driver>-<hash of the UID>-reg.sock`,
 * `dra-<hash of driver and UID>-reg.sock` (RollingUpdateRegistrarSocketFile). The library
 * measures against 108 bytes, we against MAX_SOCKET_PATH_BYTES (107, room for the NUL that
 * grpc-js's bind needs); only a path of exactly 108 bytes names differently.
 */
export function registrationSocketPath(
  paths: Pick<PluginPaths, 'registryDir'>,
  driverName: string,
  podUid?: string,
): string {
  const dir = path.resolve(paths.registryDir);
  if (!podUid) return path.join(dir, `${driverName}-reg.sock`);
  const candidates = [
    `${driverName}-${podUid}-reg.sock`,
    `${driverName}-${shortHash(podUid, 8)}-reg.sock`,
    `dra-${shortHash(`${driverName}\0${podUid}`, 16)}-reg.sock`,
  ];
  const fits = candidates.find((name) => Buffer.byteLength(path.join(dir, name)) <= MAX_SOCKET_PATH_BYTES);
  return path.join(dir, fits ?? (candidates[candidates.length - 1] as string));
}

export interface KubeletPluginOptions extends PluginPaths {
  readonly driverName: string;
  /** The pod's UID: sockets named for rolling updates (see the module comment); absent: one instance. */
  readonly podUid?: string;
  /**
   * How long stopping waits for calls in flight before cutting them off; default 2 s. The
   * kubelet retries a cut-off call, on the other instance during a rolling update.
   */
  readonly stopGraceMs?: number;
  readonly state: DeviceState;
  readonly claims: ClaimGetter;
  readonly logger: Logger;
  readonly metrics?: DraServiceMetrics;
  /** Serve (and advertise) the resource health stream; `poolName` is the node's pool. */
  readonly health?: {
    readonly source: HealthSource;
    readonly poolName: string;
    /** Full resend period (default healthService.ts's). */
    readonly resendMs?: number;
  };
}

export interface KubeletPlugin {
  readonly draSocket: string;
  readonly registrationSocket: string;
  readonly registration: RegistrationService;
  readonly dra: DraService;
  readonly health?: HealthService;
  stop(): Promise<void>;
}

export async function startKubeletPlugin(options: KubeletPluginOptions): Promise<KubeletPlugin> {
  const protos = loadProtos();
  const logger = options.logger;
  const dra = new DraService({
    state: options.state,
    claims: options.claims,
    logger,
    ...(options.metrics ? { metrics: options.metrics } : {}),
  });
  const health = options.health
    ? new HealthService({
        source: options.health.source,
        poolName: options.health.poolName,
        logger: logger.child({ component: 'health' }),
        ...(options.health.resendMs !== undefined ? { resendMs: options.health.resendMs } : {}),
      })
    : undefined;
  const draSocket = draSocketPath(options, options.driverName, options.podUid);
  const draServer = await startUnixServer({
    socketPath: draSocket,
    dirMode: 0o700,
    forceDirMode: true,
    services: [
      { definition: protos.draV1.service, implementation: dra.implementation('v1') },
      { definition: protos.draV1beta1.service, implementation: dra.implementation('v1beta1') },
      ...(health
        ? [
            { definition: protos.healthV1.service, implementation: health.implementation('v1') },
            { definition: protos.healthV1alpha1.service, implementation: health.implementation('v1alpha1') },
          ]
        : []),
    ],
  });
  const registrationSocket = registrationSocketPath(options, options.driverName, options.podUid);
  const registration = new RegistrationService(
    {
      driverName: options.driverName,
      endpoint: draSocket,
      // Advertise only what dra.sock serves: a 1.37 kubelet opens the stream on the strength of it.
      supportedVersions: SUPPORTED_VERSIONS.filter(
        (v) => health || (v !== HEALTH_V1_SERVICE && v !== HEALTH_V1ALPHA1_SERVICE),
      ),
    },
    logger.child({ component: 'registration' }),
  );
  let regServer: UnixServer;
  try {
    regServer = await startUnixServer({
      socketPath: registrationSocket,
      dirMode: 0o700,
      services: [{ definition: protos.registration.service, implementation: registration.implementation() }],
    });
  } catch (err) {
    health?.stop();
    await draServer.stop();
    throw err;
  }
  logger.info({ draSocket, registrationSocket }, 'kubelet plugin serving');
  let stopping: Promise<void> | undefined;
  return {
    draSocket,
    registrationSocket,
    registration,
    dra,
    ...(health ? { health } : {}),
    stop() {
      stopping ??= (async () => {
        await regServer.stop();
        // Open watch streams would hold the graceful shutdown to its deadline.
        health?.stop();
        await draServer.stop(options.stopGraceMs);
        logger.info('kubelet plugin stopped; sockets removed');
      })();
      return stopping;
    },
  };
}
