/**
 * Fuzzes opaque config validation: valid configs of both formats, and the same configs with one
 * field broken (wrong type, unknown field, typo, huge/negative/overflowing numbers and
 * quantities, intervals outside the enum, wrong kind/apiVersion, deep junk), plus a
 * MigDeviceConfig aimed at a whole GPU. Fixed seed, so CI sees the same inputs every run.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fuzzRuns, fuzzSeed, reportFuzzInputs } from '../support/fuzz.js';
import {
  checkConfigsAgainstDevices,
  configEntryForResult,
  OpaqueConfigError,
  quantityBytes,
  sharingOf,
  validateClaimConfigs,
  validateOpaqueParameters,
} from '../../src/driver/opaqueConfig.js';
import { opaque, testGpu, TEST_DRIVER } from '../support/driverFixtures.js';

const SEED = 20261202;
const V = 'gpu.dra.dev/v1alpha1';
const N = 'resource.nvidia.com/v1beta1';
/** A claim's error goes back to the kubelet and into a pod event: it stays short whatever the input. */
const MAX_MESSAGE = 8 * 1024;
const MAX_ISSUE = 1024;

type Json = Record<string, unknown>;

/** Where each format keeps its settings, as the validator's own table has it. */
const FIELDS = {
  [V]: { timeSlicing: 'timeSlicing', mps: 'mps' },
  [N]: { timeSlicing: 'timeSlicingConfig', mps: 'mpsConfig' },
} as const;

const quantityArb = fc.oneof(
  fc.constantFrom('1Mi', '1Gi', '10Gi', '80Gi', '1048576', '1.5Gi', '1e9', '100M'),
  fc.integer({ min: 1, max: 1024 }).map((n) => `${String(n)}Gi`),
  fc.integer({ min: 2 ** 20, max: 2 ** 40 }),
);

