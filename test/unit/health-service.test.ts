// The resource health stream on dra.sock (src/kubelet/healthService.ts), spoken to over the
// socket with the kubelet's protos: both versions, what registration advertises, the snapshot on
// connect, a change pushed at once, the periodic resend, and streams ended on stop. The kubelet's
// own consumption of it is proven in test/e2e/device-health.test.ts.
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import { KubeletClient } from '../../src/kubelet/client.js';
import {
  healthResponse,
  type DeviceHealthEntry,
  type HealthSource,
} from '../../src/kubelet/healthService.js';
import { startKubeletPlugin, type KubeletPlugin } from '../../src/kubelet/plugin.js';
import { loadProtos, type NodeWatchResourcesResponse } from '../../src/kubelet/proto.js';
import { silentLogger } from '../../src/util/log.js';
import {
  createTestHost,
  testDeviceState,
  TEST_DRIVER,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';

/** A health source the test sets by hand. */
class Source implements HealthSource {
  entries: DeviceHealthEntry[] = [
    { device: 'gpu-0', health: 'HEALTHY', message: '' },
    { device: 'gpu-1', health: 'HEALTHY', message: '' },
  ];
  private readonly listeners = new Set<() => void>();
  health(): DeviceHealthEntry[] {
    return this.entries;
  }
  onHealthChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  get listening(): number {
    return this.listeners.size;
  }
  set(entries: DeviceHealthEntry[]): void {
    this.entries = entries;
    for (const l of this.listeners) l();
  }
}

/** A NodeWatchResources stream as the kubelet opens it, collecting what arrives. */
class Watch {
  readonly got: NodeWatchResourcesResponse[] = [];
  private readonly waiters: (() => void)[] = [];
  ended = false;
  private readonly call: grpc.ClientReadableStream<NodeWatchResourcesResponse>;
  private readonly client: grpc.Client;

  constructor(socket: string, version: 'v1' | 'v1alpha1') {
    const protos = loadProtos();
    const Client = version === 'v1' ? protos.healthV1 : protos.healthV1alpha1;
    this.client = new Client(`unix:${socket}`, grpc.credentials.createInsecure());
    const open = (this.client as unknown as Record<string, (req: unknown) => typeof this.call>)[
      'NodeWatchResources'
    ];
    if (!open) throw new Error('no NodeWatchResources in the loaded service');
    this.call = open.call(this.client, {});
    this.call.on('data', (r: NodeWatchResourcesResponse) => {
      this.got.push(r);
      this.waiters.splice(0).forEach((w) => {
        w();
      });
    });
    const end = (): void => {
      this.ended = true;
      this.waiters.splice(0).forEach((w) => {
        w();
      });
    };
    this.call.on('end', end);
    this.call.on('error', end);
  }

  /** Resolves once `n` responses (or the end) arrived; rejects after `ms`. */
  async responses(n: number, ms = 2_000): Promise<NodeWatchResourcesResponse[]> {
    const deadline = Date.now() + ms;
    while (this.got.length < n && !this.ended) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`got ${String(this.got.length)} of ${String(n)} responses in ${String(ms)}ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.got;
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}

let host: TestHost;
let plugin: KubeletPlugin;
let source: Source;
const watches: Watch[] = [];

/** The plugin with the health source resending every `resendMs`; `null`: without one. */
async function start(resendMs: number | null = 60_000): Promise<void> {
  plugin = await startKubeletPlugin({
    driverName: TEST_DRIVER,
    registryDir: host.registryDir,
    pluginsDir: host.pluginsDir,
    state: testDeviceState(host),
    claims: new MemoryClaimGetter(),
    logger: silentLogger(),
    ...(resendMs === null ? {} : { health: { source, poolName: TEST_NODE, resendMs } }),
  });
}
function watch(version: 'v1' | 'v1alpha1' = 'v1'): Watch {
  const w = new Watch(plugin.draSocket, version);
  watches.push(w);
  return w;
}
const statuses = (r: NodeWatchResourcesResponse | undefined) =>
  (r?.devices ?? []).map((d) => `${d.device.pool_name}/${d.device.device_name}=${d.health}`);

beforeEach(() => {
  host = createTestHost();
  source = new Source();
});
afterEach(async () => {
  for (const w of watches.splice(0)) w.close();
  await plugin.stop();
  host.cleanup();
});

describe('DRAResourceHealth on dra.sock', () => {
  it('is advertised at registration, after the DRA services, newest first', async () => {
    await start();
    const client = new KubeletClient({
      draSocket: plugin.draSocket,
      registrationSocket: plugin.registrationSocket,
    });
    try {
      expect((await client.getInfo()).supported_versions).toEqual([
        'v1.DRAPlugin',
        'v1beta1.DRAPlugin',
        'v1.DRAResourceHealth',
        'v1alpha1.DRAResourceHealth',
      ]);
    } finally {
      client.close();
    }
  });

  it('sends the complete list on connect, on v1 and on v1alpha1', async () => {
    await start();
    for (const version of ['v1', 'v1alpha1'] as const) {
      const [first] = await watch(version).responses(1);
      expect(statuses(first)).toEqual([`${TEST_NODE}/gpu-0=HEALTHY`, `${TEST_NODE}/gpu-1=HEALTHY`]);
      const d = first?.devices[0];
      expect(d?.health_check_timeout_seconds).toBe('30');
      expect(Math.abs(Number(d?.last_updated_time) - Date.now() / 1000)).toBeLessThan(5);
    }
  });

  it('pushes a change to every watcher at once, with the message', async () => {
    await start();
    const a = watch('v1');
    const b = watch('v1alpha1');
    await a.responses(1);
    await b.responses(1);
    source.set([
      { device: 'gpu-0', health: 'UNHEALTHY', message: 'XID 48 (double-bit ECC error) on GPU GPU-0' },
      { device: 'gpu-1', health: 'HEALTHY', message: '' },
    ]);
    for (const w of [a, b]) {
      const got = await w.responses(2, 1_000);
      expect(statuses(got[1])).toEqual([`${TEST_NODE}/gpu-0=UNHEALTHY`, `${TEST_NODE}/gpu-1=HEALTHY`]);
      expect(got[1]?.devices[0]?.message).toBe('XID 48 (double-bit ECC error) on GPU GPU-0');
    }
  });

  it('resends the complete list periodically, unchanged or not', async () => {
    await start(50);
    const got = await watch().responses(3, 2_000);
    expect(got.slice(0, 3).map(statuses)).toEqual(
      Array(3).fill([`${TEST_NODE}/gpu-0=HEALTHY`, `${TEST_NODE}/gpu-1=HEALTHY`]),
    );
  });

  it('listens to the source only while a kubelet watches, and ends open streams on stop', async () => {
    await start();
    expect(source.listening).toBe(0);
    const w = watch();
    await w.responses(1);
    expect(source.listening).toBe(1);
    expect(plugin.health?.watchers).toBe(1);
    const started = Date.now();
    await plugin.stop();
    // Ended by us, not by the 2 s forced shutdown.
    expect(Date.now() - started).toBeLessThan(1_500);
    await w.responses(2, 1_000);
    expect(w.ended).toBe(true);
    expect(source.listening).toBe(0);
  });

  it('is neither served nor advertised without a health source', async () => {
    await start(null);
    const client = new KubeletClient({
      draSocket: plugin.draSocket,
      registrationSocket: plugin.registrationSocket,
    });
    try {
      expect((await client.getInfo()).supported_versions).toEqual(['v1.DRAPlugin', 'v1beta1.DRAPlugin']);
    } finally {
      client.close();
    }
    const w = watch();
    await w.responses(1, 1_000);
    expect(w.got).toEqual([]);
    expect(w.ended).toBe(true);
  });
});

describe('healthResponse', () => {
  it('stamps every device with the pool, whole seconds and the timeout', () => {
    expect(
      healthResponse(
        [{ device: 'gpu-0', health: 'UNKNOWN', message: 'NVML not answering' }],
        'node-x',
        1_700_000_000_999,
        45,
      ),
    ).toEqual({
      devices: [
        {
          device: { pool_name: 'node-x', device_name: 'gpu-0' },
          health: 'UNKNOWN',
          last_updated_time: '1700000000',
          health_check_timeout_seconds: '45',
          message: 'NVML not answering',
        },
      ],
    });
  });
});
