/**
 * Runs `work` on every item with at most `limit` running at once, in order of the items; resolves
 * when all are done. `work` must not throw (callers catch per item, as per-claim errors are
 * answers, not failures of the call).
 */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
}
