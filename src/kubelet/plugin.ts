/**
 * The kubelet plugin: the DRA server on `<plugins dir>/<driver>/dra.sock` (v1 + v1beta1, and
 * the v1 + v1alpha1 health stream when given a health source) and then the registration server
 * on `<registry dir>/<driver>-reg.sock`. Stopping removes the
 * registration socket first, so the kubelet deregisters before dra.sock goes away.
 */
import path from 'node:path';
import type { Logger } from '../util/log.js';
import type { ClaimGetter } from '../driver/claims.js';
import { HEALTH_V1_SERVICE, HEALTH_V1ALPHA1_SERVICE, loadProtos, SUPPORTED_VERSIONS } from './proto.js';
import { HealthService, type HealthSource } from './healthService.js';
import { RegistrationService } from './registration.js';
import { DraService, type DraServiceMetrics } from './draService.js';
import { startUnixServer, type UnixServer } from './socketServer.js';
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
export function draSocketPath(paths: Pick<PluginPaths, 'pluginsDir'>, driverName: string): string {
  return path.join(pluginDataDir(paths, driverName), 'dra.sock');
}
export function registrationSocketPath(paths: Pick<PluginPaths, 'registryDir'>, driverName: string): string {
  return path.resolve(paths.registryDir, `${driverName}-reg.sock`);
}

export interface KubeletPluginOptions extends PluginPaths {
  readonly driverName: string;
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
  const draSocket = draSocketPath(options, options.driverName);
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
  const registrationSocket = registrationSocketPath(options, options.driverName);
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
        await draServer.stop();
        logger.info('kubelet plugin stopped; sockets removed');
      })();
      return stopping;
    },
  };
}
