/**
 * The host driver's own command-line tools (`nvidia-smi`, `nvidia-cuda-mps-control`), found and
 * run from the driver root. Settings NVML's C API offers only to root on the host (compute
 * mode, the time slice) go through `nvidia-smi`, as NVIDIA's driver does, so what runs on a
 * node is the same command an admin would type.
 *
 * The tools are run directly, not in a chroot: with `LD_PRELOAD` of the driver's NVML they need
 * nothing else from the driver root, and a driver root without a shell (GKE's COS) works too.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { GpuDraError, errorMessage } from '../util/errors.js';
import { underRoot } from '../util/hostPaths.js';

/** Where driver installs put their binaries, searched in this order (NVIDIA's driver uses the same). */
const BINARY_DIRS = ['/opt/bin', '/usr/bin', '/usr/sbin', '/bin', '/sbin'];

export type DriverToolName = 'nvidia-smi' | 'nvidia-cuda-mps-control';

/** The tool's path under `driverRoot`, or undefined when the driver root has none. */
export function findDriverTool(driverRoot: string, name: DriverToolName): string | undefined {
  for (const dir of BINARY_DIRS) {
    const candidate = underRoot(driverRoot, dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next directory
    }
  }
  return undefined;
}

export interface ToolOutput {
  readonly stdout: string;
  readonly stderr: string;
}

export interface DriverToolsOptions {
  readonly driverRoot: string;
  /** Finds the driver's libnvidia-ml.so.1, preloaded so the tool talks to the host driver. */
  readonly findNvmlLib?: () => string | undefined;
  /** Per call; `nvidia-smi` can block on a busy GPU. Default 30 s. */
  readonly timeoutMs?: number;
}

/** Runs `nvidia-smi` calls; one per call, never through a shell. */
export interface NvidiaSmi {
  run(args: readonly string[]): Promise<ToolOutput>;
}

/** The last `max` characters of a tool's output, for an error message. */
function tail(text: string, max = 400): string {
  const t = text.trim();
  return t.length <= max ? t : `…${t.slice(-max)}`;
}

/** A tool run that failed: how (exit code, signal, timeout) and the tail of what it printed. */
export class ToolRunError extends Error {
  constructor(
    readonly command: string,
    readonly how: string,
    readonly output: string,
    options?: { cause?: unknown },
  ) {
    super(`\`${command}\` ${how}: ${output}`, options);
  }
}

/**
 * Runs `file` (never through a shell) with `input` on its stdin; rejects with ToolRunError.
 * Both the plugin's nvidia-smi calls and the MPS daemon's control commands go through here.
 */
export function runTool(
  file: string,
  args: readonly string[],
  opts: { readonly env?: NodeJS.ProcessEnv; readonly input?: string; readonly timeoutMs?: number } = {},
): Promise<ToolOutput> {
  const command = [file.split('/').at(-1) ?? file, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const how = err.killed ? 'timed out' : `exited with ${String(err.code ?? err.signal)}`;
        reject(new ToolRunError(command, how, tail(stderr || stdout || err.message), { cause: err }));
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export function createNvidiaSmi(opts: DriverToolsOptions): NvidiaSmi {
  let path: string | undefined;
  let env: NodeJS.ProcessEnv | undefined;
  return {
    async run(args) {
      path ??= findDriverTool(opts.driverRoot, 'nvidia-smi');
      if (!path) {
        throw new GpuDraError(
          'SHARING_TOOL_NOT_FOUND',
          `cannot run \`nvidia-smi ${args.join(' ')}\`: no nvidia-smi under the driver root ${opts.driverRoot}`,
        );
      }
      if (!env) {
        const nvml = opts.findNvmlLib?.();
        env = { ...process.env, ...(nvml ? { LD_PRELOAD: nvml } : {}) };
      }
      try {
        return await runTool(path, args, { env, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
      } catch (err) {
        throw new GpuDraError('SHARING_APPLY_FAILED', errorMessage(err), { cause: err });
      }
    },
  };
}
