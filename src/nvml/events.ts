/**
 * NVML device events for the device monitor: XID critical errors (a GPU or a MIG device in
 * trouble) and MIG configuration changes. One event set, registered on every GPU for what it
 * supports of those two; nvmlEventSetWait_v2 runs on a worker thread, one bounded wait at a
 * time, so stopping takes at most `waitMs`.
 *
 * Holds an NVML reference (nvmlInit) for as long as it runs, as event sets need; discovery's own
 * init/shutdown pairs nest inside it.
 */
import { errorMessage, GpuDraError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { HostPaths } from '../util/hostPaths.js';
import { loadNvml, NvmlEventType, type DeviceHandle, type EventSetHandle } from './library.js';

/** gpuInstanceId / computeInstanceId of an event that is not MIG-scoped. */
const NOT_MIG_SCOPED = 0xffffffff;

export type DeviceEvent =
  | {
      readonly kind: 'xid';
      readonly gpuUuid: string;
      readonly xid: number;
      /** Set when the error is scoped to one MIG device. */
      readonly gpuInstanceId?: number;
      readonly computeInstanceId?: number;
    }
  | { readonly kind: 'migConfigChange'; readonly gpuUuid: string };

export interface DeviceEventWatch {
  /** UUIDs of the GPUs registered for events. */
  readonly monitored: readonly string[];
  /** UUIDs of GPUs NVML would not register (e.g. events not supported), with why. */
  readonly unmonitored: readonly { readonly uuid?: string; readonly index: number; readonly error: string }[];
  stop(): Promise<void>;
}

export interface WatchOptions {
  readonly nvmlLib?: string | undefined;
  readonly hostPaths?: HostPaths;
  readonly onEvent: (event: DeviceEvent) => void;
  readonly logger?: Logger;
  /** Upper bound of one nvmlEventSetWait_v2 (and so of stop()); default 500 ms. */
  readonly waitMs?: number;
}

/**
 * Starts watching; returns undefined when this NVML has no event API. Throws what nvmlInit or
 * nvmlEventSetCreate throws.
 */
export function watchDeviceEvents(opts: WatchOptions): DeviceEventWatch | undefined {
  const log = opts.logger ?? silentLogger();
  const api = loadNvml({ nvmlLib: opts.nvmlLib, driverRoot: opts.hostPaths?.driverRoot });
  const events = api.events;
  if (!events) return undefined;
  api.init();
  let set: EventSetHandle;
  try {
    set = events.setCreate();
  } catch (err) {
    api.shutdown();
    throw err;
  }
  const wanted = NvmlEventType.XID_CRITICAL_ERROR | NvmlEventType.MIG_CONFIG_CHANGE;
  const monitored: string[] = [];
  const unmonitored: { uuid?: string; index: number; error: string }[] = [];
  const count = api.deviceGetCount();
  for (let index = 0; index < count; index++) {
    let uuid: string | undefined;
    try {
      const dev = api.deviceGetHandleByIndex(index);
      uuid = api.deviceGetUUID(dev);
      const types = events.deviceGetSupportedEventTypes(dev) & wanted;
      if ((types & NvmlEventType.XID_CRITICAL_ERROR) === 0)
        throw new GpuDraError('NVML_EVENTS_UNSUPPORTED', 'XID events not supported');
      events.deviceRegisterEvents(dev, types, set);
      monitored.push(uuid);
    } catch (err) {
      unmonitored.push({ ...(uuid ? { uuid } : {}), index, error: errorMessage(err) });
    }
  }

  const uuidOf = (dev: DeviceHandle): string | undefined => {
    try {
      return api.deviceGetUUID(dev);
    } catch {
      return undefined;
    }
  };
  let stopped = false;
  const loop = (async () => {
    const waitMs = opts.waitMs ?? 500;
    while (!stopped) {
      try {
        const e = await events.setWait(set, waitMs);
        if (!e || stopped) continue;
        const gpuUuid = uuidOf(e.device);
        if (!gpuUuid) continue;
        if (e.eventType & NvmlEventType.XID_CRITICAL_ERROR) {
          const scoped = e.gpuInstanceId !== NOT_MIG_SCOPED;
          opts.onEvent({
            kind: 'xid',
            gpuUuid,
            xid: e.eventData,
            ...(scoped ? { gpuInstanceId: e.gpuInstanceId } : {}),
            ...(scoped && e.computeInstanceId !== NOT_MIG_SCOPED
              ? { computeInstanceId: e.computeInstanceId }
              : {}),
          });
        } else if (e.eventType & NvmlEventType.MIG_CONFIG_CHANGE) {
          opts.onEvent({ kind: 'migConfigChange', gpuUuid });
        }
      } catch (err) {
        if (stopped) break;
        log.warn({ err }, 'waiting for NVML events failed; retrying in 5 s');
        await new Promise((resolve) => setTimeout(resolve, 5_000).unref());
      }
    }
  })();

  return {
    monitored,
    unmonitored,
    async stop() {
      stopped = true;
      await loop;
      try {
        events.setFree(set);
      } finally {
        api.shutdown();
      }
    },
  };
}
