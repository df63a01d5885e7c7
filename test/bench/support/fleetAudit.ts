// Who asked the apiserver for what, in the fleet harness. apiserver_request_total has no client
// label, so attribution comes from the apiserver's audit log (level Metadata: user, user agent,
// verb, resource, time, code; no bodies). Each simulated node's driver authenticates as its own
// user (FLEET_DRIVER_USER_PREFIX + node name), so a request is counted against exactly one node.
// Pure functions over the parsed log; the bench does the I/O.

/** Every driver of the fleet runs as `<prefix><node name>`, in the {@link FLEET_DRIVER_GROUP} group. */
export const FLEET_DRIVER_USER_PREFIX = 'gpu-dra-fleet:';
/** The group the fleet's RBAC binds the driver's role to. */
export const FLEET_DRIVER_GROUP = 'gpu-dra:fleet-drivers';

/**
 * The apiserver's audit policy: Metadata for every request, logged when received (one line per
 * request, watches included, counted at their start) and when complete (its status code).
 */
export const FLEET_AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted]
rules:
  - level: Metadata
`;

export type Client = 'driver' | 'kubelet' | 'scheduler' | 'controller-manager' | 'apiserver' | 'bench';

/** One request, from its RequestReceived line (code from its ResponseComplete line, when seen). */
export interface AuditRequest {
  readonly id: string;
  /** Epoch ms the apiserver received it. */
  readonly at: number;
  readonly user: string;
  readonly client: Client;
  /** The node whose driver sent it; undefined for every other client. */
  readonly node: string | undefined;
  readonly verb: string;
  /** `resourceslices`, `nodes`, `resourceclaims/status`, or the path for non-resource URLs. */
  readonly resource: string;
  code: number | undefined;
}

export const WRITE_VERBS: ReadonlySet<string> = new Set([
  'create',
  'update',
  'patch',
  'delete',
  'deletecollection',
]);

export function classify(user: string, userAgent: string): { client: Client; node: string | undefined } {
  if (user.startsWith(FLEET_DRIVER_USER_PREFIX))
    return { client: 'driver', node: user.slice(FLEET_DRIVER_USER_PREFIX.length) };
  if (user.startsWith('system:node:')) return { client: 'kubelet', node: undefined };
  if (user === 'system:apiserver') return { client: 'apiserver', node: undefined };
  // The scheduler and controller-manager use the admin kubeconfig; their user agents tell them apart.
  if (userAgent.startsWith('kube-scheduler')) return { client: 'scheduler', node: undefined };
  if (userAgent.startsWith('kube-controller-manager'))
    return { client: 'controller-manager', node: undefined };
  return { client: 'bench', node: undefined };
}

interface AuditLine {
  auditID?: string;
  stage?: string;
  verb?: string;
  requestURI?: string;
  userAgent?: string;
  user?: { username?: string };
  objectRef?: { resource?: string; subresource?: string };
  responseStatus?: { code?: number };
  requestReceivedTimestamp?: string;
}

/**
 * Parses audit log text (JSON lines) into requests, in order of receipt. A line cut short (the
 * log read while being written) is skipped.
 */
export function parseAudit(text: string): AuditRequest[] {
  const byId = new Map<string, AuditRequest>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let e: AuditLine;
    try {
      e = JSON.parse(line) as AuditLine;
    } catch {
      continue;
    }
    const id = e.auditID;
    if (id === undefined) continue;
    if (e.stage === 'RequestReceived') {
      const user = e.user?.username ?? '';
      const { client, node } = classify(user, e.userAgent ?? '');
      const ref = e.objectRef;
      const resource =
        ref?.resource !== undefined
          ? ref.subresource
            ? `${ref.resource}/${ref.subresource}`
            : ref.resource
          : ((e.requestURI ?? '').split('?')[0] ?? '');
      byId.set(id, {
        id,
        at: Date.parse(e.requestReceivedTimestamp ?? ''),
        user,
        client,
        node,
        verb: e.verb ?? '',
        resource,
        code: undefined,
      });
    } else if (e.stage === 'ResponseComplete' || e.stage === 'Panic') {
      const r = byId.get(id);
      if (r) r.code = e.responseStatus?.code;
    }
  }
  return [...byId.values()].sort((a, b) => a.at - b.at);
}

/** Requests received in [from, to). */
export function within(reqs: readonly AuditRequest[], from: number, to: number): AuditRequest[] {
  return reqs.filter((r) => r.at >= from && r.at < to);
}

/** Counts by `key`, largest first. */
export function countBy(reqs: readonly AuditRequest[], key: (r: AuditRequest) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const r of reqs) m.set(key(r), (m.get(key(r)) ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/** `verb resource` of a request, e.g. `list resourceslices`. */
export const verbResource = (r: AuditRequest): string => `${r.verb} ${r.resource}`;

export interface BucketPeak {
  /** Start of the busiest bucket, ms after `from`. */
  readonly atMs: number;
  /** Driver requests in it, all nodes together. */
  readonly total: number;
  /** The same divided by the number of nodes. */
  readonly perNode: number;
  /** The most any one node sent in any bucket. */
  readonly maxOneNode: number;
}

/**
 * Driver requests in `bucketMs` buckets over [from, to): the busiest bucket for the fleet as a
 * whole (and per node on average), and the most one node sent in one bucket.
 */
export function driverPeak(
  reqs: readonly AuditRequest[],
  from: number,
  to: number,
  bucketMs: number,
  nodes: number,
): BucketPeak {
  const buckets = Math.max(1, Math.ceil((to - from) / bucketMs));
  const total = new Array<number>(buckets).fill(0);
  const perNode = new Map<string, number[]>();
  for (const r of reqs) {
    if (r.client !== 'driver' || r.node === undefined || r.at < from || r.at >= to) continue;
    const b = Math.floor((r.at - from) / bucketMs);
    total[b] = (total[b] ?? 0) + 1;
    let mine = perNode.get(r.node);
    if (!mine) perNode.set(r.node, (mine = new Array<number>(buckets).fill(0)));
    mine[b] = (mine[b] ?? 0) + 1;
  }
  let best = 0;
  for (let b = 1; b < buckets; b++) if ((total[b] ?? 0) > (total[best] ?? 0)) best = b;
  const maxOneNode = Math.max(0, ...[...perNode.values()].flatMap((v) => v));
  const top = total[best] ?? 0;
  return {
    atMs: best * bucketMs,
    total: top,
    perNode: Math.round((top / Math.max(1, nodes)) * 100) / 100,
    maxOneNode,
  };
}

/**
 * Per node, the time of its first request matching `pred` at or after `from` (epoch ms); nodes
 * with none are absent.
 */
export function firstPerNode(
  reqs: readonly AuditRequest[],
  from: number,
  pred: (r: AuditRequest) => boolean,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of reqs) {
    if (r.client !== 'driver' || r.node === undefined || r.at < from || !pred(r)) continue;
    if (!out.has(r.node)) out.set(r.node, r.at);
  }
  return out;
}

/**
 * apiserver_request_total from the apiserver's /metrics, summed over codes and scopes, keyed
 * `VERB resource[/subresource]` (the metric's verb is upper case: `LIST`, `WATCH`, `UPDATE`).
 */
export function requestTotals(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const labels = line.slice(line.indexOf('{') + 1, line.lastIndexOf('}'));
    const get = (k: string): string => new RegExp(`(?:^|,)${k}="([^"]*)"`).exec(labels)?.[1] ?? '';
    const value = Number(line.slice(line.lastIndexOf('}') + 1).trim());
    if (!Number.isFinite(value)) continue;
    const sub = get('subresource');
    const key = `${get('verb')} ${get('resource')}${sub ? `/${sub}` : ''}`;
    out.set(key, (out.get(key) ?? 0) + value);
  }
  return out;
}

/** `after − before` per key (a key only in `after` counts from 0). */
export function totalsDelta(
  before: ReadonlyMap<string, number>,
  after: ReadonlyMap<string, number>,
): Map<string, number> {
  return new Map([...after].map(([k, n]) => [k, n - (before.get(k) ?? 0)]));
}
