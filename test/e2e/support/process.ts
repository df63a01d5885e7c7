// Child-process helpers shared by the cluster and node fixtures: every peer writes stdout and
// stderr to its own log file, and all peers are killed if the test process exits.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) {
      child.kill('SIGKILL');
    }
  });
}

export interface PeerProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** Set once the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;
}

export interface SpawnPeerOptions {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** When true, stdout is piped to the caller (and not written to the log file). */
  pipeStdout?: boolean;
}

export function spawnPeer(opts: SpawnPeerOptions): PeerProcess {
  installExitHook();
  const fd = fs.openSync(opts.logFile, 'a');
  const child = spawn(opts.command, opts.args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', opts.pipeStdout === true ? 'pipe' : fd, fd],
  });
  fs.closeSync(fd);
  live.add(child);
  let resolveExited: () => void = () => undefined;
  const exited = new Promise<void>((resolve) => {
    resolveExited = resolve;
  });
  const peer: PeerProcess = { name: opts.name, logFile: opts.logFile, child, exit: undefined, exited };
  child.on('error', (err) => {
    fs.appendFileSync(opts.logFile, `\n[fixture] failed to start ${opts.command}: ${err.message}\n`);
    peer.exit ??= { code: -1, signal: null };
    live.delete(child);
    resolveExited();
  });
  child.on('exit', (code, signal) => {
    peer.exit = { code, signal };
    live.delete(child);
    resolveExited();
  });
  return peer;
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. */
export async function stopPeer(peer: PeerProcess, graceMs = 10_000): Promise<void> {
  if (peer.exit !== undefined) return;
  peer.child.kill('SIGTERM');
  const timer = setTimeout(() => peer.child.kill('SIGKILL'), graceMs);
  await peer.exited;
  clearTimeout(timer);
}

export function tailFile(file: string, lines: number): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
  const all = text.split('\n');
  return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
}

export function describeExit(peer: PeerProcess): string {
  if (peer.exit === undefined) return 'running';
  return `exited with code ${String(peer.exit.code)}, signal ${String(peer.exit.signal)}`;
}

export function peerFailure(peer: PeerProcess, what: string, lines = 80): Error {
  return new Error(
    `${peer.name} ${what} (${describeExit(peer)}); last ${lines} lines of ${peer.logFile}:\n${tailFile(peer.logFile, lines)}`,
  );
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('no port'));
        return;
      }
      const port = address.port;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

export interface HttpResult {
  status: number;
  body: string;
}

/** GET with an optional bearer token. TLS verification is off: this only probes loopback health. */
export function httpGet(url: string, token?: string, timeoutMs = 5000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (token !== undefined) headers['Authorization'] = `Bearer ${token}`;
    const onResponse = (res: http.IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
      res.on('error', reject);
    };
    const req =
      u.protocol === 'https:'
        ? https.get(u, { headers, rejectUnauthorized: false, timeout: timeoutMs }, onResponse)
        : http.get(u, { headers, timeout: timeoutMs }, onResponse);
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs}ms`)));
    req.on('error', reject);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` until it returns true. Fails early, with the peer's log tail, when the peer exits.
 */
export async function waitUntilReady(
  peer: PeerProcess,
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    if (peer.exit !== undefined) throw peerFailure(peer, `exited before ${what}`);
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      throw peerFailure(
        peer,
        `not ${what} after ${timeoutMs}ms${lastError === '' ? '' : ` (last error: ${lastError})`}`,
      );
    }
    await sleep(250);
  }
}
