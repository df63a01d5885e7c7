/**
 * The kubelet's side of the plugin sockets, typed: GetInfo on the registration socket and
 * NodePrepareResources / NodeUnprepareResources (v1 or v1beta1) on dra.sock. Used where we act
 * as the kubelet ourselves: the /healthz self-check, `gpu-dra demo`, tests and the bench. The
 * real kubelet's code is exercised by the e2e suite, not by this.
 */
import * as grpc from '@grpc/grpc-js';
import {
  loadProtos,
  type ClaimRef,
  type NodePrepareResourcesResponse,
  type NodeUnprepareResourcesResponse,
  type PluginInfo,
  type RegistrationStatus,
} from './proto.js';

type Unary = (
  request: unknown,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response: unknown) => void,
) => void;

function call<T>(client: grpc.Client, method: string, request: unknown, timeoutMs: number): Promise<T> {
  const fn = (client as unknown as Record<string, Unary | undefined>)[method];
  if (!fn) return Promise.reject(new TypeError(`the loaded service has no method ${method}`));
  return new Promise((resolve, reject) => {
    fn.call(client, request, { deadline: Date.now() + timeoutMs }, (err, response) => {
      if (err) reject(err);
      else resolve(response as T);
    });
  });
}

export interface KubeletClientOptions {
  /** `<plugins dir>/<driver>/dra.sock`. */
  readonly draSocket: string;
  /** `<registry dir>/<driver>-reg.sock`; needed for {@link KubeletClient.getInfo} only. */
  readonly registrationSocket?: string;
  /** DRA service version to call; default v1, as kubelets from 1.34 on do. */
  readonly version?: 'v1' | 'v1beta1';
  /** Per-call deadline; default 10 s. */
  readonly timeoutMs?: number;
}

export class KubeletClient {
  private readonly dra: grpc.Client;
  private readonly registration?: grpc.Client;
  private readonly timeoutMs: number;

  constructor(options: KubeletClientOptions) {
    const protos = loadProtos();
    const insecure = grpc.credentials.createInsecure();
    const Dra = options.version === 'v1beta1' ? protos.draV1beta1 : protos.draV1;
    this.dra = new Dra(`unix:${options.draSocket}`, insecure);
    if (options.registrationSocket)
      this.registration = new protos.registration(`unix:${options.registrationSocket}`, insecure);
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  getInfo(timeoutMs = this.timeoutMs): Promise<PluginInfo> {
    if (!this.registration)
      return Promise.reject(new TypeError('KubeletClient was built without a registration socket'));
    return call<PluginInfo>(this.registration, 'GetInfo', {}, timeoutMs);
  }

  /** What the kubelet tells the plugin after a registration attempt. */
  notifyRegistrationStatus(status: RegistrationStatus, timeoutMs = this.timeoutMs): Promise<unknown> {
    if (!this.registration)
      return Promise.reject(new TypeError('KubeletClient was built without a registration socket'));
    return call(this.registration, 'NotifyRegistrationStatus', status, timeoutMs);
  }

  prepare(claims: readonly ClaimRef[], timeoutMs = this.timeoutMs): Promise<NodePrepareResourcesResponse> {
    return call(this.dra, 'NodePrepareResources', { claims }, timeoutMs);
  }

  unprepare(
    claims: readonly ClaimRef[],
    timeoutMs = this.timeoutMs,
  ): Promise<NodeUnprepareResourcesResponse> {
    return call(this.dra, 'NodeUnprepareResources', { claims }, timeoutMs);
  }

  /** Resolves once dra.sock accepts connections (the kubelet dials it after registration). */
  waitForReady(timeoutMs = this.timeoutMs): Promise<void> {
    return new Promise((resolve, reject) => {
      this.dra.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }

  close(): void {
    this.dra.close();
    this.registration?.close();
  }
}
