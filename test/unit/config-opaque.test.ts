import { describe, expect, it } from 'vitest';
import {
  configForResult,
  OpaqueConfigError,
  sharingOf,
  validateClaimConfigs,
  validateOpaqueParameters,
} from '../../src/driver/opaqueConfig.js';
import { opaque, testGpu, testMig, TEST_DRIVER } from '../support/driverFixtures.js';

const V = 'gpu.dra.dev/v1alpha1';

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
      { apiVersion: 'resource.nvidia.com/v1beta1', kind: 'GpuConfig' },
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
