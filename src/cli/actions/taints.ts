import { adminSocketPath, clearXidTaints, fetchAdminStatus } from '../../node/adminSocket.js';
import { DRIVER_FLAGS } from '../../node/flags.js';
import { naturalCompare } from '../../util/naturalCompare.js';
import { ConfigError } from '../../util/errors.js';
import type { TaintsClearFlags, TaintsFlags, TaintsListFlags } from '../commands/taints.js';

function socketOf(opts: TaintsFlags): string {
  return adminSocketPath(
    opts.kubeletPluginsDir || DRIVER_FLAGS.kubeletPluginsDir.default,
    opts.driverName || DRIVER_FLAGS.driverName.default,
  );
}

/** `gpu-dra taints list`: one line per taint, `<device>  <key>=<value>:<effect>`. */
export async function runTaintsList(opts: TaintsListFlags): Promise<void> {
  const status = await fetchAdminStatus(socketOf(opts));
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify({ taints: status.taints, xidTaints: status.xidTaints }, null, 2)}\n`,
    );
    return;
  }
  const lines = Object.keys(status.taints)
    .sort(naturalCompare)
    .flatMap((d) =>
      (status.taints[d] ?? []).map(
        (t) => `${d}  ${t.key}${t.value === undefined ? '' : `=${t.value}`}:${t.effect}`,
      ),
    );
  process.stdout.write(lines.length === 0 ? 'no device tainted\n' : `${lines.join('\n')}\n`);
}

/** `gpu-dra taints clear`: exit 0 when a taint was cleared, 1 when none of the named devices had one. */
export async function runTaintsClear(opts: TaintsClearFlags): Promise<void> {
  const devices = opts.device ?? [];
  const all = opts.all === true;
  if (all === devices.length > 0)
    throw new ConfigError('--device', 'name the device(s) to clear with --device, or pass --all (not both)');
  const { cleared } = await clearXidTaints(socketOf(opts), all ? 'all' : devices);
  if (cleared.length === 0) {
    process.stderr.write(
      `gpu-dra: no XID taint on ${all ? 'any device' : devices.join(', ')}; health taints (gpu-lost, gpu-unavailable) clear by themselves once the GPU answers\n`,
    );
    process.exitCode = 1;
    return;
  }
  process.stdout.write(
    `cleared XID taints of ${cleared.join(', ')}; the plugin republishes its ResourceSlices\n`,
  );
}
