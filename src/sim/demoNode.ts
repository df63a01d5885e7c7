/**
 * The kubelet's side of one prepared claim, acted out on a simulated node for `gpu-dra demo`:
 * the real kubelet plugin (DeviceState + both gRPC sockets) runs in-process with its sockets,
 * CDI root and checkpoint under the demo's directory; a MemoryClaimGetter stands in for the API
 * server and holds one allocated ResourceClaim; a grpc-js client then does what the kubelet
 * does: GetInfo on the registration socket, NodePrepareResources on dra.sock, and after looking
 * at the CDI spec, NodeUnprepareResources.
 */
import fs from 'node:fs';
import path from 'node:path';
import { injectCdiDevices, type InjectedEdits } from '../cdi/inject.js';
import { claimSpecFileName, type CdiSpec } from '../cdi/spec.js';
import type { ResourceClaim } from '../api/resource.js';
import { MemoryClaimGetter } from '../driver/claims.js';
import { pluginDataDir, startKubeletPlugin } from '../kubelet/plugin.js';
import { KubeletClient } from '../kubelet/client.js';
import type { ClaimRef, NodePrepareResourceResponse, PluginInfo } from '../kubelet/proto.js';
import { createDeviceState } from '../driver/state.js';
import type { HostPaths } from '../util/hostPaths.js';
import type { NodeInventory } from '../nvml/types.js';
import { buildSlices } from '../resourceslice/model.js';
import { silentLogger, type Logger } from '../util/log.js';

/** Fixed, so the demo's output is the same on every run. */
export const DEMO_CLAIM_UID = '5e1f0c2a-7d1b-4c3e-9a8f-2b6d4e0a1c93';
export const DEMO_CLAIM_NAMESPACE = 'default';
export const DEMO_CLAIM_NAME = 'demo-claim';

export interface ExampleClaimOptions {
  readonly driverName: string;
  /** The node, and so its pool. */
  readonly nodeName: string;
  readonly inventory: NodeInventory;
}

/**
 * An allocated ResourceClaim as the scheduler would leave it, for the first device the node
 * publishes of each type: request `gpu` → the first full GPU, request `mig` → the first MIG
 * device. Undefined when the node publishes no device.
 */
export function exampleClaim(options: ExampleClaimOptions): ResourceClaim | undefined {
  const { devices } = buildSlices(options.inventory, {
    nodeName: options.nodeName,
    driverName: options.driverName,
  });
  const typeOf = (d: (typeof devices)[number]): string | undefined => {
    const attr = d.attributes['type'];
    return attr && 'string' in attr ? attr.string : undefined;
  };
  const results = (['gpu', 'mig'] as const).flatMap((type) => {
    const device = devices.find((d) => typeOf(d) === type);
    return device
      ? [{ request: type, driver: options.driverName, pool: options.nodeName, device: device.name }]
      : [];
  });
  if (results.length === 0) return undefined;
  return {
    metadata: { uid: DEMO_CLAIM_UID, namespace: DEMO_CLAIM_NAMESPACE, name: DEMO_CLAIM_NAME },
    status: { allocation: { devices: { results } } },
  };
}

export interface PreparedClaimDemo {
  /** The allocated claim the MemoryClaimGetter served. */
  readonly claim: ResourceClaim;
  readonly draSocket: string;
  readonly registrationSocket: string;
  /** What GetInfo on the registration socket answered. */
  readonly pluginInfo: PluginInfo;
  /** The NodePrepareResources request, exactly as sent. */
  readonly request: { readonly claims: ClaimRef[] };
  /** This claim's entry of the response. */
  readonly response: NodePrepareResourceResponse;
  readonly prepareMs: number;
  /** Absolute path of the CDI spec file the driver wrote. */
  readonly cdiSpecFile: string;
  /** The spec file's text, as a container runtime would read it. */
  readonly cdiSpecText: string;
  readonly cdiSpec: CdiSpec;
  /** The CDI edits a container referencing the claim receives (CDI ids of the response, applied). */
  readonly container: InjectedEdits;
  readonly unprepare: {
    /** This claim's NodeUnprepareResources error ('' on success). */
    readonly error: string;
    readonly cdiSpecRemoved: boolean;
    /** Claims left in the checkpoint afterwards. */
    readonly checkpointClaims: number;
  };
}

