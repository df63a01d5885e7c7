/**
 * Pure: device metadata (KEP-5304) as the kubelet plugin helper of
 * k8s.io/dynamic-resource-allocation v0.37 lays it out, so consumers written against it read
 * ours unchanged:
 *
 * - one file per request of a claim, mounted read-only at
 *   `/var/run/kubernetes.io/dra-device-attributes/resourceclaims/<claim>/<request>/<driver>-metadata.json`,
 *   or `.../resourceclaimtemplates/<pod claim name>/...` for a claim made from a template (its
 *   own name is generated; the pod spec knows the pod-local name, which the claim carries in
 *   the `resource.kubernetes.io/pod-claim-name` annotation);
 * - the file is a JSON stream: the same `DeviceMetadata` object once per API version, newest
 *   first (`metadata.resource.k8s.io/v1beta1`, then `v1alpha1` for 1.36-era readers), each
 *   read with a streaming decoder up to the first version the reader knows.
 *
 * Where the helper writes a second CDI spec per request (`<driver>/metadata=<uid>_<request>`),
 * the mount goes into the claim's own spec, on the first device of the request (as the helper
 * adds its id to that device only): one spec file per claim to write, restore and remove.
 *
 * The host file lives in the plugin's directory, named after the validated claim UID and the
 * request name, never after the claim's name; names that end up in a container path are
 * checked against the API's own rules first.
 */
import { isDnsLabel, isDnsSubdomain } from '../util/kubeNames.js';
import path from 'node:path';
import { GpuDraError } from '../util/errors.js';
import { naturalCompare } from '../util/naturalCompare.js';
import type { CdiMount } from '../cdi/spec.js';
import type { DescribedDevice } from './deviceStatus.js';

export const METADATA_CONTAINER_DIR = '/var/run/kubernetes.io/dra-device-attributes';
/** Newest first: readers take the first they understand. */
export const METADATA_API_VERSIONS = [
  'metadata.resource.k8s.io/v1beta1',
  'metadata.resource.k8s.io/v1alpha1',
] as const;
/** Under the plugin's directory, as the helper names it. */
export const METADATA_HOST_SUBDIR = 'dra-device-metadata';
export const POD_CLAIM_NAME_ANNOTATION = 'resource.kubernetes.io/pod-claim-name';

/** The claim a metadata file is about. */
export interface MetadataClaim {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** `resource.kubernetes.io/pod-claim-name`, for a claim made from a template. */
  readonly podClaimName?: string | undefined;
}

function refuse(claim: MetadataClaim, what: string, value: string): never {
  throw new GpuDraError(
    'DEVICE_METADATA_FAILED',
    `${what} ${JSON.stringify(value)} of claim ${claim.namespace}/${claim.name} is not a valid name: no metadata path is built from it`,
    { claimUid: claim.uid },
  );
}

/** `<driver>-metadata.json`. */
export function metadataFileName(driverName: string): string {
  return `${driverName}-metadata.json`;
}

/** Where a container finds the request's file; throws on a name the API would not allow. */
export function metadataContainerPath(driverName: string, claim: MetadataClaim, request: string): string {
  if (!isDnsLabel(request)) refuse(claim, 'request', request);
  if (claim.podClaimName) {
    if (!isDnsLabel(claim.podClaimName)) refuse(claim, 'pod claim name', claim.podClaimName);
    return path.posix.join(
      METADATA_CONTAINER_DIR,
      'resourceclaimtemplates',
      claim.podClaimName,
      request,
      metadataFileName(driverName),
    );
  }
  if (!isDnsSubdomain(claim.name)) refuse(claim, 'claim name', claim.name);
  return path.posix.join(
    METADATA_CONTAINER_DIR,
    'resourceclaims',
    claim.name,
    request,
    metadataFileName(driverName),
  );
}

/** Devices by request, each request's devices in CDI order (natural by name, then share). */
export function devicesByRequest(devices: readonly DescribedDevice[]): Map<string, DescribedDevice[]> {
  const sorted = [...devices].sort(
    (a, b) => naturalCompare(a.deviceName, b.deviceName) || naturalCompare(a.shareId ?? '', b.shareId ?? ''),
  );
  const out = new Map<string, DescribedDevice[]>();
  for (const d of sorted) for (const r of d.requestNames) out.set(r, [...(out.get(r) ?? []), d]);
  return new Map([...out].sort(([a], [b]) => naturalCompare(a, b)));
}

/**
 * Pure: the request's metadata file: the `DeviceMetadata` object once per version in
 * {@link METADATA_API_VERSIONS}, each pretty-printed and followed by a newline.
 */
export function metadataDocument(
  driverName: string,
  claim: MetadataClaim,
  request: string,
  devices: readonly DescribedDevice[],
): string {
  const body = {
    metadata: { name: claim.name, namespace: claim.namespace, uid: claim.uid, generation: 1 },
    ...(claim.podClaimName ? { podClaimName: claim.podClaimName } : {}),
    requests: [
      {
        name: request,
        devices: devices.map((d) => ({
          driver: driverName,
          pool: d.poolName,
          name: d.deviceName,
          ...(Object.keys(d.attributes).length > 0 ? { attributes: sortedAttributes(d.attributes) } : {}),
        })),
      },
    ],
  };
  return METADATA_API_VERSIONS.map(
    (apiVersion) => `${JSON.stringify({ kind: 'DeviceMetadata', apiVersion, ...body }, null, 2)}\n`,
  ).join('');
}

function sortedAttributes<T>(attributes: Readonly<Record<string, T>>): Record<string, T> {
  return Object.fromEntries(Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** One request's file: where it goes on the host (relative to the claim's directory), and what. */
export interface MetadataFile {
  readonly request: string;
  /** `<request>/<driver>-metadata.json`, below the claim's directory. */
  readonly relativePath: string;
  readonly containerPath: string;
  readonly content: string;
}

/** Pure: every file of a claim, one per request. Throws on a name that cannot be a path. */
export function metadataFiles(
  driverName: string,
  claim: MetadataClaim,
  devices: readonly DescribedDevice[],
): MetadataFile[] {
  return [...devicesByRequest(devices)].map(([request, devs]) => ({
    request,
    relativePath: path.posix.join(request, metadataFileName(driverName)),
    containerPath: metadataContainerPath(driverName, claim, request),
    content: metadataDocument(driverName, claim, request, devs),
  }));
}

/**
 * Pure: the CDI mounts of the files, by device name: each request's file on the first of its
 * devices, so a container given that request's devices gets the file once.
 */
export function metadataMounts(
  files: readonly MetadataFile[],
  devices: readonly DescribedDevice[],
  hostPathOf: (file: MetadataFile) => string,
): Map<string, CdiMount[]> {
  const byRequest = devicesByRequest(devices);
  const out = new Map<string, CdiMount[]>();
  for (const f of files) {
    const first = byRequest.get(f.request)?.[0];
    if (!first) continue;
    const mount: CdiMount = {
      hostPath: hostPathOf(f),
      containerPath: f.containerPath,
      options: ['ro', 'nosuid', 'nodev', 'bind'],
    };
    out.set(first.deviceName, [...(out.get(first.deviceName) ?? []), mount]);
  }
  return out;
}
