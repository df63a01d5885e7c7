// deploy/ and examples/claims/ against a real control plane (apiserver, scheduler,
// resourceclaim-controller):
// - every deploy/ object passes the apiserver's validation (server-side dry-run; the
//   DeviceClasses are created for real);
// - every example is accepted, and for every `# expect:` line the real scheduler allocates
//   what the line says from the ResourceSlices the driver's model publishes for that fake NVML
//   profile (one Node per example and profile, pods pinned to it), or leaves the pod
//   unschedulable. No kubelet runs the pods: allocation is the scheduler's job. A
//   device-plugin-style example (no claim, an extended resource) gets its claim from the
//   scheduler, and that claim's requests are the ones `explain` predicts.
import fs from 'node:fs';
import path from 'node:path';
import {
  CoreV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  type KubernetesObject,
  type ResourceV1ResourceClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import { readYamlObjects } from '../support/yamlObjects.js';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DeviceClass } from '../../src/api/resource.js';
import { extendedResourceClaim, type PodObject } from '../../src/cel/extendedResources.js';
import type { ResourceSlice } from '../../src/api/resource.js';
import { useCluster } from './support/fixture.js';
import { draFeatures } from './support/k8sVersion.js';
import { addSlicedNode, profileSlices } from './support/slicedNodes.js';
import { eventually } from './support/wait.js';
import { EXAMPLE_PROFILES, parseExpectations, type ExampleProfile } from '../support/exampleExpectations.js';
import { createNamespace } from './support/workloads.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DRIVER = 'gpu.dra.dev';
const PROFILES = EXAMPLE_PROFILES;
type Profile = ExampleProfile;

type Obj = KubernetesObject & {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
};

const loadYaml = (file: string): Obj[] => readYamlObjects<Obj>(file);

const EXAMPLES = fs
  .readdirSync(path.join(ROOT, 'examples/claims'))
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map((f) => ({
    file: f,
    stem: f.replace(/\.yaml$/, ''),
    objects: loadYaml(path.join(ROOT, 'examples/claims', f)),
    expect: parseExpectations(fs.readFileSync(path.join(ROOT, 'examples/claims', f), 'utf8')),
  }));

const CASES = EXAMPLES.flatMap((ex, i) =>
  ex.expect.map((e) => ({ ...e, ex, id: `ex${String(i)}-${e.profile}`, name: `${ex.file} on ${e.profile}` })),
);

