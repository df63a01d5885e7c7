import path from 'node:path';
import { isDnsSubdomain } from '../../util/kubeNames.js';
import { runChecks } from '../../doctor/checks.js';
import { gatherFacts, type DoctorOptions } from '../../doctor/gather.js';
import { doctorExitCode, doctorReport, renderDoctorText } from '../../doctor/render.js';
import { DRIVER_FLAGS, flagName, type DriverFlagName, type FlagSpec } from '../../node/flags.js';
import { MIG_PARTITIONING_MODES, type MigPartitioning } from '../../resourceslice/partitions.js';
import { ConfigError } from '../../util/errors.js';
import { readHostPaths } from '../hostFlags.js';
import type { DoctorFlags } from '../commands/doctor.js';

/** A driver flag's value, else its table default; '' (an env twin set empty) counts as unset. */
function flag(opts: DoctorFlags, name: DriverFlagName & keyof DoctorFlags): string | undefined {
  const v = opts[name];
  if (typeof v === 'string' && v !== '') return v;
  const spec: FlagSpec = DRIVER_FLAGS[name];
  return spec.default;
}

/** Checks the flags the way the driver does, naming each bad one (exit 2). */
export function doctorOptions(opts: DoctorFlags): DoctorOptions {
  const problems: string[] = [];
  const driverName = flag(opts, 'driverName') ?? '';
  if (!isDnsSubdomain(driverName))
    problems.push(`${flagName('driverName')}: must be a lowercase DNS subdomain`);
  const hostPaths = readHostPaths({
    devRoot: flag(opts, 'devRoot'),
    procRoot: flag(opts, 'procRoot'),
    sysRoot: flag(opts, 'sysRoot'),
    driverRoot: flag(opts, 'driverRoot'),
  });
  // The DaemonSet mounts the host's / as the driver root (HOST_DRIVER_ROOT=/): its runtime
  // configs are there.
  const hostDriverRoot = flag(opts, 'hostDriverRoot');
  const hostRoot = opts.hostRoot || (hostDriverRoot === '/' ? hostPaths.driverRoot : '/');
  const kubeletPluginsDir = flag(opts, 'kubeletPluginsDir') ?? '';
  const cdiRoot = flag(opts, 'cdiRoot') ?? '';
  const absolute: [string, string][] = [
    [flagName('kubeletPluginsDir'), kubeletPluginsDir],
    [flagName('cdiRoot'), cdiRoot],
    [flagName('devRoot'), hostPaths.devRoot],
    [flagName('procRoot'), hostPaths.procRoot],
    [flagName('sysRoot'), hostPaths.sysRoot],
    [flagName('driverRoot'), hostPaths.driverRoot],
    ['--host-root', hostRoot],
    ['--containerd-config', opts.containerdConfig],
    ['--crio-config', opts.crioConfig],
  ];
  for (const [name, p] of absolute)
    if (!path.isAbsolute(p)) problems.push(`${name}: must be an absolute path`);
  const mig = flag(opts, 'migPartitioning') ?? 'static';
  if (!(MIG_PARTITIONING_MODES as readonly string[]).includes(mig))
    problems.push(`${flagName('migPartitioning')}: must be static or dynamic`);
  if (problems.length > 0) {
    const n = problems.length;
    throw new ConfigError(
      'flags',
      `${String(n)} invalid option${n === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`,
    );
  }
  return {
    driverName,
    nodeName: flag(opts, 'nodeName'),
    kubeconfig: flag(opts, 'kubeconfig'),
    kubeletPluginsDir,
    cdiRoot,
    nvmlLib: flag(opts, 'nvmlLib'),
    hostPaths,
    migPartitioning: mig as MigPartitioning,
    hostRoot,
    containerdConfig: opts.containerdConfig,
    crioConfig: opts.crioConfig,
  };
}

/** `gpu-dra doctor`: gather, check, print; the exit status says whether an error was found. */
export async function runDoctor(opts: DoctorFlags): Promise<void> {
  const report = doctorReport(runChecks(await gatherFacts(doctorOptions(opts))));
  process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : renderDoctorText(report));
  process.exitCode = doctorExitCode(report);
}
