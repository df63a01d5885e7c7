/**
 * DRAPlugin handlers (v1 and v1beta1; identical except v1's `share_id`). Each call gets a
 * request id and a child logger; each claim is prepared independently and its failure becomes
 * that claim's `error`, so one bad claim never fails the RPC.
 */
import * as grpc from '@grpc/grpc-js';
import { errorMessage, GpuDraError, inClaim } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { ClaimGetter } from '../driver/claims.js';
import type { Counter, Gauge, Histogram } from 'prom-client';
import type {
  ClaimRef,
  NodePrepareResourcesRequest,
  NodePrepareResourcesResponse,
  NodeUnprepareResourcesRequest,
  NodeUnprepareResourcesResponse,
  ProtoDevice,
} from './proto.js';
import type { DeviceState, PreparedDevice } from '../driver/state.js';
import { forEachLimited } from '../util/limit.js';
import { shorten } from '../util/shorten.js';
import { isDnsLabel, isDnsSubdomain, isValidClaimUid } from '../util/kubeNames.js';

/** The metrics the DRA service records; the process (node/metrics.ts) registers and serves them. */
export interface DraServiceMetrics {
  readonly grpcRequests: Counter<'service' | 'method' | 'code'>;
  readonly grpcDuration: Histogram<'method'>;
  readonly claimOperations: Counter<'operation' | 'result'>;
  readonly preparedClaims: Gauge;
}

export interface DraServiceOptions {
  readonly state: DeviceState;
  readonly claims: ClaimGetter;
  readonly logger: Logger;
  readonly metrics?: DraServiceMetrics;
}

type ApiVersion = 'v1' | 'v1beta1';

function toProto(device: PreparedDevice, version: ApiVersion): ProtoDevice {
  return {
    request_names: [...device.requestNames],
    pool_name: device.poolName,
    device_name: device.deviceName,
    cdi_device_ids: [...device.cdiDeviceIds],
    ...(version === 'v1' && device.shareId ? { share_id: device.shareId } : {}),
  };
}

function claimWhere(ref: ClaimRef): string {
  return `${shown(ref.namespace)}/${shown(ref.name)}`;
}

/** A value from the request, for a message or a log line: cut so it cannot blow up the reply. */
const shown = (value: string): string => shorten(value);

/**
 * Claims of one call in progress at once: enough for concurrent prepares to share checkpoint
 * writes, bounded so that a call naming 10 000 claims does not hold 10 000 API answers and CDI
 * specs in memory together (such a call took the driver from 169 to 381 MB RSS).
 */
export const CLAIMS_IN_FLIGHT = 64;

/** A claim's own logger; its fields come from the request, so they are cut like any echo. */
function claimLogger(logger: Logger, ref: ClaimRef): Logger {
  return logger.child({ claimUid: shown(ref.uid), namespace: shown(ref.namespace), name: shown(ref.name) });
}

/** Kubernetes limits: a namespace is a DNS label, a name a DNS subdomain, a UID a UUID. */
const REF_LIMITS = { uid: 36, namespace: 63, name: 253 } as const;

/** Checked before anything else, the API call included. */
function checkRef(ref: ClaimRef): void {
  const missing = (['uid', 'namespace', 'name'] as const).filter((k) => !ref[k]);
  if (missing.length > 0) {
    throw new GpuDraError('CLAIM_REF_INVALID', `claim reference lacks ${missing.join(', ')}`, {
      claimUid: shown(ref.uid),
    });
  }
  for (const field of ['uid', 'namespace', 'name'] as const) {
    const max = REF_LIMITS[field];
    if (ref[field].length > max) {
      throw new GpuDraError(
        'CLAIM_REF_INVALID',
        `claim reference ${field} is ${String(ref[field].length)} characters, over the Kubernetes limit of ${String(max)}`,
        { claimUid: shown(ref.uid) },
      );
    }
  }
}

/**
 * Prepare only, before its API call, which puts namespace and name in the URL path: `..` or a
 * slash there would address another object. (Unprepare makes no call; an unknown ref is a no-op.)
 */
function checkRefForApi(ref: ClaimRef): void {
  // Before the names: a bad UID says so, as the state's own check would.
  if (!isValidClaimUid(ref.uid)) {
    throw new GpuDraError('CLAIM_UID_INVALID', `invalid claim UID ${JSON.stringify(ref.uid)}`, {
      claimUid: ref.uid,
    });
  }
  for (const [field, valid, what] of [
    ['namespace', isDnsLabel, 'a DNS label'],
    ['name', isDnsSubdomain, 'a DNS subdomain'],
  ] as const) {
    if (!valid(ref[field])) {
      throw new GpuDraError(
        'CLAIM_REF_INVALID',
        `claim reference ${field} ${JSON.stringify(shown(ref[field]))} is not ${what} (lowercase letters, digits, '-'${field === 'name' ? ", '.'" : ''})`,
        { claimUid: shown(ref.uid) },
      );
    }
  }
}

