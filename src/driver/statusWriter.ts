/**
 * Writes prepared claims' `status.devices[]` (deviceStatus.ts builds the entries) in the
 * background: a prepare hands its entries over and returns; the kubelet never waits for the
 * apiserver here, and a failed write never fails a claim.
 *
 * The write is a server-side apply of the `status` subresource with our own field manager:
 * `status.devices` is a list-map keyed by driver, pool, device and shareID, so the apply owns
 * exactly our entries and leaves other drivers' alone; applying an empty list on unprepare
 * removes ours (best effort: the apiserver also drops the entries of a deallocated claim).
 *
 * Per claim, only the latest wish counts (an unprepare supersedes a pending write). Failures:
 * - 404: the claim is gone; nothing to do.
 * - 422: the claim was replaced (UID) or deallocated meanwhile; logged, not retried.
 * - 403 (RBAC), 422 with a Forbidden cause on status.devices (from 1.36, the per-driver check
 *   on `resourceclaims/driver`), 415 (no
 *   server-side apply) or an answer without our entries (DRAResourceClaimDeviceStatus off): the
 *   feature is off for this apiserver. Logged once; no more writes until the plugin restarts.
 * - anything else the apiserver answers (5xx, 429, 409): retried with capped backoff,
 *   `maxAttempts` in all.
 * - no answer at all (refused, reset, timed out): retried with capped backoff until it answers,
 *   without counting: a status given up on is never written (the kubelet does not prepare the
 *   claim again), so an apiserver outage of any length must not cost one. An unprepare
 *   supersedes the wish once the write lands; stop() ends the retries.
 */
import { KubeApiError, type KubeClient } from '../kube/client.js';
import { backoffDelay, sleep, type BackoffOptions } from '../util/backoff.js';
import { errorMessage, GpuDraError } from '../util/errors.js';
import type { ErrorCode } from '../util/errorCatalog.js';
import type { Logger } from '../util/log.js';
import {
  deviceStatusEntries,
  statusApplyBody,
  statusKept,
  type ClaimRef,
  type DescribedDevice,
  type DeviceStatusEntry,
} from './deviceStatus.js';

/** What the device state tells about claims; the writer below is the one implementation. */
export interface ClaimStatusSink {
  /** The claim's devices are prepared. Returns at once. */
  prepared(claim: ClaimRef, devices: readonly DescribedDevice[]): void;
  /** The claim is unprepared. Returns at once. */
  unprepared(claim: ClaimRef): void;
}

/**
 * The API calls the writer makes, for deploy/rbac.yaml and the tests that hold it to them.
 * From 1.36 (DRAResourceClaimGranularStatusAuthorization) changing a driver's entries also
 * needs `associated-node:patch` on the synthetic `resourceclaims/driver` subresource, named
 * after the driver: granted only for requests whose token is bound to the claim's node (a
 * DaemonSet pod's service-account token), so a plugin can write only its own node's claims.
 */
export function claimStatusRbacRules(driverName: string) {
  return [
    { apiGroups: ['resource.k8s.io'], resources: ['resourceclaims/status'], verbs: ['patch'] },
    {
      apiGroups: ['resource.k8s.io'],
      resources: ['resourceclaims/driver'],
      resourceNames: [driverName],
      verbs: ['associated-node:patch'],
    },
  ] as const;
}

export interface ClaimStatusWriterOptions {
  readonly kube: KubeClient;
  readonly driverName: string;
  readonly logger: Logger;
  /** Server-side apply field manager; default `gpu-dra`. */
  readonly fieldManager?: string;
  /**
   * Tries per write that the apiserver answers with a retryable error, the first included;
   * default 6 (about 15 s with the default backoff). Requests that get no answer do not count.
   */
  readonly maxAttempts?: number;
  /**
   * Status writes in flight at once; default 2. They share the API client's connections with
   * the claim reads of prepares, and a burst of prepares must not queue behind its own writes.
   */
  readonly maxInFlight?: number;
  readonly backoff?: BackoffOptions;
  /** Injectable for tests: the time the Ready condition is stamped with. */
  readonly now?: () => Date;
}

