/**
 * The plugin's local admin channel: HTTP on a Unix socket, `<plugins dir>/<driver>/admin.sock`,
 * mode 0600 in the plugin's 0700 directory, so only root on the node (or `kubectl exec` into
 * the plugin pod) reaches it. No network port and no RBAC: clearing a taint changes what the
 * node publishes, which must not be open to anything that can reach a TCP port.
 *
 * - `GET /v1/status`: the kubelet's registration answer, the published taints, the sockets.
 *   `gpu-dra doctor` and `gpu-dra taints list` read it.
 * - `POST /v1/taints/clear` `{"devices": ["gpu-0"]}` or `{"all": true}`: removes XID taints
 *   (after the admin reset the GPU) and republishes. `gpu-dra taints clear` sends it.
 *
 * The client half is here too, with no dependency beyond node:http, so the CLI commands load
 * nothing of the driver.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { TaintMap } from '../resourceslice/model.js';
import { GpuDraError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export const ADMIN_SOCKET_NAME = 'admin.sock';
/** Bumped when a field changes meaning; readers check it before trusting the rest. */
export const ADMIN_API_VERSION = 1;
const MAX_BODY_BYTES = 64 * 1024;

/** `<plugins dir>/<driver>/admin.sock`: beside dra.sock, in the directory only root can enter. */
export function adminSocketPath(pluginsDir: string, driverName: string): string {
  return path.join(path.resolve(pluginsDir, driverName), ADMIN_SOCKET_NAME);
}

export interface AdminStatus {
  readonly apiVersion: number;
  readonly driverName: string;
  readonly nodeName: string;
  readonly pid: number;
  /** What the kubelet last said through NotifyRegistrationStatus; `registered` absent = not yet. */
  readonly registration: { readonly registered?: boolean; readonly error?: string; readonly at?: string };
  readonly sockets: { readonly dra: string; readonly registration: string };
  /** Whether the ResourceSlices were written at least once; null when this plugin publishes none. */
  readonly slicesPublished: boolean | null;
  /** Every taint the node publishes, by device. */
  readonly taints: TaintMap;
  /** The XID taints among them: the ones `POST /v1/taints/clear` removes. */
  readonly xidTaints: TaintMap;
}

export interface ClearTaintsResult {
  /** Devices that lost an XID taint. */
  readonly cleared: readonly string[];
}

export interface AdminHandlers {
  status(): AdminStatus;
  clearXidTaints(devices: readonly string[] | 'all'): string[];
}

export interface AdminServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** The body of a clear request, checked: the devices (or all), or what is wrong with it. */
export function parseClearRequest(
  body: unknown,
): { readonly devices: readonly string[] | 'all' } | { readonly error: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return { error: 'the body must be a JSON object: {"devices": [...]} or {"all": true}' };
  const { devices, all } = body as { devices?: unknown; all?: unknown };
  if (all === true && devices === undefined) return { devices: 'all' };
  if (all !== undefined && all !== false) return { error: '"all" must be true, and alone' };
  if (!Array.isArray(devices) || devices.length === 0 || !devices.every((d) => typeof d === 'string'))
    return { error: '"devices" must be a non-empty list of device names' };
  return { devices };
}

function refuseNonSocket(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  // Never replace what is not a socket: the path may be mistyped onto a real file.
  if (!st.isSocket())
    throw new GpuDraError(
      'SOCKET_PATH_OCCUPIED',
      `${socketPath} exists and is not a socket; refusing to remove it`,
    );
}

