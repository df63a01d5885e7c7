/**
 * src/nvml/migInstances.ts against the fake NVML: MIG devices made and destroyed on demand,
 * checked through the control itself, through discovery and through the fake's own state.
 */
import { afterEach, describe, expect, it } from 'vitest';

import { discoverInventory } from '../../src/nvml/discover.js';
import { MigCreateError, NvmlError } from '../../src/nvml/errors.js';
import { openMigInstanceControl, type MigInstanceControl } from '../../src/nvml/migInstances.js';
import type { SimulatedNode } from '../../src/sim/fakeHost.js';
import {
  loadProfile,
  readFakeMigInstances,
  setFakeMigInstanceBusy,
  type FakeNvmlConfig,
} from '../../src/sim/fakeNvml.js';
import { fakeNvmlLib, withSimulatedNode } from '../support/sim.js';

/** GPU-instance profile ids (H100 80GB / A100 40GB). */
const G = { g1: 19, g2: 14, g3: 9, g7: 0 } as const;
const P = (start: number, size: number) => ({ start, size });
const MIG_UUID = /^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const open: MigInstanceControl[] = [];

function control(): MigInstanceControl {
  const c = openMigInstanceControl({ nvmlLib: fakeNvmlLib() });
  open.push(c);
  return c;
}

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

async function withMigNode<T>(
  fn: (node: SimulatedNode, h100: string, a100: string) => Promise<T>,
): Promise<T> {
  return withSimulatedNode('mig-dynamic', (node) => {
    const [h100, a100] = node.config.gpus.map((g) => g.uuid);
    if (h100 === undefined || a100 === undefined) throw new Error('mig-dynamic has two GPUs');
    return fn(node, h100, a100);
  });
}

/** mig-dynamic with injected errors on the A100 (GPU 1). */
async function withA100Errors<T>(
  errors: Record<string, string>,
  fn: (node: SimulatedNode, a100: string) => Promise<T>,
) {
  const cfg = await loadProfile('mig-dynamic');
  const custom: FakeNvmlConfig = { ...cfg, gpus: cfg.gpus.map((g, i) => (i === 1 ? { ...g, errors } : g)) };
  return withSimulatedNode(custom, (node) => fn(node, node.config.gpus[1]?.uuid ?? ''));
}

