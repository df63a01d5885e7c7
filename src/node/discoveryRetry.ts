/**
 * Discovery retry: never publish an empty pool just because NVML (or the driver installer) was
 * not ready yet. A provider that throws, or returns no GPUs, is retried with capped exponential
 * backoff until it yields devices (or, with `allowEmpty`, an inventory without failures).
 */
import type { NodeInventory } from '../nvml/types.js';
import { errorMessage } from '../util/errors.js';
import { backoffDelay, sleep, type BackoffOptions } from '../util/backoff.js';
import type { Logger } from '../util/log.js';

export type InventoryProvider = () => Promise<NodeInventory>;

export interface DiscoveryRetryOptions extends BackoffOptions {
  /**
   * Accept an inventory with no GPUs (a node that really has none). Default false: zero GPUs is
   * treated as "not ready". Even with `allowEmpty`, an inventory whose only GPUs failed is retried.
   */
  readonly allowEmpty?: boolean;
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
}

/** Why an inventory is not fit to publish yet, or undefined when it is. */
export function inventoryNotReadyReason(inv: NodeInventory, allowEmpty = false): string | undefined {
  if (inv.gpus.length > 0) return undefined;
  if (inv.failures.length > 0) {
    return `no readable GPU (${inv.failures.length} failed: ${inv.failures.map((f) => f.error).join('; ')})`;
  }
  return allowEmpty ? undefined : 'no GPUs discovered';
}

/** Calls `provider` until it yields a publishable inventory; rejects only when `signal` aborts. */
export async function discoverWithRetry(
  provider: InventoryProvider,
  opts: DiscoveryRetryOptions = {},
): Promise<NodeInventory> {
  for (let attempt = 0; ; attempt++) {
    let reason: string;
    try {
      const inv = await provider();
      const notReady = inventoryNotReadyReason(inv, opts.allowEmpty);
      if (notReady === undefined) return inv;
      reason = notReady;
    } catch (err) {
      reason = errorMessage(err);
    }
    const delay = backoffDelay(attempt, opts);
    opts.logger?.warn(
      { attempt: attempt + 1, retryInMs: delay, reason },
      'GPU discovery not ready; not publishing yet',
    );
    await sleep(delay, opts.signal);
  }
}