export interface PreparedClaimDemoOptions extends ExampleClaimOptions {
  readonly hostPaths: HostPaths;
  /** Sockets, CDI root and checkpoint go below it (keep it short: socket paths max 107 bytes). */
  readonly dir: string;
  readonly claim: ResourceClaim;
  readonly logger?: Logger;
}

/** Starts the plugin, prepares `claim` over the real socket, shows the spec, unprepares, stops. */
export async function runPreparedClaimDemo(options: PreparedClaimDemoOptions): Promise<PreparedClaimDemo> {
  const logger = options.logger ?? silentLogger();
  const cdiRoot = path.join(options.dir, 'cdi');
  const paths = {
    registryDir: path.join(options.dir, 'plugins_registry'),
    pluginsDir: path.join(options.dir, 'plugins'),
  };
  const claims = new MemoryClaimGetter();
  claims.set(options.claim);
  const state = createDeviceState({
    driverName: options.driverName,
    nodeName: options.nodeName,
    hostPaths: options.hostPaths,
    cdiRoot,
    pluginDir: pluginDataDir(paths, options.driverName),
    inventory: { current: () => options.inventory },
    claims,
    logger,
  });
  await state.recover();
  const plugin = await startKubeletPlugin({
    driverName: options.driverName,
    ...paths,
    state,
    claims,
    logger,
  });
  const kubelet = new KubeletClient({
    draSocket: plugin.draSocket,
    registrationSocket: plugin.registrationSocket,
  });
  try {
    const pluginInfo = await kubelet.getInfo();
    const meta = options.claim.metadata ?? {};
    const ref: ClaimRef = { namespace: meta.namespace ?? '', uid: meta.uid ?? '', name: meta.name ?? '' };
    const request = { claims: [ref] };
    const started = process.hrtime.bigint();
    const prepared = await kubelet.prepare(request.claims);
    const prepareMs = Number(process.hrtime.bigint() - started) / 1e6;
    const response = prepared.claims[ref.uid];
    if (!response) throw new Error(`NodePrepareResources left out claim ${ref.uid}`);
    if (response.error) throw new Error(`NodePrepareResources failed: ${response.error}`);

    const cdiSpecFile = path.join(cdiRoot, claimSpecFileName(options.driverName, ref.uid));
    if (!fs.existsSync(cdiSpecFile)) throw new Error(`no CDI spec written at ${cdiSpecFile}`);
    const cdiSpecText = fs.readFileSync(cdiSpecFile, 'utf8');
    const cdiSpec = JSON.parse(cdiSpecText) as CdiSpec;
    const ids = response.devices.flatMap((d) => d.cdi_device_ids);
    const injected = injectCdiDevices([cdiSpec], ids);
    if (injected.unresolved.length > 0)
      throw new Error(`CDI ids not in the written spec: ${injected.unresolved.join(', ')}`);

    const unprepared = await kubelet.unprepare(request.claims);
    return {
      claim: options.claim,
      draSocket: plugin.draSocket,
      registrationSocket: plugin.registrationSocket,
      pluginInfo,
      request,
      response,
      prepareMs,
      cdiSpecFile,
      cdiSpecText,
      cdiSpec,
      container: injected.edits,
      unprepare: {
        error: unprepared.claims[ref.uid]?.error ?? `no entry for claim ${ref.uid}`,
        cdiSpecRemoved: !fs.existsSync(cdiSpecFile),
        checkpointClaims: state.recordedClaimUids().length,
      },
    };
  } finally {
    kubelet.close();
    await plugin.stop();
  }
}