const mpsArb = fc.record(
  {
    defaultActiveThreadPercentage: fc.integer({ min: 0, max: 100 }),
    defaultPinnedDeviceMemoryLimit: quantityArb,
    defaultPerDevicePinnedMemoryLimit: fc.dictionary(
      fc.oneof(
        fc.nat({ max: 7 }).map(String),
        fc.uuid().map((u) => `GPU-${u}`),
      ),
      quantityArb,
      { maxKeys: 3 },
    ),
    multiUser: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** A valid config, with where its fields are (to break one of them later). */
const validArb: fc.Arbitrary<Json> = fc
  .tuple(
    fc.constantFrom(V, N),
    fc.constantFrom('GpuConfig', 'MigDeviceConfig'),
    fc.constantFrom('none', 'TimeSlicing', 'MPS'),
    fc.constantFrom('Default', 'Short', 'Medium', 'Long'),
    mpsArb,
  )
  .map(([apiVersion, kind, strategy, interval, mps]) => {
    const f = FIELDS[apiVersion];
    const base: Json = { apiVersion, kind };
    if (strategy === 'none') return base;
    if (strategy === 'MPS') return { ...base, sharing: { strategy, [f.mps]: mps } };
    return kind === 'GpuConfig'
      ? { ...base, sharing: { strategy, [f.timeSlicing]: { interval } } }
      : { ...base, sharing: { strategy } };
  });

/** Junk of any JSON type, nested deeply now and then. */
const junkArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.nat({ max: 3000 }).map((depth) => {
    let v: unknown = 'bottom';
    for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { nested: v };
    return v;
  }),
  fc.constantFrom('z'.repeat(1_000_000), -1, 1e308, Number.MAX_SAFE_INTEGER, 2 ** 64, -0.5, null, true),
);

/** Values no field of these configs takes, per what they break. */
const BAD_QUANTITIES = [
  '99999999999999999999999999Ei',
  '9Ei',
  '8Ei',
  '1e19',
  '1e400',
  '1E30',
  '-1Gi',
  '0',
  '0.5Mi',
  '1023Ki',
  '1Xi',
  '',
  ' 1Gi',
  '1Gi ',
  'q'.repeat(100_000),
  'Infinity',
  'NaN',
];

interface Broken {
  readonly config: Json;
  /** A word the issue's path must contain: the field that was broken. */
  readonly field: string;
}

/** A valid config with one field broken; the field's name is what the error must name. */
const brokenArb: fc.Arbitrary<Broken> = fc
  .tuple(validArb, fc.nat(), junkArb, fc.string({ maxLength: 30 }))
  .map(([config, pick, junk, word]): Broken => {
    const apiVersion = config['apiVersion'] as typeof V | typeof N;
    const f = FIELDS[apiVersion];
    const mps = (over: Json): Json => ({ ...config, sharing: { strategy: 'MPS', [f.mps]: over } });
    const cases: (() => Broken)[] = [
      () => ({ config: { ...config, apiVersion: junk }, field: 'apiVersion' }),
      () => ({ config: { ...config, apiVersion: 'gpu.dra.dev/v1' }, field: 'apiVersion' }),
      () => ({ config: { ...config, kind: junk }, field: 'kind' }),
      () => ({ config: { ...config, kind: 'GPUConfig' }, field: 'kind' }),
      () => ({ config: { ...config, sharing: junk ?? 1 }, field: 'sharing' }),
      () => ({ config: { ...config, [`x${word}`]: junk }, field: `x${word}`.slice(0, 40) }),
      () => ({ config: { ...config, sharing: { strategy: `${word}x` } }, field: 'strategy' }),
      () => ({
        config: { ...config, sharing: { strategy: 'TimeSlicing', strategie: 'MPS' } },
        field: 'strategie',
      }),
      () => ({
        config: mps({ defaultActiveThreadPercentage: pick % 2 ? 101 : -1 }),
        field: 'defaultActiveThreadPercentage',
      }),
      () => ({
        config: mps({ defaultActiveThreadPercentage: 50.5 }),
        field: 'defaultActiveThreadPercentage',
      }),
      () => ({
        config: mps({ defaultActiveThreadPercentage: '50' }),
        field: 'defaultActiveThreadPercentage',
      }),
      () => ({
        config: mps({ defaultActiveThreadPercentage: 2 ** 64 }),
        field: 'defaultActiveThreadPercentage',
      }),
      () => ({
        config: mps({ defaultPinnedDeviceMemoryLimit: BAD_QUANTITIES[pick % BAD_QUANTITIES.length] }),
        field: 'defaultPinnedDeviceMemoryLimit',
      }),
      () => ({
        config: mps({ defaultPinnedDeviceMemoryLimit: 2 ** 64 * 1024 }),
        field: 'defaultPinnedDeviceMemoryLimit',
      }),
      // A number as a limit is bytes, valid from 1 MiB to 2^63: made negative, it is no quantity.
      // (Negated as is, a negative junk number could become a valid limit: -(-1048576.0000000002) - 1
      // rounds up to 1 MiB, as Kubernetes' Quantity.Value() does.)
      () => ({
        config: mps({
          defaultPinnedDeviceMemoryLimit: typeof junk === 'number' ? -Math.abs(junk) - 1 : (junk ?? {}),
        }),
        field: 'defaultPinnedDeviceMemoryLimit',
      }),
      () => ({
        config: mps({
          defaultPerDevicePinnedMemoryLimit: { '0': BAD_QUANTITIES[pick % BAD_QUANTITIES.length] },
        }),
        field: 'defaultPerDevicePinnedMemoryLimit',
      }),
      () => ({
        config: mps({ defaultPerDevicePinnedMemoryLimit: { [`bad${word}`]: '1Gi' } }),
        field: 'defaultPerDevicePinnedMemoryLimit',
      }),
      () => ({ config: mps({ multiUser: 'true' }), field: 'multiUser' }),
      () => ({
        config: mps({ defaultPinnedDeviceMemoryLimitt: '1Gi' }),
        field: 'defaultPinnedDeviceMemoryLimitt',
      }),
      () => ({
        config: {
          ...config,
          kind: 'GpuConfig',
          sharing: { strategy: 'TimeSlicing', [f.timeSlicing]: { interval: `${word}Longer` } },
        },
        field: 'interval',
      }),
      () => ({
        config: {
          ...config,
          kind: 'GpuConfig',
          sharing: { strategy: 'TimeSlicing', [f.timeSlicing]: { interval: 3 } },
        },
        field: 'interval',
      }),
      () => ({
        config: {
          ...config,
          kind: 'GpuConfig',
          sharing: { strategy: 'MPS', [f.timeSlicing]: { interval: 'Long' } },
        },
        field: f.timeSlicing,
      }),
      // The other format's field name.
      () => ({
        config: { ...config, sharing: { strategy: 'MPS', [FIELDS[apiVersion === V ? N : V].mps]: {} } },
        field: FIELDS[apiVersion === V ? N : V].mps,
      }),
    ];
    const make = cases[pick % cases.length];
    if (!make) throw new Error('unreachable');
    return make();
  });

/** The checks every refusal must pass: issues named, short, inside the parameters. */
function expectWellFormedRefusal(issues: readonly { path: string; message: string }[], prefix: string): void {
  expect(issues.length).toBeGreaterThan(0);
  for (const i of issues) {
    expect(i.path.startsWith(prefix)).toBe(true);
    expect(i.path.length + i.message.length).toBeLessThan(MAX_ISSUE);
  }
  const err = new OpaqueConfigError(issues);
  expect(err.code).toBe('OPAQUE_CONFIG_INVALID');
  expect(err.message.length).toBeLessThan(MAX_MESSAGE);
}

describe('opaque config validation under fuzzed input', () => {
  it('accepts every generated valid config of either format, and normalises it', () => {
    let tried = 0;
    fc.assert(
      fc.property(validArb, (config) => {
        tried++;
        const r = validateOpaqueParameters(config);
        expect(r.ok ? [] : r.issues).toEqual([]);
        if (r.ok) expect(() => sharingOf(r.config)).not.toThrow();
      }),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(500) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(500));
    reportFuzzInputs('opaque-config-valid', tried);
  });

  it('refuses every config with one field broken, naming that field, briefly, never throwing', () => {
    let tried = 0;
    fc.assert(
      fc.property(brokenArb, ({ config, field }) => {
        tried++;
        const r = validateOpaqueParameters(config, 'config[0].opaque.parameters');
        expect(r.ok, `accepted: ${JSON.stringify(config).slice(0, 300)}`).toBe(false);
        if (r.ok) return;
        expectWellFormedRefusal(r.issues, 'config[0].opaque.parameters');
        // The broken field is named (long generated names are cut in the path, hence the prefix).
        const named = r.issues.some((i) => i.path.includes(field.slice(0, 40)));
        expect(named, `${field} not in ${JSON.stringify(r.issues).slice(0, 500)}`).toBe(true);
      }),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(1500) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(1500));
    reportFuzzInputs('opaque-config-one-field-broken', tried);
  });

  it('throws nothing but OPAQUE_CONFIG_INVALID for arbitrary junk, with short messages', () => {
    let tried = 0;
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(junkArb, fc.dictionary(fc.string({ maxLength: 5000 }), junkArb, { maxKeys: 200 })),
          {
            maxLength: 3,
          },
        ),
        (params) => {
          tried++;
          try {
            validateClaimConfigs(
              TEST_DRIVER,
              params.map((p) => opaque(p)),
            );
          } catch (e) {
            expect(e).toBeInstanceOf(OpaqueConfigError);
            if (!(e instanceof OpaqueConfigError)) return;
            expectWellFormedRefusal(e.issues, 'config[');
          }
        },
      ),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(300) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(300));
    reportFuzzInputs('opaque-config-junk', tried);
  });

  it('passes only pinned-memory limits a GPU can have: at least 1 MiB, below 2^63 bytes', () => {
    let tried = 0;
    const quantity = fc.oneof(
      fc.constantFrom(...BAD_QUANTITIES, '8Ei', '7Ei', '9223372036854775807', '9223372036854775808'),
      fc.stringMatching(/^[0-9]{1,30}(\.[0-9]{0,5})?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|e[0-9]{1,3})?$/),
    );
    fc.assert(
      fc.property(quantity, fc.constantFrom(V, N), (q, apiVersion) => {
        tried++;
        const mps = { defaultPinnedDeviceMemoryLimit: q, defaultPerDevicePinnedMemoryLimit: { '0': q } };
        const r = validateOpaqueParameters({
          apiVersion,
          kind: 'GpuConfig',
          sharing: { strategy: 'MPS', [FIELDS[apiVersion].mps]: mps },
        });
        const bytes = quantityBytes(q);
        if (r.ok) {
          expect(bytes).toBeGreaterThanOrEqual(2 ** 20);
          expect(bytes).toBeLessThan(2 ** 63);
        } else {
          expectWellFormedRefusal(r.issues, 'parameters');
          for (const field of ['defaultPinnedDeviceMemoryLimit', 'defaultPerDevicePinnedMemoryLimit'])
            expect(r.issues.some((i) => i.path.includes(field))).toBe(true);
        }
      }),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(500) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(500));
    reportFuzzInputs('opaque-config-pinned-memory', tried);
    // The issue's example, by name.
    const r = validateOpaqueParameters({
      apiVersion: N,
      kind: 'GpuConfig',
      sharing: {
        strategy: 'MPS',
        mpsConfig: { defaultPinnedDeviceMemoryLimit: '99999999999999999999999999Ei' },
      },
    });
    expect(r.ok ? [] : r.issues).toEqual([
      {
        path: 'parameters.sharing.mpsConfig.defaultPinnedDeviceMemoryLimit',
        message: expect.stringMatching(/is more than any GPU's memory/) as unknown,
      },
    ]);
  });

  it('refuses a MigDeviceConfig aimed at a full GPU, by request or by kind', () => {
    let tried = 0;
    const gpu = testGpu(0);
    fc.assert(
      fc.property(
        validArb.filter((c) => c['kind'] === 'MigDeviceConfig'),
        fc.boolean(),
        (config, byRequest) => {
          tried++;
          const configs = validateClaimConfigs(TEST_DRIVER, [
            opaque(config, byRequest ? ['gpu'] : undefined),
          ]);
          const attempt = (): void => {
            const entry = configEntryForResult(configs, { request: 'gpu' }, gpu);
            checkConfigsAgainstDevices(configs, [
              { device: gpu, ...(entry ? { configIndex: entry.index } : {}) },
            ]);
          };
          expect(attempt).toThrow(OpaqueConfigError);
          expect(attempt).toThrow(
            byRequest
              ? /config\[0\]\.opaque\.parameters\.kind: MigDeviceConfig cannot configure a full GPU/
              : /config\[0\]\.opaque\.parameters\.kind: MigDeviceConfig applies to no device of this claim/,
          );
        },
      ),
      { seed: fuzzSeed(SEED), numRuns: fuzzRuns(100) },
    );
    expect(tried).toBeGreaterThanOrEqual(fuzzRuns(100));
    reportFuzzInputs('opaque-config-mig-on-full-gpu', tried);
  });
});
