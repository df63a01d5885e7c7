import { sleep } from './process.js';

/**
 * Polls `fn` until it returns a value other than `undefined`. Errors thrown by `fn` are retried;
 * the last one is included in the timeout error.
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${String(timeoutMs)}ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}
