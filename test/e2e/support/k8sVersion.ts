// Which Kubernetes the e2e run talks to, and what a test must switch on there. The version is
// GPU_DRA_K8S_VERSION (one of the releases test/peers/build.sh builds: 1.34 to 1.37, see
// `npm run test:matrix`) or DEFAULT_K8S_VERSION. Tests ask for the DRA features they need by
// gate name; draFeatures() turns on only the gates that are off by default on that minor, so
// the same test runs on every minor and never names a gate a newer release has locked or removed.
import type { ClusterOptions } from './cluster.js';
import { DEFAULT_K8S_VERSION } from './peers.js';

/** The version this run's clusters use unless a test names one. */
export function e2eK8sVersion(): string {
  return process.env['GPU_DRA_K8S_VERSION'] ?? DEFAULT_K8S_VERSION;
}

/** The minor of `v1.35.4`, `1.36`, `v1.35.0-rc.1+k3s1`. Throws on anything else. */
export function k8sMinor(version: string = e2eK8sVersion()): number {
  const m = /^v?1\.(\d+)(?:[.\-+]|$)/.exec(version.trim());
  if (m?.[1] === undefined) throw new Error(`not a Kubernetes 1.x version: ${JSON.stringify(version)}`);
  return Number(m[1]);
}

/** DRA feature gates the e2e tests depend on. */
export type DraGate =
  'DRADeviceTaints' | 'DRAPartitionableDevices' | 'DRAConsumableCapacity' | 'DRAExtendedResource';

/**
 * The first minor on which each gate is on by default (pkg/features/kube_features.go): all four
 * are alpha (off) in 1.34 and 1.35 and beta (on) from 1.36; DRADeviceTaints and
 * DRAExtendedResource are GA in 1.37.
 */
export const DRA_GATE_ON_BY_DEFAULT_FROM: Readonly<Record<DraGate, number>> = {
  DRADeviceTaints: 36,
  DRAPartitionableDevices: 36,
  DRAConsumableCapacity: 36,
  DRAExtendedResource: 36,
};

/** The gates of `gates` that are off by default on `version`: the ones a test must turn on. */
export function draGatesOff(gates: readonly DraGate[], version: string = e2eK8sVersion()): DraGate[] {
  const minor = k8sMinor(version);
  return gates.filter((g) => minor < DRA_GATE_ON_BY_DEFAULT_FROM[g]);
}

/**
 * Cluster options that enable `gates` on `version`'s control plane: `--feature-gates` for the
 * gates that are off by default there, and on 1.34 with DRADeviceTaints the v1alpha3 API, because
 * that scheduler then watches DeviceTaintRules (resource.k8s.io/v1alpha3); from 1.35 it does so
 * only with DRADeviceTaintRules, which no test turns on.
 */
export function draFeatures(
  gates: readonly DraGate[],
  version: string = e2eK8sVersion(),
): Pick<ClusterOptions, 'featureGates' | 'apiserverArgs'> {
  const off = draGatesOff(gates, version);
  const opts: Pick<ClusterOptions, 'featureGates' | 'apiserverArgs'> = {};
  if (off.length > 0) opts.featureGates = off.map((g) => `${g}=true`).join(',');
  if (k8sMinor(version) <= 34 && off.includes('DRADeviceTaints')) {
    opts.apiserverArgs = ['--runtime-config=resource.k8s.io/v1alpha3=true'];
  }
  return opts;
}

/** kubelet-dra flags (NodeOptions.extraArgs) that enable `gates` where they are off by default. */
export function kubeletDraFeatureArgs(
  gates: readonly DraGate[],
  version: string = e2eK8sVersion(),
): string[] {
  const off = draGatesOff(gates, version);
  return off.length > 0 ? [`--feature-gates=${off.map((g) => `${g}=true`).join(',')}`] : [];
}
