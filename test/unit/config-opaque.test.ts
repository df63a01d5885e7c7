import { describe, expect, it } from 'vitest';
import {
  configForResult,
  mpsPinnedLimitsMiB,
  OpaqueConfigError,
  quantityBytes,
  quantityMiB,
  sharingOf,
  validateClaimConfigs,
  validateOpaqueParameters,
} from '../../src/driver/opaqueConfig.js';
import { opaque, testGpu, testMig, TEST_DRIVER } from '../support/driverFixtures.js';

const V = 'gpu.dra.dev/v1alpha1';
const N = 'resource.nvidia.com/v1beta1';

function issuesOf(parameters: unknown): string[] {
  const r = validateOpaqueParameters(parameters);
  return r.ok ? [] : r.issues.map((i) => i.path);
}

describe('validateOpaqueParameters', () => {
  it.each([
    ['minimal GpuConfig', { apiVersion: V, kind: 'GpuConfig' }],
    [
      'time slicing',
      {
        apiVersion: V,
        kind: 'GpuConfig',
        sharing: { strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } },
      },
    ],
    [
      'time slicing default interval',
      { apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'TimeSlicing' } },
    ],
    [
      'MPS',
      {
        apiVersion: V,
        kind: 'GpuConfig',
        sharing: {
          strategy: 'MPS',
          mps: { defaultActiveThreadPercentage: 50, defaultPinnedDeviceMemoryLimit: '10Gi' },
        },
      },
    ],
    ['MIG MPS', { apiVersion: V, kind: 'MigDeviceConfig', sharing: { strategy: 'MPS' } }],
  ])('accepts %s', (_name, params) => {
    expect(validateOpaqueParameters(params)).toMatchObject({ ok: true });
  });

  it.each([
    ['not an object', 'GpuConfig', ['parameters']],
    ['array', [], ['parameters']],
    [
      'wrong apiVersion and kind',
      { apiVersion: 'v1', kind: 'Nope' },
      ['parameters.apiVersion', 'parameters.kind'],
    ],
    [
      'wrong apiVersion',
      { apiVersion: 'resource.nvidia.com/v1', kind: 'GpuConfig' },
      ['parameters.apiVersion'],
    ],
    ['unknown top-level field', { apiVersion: V, kind: 'GpuConfig', replicas: 2 }, ['parameters.replicas']],
    [
      'bad strategy',
      { apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'Magic' } },
      ['parameters.sharing.strategy'],
    ],
    [
      'bad interval and unknown nested field',
      {
        apiVersion: V,
        kind: 'GpuConfig',
        sharing: { strategy: 'TimeSlicing', timeSlicing: { interval: 'Forever', x: 1 } },
      },
      ['parameters.sharing.timeSlicing.interval', 'parameters.sharing.timeSlicing.x'],
    ],
    [
      'timeSlicing with MPS',
      { apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'MPS', timeSlicing: { interval: 'Long' } } },
      ['parameters.sharing.timeSlicing'],
    ],
    [
      'mps with TimeSlicing',
      { apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'TimeSlicing', mps: {} } },
      ['parameters.sharing.mps'],
    ],
    [
      'MPS limits out of range',
      {
        apiVersion: V,
        kind: 'GpuConfig',
        sharing: {
          strategy: 'MPS',
          mps: { defaultActiveThreadPercentage: 150, defaultPinnedDeviceMemoryLimit: 'lots' },
        },
      },
      [
        'parameters.sharing.mps.defaultActiveThreadPercentage',
        'parameters.sharing.mps.defaultPinnedDeviceMemoryLimit',
      ],
    ],
    [
      'timeSlicing on a MIG device',
      {
        apiVersion: V,
        kind: 'MigDeviceConfig',
        sharing: { strategy: 'TimeSlicing', timeSlicing: { interval: 'Short' } },
      },
      ['parameters.sharing.timeSlicing'],
    ],
    ['missing strategy', { apiVersion: V, kind: 'GpuConfig', sharing: {} }, ['parameters.sharing.strategy']],
  ])('rejects %s naming every bad field', (_name, params, paths) => {
    expect(issuesOf(params)).toEqual(paths);
  });

  it('normalizes sharing', () => {
    const r = validateOpaqueParameters({
      apiVersion: V,
      kind: 'GpuConfig',
      sharing: { strategy: 'TimeSlicing' },
    });
    expect(r.ok && sharingOf(r.config)).toEqual({ strategy: 'TimeSlicing', interval: 'Default' });
  });
});

