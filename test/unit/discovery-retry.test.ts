import { describe, expect, it } from 'vitest';
import { discoverWithRetry } from '../../src/node/discoveryRetry.js';
import type { NodeInventory } from '../../src/nvml/types.js';
import { inventoryFixture } from '../support/inventoryFixture.js';

const fast = { initialDelayMs: 1, maxDelayMs: 5 };
const h100 = (): NodeInventory => inventoryFixture('h100');

describe('discovery retry', () => {
  it('retries a failing or GPU-less discovery until it yields GPUs', async () => {
    let calls = 0;
    const inventory = await discoverWithRetry(() => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('NVML not loaded'));
      if (calls === 2) return Promise.resolve({ ...h100(), gpus: [] });
      return Promise.resolve(h100());
    }, fast);
    expect(calls).toBe(3);
    expect(inventory.gpus).toHaveLength(1);
  });

  it('accepts a node without GPUs only when allowed', async () => {
    const empty = { ...h100(), gpus: [] };
    expect(await discoverWithRetry(() => Promise.resolve(empty), { ...fast, allowEmpty: true })).toEqual(
      empty,
    );
  });

  it('stops retrying when aborted', async () => {
    const abort = new AbortController();
    const pending = discoverWithRetry(() => Promise.reject(new Error('no driver')), {
      ...fast,
      signal: abort.signal,
    });
    abort.abort(new Error('shutting down'));
    await expect(pending).rejects.toThrow('shutting down');
  });
});