/**
 * A claim's error text at most: the kubelet takes 4 MiB per reply, for every claim of the call,
 * and shows the text in the pod's events; a message this long was built from input anyway.
 */
const MAX_ERROR_MESSAGE = 4096;

/** The claim's error string the kubelet shows in the pod's events: where, the code, why. */
function claimErrorText(verb: string, ref: ClaimRef, err: GpuDraError): string {
  return `${verb} claim ${claimWhere(ref)} (${shown(ref.uid)}): ${err.code}: ${shorten(err.message, MAX_ERROR_MESSAGE)}`;
}

export class DraService {
  private requestSeq = 0;

  constructor(private readonly opts: DraServiceOptions) {}

  async prepare(
    request: NodePrepareResourcesRequest,
    logger: Logger,
    version: ApiVersion,
  ): Promise<NodePrepareResourcesResponse> {
    const claims: NodePrepareResourcesResponse['claims'] = {};
    await forEachLimited(request.claims, CLAIMS_IN_FLIGHT, async (ref) => {
      const clog = claimLogger(logger, ref);
      try {
        checkRef(ref);
        checkRefForApi(ref);
        const devices = await this.opts.state.prepare(
          ref,
          () => this.opts.claims.get(ref.namespace, ref.name),
          clog,
        );
        claims[ref.uid] = { devices: devices.map((d) => toProto(d, version)), error: '' };
        this.opts.metrics?.claimOperations.inc({ operation: 'prepare', result: 'success' });
      } catch (thrown) {
        const err = inClaim(thrown, ref.uid, 'INTERNAL');
        clog.error({ err, code: err.code }, 'prepare failed');
        claims[ref.uid] = { devices: [], error: claimErrorText('prepare', ref, err) };
        this.opts.metrics?.claimOperations.inc({ operation: 'prepare', result: 'error' });
      }
    });
    this.opts.metrics?.preparedClaims.set(this.opts.state.preparedClaimCount());
    return { claims };
  }

  async unprepare(
    request: NodeUnprepareResourcesRequest,
    logger: Logger,
  ): Promise<NodeUnprepareResourcesResponse> {
    const claims: NodeUnprepareResourcesResponse['claims'] = {};
    await forEachLimited(request.claims, CLAIMS_IN_FLIGHT, async (ref) => {
      const clog = claimLogger(logger, ref);
      try {
        checkRef(ref);
        await this.opts.state.unprepare(ref, clog);
        claims[ref.uid] = { error: '' };
        this.opts.metrics?.claimOperations.inc({ operation: 'unprepare', result: 'success' });
      } catch (thrown) {
        const err = inClaim(thrown, ref.uid, 'INTERNAL');
        clog.error({ err, code: err.code }, 'unprepare failed');
        claims[ref.uid] = { error: claimErrorText('unprepare', ref, err) };
        this.opts.metrics?.claimOperations.inc({ operation: 'unprepare', result: 'error' });
      }
    });
    this.opts.metrics?.preparedClaims.set(this.opts.state.preparedClaimCount());
    return { claims };
  }

  private unary<Req, Res>(
    method: string,
    version: ApiVersion,
    handler: (req: Req, logger: Logger) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const requestId = ++this.requestSeq;
      const logger = this.opts.logger.child({ method, version, requestId });
      const end = this.opts.metrics?.grpcDuration.startTimer({ method });
      logger.debug({ request: call.request }, 'request');
      handler(call.request, logger).then(
        (response) => {
          end?.();
          this.opts.metrics?.grpcRequests.inc({ service: `${version}.DRAPlugin`, method, code: 'OK' });
          logger.debug({ response }, 'response');
          callback(null, response);
        },
        (err: unknown) => {
          end?.();
          this.opts.metrics?.grpcRequests.inc({ service: `${version}.DRAPlugin`, method, code: 'INTERNAL' });
          logger.error({ err }, 'request failed');
          callback({ code: grpc.status.INTERNAL, details: errorMessage(err) });
        },
      );
    };
  }

  implementation(version: ApiVersion): grpc.UntypedServiceImplementation {
    return {
      NodePrepareResources: this.unary<NodePrepareResourcesRequest, NodePrepareResourcesResponse>(
        'NodePrepareResources',
        version,
        (req, log) => this.prepare(req, log, version),
      ),
      NodeUnprepareResources: this.unary<NodeUnprepareResourcesRequest, NodeUnprepareResourcesResponse>(
        'NodeUnprepareResources',
        version,
        (req, log) => this.unprepare(req, log),
      ),
    };
  }
}
