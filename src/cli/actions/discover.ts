import { discoverInventory } from '../../nvml/discover.js';
import type { HostPaths } from '../../util/hostPaths.js';
import type { NodeInventory } from '../../nvml/types.js';
import { readHostPaths } from '../hostFlags.js';
import type { DiscoverFlags } from '../commands/discover.js';

const GIB = 1024 ** 3;

/** A fixed-width table of the node's GPUs and MIG devices, for people. */
export function renderInventoryTable(inventory: NodeInventory): string {
  const rows: string[][] = [['DEVICE', 'UUID', 'PRODUCT', 'ARCH', 'CC', 'MEMORY', 'PCI', 'MIG']];
  for (const gpu of inventory.gpus) {
    const mig = gpu.migMode
      ? `${gpu.migMode.current ? 'on' : 'off'}${gpu.migMode.pending === gpu.migMode.current ? '' : ' (pending ' + (gpu.migMode.pending ? 'on' : 'off') + ')'}`
      : 'n/a';
    rows.push([
      `gpu ${gpu.minor}`,
      gpu.uuid,
      gpu.productName,
      gpu.architecture ?? '-',
      gpu.cudaComputeCapability ?? '-',
      gpu.memoryBytes === undefined ? '-' : `${(gpu.memoryBytes / GIB).toFixed(2)} GiB`,
      gpu.pci.busId,
      mig,
    ]);
    for (const dev of gpu.migDevices) {
      rows.push([
        `  mig ${gpu.minor}/${dev.gpuInstanceId}/${dev.computeInstanceId}`,
        dev.uuid,
        dev.profile,
        '',
        '',
        `${(dev.memoryBytes / GIB).toFixed(2)} GiB`,
        `placement ${dev.placement.start}+${dev.placement.size}`,
        `${dev.multiprocessors} SMs`,
      ]);
    }
  }
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length))) ?? [];
  const lines = rows.map((r) =>
    r
      .map((cell, col) => cell.padEnd(widths[col] ?? 0))
      .join('  ')
      .trimEnd(),
  );
  const header = `driver ${inventory.driverVersion}, CUDA ${inventory.cudaDriverVersion}, ${inventory.gpus.length} GPU(s)`;
  const failures = inventory.failures.map((f) => `GPU index ${f.index} unavailable: ${f.error}`);
  return [header, '', ...lines, ...(failures.length ? ['', ...failures] : [])].join('\n') + '\n';
}

/** `gpu-dra discover`: the inventory as a table, or JSON; exit 1 when no GPU could be read. */
export function runDiscover(opts: DiscoverFlags): void {
  const hostPaths: HostPaths = readHostPaths(opts);
  const inventory = discoverInventory({ nvmlLib: opts.nvmlLib, hostPaths });
  process.stdout.write(
    opts.json ? JSON.stringify(inventory, null, 2) + '\n' : renderInventoryTable(inventory),
  );
  if (inventory.gpus.length === 0 && inventory.failures.length > 0) process.exitCode = 1;
}
