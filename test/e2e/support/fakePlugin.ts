// A deliberately tiny DRA kubelet plugin, independent of the driver under src/, used to test the
// kubelet-dra harness itself: it registers through the plugin-registration socket, and answers
// NodePrepareResources from the claim's allocation with one CDI id per allocated device.
import fs from 'node:fs';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ResourceV1Api, type KubeConfig } from '@kubernetes/client-node';

import { repoRoot } from './peers.js';

interface ClaimRef {
  namespace: string;
  uid: string;
  name: string;
}

interface PrepareResponseDevice {
  request_names: string[];
  pool_name: string;
  device_name: string;
  cdi_device_ids: string[];
}

interface ClaimsRequest {
  claims: ClaimRef[];
}

export interface FakePluginOptions {
  driver: string;
  /** kubelet-dra's registry dir (NodeHarness.registryDir). */
  registryDir: string;
  /** Parent of the DRA socket dir (NodeHarness.pluginsDir). */
  pluginsDir: string;
  kubeConfig: KubeConfig;
  /** CDI kind, e.g. `fake.dra.dev/gpu`; the CDI id of a device is `<kind>=<device>`. */
  cdiKind: string;
  /** Per-claim error to return from prepare (by claim name), for failure tests. */
  failPrepare?: (claim: ClaimRef) => string | undefined;
}

export class FakePlugin {
  readonly prepared: ClaimRef[] = [];
  readonly unprepared: ClaimRef[] = [];
  readonly registrationSocket: string;
  readonly draSocket: string;
  private readonly servers: grpc.Server[] = [];
  private registrationStatus: { plugin_registered: boolean; error: string } | undefined;

  constructor(private readonly opts: FakePluginOptions) {
    this.registrationSocket = path.join(opts.registryDir, `${opts.driver}-reg.sock`);
    this.draSocket = path.join(opts.pluginsDir, opts.driver, 'dra.sock');
  }

  get registered(): boolean {
    return this.registrationStatus?.plugin_registered === true;
  }

  async start(): Promise<void> {
    const protoDir = path.join(repoRoot, 'proto', 'dra');
    const loaderOptions: protoLoader.Options = {
      keepCase: true,
      defaults: true,
      longs: String,
      enums: String,
    };
    const draPkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(path.join(protoDir, 'v1', 'api.proto'), loaderOptions),
    );
    const regPkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(path.join(protoDir, 'pluginregistration', 'v1', 'api.proto'), loaderOptions),
    );
    const draService = lookupService(draPkg, 'k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin');
    const regService = lookupService(regPkg, 'pluginregistration.Registration');
    const resource = this.opts.kubeConfig.makeApiClient(ResourceV1Api);

    const dra = new grpc.Server();
    dra.addService(draService, {
      NodePrepareResources: (
        call: grpc.ServerUnaryCall<ClaimsRequest, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ): void => {
        void (async () => {
          const claims: Record<string, { devices: PrepareResponseDevice[]; error: string }> = {};
          for (const ref of call.request.claims) {
            this.prepared.push(ref);
            const failure = this.opts.failPrepare?.(ref);
            if (failure !== undefined) {
              claims[ref.uid] = { devices: [], error: failure };
              continue;
            }
            const claim = await resource.readNamespacedResourceClaim({
              namespace: ref.namespace,
              name: ref.name,
            });
            const results = (claim.status?.allocation?.devices?.results ?? []).filter(
              (r) => r.driver === this.opts.driver,
            );
            claims[ref.uid] = {
              error: '',
              devices: results.map((r) => ({
                request_names: [r.request],
                pool_name: r.pool,
                device_name: r.device,
                cdi_device_ids: [`${this.opts.cdiKind}=${r.device}`],
              })),
            };
          }
          callback(null, { claims });
        })().catch((err: unknown) => {
          callback({ code: grpc.status.INTERNAL, details: (err as Error).message });
        });
      },
      NodeUnprepareResources: (
        call: grpc.ServerUnaryCall<ClaimsRequest, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ): void => {
        const claims: Record<string, { error: string }> = {};
        for (const ref of call.request.claims) {
          this.unprepared.push(ref);
          claims[ref.uid] = { error: '' };
        }
        callback(null, { claims });
      },
    });

    const reg = new grpc.Server();
    reg.addService(regService, {
      GetInfo: (
        _call: grpc.ServerUnaryCall<unknown, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ): void => {
        callback(null, {
          type: 'DRAPlugin',
          name: this.opts.driver,
          endpoint: this.draSocket,
          supported_versions: ['v1.DRAPlugin'],
        });
      },
      NotifyRegistrationStatus: (
        call: grpc.ServerUnaryCall<{ plugin_registered: boolean; error: string }, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ): void => {
        this.registrationStatus = call.request;
        callback(null, {});
      },
    });

    fs.mkdirSync(path.dirname(this.draSocket), { recursive: true });
    await listen(dra, this.draSocket);
    this.servers.push(dra);
    await listen(reg, this.registrationSocket);
    this.servers.push(reg);
  }

  /** Removes the registration socket (the kubelet deregisters) and stops both servers. */
  async stop(): Promise<void> {
    for (const server of this.servers.reverse()) {
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          resolve();
        });
      });
    }
    this.servers.length = 0;
    fs.rmSync(this.registrationSocket, { force: true });
    fs.rmSync(this.draSocket, { force: true });
  }
}

function lookupService(pkg: grpc.GrpcObject, fullName: string): grpc.ServiceDefinition {
  let node: unknown = pkg;
  for (const part of fullName.split('.')) {
    node = (node as Record<string, unknown>)[part];
  }
  const service = (node as { service?: grpc.ServiceDefinition } | undefined)?.service;
  if (service === undefined) throw new Error(`service ${fullName} not found in proto`);
  return service;
}

function listen(server: grpc.Server, socket: string): Promise<void> {
  fs.rmSync(socket, { force: true });
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err !== null) reject(err);
      else resolve();
    });
  });
}

/** Writes a CDI spec with one device per name; device `dev-0` sets `FAKE_DEVICE_DEV_0=1`. */
export function writeCdiSpec(cdiDir: string, kind: string, devices: string[]): string {
  const file = path.join(cdiDir, `${kind.replace('/', '-')}.json`);
  const spec = {
    cdiVersion: '0.6.0',
    kind,
    devices: devices.map((name) => ({ name, containerEdits: { env: [`${cdiEnvName(name)}=1`] } })),
    containerEdits: { env: ['FAKE_CDI_SPEC=1'] },
  };
  fs.writeFileSync(file, JSON.stringify(spec, null, 2));
  return file;
}

/** The variable a device of writeCdiSpec sets: `dev-0` → `FAKE_DEVICE_DEV_0`. */
export function cdiEnvName(device: string): string {
  return `FAKE_DEVICE_${device.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}
