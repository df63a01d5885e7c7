// deploy/validatingadmissionpolicy.yaml's gpu-dra-opaque-configs on a real apiserver: an opaque
// config for this driver with a typo is refused when the ResourceClaim, ResourceClaimTemplate or
// DeviceClass is written, with the field named, while valid configs (ours and NVIDIA's) and other
// drivers' configs pass.
import fs from 'node:fs';
import path from 'node:path';
import {
  CoreV1Api,
  KubernetesObjectApi,
  ResourceV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { readYamlObjects } from '../support/yamlObjects.js';
import { beforeAll, describe, expect, it } from 'vitest';

import { useCluster } from './support/fixture.js';
import { eventually } from './support/wait.js';
import { createNamespace } from './support/workloads.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DRIVER = 'gpu.dra.dev';
const NS = 'configs';

const policyObjects = (): KubernetesObject[] =>
  readYamlObjects<KubernetesObject>(path.join(ROOT, 'deploy/validatingadmissionpolicy.yaml')).filter(
    (o) => o.metadata?.name?.startsWith('gpu-dra-opaque-configs') === true,
  );

const ours = (sharing: unknown, kind = 'GpuConfig'): Record<string, unknown> => ({
  apiVersion: 'gpu.dra.dev/v1alpha1',
  kind,
  ...(sharing === undefined ? {} : { sharing }),
});
const nvidia = (sharing: unknown, kind = 'GpuConfig'): Record<string, unknown> => ({
  apiVersion: 'resource.nvidia.com/v1beta1',
  kind,
  sharing,
});

describe('opaque configs are checked at admission (ValidatingAdmissionPolicy)', () => {
  const fx = useCluster();
  let resource: ResourceV1Api;
  let n = 0;

  beforeAll(async () => {
    resource = fx.cluster.kubeConfig.makeApiClient(ResourceV1Api);
    // Labelled for admin access: examples/claims/ has a monitoring claim that asks for it.
    await createNamespace(fx.cluster.kubeConfig.makeApiClient(CoreV1Api), NS, {
      'resource.kubernetes.io/admin-access': 'true',
    });
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    const policy = policyObjects();
    expect(policy.map((o) => o.kind)).toEqual([
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
    for (const o of policy) await objects.create(o);
    // The policy takes effect once the apiserver has compiled it: until a typo is refused.
    await eventually(
      'the policy in effect',
      async () => ((await claimError({ parameters: ours({ strategy: 'TimeSlicng' }) })) ? true : undefined),
      30_000,
    );
  });

  /** Creates a claim with one opaque config; the apiserver's refusal message, or '' when stored. */
  async function claimError(config: { parameters: unknown; driver?: string }): Promise<string> {
    try {
      await resource.createNamespacedResourceClaim({
        namespace: NS,
        body: {
          metadata: { name: `claim-${String(n++)}` },
          spec: {
            devices: {
              requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } }],
              config: [{ opaque: { driver: config.driver ?? DRIVER, parameters: config.parameters } }],
            },
          },
        },
      });
      return '';
    } catch (err) {
      return String((err as { body?: unknown }).body ?? err);
    }
  }

  it('stores valid configs, ours and NVIDIA’s, and other drivers’ configs untouched', async () => {
    for (const parameters of [
      ours(undefined),
      ours({ strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } }),
      ours({
        strategy: 'MPS',
        mps: {
          defaultActiveThreadPercentage: 50,
          defaultPinnedDeviceMemoryLimit: '10Gi',
          defaultPerDevicePinnedMemoryLimit: { '0': '5Gi', 'GPU-1234': 1073741824 },
          multiUser: true,
        },
      }),
      ours({ strategy: 'MPS', mps: {} }, 'MigDeviceConfig'),
      nvidia({ strategy: 'TimeSlicing', timeSlicingConfig: { interval: 'Short' } }),
      nvidia({ strategy: 'MPS', mpsConfig: { defaultPinnedDeviceMemoryLimit: '1Gi' } }, 'MigDeviceConfig'),
    ]) {
      expect(await claimError({ parameters }), JSON.stringify(parameters)).toBe('');
    }
    expect(await claimError({ driver: 'gpu.example.com', parameters: { anything: 'goes' } })).toBe('');
  });

  it.each([
    [
      ours({ stratgy: 'MPS' }),
      /spec\.devices\.config\[\]\.opaque\.parameters\.sharing: unknown field\(s\) stratgy/,
    ],
    [ours({ strategy: 'Timeslicing' }), /sharing\.strategy: must be TimeSlicing or MPS \(got Timeslicing\)/],
    [{ ...ours(undefined), sharring: {} }, /parameters: unknown field\(s\) sharring/],
    [
      { ...ours(undefined), apiVersion: 'gpu.dra.dev/v1' },
      /parameters\.apiVersion: must be .* \(got gpu\.dra\.dev\/v1\)/,
    ],
    [
      { ...ours(undefined), kind: 'VfioDeviceConfig' },
      /parameters\.kind: .*got VfioDeviceConfig\); this driver has no GPU passthrough/,
    ],
    [
      ours({ strategy: 'TimeSlicing', timeSlicing: { interval: 'Longer' } }),
      /timeSlicing: interval must be .*got interval Longer/,
    ],
    [
      ours({ strategy: 'MPS', timeSlicing: { interval: 'Long' } }),
      /sharing\.timeSlicing: only allowed with strategy TimeSlicing/,
    ],
    [
      ours({ strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } }, 'MigDeviceConfig'),
      /sharing: unknown field\(s\) timeSlicing/,
    ],
    [
      ours({ strategy: 'MPS', mps: { defaultActiveThreadPercentage: 150 } }),
      /defaultActiveThreadPercentage: must be a whole number from 0 to 100 \(got 150\)/,
    ],
    [
      ours({ strategy: 'MPS', mps: { defaultPinnedDeviceMemoryLimit: '10 GB' } }),
      /pinned-memory limits must be Kubernetes quantities .*got 10 GB/,
    ],
    [
      ours({ strategy: 'MPS', mps: { defaultPerDevicePinnedMemoryLimit: { gpu0: '1Gi' } } }),
      /defaultPerDevicePinnedMemoryLimit: keys must be .*got gpu0/,
    ],
    [
      ours({ strategy: 'MPS', mps: { pinnedMemory: '1Gi' } }),
      /sharing\.mps: unknown field\(s\) pinnedMemory/,
    ],
    [nvidia({ strategy: 'MPS', mps: {} }), /sharing: unknown field\(s\) mps/],
  ])('refuses %j, naming the field', async (parameters, message) => {
    expect(await claimError({ parameters })).toMatch(message);
  });

  it('accepts every claim and template of examples/claims/ as written', async () => {
    const objects = KubernetesObjectApi.makeApiClient(fx.cluster.kubeConfig);
    const dir = path.join(ROOT, 'examples/claims');
    const claims = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.yaml'))
      .flatMap((f) => readYamlObjects<KubernetesObject>(path.join(dir, f)))
      .filter((o) => o.kind === 'ResourceClaim' || o.kind === 'ResourceClaimTemplate');
    // Time-slicing and MPS examples carry opaque configs of ours.
    expect(JSON.stringify(claims)).toContain('"opaque"');
    for (const o of claims) {
      (o.metadata ??= {}).namespace = NS;
      await objects.create(o);
    }
  });

  it('checks templates and DeviceClasses too', async () => {
    const bad = ours({ strategy: 'MPS', mps: { multiUser: 'yes' } });
    const template = await resource
      .createNamespacedResourceClaimTemplate({
        namespace: NS,
        body: {
          metadata: { name: 'bad-template' },
          spec: {
            spec: {
              devices: {
                requests: [{ name: 'gpu', exactly: { deviceClassName: `gpu.${DRIVER}` } }],
                config: [{ opaque: { driver: DRIVER, parameters: bad } }],
              },
            },
          },
        },
      })
      .then(() => '')
      .catch((err: unknown) => String((err as { body?: unknown }).body ?? err));
    expect(template).toMatch(
      /spec\.spec\.devices\.config\[\]\.opaque\.parameters\.sharing\.mps\.multiUser: must be true or false \(got yes\)/,
    );
    const deviceClass = await resource
      .createDeviceClass({
        body: {
          metadata: { name: 'bad-class' },
          spec: { config: [{ opaque: { driver: DRIVER, parameters: bad } }] },
        },
      })
      .then(() => '')
      .catch((err: unknown) => String((err as { body?: unknown }).body ?? err));
    expect(deviceClass).toMatch(/spec\.config\[\]\.opaque\.parameters\.sharing\.mps\.multiUser/);
  });
});
