// A DRA v1 client over the driver's unix socket, as the kubelet would call it: the wire contract
// in proto/dra/v1/api.proto, loaded with @grpc/proto-loader independently of the driver's own code.
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { repoRoot } from '../../e2e/support/peers.js';

export interface ClaimRef {
  namespace: string;
  name: string;
  uid: string;
}

export interface PrepareResponse {
  claims: Record<string, { devices: { device_name: string; cdi_device_ids: string[] }[]; error: string }>;
}

export interface UnprepareResponse {
  claims: Record<string, { error: string }>;
}

type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => void;

export class DraClient {
  private readonly client: grpc.Client;

  constructor(socket: string) {
    const definition = protoLoader.loadSync('dra/v1/api.proto', {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [path.join(repoRoot, 'proto')],
    });
    const root = grpc.loadPackageDefinition(definition) as unknown as {
      k8s: {
        io: { kubelet: { pkg: { apis: { dra: { v1: { DRAPlugin: grpc.ServiceClientConstructor } } } } } };
      };
    };
    const Ctor = root.k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin;
    this.client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  waitForReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }

  private call<T>(method: string, request: unknown, timeoutMs: number): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method];
    if (fn === undefined) return Promise.reject(new Error(`no method ${method}`));
    return new Promise<T>((resolve, reject) => {
      fn.call(this.client, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(err);
        else resolve(res as T);
      });
    });
  }

  prepare(claims: ClaimRef[], timeoutMs = 30_000): Promise<PrepareResponse> {
    return this.call<PrepareResponse>('NodePrepareResources', { claims }, timeoutMs);
  }

  unprepare(claims: ClaimRef[], timeoutMs = 30_000): Promise<UnprepareResponse> {
    return this.call<UnprepareResponse>('NodeUnprepareResources', { claims }, timeoutMs);
  }

  close(): void {
    this.client.close();
  }
}
