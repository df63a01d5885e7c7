/**
 * `gpu-dra driver`: the DaemonSet entry point's flags, each with an environment twin. The
 * action (src/cli/actions/driver.ts) loads the driver only when this command runs.
 */
import type { Command } from 'commander';
import { hostPathOptions } from '../hostFlags.js';
import { DRIVER_DEFAULTS } from '../../node/defaults.js';
import type { DriverFlags } from '../../node/config.js';

export function registerDriverCommand(program: Command): Command {
  const env = process.env;
  const cmd = program
    .command('driver')
    .description(
      'run the kubelet DRA plugin for this node (registration + DRA gRPC sockets, ResourceSlices, CDI specs)',
    )
    .option('--node-name <name>', 'this node (env NODE_NAME)', env['NODE_NAME'])
    .option(
      '--kubeconfig <file>',
      'kubeconfig; in-cluster config when unset (env KUBECONFIG)',
      env['KUBECONFIG'],
    )
    .option(
      '--driver-name <name>',
      `DRA driver name (env DRIVER_NAME, default ${DRIVER_DEFAULTS.driverName})`,
      env['DRIVER_NAME'],
    )
    .option(
      '--kubelet-registry-dir <dir>',
      `kubelet plugin-watcher dir (env KUBELET_REGISTRY_DIR, default ${DRIVER_DEFAULTS.kubeletRegistryDir})`,
      env['KUBELET_REGISTRY_DIR'],
    )
    .option(
      '--kubelet-plugins-dir <dir>',
      `kubelet plugins dir; ours is <dir>/<driver> (env KUBELET_PLUGINS_DIR, default ${DRIVER_DEFAULTS.kubeletPluginsDir})`,
      env['KUBELET_PLUGINS_DIR'],
    )
    .option(
      '--cdi-root <dir>',
      `where per-claim CDI specs go (env CDI_ROOT, default ${DRIVER_DEFAULTS.cdiRoot})`,
      env['CDI_ROOT'],
    )
    .option('--nvml-lib <path>', 'path to libnvidia-ml.so.1 (env NVML_LIB; default: search)', env['NVML_LIB'])
    .option(
      '--http-listen <host:port>',
      'serve /healthz /readyz /metrics here (env HTTP_LISTEN; default off)',
      env['HTTP_LISTEN'],
    )
    .option(
      '--cleanup-on-exit',
      "on exit delete this node's ResourceSlices, CDI specs and checkpoint; uninstall/demo only (env CLEANUP_ON_EXIT)",
      env['CLEANUP_ON_EXIT'] === 'true' || env['CLEANUP_ON_EXIT'] === '1',
    )
    .option(
      '--device-check-interval <duration>',
      `re-discover GPUs this often and republish changes (MIG layout, lost GPUs); 0 = off (env DEVICE_CHECK_INTERVAL, default ${String(DRIVER_DEFAULTS.deviceCheckIntervalMs / 1000)}s)`,
      env['DEVICE_CHECK_INTERVAL'],
    )
    .option(
      '--device-events <true|false>',
      'watch NVML events: XID errors taint devices, MIG changes trigger a re-discovery (env DEVICE_EVENTS, default true)',
      env['DEVICE_EVENTS'],
    )
    .option(
      '--log-level <level>',
      'trace|debug|info|warn|error (env LOG_LEVEL, default info)',
      env['LOG_LEVEL'],
    );
  hostPathOptions(cmd).option(
    '--host-driver-root <dir>',
    'the driver root as the host sees it, for CDI mount sources (env HOST_DRIVER_ROOT; default: --driver-root)',
    env['HOST_DRIVER_ROOT'],
  );
  cmd.action(async (opts: DriverFlags) => {
    const { runDriverCommand } = await import('../actions/driver.js');
    await runDriverCommand(opts);
  });
  return cmd;
}
