/**
 * Kubeconfig files (`--kubeconfig`), read the way kubectl reads them: a context with a static
 * token or a client certificate takes the lean client; any other gets its credentials and
 * connection from @kubernetes/client-node's KubeConfig, so exec and auth-provider credential
 * plugins, proxy-url, basic auth and `as` (impersonation) work.
 * We parse and check the document first only to name the broken field in errors and to fill
 * in what client-node 1.4 leaves out of kubectl's format (see {@link forClientNode}).
 *
 * Loaded with a dynamic import by whoever needs it: client-node costs ~0.9 MB of code to
 * evaluate, which the in-cluster driver (./config.ts) never pays.
 */
import fs from 'node:fs';
import http from 'node:http';
import type https from 'node:https';
import path from 'node:path';
import type { KubeConfig as ClientNodeKubeConfig } from '@kubernetes/client-node/dist/config.js';
import { GpuDraError, errorMessage } from '../util/errors.js';
import {
  createKubeClient,
  HttpKubeClient,
  keepAliveAgent,
  type KubeClient,
  type KubeClientOptions,
  type KubeTransport,
} from './client.js';
import { KubeConfigError, type KubeConfig } from './config.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks the parts of a kubeconfig document we rely on, naming the field that is wrong. */
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

  /** PEM material from `<key>-data` (must be base64) or the file `<key>` names (must be readable). */
  pem(o: Obj, key: string, field: string): Buffer | undefined {
    const data = this.optString(o, `${key}-data`, field);
    if (data !== undefined) {
      const pem = Buffer.from(data, 'base64');
      if (pem.length === 0) this.fail(`${field}.${key}-data`, 'is not valid base64');
      return pem;
    }
    const file = this.optString(o, key, field);
    if (file === undefined) return undefined;
    const p = this.resolve(file);
    try {
      return fs.readFileSync(p);
    } catch (err) {
      return this.fail(`${field}.${key}`, `cannot read ${p}: ${errorMessage(err)}`, err);
    }
  }

  resolve(file: string): string {
    return path.resolve(this.baseDir, file);
  }

  readable(file: string, field: string): void {
    const p = this.resolve(file);
    try {
      fs.accessSync(p, fs.constants.R_OK);
    } catch (err) {
      this.fail(field, `cannot read ${p}: ${errorMessage(err)}`, err);
    }
  }
}

/**
 * Kubeconfig text to a document. JSON (which is YAML too) is parsed as JSON; the YAML parser
 * is loaded only for other text, so a driver started from a JSON kubeconfig never evaluates it.
 */
async function parseDocument(text: string, r: Reader): Promise<unknown> {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON after all (flow-style YAML): the YAML parser decides, with its own message.
    }
  }
  // `yaml` is CommonJS: inside the esbuild bundle its dynamic import has only a default export
  // (the module object), while plain Node also offers named ones. `default` works in both.
  const { default: yaml } = await import('yaml');
  try {
    return yaml.parse(text) as unknown;
  } catch (err) {
    return r.fail('<document>', `is not valid YAML: ${errorMessage(err)}`, err);
  }
}

/** The current (or given) context's names, after checking what they refer to. */
interface Resolved {
  readonly context: string;
  readonly clusterField: string;
  readonly userField: string;
  readonly cluster: Obj;
  readonly user: Obj;
  /** The TLS material, read once while checking. */
  readonly ca: Buffer | undefined;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
}

