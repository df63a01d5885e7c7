import type { ChildProcess } from 'node:child_process';
import { httpGet, sleep } from './process.js';

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

/**
 * Waits until a `gpu-dra driver` child answers 200 on /readyz (registered with the kubelet and
 * its ResourceSlices published); fails at once, with its stderr, if it exits first.
 */
export async function driverReady(child: ChildProcess, port: number, stderr: () => string): Promise<void> {
  await eventually(
    'driver /readyz',
    async () => {
      if (child.exitCode !== null) throw new Error(`driver exited ${String(child.exitCode)}:\n${stderr()}`);
      return (await httpGet(`http://127.0.0.1:${String(port)}/readyz`)).status === 200 ? true : undefined;
    },
    60_000,
  );
}