describe('MIG instance control', () => {
  it('makes three 2g.20gb on the H100 at 0, 2 and 4; a fourth finds no room', async () => {
    await withMigNode(async (node, h100) => {
      const ctl = control();
      const made = [];
      for (const start of [0, 2, 4]) made.push(await ctl.create(h100, G.g2, P(start, 2)));
      expect(
        made.map(({ gpuInstanceId, computeInstanceId, profileId, placement }) => ({
          gpuInstanceId,
          computeInstanceId,
          profileId,
          placement,
        })),
      ).toEqual([
        { gpuInstanceId: 3, computeInstanceId: 0, profileId: G.g2, placement: P(0, 2) },
        { gpuInstanceId: 4, computeInstanceId: 0, profileId: G.g2, placement: P(2, 2) },
        { gpuInstanceId: 5, computeInstanceId: 0, profileId: G.g2, placement: P(4, 2) },
      ]);
      for (const m of made) {
        expect(m.parentUuid).toBe(h100);
        expect(m.uuid).toMatch(MIG_UUID);
      }
      const fourth = ctl.create(h100, G.g2, P(0, 2));
      await expect(fourth).rejects.toBeInstanceOf(NvmlError);
      await expect(fourth).rejects.toMatchObject({
        nvmlFunction: 'nvmlDeviceCreateGpuInstanceWithPlacement',
        returnName: 'INSUFFICIENT_RESOURCES',
      });
      await expect(ctl.create(h100, G.g2, P(1, 2))).rejects.toMatchObject({ returnName: 'INVALID_ARGUMENT' });

      expect(await ctl.list(h100)).toEqual(made);
      expect((await readFakeMigInstances(node.dir)).map((m) => m.uuid)).toEqual(made.map((m) => m.uuid));
    });
  });

  it('fits 2x 1g.5gb, a 2g.10gb and a 3g.20gb on the A100, asked for all at once', async () => {
    await withMigNode(async (node, _h100, a100) => {
      const ctl = control();
      const made = await Promise.all([
        ctl.create(a100, G.g1, P(2, 1)),
        ctl.create(a100, G.g1, P(3, 1)),
        ctl.create(a100, G.g2, P(0, 2)),
        ctl.create(a100, G.g3, P(4, 4)),
      ]);
      expect(made.map((m) => m.gpuInstanceId)).toEqual([9, 10, 3, 2]);
      expect(new Set(made.map((m) => m.uuid)).size).toBe(4);
      await expect(ctl.create(a100, G.g1, P(6, 1))).rejects.toMatchObject({
        returnName: 'INSUFFICIENT_RESOURCES',
      });
      // Discovery (its own init/shutdown, nested in the control's) sees them as MIG devices.
      const inventory = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: node.hostPaths });
      const devices = inventory.gpus[1]?.migDevices ?? [];
      expect(devices.map((d) => [d.uuid, d.profile, d.placement])).toEqual([
        [made[3]?.uuid, '3g.20gb', P(4, 4)],
        [made[2]?.uuid, '2g.10gb', P(0, 2)],
        [made[0]?.uuid, '1g.5gb', P(2, 1)],
        [made[1]?.uuid, '1g.5gb', P(3, 1)],
      ]);
    });
  });

  it('destroys the GPU instance again when the compute instance fails', async () => {
    await withA100Errors({ nvmlGpuInstanceCreateComputeInstance: 'UNKNOWN' }, async (node, a100) => {
      const ctl = control();
      const err: unknown = await ctl.create(a100, G.g3, P(0, 4)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MigCreateError);
      expect(err).toMatchObject({
        nvmlFunction: 'nvmlGpuInstanceCreateComputeInstance',
        returnName: 'UNKNOWN',
        rollback: { gpuInstanceId: 1, destroyed: true },
      });
      expect((err as Error).message).toMatch(/GPU instance 1 was destroyed again/);
      expect(await ctl.listBareGpuInstances(a100)).toEqual([]);
      expect(await readFakeMigInstances(node.dir)).toEqual([]);
    });
  });

  it('says so when the rollback fails too, and the GPU instance is left listed', async () => {
    await withA100Errors(
      { nvmlGpuInstanceCreateComputeInstance: 'UNKNOWN', nvmlGpuInstanceDestroy: 'NO_PERMISSION' },
      async (_node, a100) => {
        const ctl = control();
        const err: unknown = await ctl.create(a100, G.g7, P(0, 8)).catch((e: unknown) => e);
        expect(err).toMatchObject({ rollback: { gpuInstanceId: 0, destroyed: false } });
        expect((err as MigCreateError).rollback).toMatchObject({ error: { returnName: 'NO_PERMISSION' } });
        expect(await ctl.listBareGpuInstances(a100)).toEqual([
          { parentUuid: a100, gpuInstanceId: 0, profileId: G.g7, placement: P(0, 8) },
        ]);
        expect(await ctl.list(a100)).toEqual([]);
      },
    );
  });

  it('destroys a MIG device once: destroyed, then absent; a busy one is IN_USE', async () => {
    await withMigNode(async (node, h100) => {
      const ctl = control();
      const made = await ctl.create(h100, G.g7, P(0, 8));
      await setFakeMigInstanceBusy(node.dir, made.uuid, true);
      await expect(ctl.destroy(made)).rejects.toMatchObject({
        nvmlFunction: 'nvmlComputeInstanceDestroy',
        returnName: 'IN_USE',
      });
      await setFakeMigInstanceBusy(node.dir, made.uuid, false);
      // The same ids under another UUID are someone else's: left alone.
      expect(await ctl.destroy({ ...made, uuid: 'MIG-00000000-0000-0000-0000-000000000000' })).toBe('absent');
      expect(await ctl.list(h100)).toEqual([made]);
      expect(await ctl.destroy(made)).toBe('destroyed');
      expect(await ctl.destroy(made)).toBe('absent');
      expect(await ctl.list(h100)).toEqual([]);
      expect(await readFakeMigInstances(node.dir)).toEqual([]);
    });
  });

  it('destroy finishes a half-done one: a GPU instance whose compute instance is gone', async () => {
    await withA100Errors(
      { nvmlGpuInstanceCreateComputeInstance: 'UNKNOWN', nvmlGpuInstanceDestroy: 'UNKNOWN' },
      async (node, a100) => {
        const ctl = control();
        await expect(ctl.create(a100, G.g2, P(2, 2))).rejects.toBeInstanceOf(MigCreateError);
        // The GPU instance is still there; destroying its (never made) MIG device removes it once the
        // error is gone.
        const cfg = await loadProfile('mig-dynamic');
        await writeConfig(node, cfg);
        expect(await ctl.destroy({ parentUuid: a100, gpuInstanceId: 4, computeInstanceId: 0 })).toBe(
          'destroyed',
        );
        expect(await ctl.listBareGpuInstances(a100)).toEqual([]);
      },
    );
  });

  it('a second control, and one opened after the first closed, list what the first made', async () => {
    await withMigNode(async (_node, h100, a100) => {
      const first = control();
      const a = await first.create(h100, G.g3, P(4, 4));
      const b = await first.create(a100, G.g1, P(6, 1));
      const second = control();
      expect(await second.list(h100)).toEqual([a]);
      second.close();
      first.close();
      const third = control();
      expect(await third.list(h100)).toEqual([a]);
      expect(await third.list(a100)).toEqual([b]);
      expect(await third.destroy(b)).toBe('destroyed');
      await expect(first.list(h100)).rejects.toMatchObject({ returnName: 'UNINITIALIZED' });
    });
  });

  it('answers NOT_SUPPORTED with MIG off, and lists nothing there', async () => {
    await withSimulatedNode('h100', async (node) => {
      const ctl = control();
      const uuid = node.config.gpus[0]?.uuid ?? '';
      await expect(ctl.create(uuid, G.g7, P(0, 8))).rejects.toMatchObject({ returnName: 'NOT_SUPPORTED' });
      expect(await ctl.list(uuid)).toEqual([]);
      expect(await ctl.destroy({ parentUuid: uuid, gpuInstanceId: 0, computeInstanceId: 0 })).toBe('absent');
      await expect(ctl.list('GPU-00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({
        nvmlFunction: 'nvmlDeviceGetHandleByUUID',
        returnName: 'NOT_FOUND',
      });
    });
  });

  it('keeps the event loop running while NVML creates and destroys', async () => {
    const cfg = await loadProfile('mig-dynamic');
    await withSimulatedNode({ ...cfg, migOperationDelayMs: 150 }, async (node) => {
      const h100 = node.config.gpus[0]?.uuid ?? '';
      const ctl = control();
      let ticks = 0;
      const timer = setInterval(() => ticks++, 10);
      try {
        const made = await ctl.create(h100, G.g7, P(0, 8)); // two delayed calls: GI, then CI
        expect(ticks).toBeGreaterThanOrEqual(10);
        expect(await ctl.destroy(made)).toBe('destroyed');
        expect(ticks).toBeGreaterThanOrEqual(20);
      } finally {
        clearInterval(timer);
      }
    });
  });
});

async function writeConfig(node: SimulatedNode, cfg: FakeNvmlConfig): Promise<void> {
  const { rename, writeFile } = await import('node:fs/promises');
  const tmp = `${node.configPath}.tmp`;
  await writeFile(tmp, `${JSON.stringify(cfg, null, 2)}\n`);
  await rename(tmp, node.configPath);
}