/**
 * From 1.36 the per-driver check on `resourceclaims/driver` runs in validation: a missing
 * permission answers 422 with a Forbidden cause on status.devices, not 403.
 */
function isDeviceStatusForbidden(err: unknown): boolean {
  if (!(err instanceof KubeApiError) || err.statusCode !== 422) return false;
  const causes = (err.status as { details?: { causes?: unknown } } | undefined)?.details?.causes;
  return (
    Array.isArray(causes) &&
    causes.some((c) => {
      const cause = c as { reason?: unknown; field?: unknown };
      return (
        cause.reason === 'FieldValueForbidden' &&
        typeof cause.field === 'string' &&
        cause.field.startsWith('status.devices')
      );
    })
  );
}

type Wish =
  | { readonly kind: 'write'; readonly claim: ClaimRef; readonly entries: readonly DeviceStatusEntry[] }
  | { readonly kind: 'clear'; readonly claim: ClaimRef };

/** Why the writer gave up on the feature, once. */
type Disabled = { readonly reason: string };

export class ClaimStatusWriter implements ClaimStatusSink {
  private readonly wishes = new Map<string, Wish>();
  private readonly running = new Map<string, Promise<void>>();
  /** Claims whose entries are written in this process: a repeated prepare writes nothing. */
  private readonly written = new Set<string>();
  private readonly abort = new AbortController();
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private disabled: Disabled | undefined;
  /** Counters for tests and logs. */
  readonly counts = { writes: 0, clears: 0, retries: 0, failures: 0 };

  constructor(private readonly opts: ClaimStatusWriterOptions) {}

  /** Undefined while writing; the reason once the apiserver refused the feature. */
  get disabledReason(): string | undefined {
    return this.disabled?.reason;
  }

  prepared(claim: ClaimRef, devices: readonly DescribedDevice[]): void {
    if (this.disabled || this.abort.signal.aborted || devices.length === 0) return;
    if (this.written.has(claim.uid) && !this.wishes.has(claim.uid)) return;
    const now = this.opts.now?.() ?? new Date();
    this.want({ kind: 'write', claim, entries: deviceStatusEntries(this.opts.driverName, devices, now) });
  }

  unprepared(claim: ClaimRef): void {
    this.written.delete(claim.uid);
    if (this.disabled || this.abort.signal.aborted) return;
    this.want({ kind: 'clear', claim });
  }

  /** Resolves when no write is pending or being retried (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running.values()]);
  }

  /** Stops retrying; a write in flight finishes or fails on its own. */
  async stop(): Promise<void> {
    this.abort.abort(new GpuDraError('CLAIM_STATUS_WRITE_FAILED', 'the plugin is stopping'));
    this.wishes.clear();
    await this.idle();
  }

  private want(wish: Wish): void {
    this.wishes.set(wish.claim.uid, wish);
    this.kick(wish.claim.uid);
  }