export async function startAdminSocket(
  socketPath: string,
  handlers: AdminHandlers,
  logger: Logger,
): Promise<AdminServer> {
  const reply = (res: http.ServerResponse, code: number, body: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(body)}\n`);
  };
  const server = http.createServer((req, res) => {
    const url = req.url?.split('?')[0];
    if (url === '/v1/status' && req.method === 'GET') {
      reply(res, 200, handlers.status());
      return;
    }
    if (url !== '/v1/taints/clear') {
      reply(res, 404, { error: `no such endpoint: ${req.method ?? ''} ${url ?? ''}` });
      return;
    }
    if (req.method !== 'POST') {
      reply(res, 405, { error: 'use POST' });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reply(res, 413, { error: 'body too large' });
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        reply(res, 400, { error: `invalid JSON: ${errorMessage(err)}` });
        return;
      }
      const request = parseClearRequest(body);
      if ('error' in request) {
        reply(res, 400, { error: request.error });
        return;
      }
      const cleared = handlers.clearXidTaints(request.devices);
      logger.info({ requested: request.devices, cleared }, 'admin socket: clear XID taints');
      reply(res, 200, { cleared } satisfies ClearTaintsResult);
    });
  });
  // sockaddr_un holds 107 bytes and a NUL; refuse rather than bind a truncated path.
  if (Buffer.byteLength(socketPath) > 107)
    throw new GpuDraError(
      'SOCKET_PATH_TOO_LONG',
      `socket path ${socketPath} is ${String(Buffer.byteLength(socketPath))} bytes; Unix sockets allow 107`,
    );
  const dir = path.dirname(socketPath);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  refuseNonSocket(socketPath);
  // Bound under a private name, then renamed into place: the rename replaces a stale socket (or
  // a predecessor's during a rolling update) atomically, and closing unlinks only the private
  // name (libuv unlinks the bound path on close), never a successor's socket at the public one.
  const bound = path.join(dir, `.admin-${String(process.pid)}.sock`);
  fs.rmSync(bound, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(bound, () => {
      server.off('error', reject);
      resolve();
    });
  });
  fs.chmodSync(bound, 0o600);
  fs.renameSync(bound, socketPath);
  const { ino } = fs.lstatSync(socketPath);
  logger.info({ socket: socketPath }, 'admin socket serving /v1/status and /v1/taints/clear');
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close() {
      closing ??= new Promise<void>((resolve) => {
        // Unlink the public name only while it is still ours.
        try {
          if (fs.lstatSync(socketPath).ino === ino) fs.rmSync(socketPath, { force: true });
        } catch {
          // Already gone.
        }
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      });
      return closing;
    },
  };
}

/** A failed request to the plugin's admin socket; `reachable` false when nothing listens there. */
export class AdminSocketError extends GpuDraError {
  constructor(
    message: string,
    readonly reachable: boolean,
    options?: { cause?: unknown },
  ) {
    super('ADMIN_SOCKET_FAILED', message, options);
  }
}

/** One JSON request to the admin socket; rejects with AdminSocketError. */
export function adminRequest<T>(
  socketPath: string,
  method: 'GET' | 'POST',
  urlPath: string,
  body?: unknown,
  timeoutMs = 5_000,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        timeout: timeoutMs,
        headers: payload ? { 'content-type': 'application/json' } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            reject(
              new AdminSocketError(`${socketPath} answered ${String(res.statusCode)} with no JSON`, true),
            );
            return;
          }
          if (res.statusCode !== 200) {
            const error = (parsed as { error?: unknown } | null)?.error;
            reject(
              new AdminSocketError(
                `the plugin refused ${method} ${urlPath}: ${typeof error === 'string' ? error : text.trim()}`,
                true,
              ),
            );
            return;
          }
          resolve(parsed as T);
        });
      },
    );
    req.on('timeout', () => {
      req.destroy(new Error(`no answer within ${String(timeoutMs)} ms`));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const absent = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      reject(
        new AdminSocketError(
          absent
            ? `no gpu-dra plugin listens on ${socketPath} (${err.code ?? ''}): is the plugin running on this node, with the same --kubelet-plugins-dir and --driver-name?`
            : `cannot talk to the plugin on ${socketPath}: ${errorMessage(err)}`,
          !absent,
          { cause: err },
        ),
      );
    });
    req.end(payload);
  });
}

export function fetchAdminStatus(socketPath: string, timeoutMs?: number): Promise<AdminStatus> {
  return adminRequest<AdminStatus>(socketPath, 'GET', '/v1/status', undefined, timeoutMs);
}

export function clearXidTaints(
  socketPath: string,
  devices: readonly string[] | 'all',
): Promise<ClearTaintsResult> {
  return adminRequest<ClearTaintsResult>(
    socketPath,
    'POST',
    '/v1/taints/clear',
    devices === 'all' ? { all: true } : { devices },
  );
}
