/**
 * The apiserver client every command uses: JSON requests and newline-delimited JSON watches
 * over node:http(s), through ONE keep-alive agent per client, so steady-state calls reuse a TLS
 * connection instead of handshaking each time (@kubernetes/client-node 1.4's own API clients
 * do not; upstream kubernetes-client/javascript#2893).
 *
 * Where to connect and how to authenticate is a {@link KubeTransport}: the in-cluster service
 * account uses the lean {@link staticTransport} (no dependency, so the DaemonSet's driver
 * starts fast); a kubeconfig file goes through client-node's KubeConfig (./kubeconfig.ts), so
 * whatever kubectl accepts (exec and auth-provider plugins, proxy-url, ...) works here too.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { GpuDraError, errorMessage } from '../util/errors.js';
import { DEFAULT_TOKEN_REFRESH_MS, type KubeConfig } from './config.js';

/** A non-2xx answer from the apiserver; `reason` and `message` come from its Status body. */
export class KubeApiError extends GpuDraError {
  readonly statusCode: number;
  /** metav1.Status reason, e.g. `NotFound`, `Conflict`, `AlreadyExists`, `Forbidden`. */
  readonly reason: string | undefined;
  /** The Status message (or the raw body when it was not a Status). */
  readonly apiMessage: string;
  readonly method: string;
  readonly path: string;
  /** The parsed Status body, when there was one. */
  readonly status: unknown;

  constructor(args: {
    method: string;
    path: string;
    statusCode: number;
    reason?: string | undefined;
    message: string;
    status?: unknown;
  }) {
    super(
      'KUBE_API_ERROR',
      `${args.method} ${args.path}: ${String(args.statusCode)}${args.reason ? ` ${args.reason}` : ''}: ${args.message}`,
    );
    this.statusCode = args.statusCode;
    this.reason = args.reason;
    this.apiMessage = args.message;
    this.method = args.method;
    this.path = args.path;
    this.status = args.status;
  }
}

/** The apiserver could not be reached, or did not answer in time. */
export class KubeRequestError extends GpuDraError {
  constructor(method: string, path: string, message: string, options?: { cause?: unknown }) {
    super('KUBE_REQUEST_FAILED', `${method} ${path}: ${message}`, options);
  }
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  readonly query?: Query;
  /** Serialized as JSON unless it is already a string. */
  readonly body?: unknown;
  readonly contentType?: string;
  /** Overall deadline for this request (default: the client's `timeoutMs`). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface KubeClientOptions {
  /** Sockets per apiserver; a watch holds one for its lifetime (default 8). */
  readonly maxSockets?: number;
  /** Per-request deadline (default 30 s). Watches have none. */
  readonly timeoutMs?: number;
  readonly userAgent?: string;
}

export interface WatchHandle {
  /** Ends the watch; `onDone` is not called afterwards. */
  stop(): void;
}

export type WatchEventHandler = (type: string, object: unknown) => void;

/** What the publisher, the claim getter and `explain` talk to. */
export interface KubeClient {
  /** Where the connection came from, for messages: a kubeconfig path or `in-cluster`. */
  readonly source: string;
  /** Sends a request and parses the JSON answer; non-2xx throws {@link KubeApiError}. */
  request<T>(method: string, path: string, opts?: RequestOptions): Promise<T>;
  /**
   * Starts a watch (`?watch=true`) and streams its events. Resolves once the apiserver accepted
   * it (rejects with {@link KubeApiError} when it did not); then `onEvent` gets each event and
   * `onDone` is called once when the stream ends or fails, unless `stop()` ended it.
   */
  watch(
    path: string,
    query: Query,
    onEvent: WatchEventHandler,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
  /** Closes idle connections; in-flight requests and watches end with an error. */
  close(): void;
}

/** How a client reaches and authenticates to one apiserver. */
export interface KubeTransport {
  /** Base URL, e.g. `https://10.96.0.1:443` (a path prefix is kept). */
  readonly server: string;
  readonly source: string;
  /**
   * The agent (TLS settings, proxy) and the authentication headers for the next request. May
   * run a credential plugin, so it is asynchronous and may throw a {@link GpuDraError}.
   */
  connection(): Promise<{ agent: http.Agent; headers: Readonly<Record<string, string>> }>;
  /** A request got 401: drop cached credentials. True when retrying once may succeed. */
  unauthorized(): boolean;
  close(): void;
}

/** Reads a bearer token inline or from a file that is re-read as it rotates. */
class TokenSource {
  private cached: string | undefined;
  private readAt = 0;

  constructor(
    private readonly config: KubeConfig,
    private readonly refreshMs: number,
  ) {}

