/**
 * `gpu-dra doctor`: checks this node for what breaks GPU claims and says, per finding, what is
 * wrong, the evidence and the fix. It takes the driver's flags (src/node/flags.ts, with their
 * environment twins, so inside the plugin pod it needs none) plus where the host's container
 * runtime config is. Exit status: 0 no error (warnings allowed), 1 errors found, 2 bad usage.
 */
import type { Command } from 'commander';
import { addDriverFlag } from '../hostFlags.js';
import type { DriverFlags } from '../../node/flags.js';

export const DOCTOR_DRIVER_FLAGS = [
  'kubeconfig',
  'driverName',
  'kubeletPluginsDir',
  'cdiRoot',
  'nvmlLib',
  'devRoot',
  'procRoot',
  'sysRoot',
  'driverRoot',
  'hostDriverRoot',
  'migPartitioning',
] as const;

export type DoctorFlags = Pick<DriverFlags, (typeof DOCTOR_DRIVER_FLAGS)[number] | 'nodeName'> & {
  json?: boolean;
  hostRoot?: string;
  containerdConfig: string;
  crioConfig: string;
};

export function registerDoctorCommand(program: Command): void {
  const cmd = program
    .command('doctor')
    .description(
      "check this node: NVML and kernel module, device nodes, MIG, CDI specs, the runtime's CDI config, kubelet registration, published slices, taints",
    )
    .option('--json', 'print the findings as JSON')
    .option(
      '--host-root <dir>',
      "the host's / as seen here, for the runtime configs (env HOST_ROOT; default: the driver root when --host-driver-root is /, as in the DaemonSet, else /)",
      process.env['HOST_ROOT'],
    )
    .option('--containerd-config <path>', "containerd's config on the host", '/etc/containerd/config.toml')
    .option(
      '--crio-config <path>',
      "CRI-O's config on the host (its drop-ins: <path>.d/*.conf)",
      '/etc/crio/crio.conf',
    );
  // Optional here, unlike for the driver: without it the slices are not compared.
  addDriverFlag(cmd, 'nodeName', process.env, 'the published ResourceSlices are not compared');
  for (const name of DOCTOR_DRIVER_FLAGS) addDriverFlag(cmd, name);
  cmd.action(async (opts: DoctorFlags) => {
    const { runDoctor } = await import('../actions/doctor.js');
    await runDoctor(opts);
  });
}
