// NVML device events through koffi against the fake libnvidia-ml (src/nvml/events.ts): the
// event set registered on every GPU, nvmlEventSetWait_v2 on a worker thread, XIDs (MIG-scoped
// or not) and MIG configuration changes; and discovery seeing a changed node while the watch
// holds NVML initialized, as the driver does.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { discoverInventory } from '../../src/nvml/discover.js';
import { watchDeviceEvents, type DeviceEvent, type DeviceEventWatch } from '../../src/nvml/events.js';
import { loadProfile } from '../../src/sim/fakeNvml.js';
import { atomicWriteFile } from '../../src/util/atomicWrite.js';
import { fakeNvmlLib, withSimulatedNode, type TempSimulatedNode } from '../support/sim.js';

describe('watchDeviceEvents', () => {
  let node: TempSimulatedNode | undefined;
  let watch: DeviceEventWatch | undefined;
  afterEach(async () => {
    await watch?.stop();
    await node?.cleanup();
    watch = undefined;
    node = undefined;
    delete process.env['FAKE_NVML_EVENTS'];
  });

  async function start(profile: Parameters<typeof withSimulatedNode>[0]): Promise<{
    events: DeviceEvent[];
    emit: (line: string) => void;
    uuids: string[];
  }> {
    node = await withSimulatedNode(profile);
    const eventsFile = path.join(path.dirname(node.configPath), 'events');
    // Lines written before the event set exists are not delivered.
    fs.writeFileSync(eventsFile, '0 8 79\n');
    process.env['FAKE_NVML_EVENTS'] = eventsFile;
    const events: DeviceEvent[] = [];
    watch = watchDeviceEvents({ nvmlLib: fakeNvmlLib(), onEvent: (e) => events.push(e), waitMs: 100 });
    const inv = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: node.hostPaths });
    return {
      events,
      emit: (line) => {
        fs.appendFileSync(eventsFile, line);
      },
      uuids: inv.gpus.map((g) => g.uuid),
    };
  }

  async function until<T>(fn: () => T | undefined, ms = 3_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('delivers XIDs (MIG-scoped or not) and MIG configuration changes of registered GPUs', async () => {
    const { events, emit, uuids } = await start('a100-mig');
    expect(watch?.monitored).toEqual(uuids);
    emit('1 8 48 2 0\n');
    emit('0 0x2 0\n'); // a double-bit ECC event: not registered, not delivered
    emit('0 0x100 0\n');
    emit('0 8 13\n');
    await until(() => (events.length >= 3 ? true : undefined));
    expect(events).toEqual([
      { kind: 'xid', gpuUuid: uuids[1], xid: 48, gpuInstanceId: 2, computeInstanceId: 0 },
      { kind: 'migConfigChange', gpuUuid: uuids[0] },
      { kind: 'xid', gpuUuid: uuids[0], xid: 13 },
    ]);
  });

  it('waits off the event loop and stops within one wait', async () => {
    await start('h100');
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    await new Promise((r) => setTimeout(r, 300));
    clearInterval(timer);
    // A blocked loop would tick once at most; a free one ~60 times, fewer on a loaded machine.
    expect(ticks).toBeGreaterThan(5);
    const t0 = Date.now();
    await watch?.stop();
    watch = undefined;
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('reports GPUs whose NVML cannot deliver XIDs as unmonitored', async () => {
    const profile = await loadProfile('mixed');
    const first = profile.gpus[0];
    if (!first) throw new Error('profile changed');
    await start({ ...profile, gpus: [{ ...first, supportedEventTypes: 0x100 }, ...profile.gpus.slice(1)] });
    expect(watch?.unmonitored).toEqual([
      expect.objectContaining({ index: 0, uuid: first.uuid, error: 'XID events not supported' }),
    ]);
    expect(watch?.monitored).toHaveLength(profile.gpus.length - 1);
  });

  it('does not stop discovery from seeing a changed node while it holds NVML initialized', async () => {
    const { uuids } = await start('a100-mig');
    const config = await loadProfile('a100-mig');
    await atomicWriteFile(
      node?.configPath ?? '',
      JSON.stringify({ ...config, gpus: config.gpus.map((g, i) => (i === 1 ? { ...g, lost: true } : g)) }),
    );
    const inv = discoverInventory({ nvmlLib: fakeNvmlLib(), hostPaths: node?.hostPaths });
    expect(inv.gpus.map((g) => g.uuid)).toEqual([uuids[0]]);
    expect(inv.failures).toEqual([expect.objectContaining({ index: 1, code: 'GPU_IS_LOST' })]);
  });
});