  get canRefresh(): boolean {
    return this.config.token === undefined && this.config.tokenFile !== undefined;
  }

  get(): string | undefined {
    if (this.config.token !== undefined) return this.config.token;
    const file = this.config.tokenFile;
    if (file === undefined) return undefined;
    if (this.cached === undefined || Date.now() - this.readAt >= this.refreshMs) {
      try {
        this.cached = fs.readFileSync(file, 'utf8').trim();
        this.readAt = Date.now();
      } catch (err) {
        // Keep using the last token if the file is briefly missing mid-rotation.
        if (this.cached === undefined) {
          throw new GpuDraError(
            'KUBE_TOKEN_UNREADABLE',
            `cannot read token file ${file}: ${errorMessage(err)}`,
            { cause: err },
          );
        }
      }
    }
    return this.cached;
  }

  invalidate(): void {
    this.readAt = 0;
  }
}

/**
 * The lean transport: a resolved {@link KubeConfig} (the in-cluster service account, or one a
 * test builds) with a bearer token or token file and client certificates. No dependency.
 */
export function staticTransport(config: KubeConfig, opts: KubeClientOptions = {}): KubeTransport {
  const tokens = new TokenSource(config, config.tokenRefreshMs ?? DEFAULT_TOKEN_REFRESH_MS);
  const agent = keepAliveAgent(config.server, opts, {
    ...(config.ca ? { ca: config.ca } : {}),
    ...(config.cert ? { cert: config.cert } : {}),
    ...(config.key ? { key: config.key } : {}),
    ...(config.tlsServerName ? { servername: config.tlsServerName } : {}),
    rejectUnauthorized: !config.insecureSkipTlsVerify,
  });
  return {
    server: config.server,
    source: config.source,
    connection() {
      const token = tokens.get();
      const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
      return Promise.resolve({ agent, headers });
    },
    unauthorized() {
      // A bound service-account token may have rotated under us: re-read it and retry once.
      tokens.invalidate();
      return tokens.canRefresh;
    },
    close() {
      agent.destroy();
    },
  };
}

/** One keep-alive agent for `server`, http or https by its scheme. */
export function keepAliveAgent(server: string, opts: KubeClientOptions, tls: https.AgentOptions): http.Agent {
  const common = { keepAlive: true, maxSockets: opts.maxSockets ?? 8, scheduling: 'lifo' as const };
  return new URL(server).protocol === 'https:'
    ? new https.Agent({ ...common, ...tls })
    : new http.Agent(common);
}

/** A client over the lean transport (see {@link staticTransport}). */
export function createKubeClient(config: KubeConfig, opts: KubeClientOptions = {}): KubeClient {
  return new HttpKubeClient(staticTransport(config, opts), opts);
}

/** A client as it is, or one built from a resolved config (tests and the e2e harness pass those). */
export function toKubeClient(kube: KubeClient | KubeConfig): KubeClient {
  return 'request' in kube ? kube : createKubeClient(kube);
}

interface RawResponse {
  readonly statusCode: number;
  readonly body: string;
}

function statusFields(body: string): { reason?: string; message?: string; status?: unknown } {
  try {
    const parsed = JSON.parse(body) as unknown;
    if (typeof parsed === 'object' && parsed !== null) {
      const s = parsed as { kind?: unknown; reason?: unknown; message?: unknown };
      return {
        status: parsed,
        ...(typeof s.reason === 'string' && s.reason ? { reason: s.reason } : {}),
        ...(typeof s.message === 'string' ? { message: s.message } : {}),
      };
    }
  } catch {
    // not JSON
  }
  return {};
}

/** The request/watch engine over any {@link KubeTransport}. */
export class HttpKubeClient implements KubeClient {
  private readonly base: URL;
  private readonly timeoutMs: number;
  private readonly userAgent: string;

  constructor(
    private readonly transport: KubeTransport,
    opts: KubeClientOptions = {},
  ) {
    this.base = new URL(transport.server);
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.userAgent = opts.userAgent ?? 'gpu-dra';
  }

  get source(): string {
    return this.transport.source;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    let res = await this.send(method, path, opts);
    if (res.statusCode === 401 && this.transport.unauthorized()) res = await this.send(method, path, opts);
    if (res.statusCode < 200 || res.statusCode >= 300) throw this.apiError(method, path, res);
    if (res.body === '') return undefined as T;
    try {
      return JSON.parse(res.body) as T;
    } catch (err) {
      throw new KubeRequestError(method, path, `answer is not JSON: ${errorMessage(err)}`, { cause: err });
    }
  }

