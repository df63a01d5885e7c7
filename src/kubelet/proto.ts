/**
 * Loads the kubelet protos in proto/dra/ with @grpc/proto-loader and gives their messages
 * TypeScript shapes. Owns nothing else: no sockets, no handlers.
 *
 * Loader options are fixed here and used by the server and by tests' clients alike:
 * `keepCase: true` (fields keep their proto names: `supported_versions`, `cdi_device_ids`),
 * `defaults: true` (absent scalars and repeated fields read as ''/[]), `oneofs: true`.
 */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { packageRoot } from '../util/packageRoot.js';

/** proto/ at the package root (shipped in the npm package and the image). */
export const PROTO_ROOT = path.join(packageRoot(), 'proto');

export const LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

export const REGISTRATION_SERVICE = 'pluginregistration.Registration';
export const DRA_V1_SERVICE = 'k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin';
export const DRA_V1BETA1_SERVICE = 'k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin';
/** The resource health stream (KEP-4680); its proto packages are just `v1` and `v1alpha1`. */
export const HEALTH_V1_SERVICE = 'v1.DRAResourceHealth';
export const HEALTH_V1ALPHA1_SERVICE = 'v1alpha1.DRAResourceHealth';

/**
 * What the kubelet is told we serve, in order of preference ("<pkg last segment>.<Service>").
 * From 1.37 the kubelet opens the health stream only for a driver that lists a health service
 * here (newest it knows first); 1.34–1.36 call v1alpha1 regardless and skip names they do not know.
 */
export const SUPPORTED_VERSIONS: readonly string[] = Object.freeze([
  'v1.DRAPlugin',
  'v1beta1.DRAPlugin',
  HEALTH_V1_SERVICE,
  HEALTH_V1ALPHA1_SERVICE,
]);
export const PLUGIN_TYPE_DRA = 'DRAPlugin';

// ---- message shapes (keepCase field names) ----

export interface InfoRequest {
  readonly [key: string]: never;
}
export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}
export interface RegistrationStatus {
  plugin_registered: boolean;
  error: string;
}
export type RegistrationStatusResponse = Record<string, never>;

export interface ClaimRef {
  namespace: string;
  uid: string;
  name: string;
}
export interface ProtoDevice {
  request_names: string[];
  pool_name: string;
  device_name: string;
  cdi_device_ids: string[];
  /** v1 only; never set by this driver yet (no consumable capacity). */
  share_id?: string;
}
export interface NodePrepareResourcesRequest {
  claims: ClaimRef[];
}
export interface NodePrepareResourceResponse {
  devices: ProtoDevice[];
  error: string;
}
export interface NodePrepareResourcesResponse {
  claims: Record<string, NodePrepareResourceResponse>;
}
export interface NodeUnprepareResourcesRequest {
  claims: ClaimRef[];
}
export interface NodeUnprepareResourceResponse {
  error: string;
}
export interface NodeUnprepareResourcesResponse {
  claims: Record<string, NodeUnprepareResourceResponse>;
}

export type HealthStatus = 'UNKNOWN' | 'HEALTHY' | 'UNHEALTHY';
export interface DeviceHealth {
  device: { pool_name: string; device_name: string };
  health: HealthStatus;
  /** Unix seconds; int64, so a string as the loader reads it. */
  last_updated_time: string;
  health_check_timeout_seconds: string;
  message: string;
}
export interface NodeWatchResourcesResponse {
  devices: DeviceHealth[];
}

export interface LoadedProtos {
  readonly registration: grpc.ServiceClientConstructor;
  readonly draV1: grpc.ServiceClientConstructor;
  readonly draV1beta1: grpc.ServiceClientConstructor;
  readonly healthV1: grpc.ServiceClientConstructor;
  readonly healthV1alpha1: grpc.ServiceClientConstructor;
}

let cached: LoadedProtos | undefined;

function lookupService(root: grpc.GrpcObject, fullName: string): grpc.ServiceClientConstructor {
  let node: unknown = root;
  for (const part of fullName.split('.')) {
    node = (node as Record<string, unknown> | undefined)?.[part];
  }
  if (typeof node !== 'function' || !('service' in node)) {
    throw new Error(`service ${fullName} not found in ${PROTO_ROOT}`);
  }
  return node as grpc.ServiceClientConstructor;
}

/** Loads (once) the protos; clients built from these constructors speak the same wire. */
export function loadProtos(): LoadedProtos {
  if (cached) return cached;
  const files = [
    'dra/pluginregistration/v1/api.proto',
    'dra/v1/api.proto',
    'dra/v1beta1/api.proto',
    'dra/health/v1/api.proto',
    'dra/health/v1alpha1/api.proto',
  ];
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] });
  const root = grpc.loadPackageDefinition(definition);
  cached = Object.freeze({
    registration: lookupService(root, REGISTRATION_SERVICE),
    draV1: lookupService(root, DRA_V1_SERVICE),
    draV1beta1: lookupService(root, DRA_V1BETA1_SERVICE),
    healthV1: lookupService(root, HEALTH_V1_SERVICE),
    healthV1alpha1: lookupService(root, HEALTH_V1ALPHA1_SERVICE),
  });
  return cached;
}