function check(doc: Obj, r: Reader, context: string | undefined): Resolved {
  const contextName = context ?? r.optString(doc, 'current-context', '');
  if (contextName === undefined) r.fail('current-context', 'is not set');
  const { entry: ctx, field: contextField } = r.named(
    doc,
    'contexts',
    'context',
    contextName,
    context === undefined ? 'current-context' : 'context',
  );
  const clusterName = r.optString(ctx, 'cluster', contextField);
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
  const url = URL.canParse(server) ? new URL(server) : undefined;
  if (!url) r.fail(`${clusterField}.server`, `is not a URL: ${server}`);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    r.fail(`${clusterField}.server`, `must be an https:// or http:// URL, not ${server}`);
  }
  const proxy = r.optString(cluster, 'proxy-url', clusterField);
  if (proxy !== undefined && !/^(https?|socks5h?|socks4a?):\/\/./.test(proxy)) {
    r.fail(`${clusterField}.proxy-url`, `must be an http://, https:// or socks5:// URL, not ${proxy}`);
  }
  const ca = r.pem(cluster, 'certificate-authority', clusterField);

  const userName = r.optString(ctx, 'user', contextField);
  let user: Obj = {};
  let userField = `${contextField}.user`;
  if (userName !== undefined) {
    ({ entry: user, field: userField } = r.named(doc, 'users', 'user', userName, `${contextField}.user`));
  }
  if (user['exec'] !== undefined && user['exec'] !== null) {
    const exec = r.obj(user['exec'], `${userField}.exec`);
    if (r.optString(exec, 'command', `${userField}.exec`) === undefined) {
      r.fail(`${userField}.exec.command`, 'is not set');
    }
  }
  if (user['auth-provider'] !== undefined && user['auth-provider'] !== null) {
    const provider = r.obj(user['auth-provider'], `${userField}.auth-provider`);
    if (r.optString(provider, 'name', `${userField}.auth-provider`) === undefined) {
      r.fail(`${userField}.auth-provider.name`, 'is not set');
    }
  }
  const tokenFile = r.optString(user, 'tokenFile', userField);
  if (tokenFile !== undefined) r.readable(tokenFile, `${userField}.tokenFile`);
  const cert = r.pem(user, 'client-certificate', userField);
  const key = r.pem(user, 'client-key', userField);
  if ((cert === undefined) !== (key === undefined)) {
    const missing = cert ? 'client-key' : 'client-certificate';
    r.fail(`${userField}.${missing}`, 'is required when the other half of the client key pair is set');
  }
  return { context: contextName, clusterField, userField, cluster, user, ca, cert, key };
}

/** Cluster and user fields the lean client (./client.ts) handles exactly as kubectl does. */
const LEAN_CLUSTER_KEYS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'extensions',
]);
const LEAN_USER_KEYS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'extensions',
]);

/**
 * The connection as the lean client takes it, when the context uses nothing else (a static
 * token or token file, a client certificate): what the e2e harness, the bench and most
 * admin-written kubeconfigs are. Loading client-node costs ~100 ms of start-up; a context
 * with a plugin, a proxy or anything we do not know goes to it instead.
 */
function leanConfig(resolved: Resolved, r: Reader): KubeConfig | undefined {
  const { cluster, user, ca, cert, key } = resolved;
  const set = (o: Obj): string[] =>
    Object.keys(o).filter((k) => o[k] !== undefined && o[k] !== null && o[k] !== '');
  if (!set(cluster).every((k) => LEAN_CLUSTER_KEYS.has(k))) return undefined;
  if (!set(user).every((k) => LEAN_USER_KEYS.has(k))) return undefined;
  const str = (o: Obj, key: string): string | undefined => (typeof o[key] === 'string' ? o[key] : undefined);
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  const tlsServerName = str(cluster, 'tls-server-name');
  return {
    server: str(cluster, 'server') ?? '',
    source: r.source,
    ...(ca ? { ca } : {}),
    ...(cluster['insecure-skip-tls-verify'] === true ? { insecureSkipTlsVerify: true } : {}),
    ...(tlsServerName ? { tlsServerName } : {}),
    ...(cert && key ? { cert, key } : {}),
    ...(token ? { token } : tokenFile ? { tokenFile: r.resolve(tokenFile) } : {}),
  };
}

