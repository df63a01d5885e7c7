/**
 * Prometheus metrics of the kubelet plugin. One registry per driver instance (tests create
 * several); the HTTP endpoint serves `registry.metrics()`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface DriverMetrics {
  readonly registry: Registry;
  readonly grpcRequests: Counter<'service' | 'method' | 'code'>;
  readonly grpcDuration: Histogram<'method'>;
  readonly claimOperations: Counter<'operation' | 'result'>;
  readonly preparedClaims: Gauge;
  readonly deviceChecks: Counter<'result'>;
  readonly unhealthyGpus: Gauge;
  readonly xidEvents: Counter<'xid'>;
}

export function createDriverMetrics(options: { defaultMetrics?: boolean } = {}): DriverMetrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  return {
    registry,
    grpcRequests: new Counter({
      name: 'gpu_dra_grpc_requests_total',
      help: 'gRPC requests served on the plugin sockets, by service, method and status code.',
      labelNames: ['service', 'method', 'code'],
      registers: [registry],
    }),
    grpcDuration: new Histogram({
      name: 'gpu_dra_grpc_request_duration_seconds',
      help: 'Duration of gRPC requests served on the plugin sockets.',
      labelNames: ['method'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    claimOperations: new Counter({
      name: 'gpu_dra_claim_operations_total',
      help: 'Per-claim prepare/unprepare outcomes.',
      labelNames: ['operation', 'result'],
      registers: [registry],
    }),
    preparedClaims: new Gauge({
      name: 'gpu_dra_prepared_claims',
      help: 'Claims currently recorded as prepared in the checkpoint.',
      registers: [registry],
    }),
    deviceChecks: new Counter({
      name: 'gpu_dra_device_checks_total',
      help: 'Re-discoveries of the node GPUs after start-up, by result (unchanged, changed, failed).',
      labelNames: ['result'],
      registers: [registry],
    }),
    unhealthyGpus: new Gauge({
      name: 'gpu_dra_unhealthy_gpus',
      help: 'GPUs NVML no longer answers for, published with a NoSchedule taint.',
      registers: [registry],
    }),
    xidEvents: new Counter({
      name: 'gpu_dra_xid_events_total',
      help: 'XID critical-error events NVML reported, by XID.',
      labelNames: ['xid'],
      registers: [registry],
    }),
  };
}
