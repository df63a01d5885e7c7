// A simulated node with many H100s for the side-by-side benchmark: bursts of 64 concurrent
// claims need 64 distinct GPUs, since no driver hands one GPU to two exclusive claims. Built at
// bench time from the bundled h100-8x profile, so every GPU is the same board as there.
import crypto from 'node:crypto';

import { loadProfile, parseFakeNvmlConfig, type FakeNvmlConfig } from '../../../src/sim/fakeNvml.js';

/** GPUs per PCIe root complex; a real 8-GPU HGX board hangs 4 off each of 2 roots. */
const PER_ROOT = 8;

/** A deterministic GPU UUID (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) for GPU `i`. */
function uuidFor(i: number): string {
  const h = crypto
    .createHash('sha256')
    .update(`gpu-dra-bench-h100-${String(i)}`)
    .digest('hex');
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * `count` (≤ 64, the fake NVML's limit) copies of h100-8x's first GPU, with their own minor,
 * UUID, bus id and NUMA node: `count / 8` root complexes (`pci0000:00`, `pci0000:20`, …), each
 * with 8 GPUs on distinct buses below it.
 */
export async function h100Profile(count: number): Promise<FakeNvmlConfig> {
  const base = await loadProfile('h100-8x');
  const template = base.gpus[0];
  if (template === undefined) throw new Error('h100-8x has no GPU');
  const roots = Math.ceil(count / PER_ROOT);
  if (roots > 8) throw new Error(`at most 64 GPUs (asked for ${String(count)})`);
  const gpus = Array.from({ length: count }, (_, i) => {
    const root = Math.floor(i / PER_ROOT);
    const rootBus = root * 0x20;
    return {
      ...template,
      uuid: uuidFor(i),
      minor: i,
      numaNode: Math.floor((root * 2) / roots),
      pci: {
        ...template.pci,
        // Below the root's own bus, 3 apart (a switch per GPU on real boards), ≤ 0xf6.
        bus: rootBus + 1 + (i % PER_ROOT) * 3,
        device: 0,
        pcieRoot: `pci0000:${rootBus.toString(16).padStart(2, '0')}`,
      },
    };
  });
  return parseFakeNvmlConfig({
    ...base,
    description: `${String(count)} × ${template.name} over ${String(roots)} PCIe roots (generated from h100-8x for the side-by-side benchmark), MIG capable, MIG off.`,
    gpus,
  });
}
