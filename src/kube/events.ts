/**
 * Kubernetes Events about this node (events.k8s.io/v1), for what an operator must see without
 * reading the plugin's log: `kubectl describe node` and `kubectl get events` show them. Only
 * `create` is used, in the `default` namespace, where the API puts events of cluster-scoped
 * objects (deploy/rbac.yaml grants exactly that).
 */
import crypto from 'node:crypto';
import type { KubeClient } from './client.js';

/** The namespace of events about cluster-scoped objects such as a Node. */
export const NODE_EVENT_NAMESPACE = 'default';

export interface NodeEvent {
  readonly type: 'Normal' | 'Warning';
  /** CamelCase, machine-readable (`CheckpointRebuilt`). */
  readonly reason: string;
  /** What the plugin did (`RebuildCheckpoint`). */
  readonly action: string;
  /** Human-readable, at most 1 kB. */
  readonly note: string;
}

/** Pure: the Event object for `event` on `nodeName`, reported by `driverName`'s plugin there. */
export function nodeEventBody(
  event: NodeEvent,
  opts: { readonly nodeName: string; readonly driverName: string; readonly now?: Date },
): Record<string, unknown> {
  const now = opts.now ?? new Date();
  return {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: {
      // As client-go's recorder names them: the object, then something unique.
      name: `${opts.nodeName}.${now.getTime().toString(16)}${crypto.randomBytes(4).toString('hex')}`,
      namespace: NODE_EVENT_NAMESPACE,
    },
    // MicroTime: exactly six fractional digits.
    eventTime: now.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z'),
    reportingController: `${opts.driverName}/kubelet-plugin`,
    reportingInstance: `${opts.driverName}/kubelet-plugin-${opts.nodeName}`.slice(0, 128),
    action: event.action,
    reason: event.reason,
    type: event.type,
    note: event.note,
    regarding: { apiVersion: 'v1', kind: 'Node', name: opts.nodeName },
  };
}

/** Creates `event` about the node. Throws what the API answered (callers log it, never wait on it). */
export async function postNodeEvent(
  client: KubeClient,
  event: NodeEvent,
  opts: { readonly nodeName: string; readonly driverName: string },
): Promise<void> {
  await client.request('POST', `/apis/events.k8s.io/v1/namespaces/${NODE_EVENT_NAMESPACE}/events`, {
    body: nodeEventBody(event, opts),
    timeoutMs: 10_000,
  });
}
