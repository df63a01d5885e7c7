/**
 * A grpc-js server on a Unix socket, the way the kubelet expects plugin sockets: the parent
 * directory exists, a stale socket file is removed before binding (grpc-js does not), the
 * socket is chmod 0600, and it is unlinked on stop so the kubelet sees the plugin go away.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { GpuDraError } from '../util/errors.js';

/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface ServiceBinding {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

export interface UnixServerOptions {
  readonly socketPath: string;
  readonly services: readonly ServiceBinding[];
  /** Mode for the socket's directory when this call creates it, or always when `forceDirMode`. */
  readonly dirMode?: number;
  readonly forceDirMode?: boolean;
}

export class UnixServer {
  private stopped = false;

  constructor(
    readonly socketPath: string,
    private readonly server: grpc.Server,
  ) {}

  /** Graceful shutdown up to `graceMs`, then forced; the socket file is removed either way. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // Unlink first: the kubelet's watcher reacts to the file going away, and nothing new can dial.
    fs.rmSync(this.socketPath, { force: true });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

function removeStaleSocket(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new GpuDraError(
      'SOCKET_PATH_OCCUPIED',
      `${socketPath} exists and is not a socket; refusing to remove it`,
    );
  }
  fs.rmSync(socketPath, { force: true });
}

export async function startUnixServer(options: UnixServerOptions): Promise<UnixServer> {
  const socketPath = path.resolve(options.socketPath);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new GpuDraError(
      'SOCKET_PATH_TOO_LONG',
      `socket path ${socketPath} is ${Buffer.byteLength(socketPath)} bytes; Unix sockets allow ${MAX_SOCKET_PATH_BYTES}`,
    );
  }
  const dir = path.dirname(socketPath);
  const dirMode = options.dirMode ?? 0o700;
  const existed = fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true, mode: dirMode });
  if (!existed || options.forceDirMode) fs.chmodSync(dir, dirMode);
  removeStaleSocket(socketPath);

  const server = new grpc.Server({
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    // Channelz keeps per-call statistics for a debugging service we never serve; it was a
    // measurable share of each call's CPU.
    'grpc.enable_channelz': 0,
  });
  for (const service of options.services) server.addService(service.definition, service.implementation);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err)
        reject(
          new GpuDraError('SOCKET_BIND_FAILED', `cannot listen on ${socketPath}: ${err.message}`, {
            cause: err,
          }),
        );
      else resolve();
    });
  });
  fs.chmodSync(socketPath, 0o600);
  return new UnixServer(socketPath, server);
}
