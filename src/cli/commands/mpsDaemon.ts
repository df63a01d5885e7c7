/**
 * `gpu-dra mps-control-daemon`: runs in the MPS daemon pods the driver creates (sharing/mps.ts),
 * not by hand. Its flags; the action is loaded only when this command runs.
 */
import type { Command } from 'commander';

export interface MpsDaemonFlags {
  driverRoot: string;
  dir: string;
  visibleDevices: string;
  activeThreadPercentage?: string;
  pinnedMemLimit: string[];
  multiUser?: boolean;
  shmSize: string;
}

export function registerMpsDaemonCommand(program: Command): void {
  program
    .command('mps-control-daemon')
    .description("run one claim's MPS control daemon (started by the driver in its own pod)")
    .requiredOption('--driver-root <dir>', "the host driver's root (nvidia-cuda-mps-control)")
    .requiredOption('--dir <dir>', 'the daemon directory: pipe/, log/, shm/ and the ready file')
    .requiredOption('--visible-devices <uuids>', 'comma-separated GPU or MIG UUIDs the daemon serves')
    .option('--active-thread-percentage <n>', 'set_default_active_thread_percentage')
    .option(
      '--pinned-mem-limit <uuid=limit>',
      'set_default_device_pinned_mem_limit, e.g. GPU-…=1024M (repeatable)',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option('--multi-user', 'start the control daemon in multi-user mode (-M)')
    .option(
      '--shm-size <bytes>',
      'mount a tmpfs of this size as the shared /dev/shm; 0 = use the directory',
      '0',
    )
    .action(async (opts: MpsDaemonFlags) => {
      const { runMpsDaemon } = await import('../actions/mpsDaemon.js');
      await runMpsDaemon(opts);
    });
}
