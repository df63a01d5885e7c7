/**
 * Where the apiserver is and how to authenticate to it: a kubeconfig file (the `--kubeconfig`
 * flag) or the pod's in-cluster service account. Only what the driver needs is supported:
 * bearer tokens (inline or from a file, re-read as bound tokens rotate) and client
 * certificates. exec and auth-provider plugins are refused with a typed error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../util/errors.js';

/** A resolved connection to one apiserver (what the kubeconfig's current context points at). */
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

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Reader {
  constructor(
    readonly source: string,
    readonly baseDir: string,
  ) {}

  fail(field: string, message: string, cause?: unknown): never {
    throw new KubeConfigError(this.source, field, message, cause === undefined ? undefined : { cause });
  }

  obj(v: unknown, field: string): Obj {
    if (!isObj(v)) this.fail(field, 'must be a mapping');
    return v;
  }

  optString(o: Obj, key: string, field: string): string | undefined {
    const v = o[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') this.fail(`${field}.${key}`, 'must be a string');
    return v;
  }

  optBool(o: Obj, key: string, field: string): boolean | undefined {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.fail(`${field}.${key}`, 'must be true or false');
    return v;
  }

  /** Finds `{ name, <kind> }` in the named list (clusters, users, contexts). */
  named(
    doc: Obj,
    list: string,
    kind: string,
    name: string,
    referencedBy: string,
  ): { entry: Obj; field: string } {
    const items = doc[list];
    if (items !== undefined && items !== null && !Array.isArray(items)) this.fail(list, 'must be a list');
    const found = ((items as unknown[] | undefined) ?? []).find((i) => isObj(i) && i['name'] === name);
    if (!found) this.fail(referencedBy, `refers to ${list.slice(0, -1)} "${name}", which is not in ${list}`);
    const field = `${list}[${name}].${kind}`;
    return { entry: this.obj((found as Obj)[kind], field), field };
  }

  /** Inline base64 `<key>-data`, else the file named by `<key>` (relative to the kubeconfig). */
  pem(o: Obj, key: string, field: string): Buffer | undefined {
    const data = this.optString(o, `${key}-data`, field);
    if (data !== undefined) {
      const buf = Buffer.from(data, 'base64');
      if (buf.length === 0) this.fail(`${field}.${key}-data`, 'is not valid base64');
      return buf;
    }
    const file = this.optString(o, key, field);
    if (file === undefined) return undefined;
    return this.readFile(file, `${field}.${key}`);
  }

  resolve(file: string): string {
    return path.resolve(this.baseDir, file);
  }

  readFile(file: string, field: string): Buffer {
    const p = this.resolve(file);
    try {
      return fs.readFileSync(p);
    } catch (err) {
      this.fail(field, `cannot read ${p}: ${(err as Error).message}`, err);
    }
  }
}

/**
 * Kubeconfig text to a document. JSON (which is YAML too) is parsed as JSON; the YAML parser
 * is loaded only for other text, so a driver started from a JSON kubeconfig or in-cluster
 * never evaluates it.
 */
async function parseDocument(text: string, r: Reader): Promise<unknown> {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON after all (flow-style YAML): the YAML parser decides, with its own message.
    }
  }
  const { parse } = await import('yaml');
  try {
    return parse(text) as unknown;
  } catch (err) {
    return r.fail('<document>', `is not valid YAML: ${(err as Error).message}`, err);
  }
}

/**
 * Parses kubeconfig text (YAML or JSON) and resolves its current context. Relative file paths
 * are taken relative to `baseDir` (the kubeconfig's directory, as kubectl does).
 */
export async function parseKubeConfig(
  text: string,
  opts: { source?: string; baseDir?: string; context?: string } = {},
): Promise<KubeConfig> {
  const r: Reader = new Reader(opts.source ?? 'kubeconfig', opts.baseDir ?? process.cwd());
  const doc = r.obj(await parseDocument(text, r), '<document>');
  const contextName = opts.context ?? r.optString(doc, 'current-context', '');
  if (contextName === undefined) r.fail('current-context', 'is not set');
  const { entry: context, field: contextField } = r.named(
    doc,
    'contexts',
    'context',
    contextName,
    opts.context === undefined ? 'current-context' : 'context',
  );
  const clusterName = r.optString(context, 'cluster', contextField);
  if (clusterName === undefined) r.fail(`${contextField}.cluster`, 'is not set');
  const { entry: cluster, field: clusterField } = r.named(
    doc,
    'clusters',
    'cluster',
    clusterName,
    `${contextField}.cluster`,
  );
  const server = r.optString(cluster, 'server', clusterField);
  if (server === undefined) r.fail(`${clusterField}.server`, 'is not set');
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    r.fail(`${clusterField}.server`, `is not a URL: ${server}`, err);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    r.fail(`${clusterField}.server`, `must be an https:// or http:// URL, not ${server}`);
  }
  if (r.optString(cluster, 'proxy-url', clusterField) !== undefined) {
    r.fail(`${clusterField}.proxy-url`, 'is not supported by gpu-dra');
  }
  const ca = r.pem(cluster, 'certificate-authority', clusterField);
  const insecureSkipTlsVerify = r.optBool(cluster, 'insecure-skip-tls-verify', clusterField);
  const tlsServerName = r.optString(cluster, 'tls-server-name', clusterField);

  const userName = r.optString(context, 'user', contextField);
  let user: Obj = {};
  let userField = `${contextField}.user`;
  if (userName !== undefined) {
    ({ entry: user, field: userField } = r.named(doc, 'users', 'user', userName, `${contextField}.user`));
  }
  for (const plugin of ['exec', 'auth-provider']) {
    if (user[plugin] !== undefined && user[plugin] !== null) {
      r.fail(
        `${userField}.${plugin}`,
        `${plugin} credential plugins are not supported by gpu-dra; use a token, tokenFile or client certificate`,
      );
    }
  }
  if (user['username'] !== undefined || user['password'] !== undefined) {
    r.fail(`${userField}.username`, 'basic authentication is not supported by gpu-dra');
  }
  const token = r.optString(user, 'token', userField);
  const tokenFileRel = r.optString(user, 'tokenFile', userField);
  const tokenFile = tokenFileRel === undefined ? undefined : r.resolve(tokenFileRel);
  if (token === undefined && tokenFile !== undefined) r.readFile(tokenFile, `${userField}.tokenFile`);
  const cert = r.pem(user, 'client-certificate', userField);
  const key = r.pem(user, 'client-key', userField);
  if ((cert === undefined) !== (key === undefined)) {
    const missing = cert === undefined ? 'client-certificate' : 'client-key';
    r.fail(`${userField}.${missing}`, 'is required when the other half of the client key pair is set');
  }
  return {
    server: server.replace(/\/+$/, ''),
    source: r.source,
    ...(ca ? { ca } : {}),
    ...(insecureSkipTlsVerify ? { insecureSkipTlsVerify } : {}),
    ...(tlsServerName ? { tlsServerName } : {}),
    ...(cert && key ? { cert, key } : {}),
    ...(token !== undefined ? { token } : tokenFile !== undefined ? { tokenFile } : {}),
  };
}

/** Reads and resolves a kubeconfig file (the `--kubeconfig` flag). */
export async function loadKubeConfigFile(file: string, opts: { context?: string } = {}): Promise<KubeConfig> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KubeConfigError(file, 'kubeconfig', `cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseKubeConfig(text, { source: file, baseDir: path.dirname(path.resolve(file)), ...opts });
}

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
