/**
 * Shares of one GPU (DRA consumable capacity, KEP-5075): what `--consumable-shares` adds to a
 * full GPU's ResourceSlice entry. Pure; the model (model.ts) applies it.
 *
 * - `disabled`: nothing; a GPU goes to one claim at a time.
 * - `memory`: `allowMultipleAllocations: true`, and the `memory` capacity gets a request policy
 *   whose default is the whole GPU: a claim that does not ask for memory still gets the GPU to
 *   itself, one that asks (`capacity.requests.memory: 20Gi`) gets that much, rounded up to MiB.
 * - `unlimited`: the same, but the default is 0, so claims that do not ask share without limit.
 * - `N`: as `unlimited`, plus a `shares` capacity of N (default 1 per claim): at most N claims.
 *
 * The policy's upper bound is the memory rounded down to MiB, so every value the scheduler may
 * record is a whole number of MiB that fits the GPU (NVIDIA's driver does the same).
 */
import type { CapacityRequestPolicy, DeviceCapacity } from '../api/resource.js';
import { formatQuantity } from './values.js';

export type ConsumableShares = 'disabled' | 'memory' | 'unlimited' | number;

/** The most shares `N` may be: well past any useful split of one GPU. */
export const MAX_CONSUMABLE_SHARES = 1024;

export const SHARES_CAPACITY = 'shares';

const MIB = 1024 * 1024;

/** `disabled`, `memory`, `unlimited` or a whole number 1..MAX; undefined for anything else. */
export function parseConsumableShares(text: string): ConsumableShares | undefined {
  if (text === 'disabled' || text === 'memory' || text === 'unlimited') return text;
  if (!/^[1-9]\d{0,3}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_CONSUMABLE_SHARES ? n : undefined;
}

/**
 * The request policy of a GPU's `memory` capacity, or undefined when the mode adds none or the
 * GPU is too small for a policy the apiserver accepts (it needs `min + step <= value`).
 */
export function memoryRequestPolicy(
  mode: ConsumableShares,
  memoryBytes: number,
): CapacityRequestPolicy | undefined {
  if (mode === 'disabled') return undefined;
  const maxMiB = Math.floor(memoryBytes / MIB);
  const max = formatQuantity(maxMiB * MIB);
  const step = formatQuantity(MIB);
  if (mode === 'memory') {
    if (maxMiB < 2) return undefined;
    return { default: max, validRange: { min: step, max, step } };
  }
  if (maxMiB < 1) return undefined;
  return { default: '0', validRange: { min: '0', max, step } };
}

/** The `shares` capacity of mode `N`; undefined for the other modes. */
export function sharesCapacity(mode: ConsumableShares): DeviceCapacity | undefined {
  if (typeof mode !== 'number') return undefined;
  const n = formatQuantity(mode);
  // With N = 1 a step of 1 would pass the capacity (min + step > value): the apiserver refuses it.
  const validRange = mode > 1 ? { min: '1', max: n, step: '1' } : { min: '1', max: n };
  return { value: n, requestPolicy: { default: '1', validRange } };
}
