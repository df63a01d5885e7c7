/**
 * DRAPlugin handlers (v1 and v1beta1; identical except v1's `share_id`). Each call gets a
 * request id and a child logger; each claim is prepared independently and its failure becomes
 * that claim's `error`, so one bad claim never fails the RPC.
 */
import * as grpc from '@grpc/grpc-js';
import { errorMessage, GpuDraError, inClaim, isGpuDraError } from '../util/errors.js';
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
 * The most claims one call may name. The kubelet makes one call per pod and driver, so a real
 * call names a pod's few claims; the bound is what keeps every answer readable by the kubelet,
 * which receives at most 4 MiB per reply. A prepared claim's answer is at most ~23 KB (32
 * devices, the API's limit per claim, each with a request name ≤ 127, a pool ≤ 253, a device ≤ 63
 * characters, its CDI id and share id) and a refused one's at most ~4.3 KB (MAX_ERROR_MESSAGE):
 * 128 of the larger fit in 2.9 MiB. Checked before any work, so a call naming 200 000 claims
 * costs neither memory nor an unreadable reply.
 */
export const MAX_CLAIMS_PER_CALL = 128;

/** The kubelet's receive limit (grpc-go's default; the kubelet's DRA client keeps it). */
export const KUBELET_MAX_REPLY_BYTES = 4 * 1024 * 1024;

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

/** Refuses, before any work, a call naming more claims than one may (see MAX_CLAIMS_PER_CALL). */
function checkCallSize(verb: string, claims: readonly ClaimRef[]): void {
  if (claims.length <= MAX_CLAIMS_PER_CALL) return;
  throw new GpuDraError(
    'CALL_TOO_LARGE',
    `${verb} call names ${String(claims.length)} claims; one call may name at most ${String(MAX_CLAIMS_PER_CALL)} (the kubelet sends one call per pod); nothing was done`,
  );
}

/**
 * An upper bound of the reply's protobuf size: every string with a 1-byte tag and a 5-byte
 * length (the most a varint of a 4 MiB length takes), every message likewise framed. Cheap
 * (string lengths only), and never below the real size, so a reply it passes is readable.
 */
export function replyBytesBound(
  claims: Readonly<Record<string, { readonly error: string; readonly devices?: readonly ProtoDevice[] }>>,
): number {
  const field = (s: string | undefined): number => (s === undefined ? 0 : 6 + Buffer.byteLength(s));
  let total = 0;
  for (const [uid, answer] of Object.entries(claims)) {
    let entry = field(uid) + 6 + field(answer.error);
    for (const d of answer.devices ?? []) {
      let device = field(d.pool_name) + field(d.device_name) + field(d.share_id);
      for (const r of d.request_names) device += field(r);
      for (const c of d.cdi_device_ids) device += field(c);
      entry += 6 + device;
    }
    total += 6 + entry;
  }
  return total;
}

/** Refuses a reply the kubelet could not receive (a safety net; MAX_CLAIMS_PER_CALL should keep this from happening). */
function checkReplySize(verb: string, claims: Parameters<typeof replyBytesBound>[0]): void {
  const bytes = replyBytesBound(claims);
  if (bytes <= KUBELET_MAX_REPLY_BYTES) return;
  throw new GpuDraError(
    'CALL_TOO_LARGE',
    `${verb} reply would be up to ${String(bytes)} bytes, over the ${String(KUBELET_MAX_REPLY_BYTES)} the kubelet receives`,
  );
}

/** Claims a debug log line shows of a call or reply; the rest are counted. */
const LOGGED_CLAIMS = 16;

/**
 * A call as a debug log shows it: its first claims, each field cut; never the whole request,
 * which may be 16 MiB.
 */
function loggedCall(claims: readonly ClaimRef[]): {
  request: { claims: ClaimRef[] };
  claimsNotShown?: number;
} {
  const shownRefs = claims
    .slice(0, LOGGED_CLAIMS)
    .map((r) => ({ uid: shown(r.uid), namespace: shown(r.namespace), name: shown(r.name) }));
  const rest = claims.length - shownRefs.length;
  return { request: { claims: shownRefs }, ...(rest > 0 ? { claimsNotShown: rest } : {}) };
}

type ReplyClaims = Parameters<typeof replyBytesBound>[0];

/** A reply as a debug log shows it: its first claims' answers (bounded already), the rest counted. */
function loggedReply(claims: ReplyClaims): { response: { claims: ReplyClaims }; claimsNotShown?: number } {
  const uids = Object.keys(claims);
  const first = Object.fromEntries(uids.slice(0, LOGGED_CLAIMS).map((uid) => [uid, claims[uid]]));
  const rest = uids.length - LOGGED_CLAIMS;
  return { response: { claims: first as ReplyClaims }, ...(rest > 0 ? { claimsNotShown: rest } : {}) };
}

export class DraService {
  private requestSeq = 0;

  constructor(private readonly opts: DraServiceOptions) {}

  async prepare(
    request: NodePrepareResourcesRequest,
    logger: Logger,
    version: ApiVersion,
  ): Promise<NodePrepareResourcesResponse> {
    checkCallSize('NodePrepareResources', request.claims);
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
    checkReplySize('NodePrepareResources', claims);
    return { claims };
  }

  async unprepare(
    request: NodeUnprepareResourcesRequest,
    logger: Logger,
  ): Promise<NodeUnprepareResourcesResponse> {
    checkCallSize('NodeUnprepareResources', request.claims);
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
    checkReplySize('NodeUnprepareResources', claims);
    return { claims };
  }

  private unary<
    Req extends { readonly claims: readonly ClaimRef[] },
    Res extends { readonly claims: ReplyClaims },
  >(
    method: string,
    version: ApiVersion,
    handler: (req: Req, logger: Logger) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const requestId = ++this.requestSeq;
      const logger = this.opts.logger.child({ method, version, requestId });
      const end = this.opts.metrics?.grpcDuration.startTimer({ method });
      logger.debug(loggedCall(call.request.claims), 'request');
      handler(call.request, logger).then(
        (response) => {
          end?.();
          this.opts.metrics?.grpcRequests.inc({ service: `${version}.DRAPlugin`, method, code: 'OK' });
          logger.debug(loggedReply(response.claims), 'response');
          callback(null, response);
        },
        (err: unknown) => {
          end?.();
          const tooLarge = isGpuDraError(err, 'CALL_TOO_LARGE');
          const code = tooLarge ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INTERNAL;
          this.opts.metrics?.grpcRequests.inc({
            service: `${version}.DRAPlugin`,
            method,
            code: tooLarge ? 'RESOURCE_EXHAUSTED' : 'INTERNAL',
          });
          logger.error({ err }, 'request failed');
          callback({ code, details: isGpuDraError(err) ? `${err.code}: ${err.message}` : errorMessage(err) });
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
