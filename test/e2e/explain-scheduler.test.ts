// `gpu-dra explain`'s verdicts against the real scheduler's allocation, selector by selector:
// hand-picked selectors and generated ones (fast-check, fixed seed) over the attributes our
// driver publishes for a fake NVML profile. Each selector goes into a claim asking for
// `allocationMode: All` devices of a DeviceClass, with a pod pinned to a node of its own that
// carries that profile's slices, so the scheduler's answer is device by device:
// - explain finds matches and no evaluation error → the scheduler allocates exactly those devices;
// - explain finds none → the pod is Unschedulable ("cannot allocate all claims");
// - explain reports an evaluation error → a scheduling error with explain's message;
// - explain says the selector does not compile (syntax, types, over the cost limit) → the
//   apiserver refuses the claim.
import {
  CoreV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
import fc from 'fast-check';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DeviceClass, ResourceSlice } from '../../src/api/resource.js';
import { explainClaim } from '../../src/cel/explain.js';
import { EXAMPLE_PROFILES, type ExampleProfile } from '../support/exampleExpectations.js';
import { readYamlObjects } from '../support/yamlObjects.js';
import { useCluster } from './support/fixture.js';
import { addSlicedNode, profileSlices } from './support/slicedNodes.js';
import { eventually } from './support/wait.js';
import { createNamespace } from './support/workloads.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DRIVER = 'gpu.dra.dev';
const CLASS_OBJECTS = readYamlObjects<KubernetesObject>(path.join(ROOT, 'deploy/deviceclass.yaml'));
const CLASSES = CLASS_OBJECTS as unknown as DeviceClass[];
const A = "device.attributes['gpu.dra.dev']";
const R = "device.attributes['resource.kubernetes.io']";
const CAPACITY = "device.capacity['gpu.dra.dev']";

interface Case {
  readonly expression: string;
  readonly profile: ExampleProfile;
  readonly deviceClassName: string;
}

const gpuOn =
  (profile: ExampleProfile) =>
  (expression: string): Case => ({
    expression,
    profile,
    deviceClassName: `gpu.${DRIVER}`,
  });

const HAND_PICKED: Case[] = [
  `${A}.profile == '1g.10gb'`,
  `has(${A}.profile) && ${A}.profile == '1g.10gb'`,
  `!has(${A}.profile)`,
  `${A}.?profile.orValue('none') == 'none'`,
  `${CAPACITY}.memory.compareTo(quantity('80Gi')) >= 0`,
  `${CAPACITY}.memory.compareTo(quantity('79Gi')) >= 0`,
  `${CAPACITY}.memory == quantity('81559Mi')`,
  `${CAPACITY}.memory.isLessThan(quantity('80Gi'))`,
  `${CAPACITY}.memory != quantity('81559Mi')`,
  `${A}.driverVersion.isGreaterThan(semver('580.0.0'))`,
  `${A}.cudaComputeCapability.compareTo(semver('9.0.0')) >= 0 && ${A}.cudaComputeCapability.major() == 9`,
  `${A}.cudaComputeCapability == semver('9.0.0')`,
  `cel.bind(a, ${A}, a.architecture == 'Hopper' && a.brand == 'Nvidia')`,
  `${R}.pcieRoot.matches('^pci0000:[0-9a-f]{2}$')`,
  `${R}.pcieRoot.matches('(?i)^PCI0000:80$')`,
  `(${A}.brand == 'x' ? 'a' : ${A}.productName).lowerAscii().matches('h100')`,
  `device.attributes['other.example.com'].x == 1`,
  `has(device.attributes['other.example.com'].x)`,
  `'other.example.com' in device.attributes`,
  `'resource.kubernetes.io' in device.attributes`,
  `${A}.productName.lowerAscii().contains('h100') && ${A}.productName.endsWith('HBM3')`,
  `${A}.productName.replace(' ', '_', 1) == 'NVIDIA_H100 80GB HBM3'`,
  `[9, 8].min() == ${A}.cudaComputeCapability.minor() + 8`,
  `device.attributes.all(d, device.attributes[d].all(k, device.attributes.all(e, device.attributes[e].all(j, device.attributes[d][k] == device.attributes[e][j]))))`,
  `${A}.productName`,
  `${A}.profile == 'x' || true`,
  `${A}.profile == 'x' && false`,
].map(gpuOn('h100-8x'));