  async watch(
    path: string,
    query: Query,
    onEvent: WatchEventHandler,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle> {
    const req = await this.start('GET', path, { ...query, watch: true }, undefined, undefined);
    return new Promise((resolve, reject) => {
      let stopped = false;
      let settled = false;
      let done = false;
      const finish = (err: unknown): void => {
        if (done || stopped) return;
        done = true;
        onDone(err);
      };
      const handle: WatchHandle = {
        stop: () => {
          if (stopped) return;
          stopped = true;
          req.destroy();
        },
      };
      req.on('error', (err) => {
        const wrapped = new KubeRequestError('GET', path, `watch failed: ${err.message}`, { cause: err });
        if (!settled) {
          settled = true;
          reject(wrapped);
        } else finish(wrapped);
      });
      req.on('response', (res) => {
        const statusCode = res.statusCode ?? 0;
        res.setEncoding('utf8');
        if (statusCode !== 200) {
          let body = '';
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => {
            settled = true;
            reject(this.apiError('GET', path, { statusCode, body }));
          });
          // The caller retries watches; let that retry use fresh credentials.
          if (statusCode === 401) this.transport.unauthorized();
          return;
        }
        settled = true;
        resolve(handle);
        let buffer = '';
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let nl: number;
          while (!stopped && (nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (line === '') continue;
            let event: { type?: unknown; object?: unknown };
            try {
              event = JSON.parse(line) as typeof event;
            } catch (err) {
              finish(
                new KubeRequestError('GET', path, `bad watch event: ${errorMessage(err)}`, { cause: err }),
              );
              req.destroy();
              return;
            }
            if (typeof event.type === 'string') onEvent(event.type, event.object);
          }
        });
        res.on('end', () => {
          finish(undefined);
        });
        res.on('error', (err) => {
          finish(err);
        });
        res.on('close', () => {
          finish(res.complete ? undefined : new KubeRequestError('GET', path, 'watch connection closed'));
        });
      });
      req.end();
    });
  }

  close(): void {
    this.transport.close();
  }

  private url(path: string, query: Query | undefined): string {
    let qs = '';
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined) params.append(k, String(v));
      const s = params.toString();
      if (s) qs = `?${s}`;
    }
    return `${path}${qs}`;
  }

  private async start(
    method: string,
    path: string,
    query: Query | undefined,
    body: string | undefined,
    contentType: string | undefined,
  ): Promise<http.ClientRequest> {
    let connection: Awaited<ReturnType<KubeTransport['connection']>>;
    try {
      connection = await this.transport.connection();
    } catch (err) {
      throw err instanceof GpuDraError
        ? err
        : new KubeRequestError(method, path, errorMessage(err), { cause: err });
    }
    const headers: http.OutgoingHttpHeaders = {
      ...connection.headers,
      Accept: 'application/json',
      'User-Agent': this.userAgent,
    };
    if (body !== undefined) {
      headers['Content-Type'] = contentType ?? 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const basePath = this.base.pathname === '/' ? '' : this.base.pathname.replace(/\/+$/, '');
    const transport = this.base.protocol === 'https:' ? https : http;
    return transport.request({
      protocol: this.base.protocol,
      hostname: this.base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: this.base.port || (this.base.protocol === 'https:' ? 443 : 80),
      method,
      path: basePath + this.url(path, query),
      headers,
      agent: connection.agent,
    });
  }

  private async send(method: string, path: string, opts: RequestOptions): Promise<RawResponse> {
    const body =
      opts.body === undefined
        ? undefined
        : typeof opts.body === 'string'
          ? opts.body
          : JSON.stringify(opts.body);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const req = await this.start(method, path, opts.query, body, opts.contentType);
    return new Promise((resolve, reject) => {
      let failed = false;
      const fail = (err: Error): void => {
        if (failed) return;
        failed = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        reject(
          err instanceof GpuDraError ? err : new KubeRequestError(method, path, err.message, { cause: err }),
        );
      };
      const timer = setTimeout(() => {
        req.destroy(new KubeRequestError(method, path, `no answer within ${String(timeoutMs)} ms`));
      }, timeoutMs);
      const onAbort = (): void => {
        req.destroy(new KubeRequestError(method, path, 'aborted', { cause: opts.signal?.reason }));
      };
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', fail);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', fail);
        res.on('end', () => {
          if (failed) return;
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
      });
      req.end(body);
    });
  }

  private apiError(method: string, path: string, res: RawResponse): KubeApiError {
    const { reason, message, status } = statusFields(res.body);
    return new KubeApiError({
      method,
      path,
      statusCode: res.statusCode,
      reason,
      message: message ?? (res.body.trim().slice(0, 500) || http.STATUS_CODES[res.statusCode] || 'error'),
      status,
    });
  }
}
