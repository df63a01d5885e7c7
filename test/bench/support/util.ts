// Small helpers both cluster benchmarks use.
import type { CoreV1Api } from '@kubernetes/client-node';

import type { KubeletEvent, NodeHarness } from '../../e2e/support/node.js';

/**
 * A pause pod pinned to `nodeName` whose one container uses one claim made from `template`.
 * Returns the pod's UID.
 */
export async function createClaimPod(
  core: CoreV1Api,
  opts: { namespace: string; name: string; nodeName: string; template: string },
): Promise<string> {
  const { namespace, name } = opts;
  const pod = await core.createNamespacedPod({
    namespace,
    body: {
      metadata: { name, namespace },
      spec: {
        nodeSelector: { 'kubernetes.io/hostname': opts.nodeName },
        containers: [
          { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'gpu' }] } },
        ],
        resourceClaims: [{ name: 'gpu', resourceClaimTemplateName: opts.template }],
      },
    },
  });
  return pod.metadata?.uid ?? '';
}

/**
 * The kubelet-dra event that settles a pod's prepare: `prepared`, or a `prepareFailed` from the
 * driver's NodePrepareResources (not the harness's own retries before the claim is visible).
 */
export function waitForPrepareOutcome(
  node: NodeHarness,
  pod: string,
  timeoutMs = 120_000,
): Promise<KubeletEvent> {
  return node.waitForEvent(
    (e) =>
      e['pod'] === pod &&
      (e.event === 'prepared' ||
        (e.event === 'prepareFailed' && String(e['error']).includes('NodePrepareResources'))),
    timeoutMs,
  );
}

/** A positive integer from the environment (a bench knob), else `fallback`. */
export function envInt(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : fallback;
}

/** RFC 3339 with nanoseconds (the kubelet harness's `time`) → epoch milliseconds with fraction. */
export function eventTimeMs(e: KubeletEvent): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(e.time);
  if (!m?.[1] || !m[3]) return Date.parse(e.time);
  return Date.parse(`${m[1]}${m[3]}`) + Number(`0.${m[2] ?? '0'}`) * 1000;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        out[i] = await fn(items[i] as T, i);
      }
    }),
  );
  return out;
}