/**
 * The document as client-node 1.4 should see it, where it departs from kubectl:
 * - `tokenFile` (kubectl's name) is ignored by client-node: hand it over as its file-token
 *   auth provider, which re-reads the file every minute as kubectl does;
 * - an exec `command` containing a path separator is relative to the kubeconfig's directory;
 * - a plain http:// server is refused unless insecure-skip-tls-verify is set, which means
 *   nothing without TLS: set it, so `kubectl proxy`-style servers work.
 */
function forClientNode(doc: Obj, r: Reader): Obj {
  const users = Array.isArray(doc['users'])
    ? doc['users'].map((item: unknown) => {
        if (!isObj(item) || !isObj(item['user'])) return item;
        const user = { ...item['user'] };
        const tokenFile = user['tokenFile'];
        if (
          typeof tokenFile === 'string' &&
          tokenFile !== '' &&
          !user['token'] &&
          !user['exec'] &&
          !user['auth-provider']
        ) {
          user['auth-provider'] = { name: 'tokenFile', config: { tokenFile: r.resolve(tokenFile) } };
        }
        const exec = user['exec'];
        if (isObj(exec) && typeof exec['command'] === 'string' && exec['command'].includes(path.sep)) {
          user['exec'] = { ...exec, command: r.resolve(exec['command']) };
        }
        return { ...item, user };
      })
    : doc['users'];
  const clusters = Array.isArray(doc['clusters'])
    ? doc['clusters'].map((item: unknown) => {
        if (!isObj(item) || !isObj(item['cluster'])) return item;
        const c = item['cluster'];
        const plainHttp = typeof c['server'] === 'string' && c['server'].startsWith('http:');
        return plainHttp && !c['proxy-url']
          ? { ...item, cluster: { ...c, 'insecure-skip-tls-verify': true } }
          : item;
      })
    : doc['clusters'];
  return { ...doc, users, clusters };
}

/** Text of one TLS option (PEM string, Buffer, or a list of them), to notice when it changes. */
function material(v: unknown): string {
  if (Array.isArray(v)) return v.map(material).join('\n');
  return Buffer.isBuffer(v) || typeof v === 'string' ? v.toString() : (JSON.stringify(v) ?? '');
}

type Connection = Awaited<ReturnType<KubeTransport['connection']>>;

/**
 * How long one set of credentials is reused before client-node is asked again. client-node
 * re-runs an exec plugin on every call when its ExecCredential has no expirationTimestamp
 * (`aws eks get-token` takes about a second), and kubectl reuses such a token until a 401;
 * a minute is also how often kubectl re-reads a token file. A 401 drops them at once.
 */
const CREDENTIAL_REUSE_MS = 60_000;

/**
 * Authenticates requests through client-node: `applyToHTTPSOptions` runs exec and
 * auth-provider plugins, reads token files and builds the proxy agent for proxy-url. Without a
 * proxy we use our own keep-alive agent with the TLS material it returns, so requests share
 * connections.
 */
class KubeconfigTransport implements KubeTransport {
  readonly server: string;
  private readonly proxied: boolean;
  private agent: http.Agent | undefined;
  private agentKey = '';
  /** Agents replaced after the credentials changed; closed with the client. */
  private readonly retired: http.Agent[] = [];
  /** The credentials in use (or being fetched, so concurrent requests run a plugin once). */
  private current: { readonly at: number; readonly connection: Promise<Connection> } | undefined;