const fullMps = {
  defaultActiveThreadPercentage: 50,
  defaultPinnedDeviceMemoryLimit: '10Gi',
  defaultPerDevicePinnedMemoryLimit: { '0': '5Gi', 'GPU-00000000-0000-4000-8000-000000000000': 6442450944 },
  multiUser: true,
};

describe('NVIDIA drop-in format (resource.nvidia.com/v1beta1)', () => {
  it.each([
    ['minimal GpuConfig', { apiVersion: N, kind: 'GpuConfig' }],
    ['minimal MigDeviceConfig', { apiVersion: N, kind: 'MigDeviceConfig' }],
    ['TimeSlicing alone', { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'TimeSlicing' } }],
    [
      'TimeSlicing, empty timeSlicingConfig',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'TimeSlicing', timeSlicingConfig: {} } },
    ],
    ...['Default', 'Short', 'Medium', 'Long'].map((interval): [string, unknown] => [
      `interval ${interval}`,
      {
        apiVersion: N,
        kind: 'GpuConfig',
        sharing: { strategy: 'TimeSlicing', timeSlicingConfig: { interval } },
      },
    ]),
    ['MPS alone', { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS' } }],
    [
      'MPS, every setting',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS', mpsConfig: fullMps } },
    ],
    [
      'MIG MPS, every setting',
      { apiVersion: N, kind: 'MigDeviceConfig', sharing: { strategy: 'MPS', mpsConfig: fullMps } },
    ],
    ['MIG TimeSlicing', { apiVersion: N, kind: 'MigDeviceConfig', sharing: { strategy: 'TimeSlicing' } }],
  ])('accepts %s', (_name, params) => {
    expect(validateOpaqueParameters(params)).toMatchObject({ ok: true });
  });

  it('accepts the new MPS settings in our format too', () => {
    for (const kind of ['GpuConfig', 'MigDeviceConfig'])
      expect(
        validateOpaqueParameters({ apiVersion: V, kind, sharing: { strategy: 'MPS', mps: fullMps } }),
        kind,
      ).toMatchObject({ ok: true });
  });

  it.each([
    ['1Mi', 1, 1],
    ['1.5Gi', 1536, 1],
    ['0.1Gi', 102, 1],
    ['1e9', 953, 1],
    ['1E3', 0, 1000],
    ['1048576', 1, 1],
    ['2E', 1_907_348_632_812, 2e18],
    ['.5Ki', 0, 512],
  ])('quantity %s is %d MiB', (quantity, mib, bytesOrOne) => {
    expect(quantityMiB(quantity)).toBe(mib);
    if (bytesOrOne !== 1) expect(quantityBytes(quantity)).toBe(bytesOrOne);
  });

  const mpsWith = (mpsConfig: unknown, kind = 'GpuConfig'): unknown => ({
    apiVersion: N,
    kind,
    sharing: { strategy: 'MPS', mpsConfig },
  });
  const M = 'parameters.sharing.mpsConfig';

  it.each([
    ['unknown top-level field', { apiVersion: N, kind: 'GpuConfig', metadata: {} }, ['parameters.metadata']],
    [
      'unknown sharing field',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS', replicas: 2 } },
      ['parameters.sharing.replicas'],
    ],
    [
      'bad strategy',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'Fabric' } },
      ['parameters.sharing.strategy'],
    ],
    [
      'mpsConfig with TimeSlicing',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'TimeSlicing', mpsConfig: {} } },
      [M],
    ],
    [
      'timeSlicingConfig with MPS',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS', timeSlicingConfig: {} } },
      ['parameters.sharing.timeSlicingConfig'],
    ],
    [
      'MIG mpsConfig with TimeSlicing',
      { apiVersion: N, kind: 'MigDeviceConfig', sharing: { strategy: 'TimeSlicing', mpsConfig: {} } },
      [M],
    ],
    [
      'bad interval and unknown timeSlicingConfig field',
      {
        apiVersion: N,
        kind: 'GpuConfig',
        sharing: { strategy: 'TimeSlicing', timeSlicingConfig: { interval: 'Forever', replicas: 4 } },
      },
      ['parameters.sharing.timeSlicingConfig.interval', 'parameters.sharing.timeSlicingConfig.replicas'],
    ],
    [
      'thread percentage over 100',
      mpsWith({ defaultActiveThreadPercentage: 101 }),
      [`${M}.defaultActiveThreadPercentage`],
    ],
    [
      'thread percentage negative',
      mpsWith({ defaultActiveThreadPercentage: -1 }),
      [`${M}.defaultActiveThreadPercentage`],
    ],
    [
      'thread percentage fractional',
      mpsWith({ defaultActiveThreadPercentage: 50.5 }),
      [`${M}.defaultActiveThreadPercentage`],
    ],
    [
      'thread percentage a string',
      mpsWith({ defaultActiveThreadPercentage: '50' }),
      [`${M}.defaultActiveThreadPercentage`],
    ],
    [
      'pinned limit not a quantity',
      mpsWith({ defaultPinnedDeviceMemoryLimit: 'lots' }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'pinned limit lower-case suffix',
      mpsWith({ defaultPinnedDeviceMemoryLimit: '10gi' }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'pinned limit negative',
      mpsWith({ defaultPinnedDeviceMemoryLimit: '-1Gi' }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'pinned limit a boolean',
      mpsWith({ defaultPinnedDeviceMemoryLimit: true }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'pinned limit under 1Mi',
      mpsWith({ defaultPinnedDeviceMemoryLimit: '1023Ki' }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'pinned limit zero',
      mpsWith({ defaultPinnedDeviceMemoryLimit: 0 }),
      [`${M}.defaultPinnedDeviceMemoryLimit`],
    ],
    [
      'per-device map not an object',
      mpsWith({ defaultPerDevicePinnedMemoryLimit: '5Gi' }),
      [`${M}.defaultPerDevicePinnedMemoryLimit`],
    ],
    [
      'per-device bad keys and values',
      mpsWith({
        defaultPerDevicePinnedMemoryLimit: {
          '0': 'lots',
          '1': '512Ki',
          gpu0: '1Gi',
          '-1': '1Gi',
          'GPU-x': '1Gi',
        },
      }),
      [
        `${M}.defaultPerDevicePinnedMemoryLimit["0"]`,
        `${M}.defaultPerDevicePinnedMemoryLimit["1"]`,
        `${M}.defaultPerDevicePinnedMemoryLimit["gpu0"]`,
        `${M}.defaultPerDevicePinnedMemoryLimit["-1"]`,
      ],
    ],
    ['multiUser not a boolean', mpsWith({ multiUser: 'yes' }), [`${M}.multiUser`]],
    [
      'unknown mpsConfig field',
      mpsWith({ pipeDirectory: '/tmp' }, 'MigDeviceConfig'),
      [`${M}.pipeDirectory`],
    ],
    [
      'our field names under the NVIDIA apiVersion',
      { apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS', mps: {}, timeSlicing: {} } },
      ['parameters.sharing.mps', 'parameters.sharing.timeSlicing'],
    ],
  ])('rejects %s naming every bad field', (_name, params, paths) => {
    expect(issuesOf(params)).toEqual(paths);
  });

  it('says why a field of the other format, or a MIG time slice, is unknown', () => {
    const messages = (params: unknown): string[] => {
      const r = validateOpaqueParameters(params);
      return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
    };
    expect(messages({ apiVersion: N, kind: 'GpuConfig', sharing: { strategy: 'MPS', mps: {} } })).toEqual([
      'parameters.sharing.mps: unknown field: resource.nvidia.com/v1beta1 calls it mpsConfig (mps is gpu.dra.dev/v1alpha1)',
    ]);
    expect(
      messages({ apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'MPS', mpsConfig: {} } }),
    ).toEqual([
      'parameters.sharing.mpsConfig: unknown field: gpu.dra.dev/v1alpha1 calls it mps (mpsConfig is resource.nvidia.com/v1beta1)',
    ]);
    for (const [apiVersion, field] of [
      [N, 'timeSlicingConfig'],
      [V, 'timeSlicing'],
      [N, 'timeSlicing'],
    ] as const)
      expect(
        messages({ apiVersion, kind: 'MigDeviceConfig', sharing: { strategy: 'TimeSlicing', [field]: {} } }),
      ).toEqual([
        `parameters.sharing.${field}: unknown field: a MIG device has no time-slice setting (TimeSlicing on it takes none)`,
      ]);
    expect(messages(mpsWith({ defaultPerDevicePinnedMemoryLimit: { gpu0: '1Gi' } }))).toEqual([
      `${M}.defaultPerDevicePinnedMemoryLimit["gpu0"]: must be a device index (0, 1, ... among the devices this config applies to) or a GPU-/MIG- UUID`,
    ]);
    expect(messages(mpsWith({ defaultPinnedDeviceMemoryLimit: '1023Ki' }))).toEqual([
      `${M}.defaultPinnedDeviceMemoryLimit: 1023Ki is less than 1Mi: MPS takes pinned-memory limits in whole MiB`,
    ]);
  });

  it('a wrong apiVersion lists both accepted versions', () => {
    const r = validateOpaqueParameters({ apiVersion: 'nvidia.com/v1', kind: 'GpuConfig' });
    expect(r.ok ? [] : r.issues).toEqual([
      {
        path: 'parameters.apiVersion',
        message: 'must be gpu.dra.dev/v1alpha1 or resource.nvidia.com/v1beta1 (got "nvidia.com/v1")',
      },
    ]);
  });

  it('refuses VfioDeviceConfig as unsupported passthrough, under either apiVersion', () => {
    for (const apiVersion of [N, V]) {
      const r = validateOpaqueParameters({ apiVersion, kind: 'VfioDeviceConfig' });
      expect(r.ok ? [] : r.issues, apiVersion).toEqual([
        {
          path: 'parameters.kind',
          message:
            'VfioDeviceConfig (GPU passthrough to a VM) is not supported: this driver does not do passthrough; use GpuConfig or MigDeviceConfig',
        },
      ]);
    }
  });

  it('names the field with the full claim path, map keys quoted', () => {
    expect(() =>
      validateClaimConfigs(TEST_DRIVER, [
        opaque({ apiVersion: N, kind: 'GpuConfig' }),
        opaque(mpsWith({ defaultPerDevicePinnedMemoryLimit: { '3': '10Xi' } })),
      ]),
    ).toThrow(
      'config[1].opaque.parameters.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["3"]: must be a Kubernetes quantity, e.g. 10Gi (got 10Xi)',
    );
  });
});

describe('sharingOf: one normalized form for both formats', () => {
  const normalized = {
    defaultActiveThreadPercentage: 50,
    defaultPinnedDeviceMemoryLimit: '10Gi',
    defaultPerDevicePinnedMemoryLimit: {
      '0': '5Gi',
      'GPU-00000000-0000-4000-8000-000000000000': '6442450944',
    },
    multiUser: true,
  };
  it.each([
    ['GpuConfig', undefined, undefined, undefined],
    [
      'GpuConfig',
      { strategy: 'TimeSlicing' },
      { strategy: 'TimeSlicing' },
      { strategy: 'TimeSlicing', interval: 'Default' },
    ],
    [
      'GpuConfig',
      { strategy: 'TimeSlicing', timeSlicing: { interval: 'Default' } },
      { strategy: 'TimeSlicing', timeSlicingConfig: {} },
      { strategy: 'TimeSlicing', interval: 'Default' },
    ],
    [
      'GpuConfig',
      { strategy: 'TimeSlicing', timeSlicing: { interval: 'Long' } },
      { strategy: 'TimeSlicing', timeSlicingConfig: { interval: 'Long' } },
      { strategy: 'TimeSlicing', interval: 'Long' },
    ],
    ['GpuConfig', { strategy: 'MPS' }, { strategy: 'MPS', mpsConfig: {} }, { strategy: 'MPS' }],
    [
      'GpuConfig',
      { strategy: 'MPS', mps: { defaultPerDevicePinnedMemoryLimit: {} } },
      { strategy: 'MPS' },
      { strategy: 'MPS' },
    ],
    [
      'GpuConfig',
      { strategy: 'MPS', mps: fullMps },
      { strategy: 'MPS', mpsConfig: fullMps },
      { strategy: 'MPS', mps: normalized },
    ],
    [
      'GpuConfig',
      { strategy: 'MPS', mps: { multiUser: false, defaultActiveThreadPercentage: 0 } },
      { strategy: 'MPS', mpsConfig: { multiUser: false, defaultActiveThreadPercentage: 0 } },
      { strategy: 'MPS', mps: { multiUser: false, defaultActiveThreadPercentage: 0 } },
    ],
    // A MIG device cannot set a time slice: no interval, not even Default.
    [
      'MigDeviceConfig',
      { strategy: 'TimeSlicing' },
      { strategy: 'TimeSlicing' },
      { strategy: 'TimeSlicing' },
    ],
    ['MigDeviceConfig', { strategy: 'MPS' }, { strategy: 'MPS', mpsConfig: {} }, { strategy: 'MPS' }],
    [
      'MigDeviceConfig',
      { strategy: 'MPS', mps: fullMps },
      { strategy: 'MPS', mpsConfig: fullMps },
      { strategy: 'MPS', mps: normalized },
    ],
  ])('%s %j ≡ %j', (kind, ours, nvidia, expected) => {
    const parse = (apiVersion: string, sharing: unknown): unknown => {
      const r = validateOpaqueParameters({ apiVersion, kind, ...(sharing ? { sharing } : {}) });
      if (!r.ok) throw new Error(JSON.stringify(r.issues));
      return sharingOf(r.config);
    };
    expect(parse(V, ours)).toStrictEqual(expected);
    expect(parse(N, nvidia)).toStrictEqual(expected);
  });
});

describe('mpsPinnedLimitsMiB', () => {
  const devs = [testGpu(0), testGpu(2), testGpu(3)];
  const [a, b, c] = devs.map((d) => d.uuid) as [string, string, string];

  it('takes the per-device entry (by index or UUID), else the default, in whole MiB', () => {
    expect(
      mpsPinnedLimitsMiB(
        {
          defaultPinnedDeviceMemoryLimit: '10Gi',
          defaultPerDevicePinnedMemoryLimit: { '1': '1.5Gi', [c]: '1000000000' },
        },
        devs,
      ),
    ).toEqual({ [a]: 10240, [b]: 1536, [c]: 953 });
  });

  it('leaves out devices without a limit', () => {
    expect(mpsPinnedLimitsMiB({ defaultPerDevicePinnedMemoryLimit: { [b]: '2Gi' } }, devs)).toEqual({
      [b]: 2048,
    });
    expect(mpsPinnedLimitsMiB({ defaultActiveThreadPercentage: 10 }, devs)).toEqual({});
    expect(mpsPinnedLimitsMiB(undefined, devs)).toEqual({});
    expect(mpsPinnedLimitsMiB({ defaultPinnedDeviceMemoryLimit: '1Gi' }, [])).toEqual({});
  });

  it('counts indexes within the devices given, ignores keys naming none, and prefers a UUID key', () => {
    expect(
      mpsPinnedLimitsMiB(
        { defaultPerDevicePinnedMemoryLimit: { '0': '1Gi', '1': '2Gi', 'GPU-nope': '3Gi' } },
        [{ uuid: c }],
      ),
    ).toEqual({ [c]: 1024 });
    expect(
      mpsPinnedLimitsMiB({ defaultPerDevicePinnedMemoryLimit: { [a]: '4Gi', '0': '1Gi' } }, [
        { uuid: a, memoryBytes: 1 },
      ]),
    ).toEqual({ [a]: 4096 });
  });
});

describe('validateClaimConfigs / configForResult', () => {
  const ts = (interval: string): unknown => ({
    apiVersion: V,
    kind: 'GpuConfig',
    sharing: { strategy: 'TimeSlicing', timeSlicing: { interval } },
  });

  it('ignores other drivers and reports all bad configs with their index', () => {
    let caught: unknown;
    try {
      validateClaimConfigs(TEST_DRIVER, [
        { source: 'FromClaim', opaque: { driver: 'other.example.com', parameters: { anything: true } } },
        opaque({ apiVersion: V, kind: 'GpuConfig', extra: 1 }),
        opaque(ts('Long')),
        opaque({ apiVersion: V, kind: 'GpuConfig', sharing: { strategy: 'x' } }),
      ]);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(OpaqueConfigError);
    expect((caught as OpaqueConfigError).issues.map((i) => i.path)).toEqual([
      'config[1].opaque.parameters.extra',
      'config[3].opaque.parameters.sharing.strategy',
    ]);
    expect((caught as Error).message).toContain('config[1].opaque.parameters.extra: unknown field');
  });

  it('class configs come first, then claim; the last match wins; request filters apply', () => {
    const configs = validateClaimConfigs(TEST_DRIVER, [
      opaque(ts('Short'), ['a']), // claim, index 0
      opaque(ts('Long'), undefined, 'FromClass'), // class, applies to all GPUs
      opaque(ts('Medium'), ['b']),
    ]);
    const gpu = testGpu(0);
    const interval = (request: string): unknown =>
      sharingOf(configForResult(configs, { request }, gpu))?.interval;
    expect(interval('a')).toBe('Short');
    expect(interval('a/sub')).toBe('Short');
    expect(interval('b')).toBe('Medium');
    expect(interval('c')).toBe('Long');
  });

  it('a request-targeted config of the wrong kind is an error; an untargeted one is skipped', () => {
    const configs = validateClaimConfigs(TEST_DRIVER, [opaque(ts('Long'))]);
    expect(configForResult(configs, { request: 'mig' }, testMig(1, 0))).toBeUndefined();
    const targeted = validateClaimConfigs(TEST_DRIVER, [opaque(ts('Long'), ['mig'])]);
    expect(() => configForResult(targeted, { request: 'mig' }, testMig(1, 0))).toThrow(
      /config\[0\]\.opaque\.parameters\.kind: GpuConfig cannot configure a MIG device/,
    );
  });
});
