/**
 * The thin edge between the publisher and the apiserver: ResourceSlice create/update/delete/
 * list/watch and Node get, through @kubernetes/client-node. Everything crossing it is plain
 * JSON in wire form (`int`, not the generated client's `_int`), so the publisher can be tested
 * against an in-memory fake of {@link SliceClient}.
 */
import type { KubeConfig, V1ResourceSlice } from '@kubernetes/client-node';

/** A ResourceSlice as JSON on the wire (what the apiserver stores and returns). */
export interface WireSlice {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    uid?: string;
    resourceVersion?: string;
    ownerReferences?: WireOwnerReference[];
    labels?: Record<string, string>;
    [key: string]: unknown;
  };
  spec: {
    driver: string;
    nodeName?: string;
    pool: { name: string; generation: number; resourceSliceCount: number };
    devices?: WireDevice[];
    [key: string]: unknown;
  };
}

export interface WireDevice {
  name: string;
  attributes?: Record<string, Record<string, unknown>>;
  capacity?: Record<string, { value: string; [key: string]: unknown }>;
  [key: string]: unknown;
}

export interface WireOwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export type WatchPhase = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchHandle {
  stop(): void;
}

/** What the publisher needs from the apiserver: exactly the verbs of PUBLISHER_RBAC_RULES. */
export interface SliceClient {
  list(fieldSelector: string): Promise<{ items: WireSlice[]; resourceVersion: string | undefined }>;
  create(slice: WireSlice): Promise<WireSlice>;
  update(slice: WireSlice): Promise<WireSlice>;
  delete(name: string, preconditions?: { uid?: string; resourceVersion?: string }): Promise<void>;
  /** Watch slices matching the selector; `onDone` is called once when the watch ends for any reason. */
  watch(
    fieldSelector: string,
    resourceVersion: string | undefined,
    onEvent: (phase: WatchPhase, obj: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
  getNodeUid(name: string): Promise<string>;
}

/** The HTTP status of an apiserver error, when there is one. */
export function httpStatus(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = err.code;
    if (typeof code === 'number') return code;
  }
  return undefined;
}

/** Generated-client object -> wire JSON: drops undefined, Dates to strings, `_int` -> `int`. */
export function fromClientObject(obj: unknown): WireSlice {
  return JSON.parse(JSON.stringify(obj), (key, value: unknown) => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && '_int' in value) {
      const { _int, ...rest } = value as Record<string, unknown>;
      return { ...rest, int: _int };
    }
    return value;
  }) as WireSlice;
}

/** Wire JSON -> what the generated client serializes (`int` -> `_int` in attribute values). */
export function toClientObject(slice: WireSlice): V1ResourceSlice {
  const copy = JSON.parse(JSON.stringify(slice)) as WireSlice;
  for (const d of copy.spec.devices ?? []) {
    for (const [k, v] of Object.entries(d.attributes ?? {})) {
      if ('int' in v) {
        const { int, ...rest } = v;
        (d.attributes ?? {})[k] = { ...rest, _int: int };
      }
    }
  }
  // client-node models are data-only classes: its serializer reads plain JSON of the same shape.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
  return copy;
}

const SLICES_PATH = '/apis/resource.k8s.io/v1/resourceslices';
const FIELD_MANAGER = 'gpu-dra';

type ClientNode = typeof import('@kubernetes/client-node');

/**
 * The real client. @kubernetes/client-node is imported on first use, not at module load, so the
 * model and the publisher's logic load (and unit-test) without it.
 */
export function kubeSliceClient(kc: KubeConfig): SliceClient {
  let apis:
    | Promise<{
        k8s: ClientNode;
        resource: InstanceType<ClientNode['ResourceV1Api']>;
        core: InstanceType<ClientNode['CoreV1Api']>;
        watcher: InstanceType<ClientNode['Watch']>;
      }>
    | undefined;
  const load = (): NonNullable<typeof apis> =>
    (apis ??= import('@kubernetes/client-node').then((k8s) => ({
      k8s,
      resource: kc.makeApiClient(k8s.ResourceV1Api),
      core: kc.makeApiClient(k8s.CoreV1Api),
      watcher: new k8s.Watch(kc),
    })));
  return {
    async list(fieldSelector) {
      const { resource } = await load();
      const res = await resource.listResourceSlice({ fieldSelector });
      return { items: res.items.map(fromClientObject), resourceVersion: res.metadata?.resourceVersion };
    },
    async create(slice) {
      const { resource } = await load();
      return fromClientObject(
        await resource.createResourceSlice({ body: toClientObject(slice), fieldManager: FIELD_MANAGER }),
      );
    },
    async update(slice) {
      const { resource } = await load();
      return fromClientObject(
        await resource.replaceResourceSlice({
          name: slice.metadata.name,
          body: toClientObject(slice),
          fieldManager: FIELD_MANAGER,
        }),
      );
    },
    async delete(name, preconditions) {
      const { resource, k8s } = await load();
      const body = new k8s.V1DeleteOptions();
      if (preconditions) body.preconditions = Object.assign(new k8s.V1Preconditions(), preconditions);
      await resource.deleteResourceSlice({ name, body });
    },
    async watch(fieldSelector, resourceVersion, onEvent, onDone) {
      const { watcher } = await load();
      const query: Record<string, string | boolean> = { fieldSelector, allowWatchBookmarks: true };
      if (resourceVersion !== undefined) query['resourceVersion'] = resourceVersion;
      const ctl = await watcher.watch(
        SLICES_PATH,
        query,
        (phase: string, obj: unknown) => {
          onEvent(phase as WatchPhase, obj);
        },
        onDone,
      );
      return {
        stop: () => {
          ctl.abort();
        },
      };
    },
    async getNodeUid(name) {
      const { core } = await load();
      const node = await core.readNode({ name });
      const uid = node.metadata?.uid;
      if (!uid) throw new Error(`node ${name} has no metadata.uid`);
      return uid;
    },
  };
}