describe('deploy/ and examples/claims on a real control plane', () => {
  // The DaemonSet is privileged; the fixture's apiserver refuses that unless told otherwise.
  // DRAExtendedResource (extended-resource-pod.yaml) is alpha in 1.34 and 1.35, on from 1.36:
  // turned on where it is off, so that example runs on every minor (GPU_DRA_K8S_VERSION).
  const gates = draFeatures(['DRAExtendedResource']);
  const fx = useCluster({
    ...gates,
    apiserverArgs: ['--allow-privileged=true', ...(gates.apiserverArgs ?? [])],
  });
  const slicesByProfile = new Map<Profile, ResourceSlice[]>();

  beforeAll(async () => {
    for (const profile of PROFILES) slicesByProfile.set(profile, await profileSlices(profile, DRIVER));
    // The examples' DeviceClasses, before any example runs (the cases run concurrently).
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    for (const o of loadYaml(path.join(ROOT, 'deploy/deviceclass.yaml'))) await objects.create(o);
  });

  /** A Ready Node named `nodeName`, labelled for pinning, with the slices of `profile`. */
  const addNode = (nodeName: string, profile: Profile): Promise<void> =>
    addSlicedNode(fx.cluster.kubeConfig, nodeName, slicesByProfile.get(profile) ?? []);

  it('deploy/ objects pass server-side validation', async () => {
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    const files = [
      'namespace.yaml',
      'deviceclass.yaml',
      'rbac.yaml',
      'validatingadmissionpolicy.yaml',
      'daemonset.yaml',
    ];
    const all = files.flatMap((f) => loadYaml(path.join(ROOT, 'deploy', f)));
    // Namespaced objects need their namespace to exist even for a dry run.
    const ns = all.find((o) => o.kind === 'Namespace');
    if (ns) await objects.create(ns);
    for (const o of all) {
      // The Namespace was created above and the DeviceClasses in beforeAll.
      if (o.kind === 'Namespace' || o.kind === 'DeviceClass') continue;
      await expect(
        objects.create(o, undefined, 'All'),
        `${o.kind} ${o.metadata.name}`,
      ).resolves.toBeDefined();
    }
    const classes = await fx.cluster.kubeConfig.makeApiClient(ResourceV1Api).listDeviceClass();
    expect(classes.items.map((d) => d.metadata?.name).sort()).toEqual(['gpu.gpu.dra.dev', 'mig.gpu.dra.dev']);
  });

  it.concurrent.each(CASES)('$name', async (tc) => {
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    const nodeName = tc.id;
    const namespace = tc.id;

    await addNode(nodeName, tc.profile);

    // The example's objects, moved to a namespace of their own (keeping its labels).
    const exNs = tc.ex.objects.find((o) => o.kind === 'Namespace');
    await createNamespace(core, namespace, { ...(exNs?.metadata.labels ?? {}) });
    const pods: string[] = [];
    for (const o of tc.ex.objects) {
      if (o.kind === 'Namespace') continue;
      const copy = JSON.parse(JSON.stringify(o)) as Obj;
      copy.metadata.namespace = namespace;
      if (copy.kind === 'Pod') {
        (copy.spec as { nodeSelector?: Record<string, string> }).nodeSelector = {
          'kubernetes.io/hostname': nodeName,
        };
        pods.push(copy.metadata.name);
      }
      await objects.create(copy);
    }

    const podObjs = async (): Promise<V1Pod[]> =>
      Promise.all(pods.map((name) => core.readNamespacedPod({ namespace, name })));

    if (tc.unsatisfiable) {
      await eventually(
        'pods reported unschedulable',
        async () => {
          const ps = await podObjs();
          return (
            ps.every((p) =>
              p.status?.conditions?.some(
                (cd) => cd.type === 'PodScheduled' && cd.status === 'False' && cd.reason === 'Unschedulable',
              ),
            ) || undefined
          );
        },
        60_000,
      );
      for (const p of await podObjs()) {
        expect(p.spec?.nodeName ?? '').toBe('');
        const why = p.status?.conditions?.find((cd) => cd.type === 'PodScheduled')?.message ?? '';
        // Unschedulable for lack of matching devices, not because of a broken class or claim.
        expect(why).toMatch(/cannot allocate all claims/);
      }
      return;
    }

    const claimName = await eventually('claim name', async () => {
      const [p] = await podObjs();
      const st = p?.status?.resourceClaimStatuses?.[0];
      // A device-plugin-style pod's claim is the one the scheduler made and recorded in its status.
      return (
        st?.resourceClaimName ??
        p?.spec?.resourceClaims?.[0]?.resourceClaimName ??
        p?.status?.extendedResourceClaimStatus?.resourceClaimName
      );
    });
    const claim: ResourceV1ResourceClaim = await eventually(
      'allocated claim reserved for every pod',
      async () => {
        const rc = await resource.readNamespacedResourceClaim({ namespace, name: claimName });
        return rc.status?.allocation && (rc.status.reservedFor?.length ?? 0) === pods.length ? rc : undefined;
      },
      60_000,
    );
    if (!tc.ex.objects.some((o) => o.kind === 'ResourceClaim' || o.kind === 'ResourceClaimTemplate')) {
      // The scheduler made the claim: its requests are the ones explain predicts for the pod.
      const pod = tc.ex.objects.find((o) => o.kind === 'Pod') as PodObject;
      const classes = loadYaml(path.join(ROOT, 'deploy/deviceclass.yaml')) as unknown as DeviceClass[];
      const made = (claim.spec.devices?.requests ?? []).map((r) => ({
        name: r.name,
        exactly: {
          deviceClassName: r.exactly?.deviceClassName,
          allocationMode: r.exactly?.allocationMode,
          count: r.exactly?.count,
        },
      }));
      expect(made).toEqual(extendedResourceClaim(pod, classes)?.spec?.devices?.requests);
    }
    const results = (claim.status?.allocation?.devices?.results ?? []).filter(
      (r) => r.request === tc.request || r.request.startsWith(`${tc.request ?? ''}/`),
    );
    expect(results.length).toBe(tc.devices);
    for (const r of results) {
      expect(r).toMatchObject({ driver: DRIVER, pool: nodeName });
      if (tc.match) expect(r.device).toMatch(tc.match);
      if (tc.chosen) expect(r.request).toBe(tc.chosen);
    }
    for (const p of await eventually('pods bound', async () => {
      const ps = await podObjs();
      return ps.every((x) => x.spec?.nodeName === nodeName) ? ps : undefined;
    })) {
      expect(p.spec?.nodeName).toBe(nodeName);
    }
  });
});
