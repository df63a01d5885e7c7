/**
 * The MPS daemon pod's process: starts the host driver's `nvidia-cuda-mps-control` in the
 * foreground for exactly the claim's devices, applies the claim's limits through its command
 * interface, and reports readiness with a file the plugin polls (sharing/mps.ts). It stays the
 * container's main process so that the kubelet sees a crashed control daemon and restarts it,
 * and on SIGTERM (the Deployment deleted at unprepare) it asks the daemon to quit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, GpuDraError, errorMessage } from '../../util/errors.js';
import { underRoot } from '../../util/hostPaths.js';
import { findDriverTool, runTool } from '../../sharing/driverTools.js';
import { daemonDirs } from '../../sharing/mps.js';
import type { MpsDaemonFlags } from '../commands/mpsDaemon.js';

const UUID = /^(GPU|MIG)-[0-9a-fA-F-]+$/;
/** Library dirs where driver installs put libcuda (the MPS server loads it). */
const LIB_DIRS = [
  'usr/lib/x86_64-linux-gnu',
  'usr/lib/aarch64-linux-gnu',
  'usr/lib64',
  'usr/lib',
  'lib64',
  'lib',
];

export interface MpsDaemonConfig {
  readonly driverRoot: string;
  readonly dir: string;
  readonly visibleDevices: readonly string[];
  readonly activeThreadPercentage?: number;
  readonly pinnedMemLimits: readonly { readonly uuid: string; readonly limit: string }[];
  readonly multiUser: boolean;
  readonly shmSizeBytes: number;
}

/** Validates the flags (every bad one named at once). */
export function parseMpsDaemonFlags(flags: MpsDaemonFlags): MpsDaemonConfig {
  const problems: string[] = [];
  const visibleDevices = flags.visibleDevices.split(',').filter((s) => s !== '');
  if (visibleDevices.length === 0 || !visibleDevices.every((u) => UUID.test(u))) {
    problems.push('--visible-devices: must be comma-separated GPU-/MIG- UUIDs');
  }
  let activeThreadPercentage: number | undefined;
  if (flags.activeThreadPercentage !== undefined) {
    activeThreadPercentage = Number(flags.activeThreadPercentage);
    if (
      !Number.isInteger(activeThreadPercentage) ||
      activeThreadPercentage < 0 ||
      activeThreadPercentage > 100
    ) {
      problems.push('--active-thread-percentage: must be an integer 0..100');
    }
  }
  const pinnedMemLimits = flags.pinnedMemLimit.map((entry) => {
    const m = /^([^=]+)=(\d+M)$/.exec(entry);
    if (!m?.[1] || !m[2] || !visibleDevices.includes(m[1])) {
      problems.push(`--pinned-mem-limit: ${entry} must be <uuid of --visible-devices>=<MiB>M`);
      return { uuid: '', limit: '' };
    }
    return { uuid: m[1], limit: m[2] };
  });
  const shmSizeBytes = Number(flags.shmSize);
  if (!Number.isSafeInteger(shmSizeBytes) || shmSizeBytes < 0) problems.push('--shm-size: must be bytes ≥ 0');
  if (!path.isAbsolute(flags.dir)) problems.push('--dir: must be an absolute path');
  if (problems.length > 0) throw new ConfigError('flags', problems.join('; '));
  return {
    driverRoot: flags.driverRoot,
    dir: flags.dir,
    visibleDevices,
    ...(activeThreadPercentage === undefined ? {} : { activeThreadPercentage }),
    pinnedMemLimits,
    multiUser: flags.multiUser === true,
    shmSizeBytes,
  };
}

/** The control commands that apply the claim's settings, in order. Pure. */
export function mpsSettingCommands(config: MpsDaemonConfig): string[] {
  return [
    ...(config.activeThreadPercentage === undefined
      ? []
      : [`set_default_active_thread_percentage ${String(config.activeThreadPercentage)}`]),
    ...config.pinnedMemLimits.map((l) => `set_default_device_pinned_mem_limit ${l.uuid} ${l.limit}`),
  ];
}

/** The daemon's tool calls (mount, the MPS client) answer in well under this. */
const TOOL_TIMEOUT_MS = 15_000;

