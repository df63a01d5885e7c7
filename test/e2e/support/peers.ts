// Builds (or reuses) the gpu-dra-peers binary: real etcd, kube-apiserver, kube-scheduler,
// kube-controller-manager and the kubelet-dra harness, compiled from the Kubernetes Go modules
// by test/peers/build.sh. The binary is cached outside the repository, keyed by version and a
// hash of the Go sources, so only the first run pays for the compile.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_K8S_VERSION = 'v1.37.2';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Writes a timing or progress line for humans; the `[peers]` prefix makes it easy to grep. */
export function peersLog(message: string): void {
  process.stderr.write(`[peers] ${message}\n`);
}

/**
 * Returns the path of the gpu-dra-peers binary for `version`, building it with
 * test/peers/build.sh when no cached copy exists. A cold build takes tens of minutes on 2 cores.
 * The version can be overridden with GPU_DRA_K8S_VERSION.
 */
export function ensurePeersBinary(version?: string): Promise<string> {
  const v = version ?? process.env['GPU_DRA_K8S_VERSION'] ?? DEFAULT_K8S_VERSION;
  return buildOnce('test/peers/build.sh', v, `binary for ${v}`);
}

const builds = new Map<string, Promise<string>>();

/**
 * Runs a build script of ours (`test/<x>/build.sh ARG`: progress on stderr, shown as it comes,
 * the binary's path as the last stdout line) once per process and argument; a failed build is
 * retried by the next caller rather than remembered.
 */
export function buildOnce(script: string, arg: string, what: string): Promise<string> {
  const key = `${script} ${arg}`;
  let build = builds.get(key);
  if (build === undefined) {
    build = runBuild(script, arg, what);
    builds.set(key, build);
    build.catch(() => builds.delete(key));
  }
  return build;
}

function runBuild(script: string, arg: string, what: string): Promise<string> {
  const started = Date.now();
  return new Promise<string>((resolve, reject) => {
    const child = spawn('bash', [path.join(repoRoot, script), arg], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderrTail = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      process.stderr.write(chunk);
      stderrTail = (stderrTail + chunk).slice(-8000);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      if (code !== 0) {
        reject(
          new Error(
            `${script} ${arg} failed (code ${String(code)}, signal ${String(signal)}) after ${seconds}s:\n${stderrTail}`,
          ),
        );
        return;
      }
      const bin = stdout.trim().split('\n').pop()?.trim() ?? '';
      if (bin === '') {
        reject(new Error(`${script} ${arg} printed no binary path`));
        return;
      }
      peersLog(`${what} ready after ${seconds}s: ${bin}`);
      resolve(bin);
    });
  });
}
