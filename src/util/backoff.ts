/** Capped exponential backoff with jitter, and an abortable sleep, for every retry loop. */

export interface BackoffOptions {
  /** First delay; default 500 ms. */
  readonly initialDelayMs?: number;
  /** Cap; default 30 s. */
  readonly maxDelayMs?: number;
  /** Default 2. */
  readonly factor?: number;
}

/** Delay before retry number `attempt` (0-based), capped, with ±20 % jitter from `random`. */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initial = opts.initialDelayMs ?? 500;
  const max = opts.maxDelayMs ?? 30_000;
  const factor = opts.factor ?? 2;
  const base = Math.min(max, initial * factor ** Math.min(attempt, 60));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
