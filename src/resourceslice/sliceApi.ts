/**
 * The thin edge between the publisher and the apiserver: ResourceSlice create/update/delete/
 * list/watch and Node get, through the small keep-alive client in src/kube. Everything
 * crossing it is plain JSON in wire form, so the publisher can be tested against an in-memory
 * fake of {@link SliceClient}.
 */
import { KubeApiError, toKubeClient, type KubeClient } from '../kube/client.js';
import type { KubeConfig } from '../kube/config.js';
import type { ResourceSlice } from '../api/resource.js';
import type { ServerVersion } from './partitions.js';

export type WatchPhase = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchHandle {
  stop(): void;
}

/** What the publisher needs from the apiserver: exactly the verbs of PUBLISHER_RBAC_RULES. */
export interface SliceClient {
  list(fieldSelector: string): Promise<{ items: ResourceSlice[]; resourceVersion: string | undefined }>;
  create(slice: ResourceSlice): Promise<ResourceSlice>;
  update(slice: ResourceSlice): Promise<ResourceSlice>;
  delete(name: string, preconditions?: { uid?: string; resourceVersion?: string }): Promise<void>;
  /**
   * Watch slices matching the selector, asking the apiserver to end the watch after
   * `timeoutSeconds`; `onDone` is called once when it ends for any reason (`undefined`: a clean end).
   */
  watch(
    fieldSelector: string,
    resourceVersion: string | undefined,
    timeoutSeconds: number,
    onEvent: (phase: WatchPhase, obj: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
  getNodeUid(name: string): Promise<string>;
  /** `GET /version` (open to every authenticated user): picks the counter layout. */
  serverVersion(): Promise<ServerVersion>;
}

/** The HTTP status of an apiserver error, when there is one. */
export function httpStatus(err: unknown): number | undefined {
  if (err instanceof KubeApiError) return err.statusCode;
  if (typeof err === 'object' && err !== null && 'statusCode' in err) {
    const code = err.statusCode;
    if (typeof code === 'number') return code;
  }
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = err.code;
    if (typeof code === 'number') return code;
  }
  return undefined;
}

const SLICES_PATH = '/apis/resource.k8s.io/v1/resourceslices';
const FIELD_MANAGER = 'gpu-dra';

interface WireList<T> {
  items?: T[] | null;
  metadata?: { resourceVersion?: string };
}

/** The real client: a {@link KubeClient} (shared, e.g. with the claim getter) or a config to build one. */
export function kubeSliceClient(kube: KubeClient | KubeConfig): SliceClient {
  const client = toKubeClient(kube);
  const one = (name: string): string => `${SLICES_PATH}/${encodeURIComponent(name)}`;
  return {
    async list(fieldSelector) {
      const res = await client.request<WireList<ResourceSlice>>('GET', SLICES_PATH, {
        query: { fieldSelector },
      });
      return { items: res.items ?? [], resourceVersion: res.metadata?.resourceVersion };
    },
    async create(slice) {
      return await client.request<ResourceSlice>('POST', SLICES_PATH, {
        query: { fieldManager: FIELD_MANAGER },
        body: { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceSlice', ...slice },
      });
    },
    async update(slice) {
      return await client.request<ResourceSlice>('PUT', one(slice.metadata.name), {
        query: { fieldManager: FIELD_MANAGER },
        body: { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceSlice', ...slice },
      });
    },
    async delete(name, preconditions) {
      const body: Record<string, unknown> = { apiVersion: 'v1', kind: 'DeleteOptions' };
      if (preconditions) body['preconditions'] = preconditions;
      await client.request('DELETE', one(name), { body });
    },
    async watch(fieldSelector, resourceVersion, timeoutSeconds, onEvent, onDone) {
      return await client.watch(
        SLICES_PATH,
        { fieldSelector, allowWatchBookmarks: true, resourceVersion, timeoutSeconds },
        (phase, obj) => {
          onEvent(phase as WatchPhase, obj);
        },
        onDone,
      );
    },
    async getNodeUid(name) {
      const node = await client.request<{ metadata?: { uid?: string } }>(
        'GET',
        `/api/v1/nodes/${encodeURIComponent(name)}`,
      );
      const uid = node.metadata?.uid;
      if (!uid) throw new Error(`node ${name} has no metadata.uid`);
      return uid;
    },
    async serverVersion() {
      return await client.request<ServerVersion>('GET', '/version');
    },
  };
}
