/**
 * DRAResourceHealth.NodeWatchResources (KEP-4680), v1 and v1alpha1 (same messages): each stream
 * gets the complete list of our devices at once, again at every change, and again every
 * `resendMs` so the kubelet, which turns a device Unknown when it has not heard of it for
 * `health_check_timeout_seconds`, keeps what it has while we are alive. The kubelet shows the
 * result in the status of the pods holding the devices (allocatedResourcesStatus).
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import type { DeviceHealth, HealthStatus, NodeWatchResourcesResponse } from './proto.js';

/** One device's health (src/resourceslice/healthReport.ts computes them). */
export interface DeviceHealthEntry {
  readonly device: string;
  readonly health: HealthStatus;
  /** At most 1024 characters; empty when healthy. */
  readonly message: string;
}

/** What the service reports (src/node/deviceMonitor.ts). */
export interface HealthSource {
  health(): DeviceHealthEntry[];
  /** Calls `listener` after every change of health(); returns an unsubscribe function. */
  onHealthChange(listener: () => void): () => void;
}

export interface HealthServiceOptions {
  readonly source: HealthSource;
  /** The pool our devices are published in (the node name). */
  readonly poolName: string;
  readonly logger: Logger;
  /** Full resend period; default 10 s, a third of the timeout below. */
  readonly resendMs?: number;
  /** health_check_timeout_seconds; default 30 (the kubelet's own default, stated). */
  readonly timeoutSeconds?: number;
}

export const DEFAULT_HEALTH_RESEND_MS = 10_000;
export const DEFAULT_HEALTH_TIMEOUT_SECONDS = 30;

type Stream = grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse>;

/** The response for `entries`, stamped `nowMs`. Pure. */
export function healthResponse(
  entries: readonly DeviceHealthEntry[],
  poolName: string,
  nowMs: number,
  timeoutSeconds: number,
): NodeWatchResourcesResponse {
  const at = String(Math.floor(nowMs / 1000));
  return {
    devices: entries.map((e): DeviceHealth => ({
      device: { pool_name: poolName, device_name: e.device },
      health: e.health,
      last_updated_time: at,
      health_check_timeout_seconds: String(timeoutSeconds),
      message: e.message,
    })),
  };
}

export class HealthService {
  private readonly streams = new Set<Stream>();
  private readonly resendMs: number;
  private readonly timeoutSeconds: number;
  private unsubscribe: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: HealthServiceOptions) {
    this.resendMs = opts.resendMs ?? DEFAULT_HEALTH_RESEND_MS;
    this.timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_HEALTH_TIMEOUT_SECONDS;
  }

  /** Open streams (one per connected kubelet, normally). */
  get watchers(): number {
    return this.streams.size;
  }

  implementation(version: 'v1' | 'v1alpha1'): grpc.UntypedServiceImplementation {
    return {
      NodeWatchResources: (call: Stream) => {
        this.watch(call, version);
      },
    };
  }

  private watch(call: Stream, version: string): void {
    if (this.stopped) {
      call.end();
      return;
    }
    this.streams.add(call);
    this.opts.logger.info({ version, watchers: this.streams.size }, 'kubelet watching device health');
    const done = (): void => {
      if (!this.streams.delete(call)) return;
      this.opts.logger.info({ version, watchers: this.streams.size }, 'device health watch ended');
      if (this.streams.size === 0) this.idle();
    };
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
    // Listen and tick only while someone watches: no work on nodes whose kubelet never asks.
    this.unsubscribe ??= this.opts.source.onHealthChange(() => {
      this.broadcast();
    });
    if (!this.timer) {
      this.timer = setInterval(() => {
        this.broadcast();
      }, this.resendMs);
      this.timer.unref();
    }
    this.send(call, this.response());
  }

  private response(): NodeWatchResourcesResponse {
    return healthResponse(this.opts.source.health(), this.opts.poolName, Date.now(), this.timeoutSeconds);
  }

  private broadcast(): void {
    if (this.streams.size === 0) return;
    const response = this.response();
    for (const call of this.streams) this.send(call, response);
  }

  private send(call: Stream, response: NodeWatchResourcesResponse): void {
    // A stream whose kubelet went away may still be in the set until its event fires.
    if (call.cancelled || call.destroyed) return;
    call.write(response);
  }

  private idle(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Ends every stream (the kubelet reconnects to whoever serves next). */
  stop(): void {
    this.stopped = true;
    for (const call of [...this.streams]) {
      this.streams.delete(call);
      call.end();
    }
    this.idle();
  }
}
