/**
 * A resolved apiserver connection for the lean client (./client.ts `staticTransport`): the
 * pod's in-cluster service account, which is what the DaemonSet's driver uses. Kubeconfig
 * files are read by ./kubeconfig.ts through @kubernetes/client-node instead, so they accept
 * everything kubectl does; this path stays free of that dependency to keep start-up fast.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../util/errors.js';

/** A resolved connection to one apiserver. */
export interface KubeConfig {
  /** Base URL, e.g. `https://10.96.0.1:443`. */
  readonly server: string;
  /** PEM CA bundle to verify the server with; absent = Node's default roots. */
  readonly ca?: Buffer;
  readonly insecureSkipTlsVerify?: boolean;
  /** SNI / name to verify the server certificate against, when it differs from the URL host. */
  readonly tlsServerName?: string;
  /** PEM client certificate and key (mutual TLS). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Bearer token. */
  readonly token?: string;
  /** Bearer token read from this file; re-read every `tokenRefreshMs` and on a 401. */
  readonly tokenFile?: string;
  readonly tokenRefreshMs?: number;
  /** Where this came from, for error messages: a file path or `in-cluster`. */
  readonly source: string;
}

/** A kubeconfig that cannot be used: `field` is the path inside it, e.g. `users[admin].user.exec`. */
export class KubeConfigError extends ConfigError {
  readonly source: string;

  constructor(source: string, field: string, message: string, options?: { cause?: unknown }) {
    super(field, `${message} (${source})`, options);
    this.source = source;
  }
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Bound service-account tokens rotate (kubelet refreshes them at 80% of their ~1 h life). */
export const DEFAULT_TOKEN_REFRESH_MS = 60_000;

/**
 * The pod's own service account: KUBERNETES_SERVICE_HOST/PORT and the token and CA mounted
 * under `dir`. The token is a file reference, so the client re-reads it as it rotates.
 */
export function loadInClusterConfig(
  opts: { env?: NodeJS.ProcessEnv; dir?: string; tokenRefreshMs?: number } = {},
): KubeConfig {
  const env = opts.env ?? process.env;
  const dir = opts.dir ?? SERVICE_ACCOUNT_DIR;
  const source = 'in-cluster';
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (!host || !port) {
    const field = host ? 'KUBERNETES_SERVICE_PORT' : 'KUBERNETES_SERVICE_HOST';
    throw new KubeConfigError(source, field, 'is not set: not running in a pod; pass --kubeconfig');
  }
  if (!/^\d+$/.test(port))
    throw new KubeConfigError(source, 'KUBERNETES_SERVICE_PORT', `is not a port: ${port}`);
  const tokenFile = path.join(dir, 'token');
  const caFile = path.join(dir, 'ca.crt');
  const read = (file: string, field: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new KubeConfigError(source, field, `cannot read ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  };
  read(tokenFile, 'token');
  const ca = read(caFile, 'ca.crt');
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return {
    server: `https://${hostPart}:${port}`,
    ca,
    tokenFile,
    tokenRefreshMs: opts.tokenRefreshMs ?? DEFAULT_TOKEN_REFRESH_MS,
    source,
  };
}