  constructor(
    private readonly kc: ClientNodeKubeConfig,
    readonly source: string,
    private readonly opts: KubeClientOptions,
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) {
      throw new KubeConfigError(
        source,
        'current-context',
        `context "${kc.getCurrentContext()}" has no cluster`,
      );
    }
    this.server = cluster.server;
    this.proxied = Boolean(cluster.proxyUrl);
  }

  connection(): Promise<Connection> {
    if (!this.current || Date.now() - this.current.at >= CREDENTIAL_REUSE_MS) {
      const connection = this.fetch();
      const current = { at: Date.now(), connection };
      this.current = current;
      // A failure is not kept: the next request asks again.
      connection.catch(() => {
        if (this.current === current) this.current = undefined;
      });
    }
    return this.current.connection;
  }

  private async fetch(): Promise<Connection> {
    const o: https.RequestOptions = { headers: {} };
    try {
      await this.kc.applyToHTTPSOptions(o);
    } catch (err) {
      const user = this.kc.getCurrentUser()?.name ?? '<none>';
      throw new GpuDraError(
        'KUBE_CREDENTIALS_FAILED',
        `cannot get credentials for user "${user}" from ${this.source}: ${errorMessage(err).trim()}`,
        { cause: err },
      );
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.headers ?? {})) {
      // Token files often end in a newline, which is not allowed in a header (kubectl trims).
      if (typeof v === 'string') headers[k] = v.trim();
    }
    if (o.auth) headers['Authorization'] = `Basic ${Buffer.from(o.auth).toString('base64')}`;
    const tls = {
      ...(o.ca ? { ca: o.ca } : {}),
      ...(o.cert ? { cert: o.cert } : {}),
      ...(o.key ? { key: o.key } : {}),
      ...(o.servername ? { servername: o.servername } : {}),
      ...(o.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
    };
    // Exec plugins may hand out a new client certificate: then connections must be new too.
    const key = [o.ca, o.cert, o.key, o.servername, o.rejectUnauthorized].map(material).join('\0');
    if (!this.agent || key !== this.agentKey) {
      if (this.agent) this.retired.push(this.agent);
      this.agentKey = key;
      this.agent =
        this.proxied && o.agent instanceof http.Agent ? o.agent : keepAliveAgent(this.server, this.opts, tls);
    }
    return { agent: this.agent, headers };
  }

  unauthorized(): boolean {
    // As kubectl does on a 401: get credentials anew (re-run the plugin, re-read the file)
    // and retry once. client-node may still hand back a cached exec token that has not
    // reached its expirationTimestamp; then the retry gets the same 401.
    this.current = undefined;
    return true;
  }

  close(): void {
    for (const a of this.retired.splice(0)) a.destroy();
    this.agent?.destroy();
  }
}

/** A client for an already loaded client-node KubeConfig (its current context). */
export function kubeClientFromKubeConfig(
  kc: ClientNodeKubeConfig,
  opts: KubeClientOptions & { source?: string } = {},
): KubeClient {
  return new HttpKubeClient(new KubeconfigTransport(kc, opts.source ?? 'kubeconfig', opts), opts);
}

/**
 * Reads a kubeconfig file (YAML or JSON, as kubectl writes it) and returns a client for its
 * current context, or `context` when given. Relative paths are relative to the file's
 * directory, as in kubectl. Throws {@link KubeConfigError} naming the field that is wrong.
 */
export async function loadKubeconfigClient(
  file: string,
  opts: KubeClientOptions & { context?: string } = {},
): Promise<KubeClient> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KubeConfigError(file, 'kubeconfig', `cannot read ${file}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const r = new Reader(file, path.dirname(path.resolve(file)));
  const doc = r.obj(await parseDocument(text, r), '<document>');
  const resolved = check(doc, r, opts.context);
  const lean = leanConfig(resolved, r);
  if (lean) return createKubeClient(lean, opts);
  const { KubeConfig } = await import('@kubernetes/client-node/dist/config.js');
  const kc = new KubeConfig();
  try {
    // JSON is YAML: client-node reads back exactly the document we checked.
    kc.loadFromString(JSON.stringify(forClientNode(doc, r)));
  } catch (err) {
    // client-node names the entry itself, e.g. `users[2].name is missing`.
    r.fail('<document>', errorMessage(err), err);
  }
  kc.makePathsAbsolute(r.baseDir);
  kc.setCurrentContext(resolved.context);
  return kubeClientFromKubeConfig(kc, { ...opts, source: file });
}