export async function runMpsDaemon(flags: MpsDaemonFlags): Promise<void> {
  const config = parseMpsDaemonFlags(flags);
  const dirs = daemonDirs(config.dir);
  const logFile = fs.createWriteStream(path.join(config.dir, 'daemon.log'), { flags: 'a' });
  const log = (msg: string) => {
    const line = `${new Date().toISOString()} ${msg}\n`;
    logFile.write(line);
    process.stdout.write(line);
  };
  for (const d of [dirs.pipe, dirs.log, dirs.shm]) fs.mkdirSync(d, { recursive: true });
  fs.rmSync(dirs.ready, { force: true });

  const control = findDriverTool(config.driverRoot, 'nvidia-cuda-mps-control');
  if (!control) {
    log(`no nvidia-cuda-mps-control under ${config.driverRoot}`);
    throw new GpuDraError('SHARING_TOOL_NOT_FOUND', `no nvidia-cuda-mps-control under ${config.driverRoot}`);
  }
  let mountedShm = false;
  if (config.shmSizeBytes > 0) {
    // The workload binds <dir>/shm as its /dev/shm; the server must use the same memory.
    await runTool(
      'mount',
      ['-t', 'tmpfs', '-o', `size=${String(config.shmSizeBytes)},mode=1777,nosuid,nodev`, 'tmpfs', dirs.shm],
      { timeoutMs: TOOL_TIMEOUT_MS },
    );
    await runTool('mount', ['--bind', dirs.shm, '/dev/shm'], { timeoutMs: TOOL_TIMEOUT_MS });
    mountedShm = true;
  }
  const libDirs = LIB_DIRS.map((d) => underRoot(config.driverRoot, d)).filter((d) =>
    fs.existsSync(path.join(d, 'libcuda.so.1')),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CUDA_VISIBLE_DEVICES: config.visibleDevices.join(','),
    CUDA_MPS_PIPE_DIRECTORY: dirs.pipe,
    CUDA_MPS_LOG_DIRECTORY: dirs.log,
    ...(libDirs.length > 0
      ? {
          LD_LIBRARY_PATH: [
            ...libDirs,
            ...(process.env['LD_LIBRARY_PATH'] ? [process.env['LD_LIBRARY_PATH']] : []),
          ].join(':'),
        }
      : {}),
  };

  log(`starting ${control} -f${config.multiUser ? ' -M' : ''} for ${config.visibleDevices.join(',')}`);
  const daemon: ChildProcess = spawn(control, ['-f', ...(config.multiUser ? ['-M'] : [])], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  daemon.stdout?.on('data', (b: Buffer) => logFile.write(b));
  daemon.stderr?.on('data', (b: Buffer) => logFile.write(b));
  const exited = new Promise<number>((resolve) => {
    daemon.on('exit', (code, signal) => {
      resolve(code ?? (signal ? 128 : 1));
    });
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: asking the control daemon to quit`);
    await runTool(control, [], { env, input: 'quit\n', timeoutMs: TOOL_TIMEOUT_MS }).catch((err: unknown) => {
      log(`quit failed: ${errorMessage(err)}`);
    });
    const code = await Promise.race([exited, sleep(10_000).then(() => -1)]);
    if (code === -1) daemon.kill('SIGKILL');
    if (mountedShm) {
      await runTool('umount', ['/dev/shm'], { timeoutMs: TOOL_TIMEOUT_MS }).catch(() => undefined);
      await runTool('umount', [dirs.shm], { timeoutMs: TOOL_TIMEOUT_MS }).catch((err: unknown) => {
        log(`umount failed: ${errorMessage(err)}`);
      });
    }
    // Only now: the plugin removes this directory (the pipes with it) and resets the GPU's
    // compute mode once `ready` is gone, so it must outlast the quit and the daemon's exit.
    fs.rmSync(dirs.ready, { force: true });
    log('stopped');
    logFile.end();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  // The control daemon answers once its pipe exists; a client call fails until then.
  let answered = false;
  for (let i = 0; i < 100 && !answered && daemon.exitCode === null; i++) {
    try {
      await runTool(control, [], { env, input: 'get_server_list\n', timeoutMs: TOOL_TIMEOUT_MS });
      answered = true;
    } catch {
      await sleep(100);
    }
  }
  if (!answered) {
    log('the control daemon did not answer');
    daemon.kill('SIGTERM');
    process.exitCode = 1;
    return;
  }
  for (const command of mpsSettingCommands(config)) {
    await runTool(control, [], { env, input: `${command}\n`, timeoutMs: TOOL_TIMEOUT_MS });
    log(`applied: ${command}`);
  }
  fs.writeFileSync(
    dirs.ready,
    `${JSON.stringify({ pid: process.pid, daemonPid: daemon.pid, at: new Date().toISOString() })}\n`,
  );
  log('ready');

  const code = await exited;
  if (!stopping) {
    fs.rmSync(dirs.ready, { force: true });
    log(`the control daemon exited (${String(code)}); exiting so the kubelet restarts the pod's container`);
    logFile.end();
    process.exit(1);
  }
}
