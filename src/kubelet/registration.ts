/**
 * The plugin-watcher Registration service (pluginregistration.Registration) served on
 * `<registry dir>/<driver>-reg.sock`: tells the kubelet who we are and where dra.sock is, and
 * records what the kubelet answered.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import { shorten } from '../util/shorten.js';
import { PLUGIN_TYPE_DRA, type PluginInfo, type RegistrationStatus } from './proto.js';

export interface RegistrationState {
  /** undefined until the kubelet has called NotifyRegistrationStatus. */
  readonly registered?: boolean;
  readonly error?: string;
  readonly at?: Date;
}

/** The kubelet's own messages are a line or two; anything past this is kept as its length. */
const MAX_ERROR = 1024;

export class RegistrationService {
  private state: RegistrationState = {};
  private readonly listeners = new Set<(s: RegistrationState) => void>();

  constructor(
    private readonly info: {
      readonly driverName: string;
      readonly endpoint: string;
      /** The gRPC services dra.sock serves ("<pkg>.<Service>"), preferred first. */
      readonly supportedVersions: readonly string[];
    },
    private readonly logger: Logger,
  ) {}

  get status(): RegistrationState {
    return this.state;
  }

  /** Calls `listener` with every status the kubelet reports; returns an unsubscribe function. */
  onStatus(listener: (s: RegistrationState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  pluginInfo(): PluginInfo {
    return {
      type: PLUGIN_TYPE_DRA,
      name: this.info.driverName,
      endpoint: this.info.endpoint,
      supported_versions: [...this.info.supportedVersions],
    };
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      GetInfo: (
        _call: grpc.ServerUnaryCall<unknown, PluginInfo>,
        callback: grpc.sendUnaryData<PluginInfo>,
      ) => {
        this.logger.debug('kubelet asked for plugin info');
        callback(null, this.pluginInfo());
      },
      NotifyRegistrationStatus: (
        call: grpc.ServerUnaryCall<RegistrationStatus, Record<string, never>>,
        callback: grpc.sendUnaryData<Record<string, never>>,
      ) => {
        const { plugin_registered: registered } = call.request;
        // Cut: it is echoed in the status details, which travel in HTTP/2 trailers; a 1 MB one
        // overflowed them and the call hung until its deadline.
        const error = shorten(call.request.error, MAX_ERROR);
        this.state = { registered, error, at: new Date() };
        for (const l of this.listeners) l(this.state);
        if (registered) {
          this.logger.info('registered with the kubelet');
          callback(null, {});
        } else {
          this.logger.error({ error }, 'kubelet rejected the registration');
          callback({ code: grpc.status.UNKNOWN, details: `registration failed: ${error}` });
        }
      },
    };
  }
}