  private kick(uid: string): void {
    if (this.running.has(uid)) return;
    // Off the prepare's path: the first attempt starts after the kubelet's reply is under way.
    const run = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.drain(uid))
      .finally(() => {
        this.running.delete(uid);
        // A wish that came after the drain's last look, before this ran, would wait forever.
        if (this.wishes.has(uid)) this.kick(uid);
      });
    this.running.set(uid, run);
  }

  /** Applies the claim's latest wish until none is left, one request at a time. */
  private async drain(uid: string): Promise<void> {
    for (;;) {
      const wish = this.wishes.get(uid);
      if (!wish || this.disabled || this.abort.signal.aborted) {
        this.wishes.delete(uid);
        return;
      }
      const done = await this.attempt(wish);
      // A newer wish arrived while this one was in flight: apply that one next.
      if (this.wishes.get(uid) === wish) this.wishes.delete(uid);
      if (done && wish.kind === 'write') this.written.add(uid);
    }
  }

  /** Tries one wish until it lands or is given up on; true when it landed. */
  private async attempt(wish: Wish): Promise<boolean> {
    const { claim } = wish;
    const log = this.opts.logger.child({ claimUid: claim.uid, namespace: claim.namespace, name: claim.name });
    const entries = wish.kind === 'write' ? wish.entries : [];
    const maxAttempts = this.opts.maxAttempts ?? 6;
    /** Attempts the apiserver answered (with an error); `attempt` also counts unanswered ones. */
    let answered = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        const answer = await this.limited(() =>
          this.opts.kube.request<unknown>(
            'PATCH',
            `/apis/resource.k8s.io/v1/namespaces/${encodeURIComponent(claim.namespace)}/resourceclaims/${encodeURIComponent(claim.name)}/status`,
            {
              query: { fieldManager: this.opts.fieldManager ?? 'gpu-dra', force: true },
              body: statusApplyBody(claim, entries),
              contentType: 'application/apply-patch+yaml',
              signal: this.abort.signal,
            },
          ),
        );
        if (!statusKept(answer, entries)) {
          this.disable(
            log,
            'the apiserver dropped status.devices from the claim (feature gate DRAResourceClaimDeviceStatus off?)',
          );
          return false;
        }
        if (wish.kind === 'write') this.counts.writes++;
        else this.counts.clears++;
        log.debug(
          { devices: entries.length },
          wish.kind === 'write' ? 'claim status written' : 'claim status cleared',
        );
        return true;
      } catch (err) {
        if (this.abort.signal.aborted) return false;
        const status = err instanceof KubeApiError ? err.statusCode : undefined;
        if (status === 404) return false;
        if (status === 403 || status === 415 || isDeviceStatusForbidden(err)) {
          // The cause carries the apiserver's text; the message says what it means for us.
          this.disable(
            log,
            `the apiserver refuses this plugin's status.devices writes (HTTP ${String(status ?? '?')}): check the RBAC for resourceclaims/status and resourceclaims/driver, and that the token is bound to this node`,
            err,
          );
          return false;
        }
        if (status !== undefined) answered++;
        if (status === 422 || status === 400 || answered >= maxAttempts) {
          this.counts.failures++;
          log.warn(
            {
              err: new GpuDraError(
                'CLAIM_STATUS_WRITE_FAILED',
                `cannot ${wish.kind === 'write' ? 'write' : 'clear'} the claim's status.devices: ${errorMessage(err)}`,
                { cause: err, claimUid: claim.uid },
              ),
              attempts: attempt + 1,
            },
            'claim status not written; the claim is prepared all the same',
          );
          return false;
        }
        this.counts.retries++;
        try {
          await sleep(backoffDelay(attempt, this.opts.backoff), this.abort.signal);
        } catch {
          return false;
        }
      }
    }
  }

  /** Runs `send` once fewer than `maxInFlight` writes are in flight. */
  private async limited<T>(send: () => Promise<T>): Promise<T> {
    if (this.inFlight >= (this.opts.maxInFlight ?? 2)) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    } else {
      this.inFlight++;
    }
    try {
      return await send();
    } finally {
      // The slot passes straight to the next waiter, so the count stays right.
      const next = this.slotWaiters.shift();
      if (next) next();
      else this.inFlight--;
    }
  }

  private disable(log: Logger, reason: string, cause?: unknown): void {
    if (this.disabled) return;
    this.disabled = { reason };
    this.counts.failures++;
    // A refusal is a setting to fix, not a fault in the code: the message (ours, then the
    // apiserver's) says all, where two stack traces would bury it.
    const error = cause === undefined ? reason : `${reason}: ${errorMessage(cause)}`;
    log.error(
      { code: 'CLAIM_STATUS_WRITE_FAILED' satisfies ErrorCode, error },
      'claims status.devices cannot be written here; not trying again until the plugin restarts (claims are prepared all the same)',
    );
  }
}