// Generated selectors: comparisons of the attributes the driver publishes with values they take
// (and some they do not), guarded and unguarded lookups of attributes only some devices have,
// combined with &&, || and !.
const VALUES = [
  'NVIDIA H100 80GB HBM3',
  'NVIDIA A100-SXM4-40GB',
  'Hopper',
  'Ampere',
  'Ada Lovelace',
  'Nvidia',
  'gpu',
  'mig',
  '1g.5gb',
  '3g.20gb',
  'pci0000:80',
];
const quote = (s: string): string => `'${s}'`;
const value = fc.oneof(fc.constantFrom(...VALUES), fc.stringMatching(/^[a-z0-9.]{1,8}$/));
const stringAttr = fc.constantFrom(
  `${A}.productName`,
  `${A}.architecture`,
  `${A}.brand`,
  `${A}.type`,
  `${A}.profile`,
  `${R}.pcieRoot`,
  `${A}.?profile.orValue('none')`,
);
const atom: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(stringAttr, value, fc.constantFrom('==', '!=')).map(([a, v, op]) => `${a} ${op} ${quote(v)}`),
  fc.tuple(stringAttr, value).map(([a, v]) => `${a}.startsWith(${quote(v.slice(0, 4))})`),
  fc
    .tuple(stringAttr, value)
    .map(([a, v]) => `${a}.lowerAscii().contains(${quote(v.toLowerCase().slice(1, 5))})`),
  fc
    .tuple(
      stringAttr,
      fc.constantFrom('^NVIDIA', '(?i)h100', '[0-9]g\\\\.[0-9]+gb', 'pci0000:[0-9]{2}$', '^(Hopper|Ampere)$'),
    )
    .map(([a, re]) => `${a}.matches('${re}')`),
  fc
    .tuple(
      fc.constantFrom('cudaComputeCapability', 'driverVersion'),
      fc.constantFrom('8.0.0', '9.0.0', '580.0.0'),
    )
    .map(([a, v]) => `${A}.${a}.compareTo(semver('${v}')) >= 0`),
  fc
    .tuple(
      fc.constantFrom('5Gi', '10Gi', '20Gi', '40Gi', '80Gi'),
      fc.constantFrom('isLessThan', 'isGreaterThan'),
    )
    .map(([q, f]) => `${CAPACITY}.memory.${f}(quantity('${q}'))`),
  fc.constantFrom(`has(${A}.profile)`, `has(${R}.numaNode)`, `'gpu.dra.dev' in device.attributes`),
  fc.integer({ min: 0, max: 1 }).map((n) => `${R}.numaNode == ${String(n)}`),
);
const selector: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: atom },
  fc.tuple(atom, atom, fc.constantFrom('&&', '||')).map(([a, b, op]) => `(${a}) ${op} (${b})`),
  atom.map((a) => `!(${a})`),
  fc.tuple(atom, atom, atom).map(([a, b, c]) => `(${a}) && ((${b}) || !(${c}))`),
);
const GENERATED: Case[] = fc
  .sample(
    fc.tuple(selector, fc.constantFrom<ExampleProfile>(...EXAMPLE_PROFILES), fc.constantFrom('gpu', 'mig')),
    { numRuns: 40, seed: 20261202 },
  )
  .map(([expression, profile, kind]) => ({ expression, profile, deviceClassName: `${kind}.${DRIVER}` }));

/** A claim for every device of the case's class that its selector matches. */
function allDevicesClaim(c: Case, name: string) {
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceClaim',
    metadata: { name, namespace: name },
    spec: {
      devices: {
        requests: [
          {
            name: 'dev',
            exactly: {
              deviceClassName: c.deviceClassName,
              allocationMode: 'All' as const,
              selectors: [{ cel: { expression: c.expression } }],
            },
          },
        ],
      },
    },
  };
}

describe("explain's verdicts = the scheduler's allocation", () => {
  const fx = useCluster();
  const slicesByProfile = new Map<ExampleProfile, ResourceSlice[]>();

  beforeAll(async () => {
    for (const profile of EXAMPLE_PROFILES)
      slicesByProfile.set(profile, await profileSlices(profile, DRIVER));
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    for (const c of CLASS_OBJECTS) await objects.create(c);
  });

  const check = async (c: Case, name: string): Promise<void> => {
    const core = fx.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    const claim = allDevicesClaim(c, name);
    const slices = slicesByProfile.get(c.profile) ?? [];
    const report = explainClaim(claim, CLASSES, slices);
    const request = report.requests[0];
    const compileError = request?.selectors.find((s) => s.compileError);
    expect(compileError?.compileError ?? '', 'explain evaluates every selector it is given').not.toMatch(
      /^explain cannot evaluate/,
    );

    await addSlicedNode(fx.cluster.kubeConfig, name, slices);
    await createNamespace(core, name);
    const created = resource.createNamespacedResourceClaim({ namespace: name, body: claim });
    if (compileError) {
      await expect(created).rejects.toThrow();
      return;
    }
    await created;
    await core.createNamespacedPod({
      namespace: name,
      body: {
        metadata: { name },
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': name },
          resourceClaims: [{ name: 'dev', resourceClaimName: name }],
          containers: [
            { name: 'ctr', image: 'registry.k8s.io/pause:3.10', resources: { claims: [{ name: 'dev' }] } },
          ],
        },
      },
    });
    const matching = (request?.devices ?? []).filter((d) => d.outcome === 'match').map((d) => d.device);
    const evalError = request?.devices.find((d) => d.outcome === 'error')?.failure?.error;
    if (report.satisfiable) {
      const allocation = await eventually(
        'claim allocated',
        async () =>
          (await resource.readNamespacedResourceClaim({ namespace: name, name })).status?.allocation,
        60_000,
      );
      expect((allocation.devices?.results ?? []).map((r) => r.device).sort()).toEqual([...matching].sort());
      return;
    }
    const why = await eventually(
      'pod unschedulable',
      async () => {
        const p = await core.readNamespacedPod({ namespace: name, name });
        const cond = p.status?.conditions?.find((cd) => cd.type === 'PodScheduled' && cd.status === 'False');
        return cond ? `${cond.reason ?? ''}: ${cond.message ?? ''}` : undefined;
      },
      60_000,
    );
    if (evalError !== undefined) {
      // An evaluation error is a scheduling *error* (retried), with the message explain gives.
      expect(why).toMatch(/^SchedulerError: /);
      expect(why.toLowerCase()).toContain(evalError.toLowerCase());
    } else {
      expect(matching).toEqual([]);
      expect(why).toMatch(/^Unschedulable: .*cannot allocate all claims/);
    }
    expect(
      (await resource.readNamespacedResourceClaim({ namespace: name, name })).status?.allocation,
    ).toBeUndefined();
  };

  it.concurrent.each(HAND_PICKED.map((c, i) => ({ ...c, i })))('hand-picked: $expression', (c) =>
    check(c, `sel${String(c.i)}`),
  );

  it.concurrent.each(GENERATED.map((c, i) => ({ ...c, i })))(
    'generated: $expression ($deviceClassName on $profile)',
    (c) => check(c, `gen${String(c.i)}`),
  );

  it('the generated sample covers every verdict', () => {
    const verdicts = GENERATED.map((c) => {
      const r = explainClaim(allDevicesClaim(c, 'coverage'), CLASSES, slicesByProfile.get(c.profile) ?? []);
      const devices = r.requests[0]?.devices ?? [];
      if (devices.some((d) => d.outcome === 'error')) return 'error';
      return r.satisfiable ? 'allocated' : 'unschedulable';
    });
    for (const v of ['allocated', 'unschedulable', 'error']) expect(verdicts, v).toContain(v);
  });
});
