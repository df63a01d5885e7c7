/**
 * Opaque device configuration (`status.allocation.devices.config[].opaque.parameters`) for
 * this driver: strict validation and per-result resolution. Pure; no I/O.
 *
 * Accepted documents (`apiVersion: gpu.dra.dev/v1alpha1`):
 *
 *   kind: GpuConfig
 *   sharing:
 *     strategy: TimeSlicing | MPS
 *     timeSlicing: { interval: Default | Short | Medium | Long }   # TimeSlicing only
 *     mps: { defaultActiveThreadPercentage: 0..100, defaultPinnedDeviceMemoryLimit: <quantity> }  # MPS only
 *
 *   kind: MigDeviceConfig
 *   sharing: { strategy: TimeSlicing | MPS, mps: {...} }          # no timeSlicing for MIG
 *
 * Unknown fields are errors. Every problem is reported with the path of the field, e.g.
 * `config[1].opaque.parameters.sharing.timeSlicing.interval`.
 */
import * as z from 'zod';
import { GpuDraError } from '../util/errors.js';
import type { DeviceAllocationConfiguration, DeviceRequestAllocationResult } from '../api/resource.js';
import type { AllocatableDevice } from './deviceNames.js';

export const CONFIG_API_VERSION = 'gpu.dra.dev/v1alpha1';
export const CONFIG_KINDS = ['GpuConfig', 'MigDeviceConfig'] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

const QUANTITY = /^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/;
const QUANTITY_SCALE: Readonly<Record<string, number>> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A quantity (already matching QUANTITY) in bytes; Infinity when it is too large to hold. */
export function quantityBytes(quantity: string): number {
  const m = QUANTITY.exec(quantity);
  if (!m?.[1]) return Number.NaN;
  return Number(m[1]) * (QUANTITY_SCALE[m[3] ?? ''] ?? Number.NaN);
}

const mpsSchema = z.strictObject({
  defaultActiveThreadPercentage: z.number().int().min(0).max(100).optional(),
  defaultPinnedDeviceMemoryLimit: z
    .string()
    .regex(QUANTITY, 'must be a Kubernetes quantity, e.g. 10Gi')
    .optional(),
});

const strategySchema = z.enum(['TimeSlicing', 'MPS']);

const gpuSharingSchema = z
  .strictObject({
    strategy: strategySchema,
    timeSlicing: z.strictObject({ interval: z.enum(['Default', 'Short', 'Medium', 'Long']) }).optional(),
    mps: mpsSchema.optional(),
  })
  .superRefine((sharing, ctx) => {
    if (sharing.strategy !== 'TimeSlicing' && sharing.timeSlicing) {
      ctx.addIssue({
        code: 'custom',
        path: ['timeSlicing'],
        message: `only allowed with strategy TimeSlicing`,
      });
    }
    if (sharing.strategy !== 'MPS' && sharing.mps) {
      ctx.addIssue({ code: 'custom', path: ['mps'], message: `only allowed with strategy MPS` });
    }
  });

const migSharingSchema = z
  .strictObject({ strategy: strategySchema, mps: mpsSchema.optional() })
  .superRefine((sharing, ctx) => {
    if (sharing.strategy !== 'MPS' && sharing.mps) {
      ctx.addIssue({ code: 'custom', path: ['mps'], message: `only allowed with strategy MPS` });
    }
  });

const gpuConfigSchema = z.strictObject({
  apiVersion: z.literal(CONFIG_API_VERSION),
  kind: z.literal('GpuConfig'),
  sharing: gpuSharingSchema.optional(),
});

const migConfigSchema = z.strictObject({
  apiVersion: z.literal(CONFIG_API_VERSION),
  kind: z.literal('MigDeviceConfig'),
  sharing: migSharingSchema.optional(),
});

export type GpuConfig = z.infer<typeof gpuConfigSchema>;
export type MigDeviceConfig = z.infer<typeof migConfigSchema>;
export type DeviceConfig = GpuConfig | MigDeviceConfig;

/** The sharing part of a device's effective config, in the normalized form stored and applied. */
export interface SharingSettings {
  readonly strategy: 'TimeSlicing' | 'MPS';
  /** TimeSlicing only; `Default` when unset. */
  readonly interval?: 'Default' | 'Short' | 'Medium' | 'Long';
  readonly mps?: {
    readonly defaultActiveThreadPercentage?: number;
    readonly defaultPinnedDeviceMemoryLimit?: string;
  };
}

export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

/** One or more opaque parameters are invalid; `issues` names each bad field. */
export class OpaqueConfigError extends GpuDraError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(
      'OPAQUE_CONFIG_INVALID',
      `invalid opaque config: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
    );
    this.issues = issues;
  }
}

function joinPath(prefix: string, segments: readonly PropertyKey[]): string {
  let out = prefix;
  for (const seg of segments) {
    out += typeof seg === 'number' ? `[${seg}]` : `${out ? '.' : ''}${String(seg)}`;
  }
  return out;
}

function zodIssues(error: z.ZodError, prefix: string): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        issues.push({ path: joinPath(prefix, [...issue.path, key]), message: 'unknown field' });
      }
    } else {
      issues.push({ path: joinPath(prefix, issue.path), message: issue.message });
    }
  }
  return issues;
}

/**
 * Validates one parameters object. Returns the typed config or the issues (paths start with
 * `prefix`, default `parameters`).
 */
export function validateOpaqueParameters(
  parameters: unknown,
  prefix = 'parameters',
): { ok: true; config: DeviceConfig } | { ok: false; issues: ConfigIssue[] } {
  if (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters)) {
    return { ok: false, issues: [{ path: prefix, message: 'must be an object' }] };
  }
  const kind = (parameters as { kind?: unknown }).kind;
  if (kind !== 'GpuConfig' && kind !== 'MigDeviceConfig') {
    const issues: ConfigIssue[] = [
      {
        path: `${prefix}.kind`,
        message: `must be one of ${CONFIG_KINDS.join(', ')} (got ${JSON.stringify(kind)})`,
      },
    ];
    const apiVersion = (parameters as { apiVersion?: unknown }).apiVersion;
    if (apiVersion !== CONFIG_API_VERSION) {
      issues.unshift({ path: `${prefix}.apiVersion`, message: `must be ${CONFIG_API_VERSION}` });
    }
    return { ok: false, issues };
  }
  const schema = kind === 'GpuConfig' ? gpuConfigSchema : migConfigSchema;
  const parsed = schema.safeParse(parameters);
  if (!parsed.success) return { ok: false, issues: zodIssues(parsed.error, prefix) };
  return { ok: true, config: parsed.data };
}

/** Normalized sharing settings of a config (TimeSlicing without interval → `Default`). */
export function sharingOf(config: DeviceConfig | undefined): SharingSettings | undefined {
  const sharing = config?.sharing;
  if (!sharing) return undefined;
  if (sharing.strategy === 'TimeSlicing') {
    const interval = 'timeSlicing' in sharing ? sharing.timeSlicing?.interval : undefined;
    return { strategy: 'TimeSlicing', interval: interval ?? 'Default' };
  }
  return sharing.mps ? { strategy: 'MPS', mps: { ...sharing.mps } } : { strategy: 'MPS' };
}

/** `req/sub` → `req`. */
export function baseRequestName(request: string): string {
  const slash = request.indexOf('/');
  return slash < 0 ? request : request.slice(0, slash);
}

function kindFor(device: AllocatableDevice): ConfigKind {
  return device.kind === 'gpu' ? 'GpuConfig' : 'MigDeviceConfig';
}

interface ValidatedConfig {
  readonly index: number;
  readonly requests: readonly string[];
  readonly config: DeviceConfig;
  /** From the DeviceClass (may name kinds a claim of the class lacks) rather than the claim. */
  readonly fromClass: boolean;
}

/**
 * Validates every opaque config addressed to `driverName` (others are ignored) and orders them
 * class first, then claim, keeping each group's order. Throws OpaqueConfigError with all issues.
 */
export function validateClaimConfigs(
  driverName: string,
  configs: readonly DeviceAllocationConfiguration[] | undefined,
): ValidatedConfig[] {
  const issues: ConfigIssue[] = [];
  const valid: ValidatedConfig[] = [];
  (configs ?? []).forEach((entry, index) => {
    if (!entry.opaque || entry.opaque.driver !== driverName) return;
    const result = validateOpaqueParameters(entry.opaque.parameters, `config[${index}].opaque.parameters`);
    if (!result.ok) {
      issues.push(...result.issues);
      return;
    }
    valid.push({
      index,
      requests: entry.requests ?? [],
      config: result.config,
      fromClass: entry.source === 'FromClass',
    });
  });
  if (issues.length > 0) throw new OpaqueConfigError(issues);
  return [...valid.filter((c) => c.fromClass), ...valid.filter((c) => !c.fromClass)];
}

/**
 * The effective config for one allocation result: scanning from the end (last wins), the first
 * config naming the result's request (full or base name) applies, and must fit the device type;
 * a config without `requests` applies only to devices of its own type.
 */
export function configForResult(
  configs: readonly ValidatedConfig[],
  result: Pick<DeviceRequestAllocationResult, 'request'>,
  device: AllocatableDevice,
): DeviceConfig | undefined {
  const wanted = kindFor(device);
  const base = baseRequestName(result.request);
  for (let i = configs.length - 1; i >= 0; i--) {
    const entry = configs[i];
    if (!entry) continue;
    if (entry.requests.length === 0) {
      if (entry.config.kind === wanted) return entry.config;
      continue;
    }
    if (entry.requests.includes(result.request) || entry.requests.includes(base)) {
      if (entry.config.kind !== wanted) {
        throw new OpaqueConfigError([
          {
            path: `config[${entry.index}].opaque.parameters.kind`,
            message: `${entry.config.kind} cannot configure ${device.kind === 'gpu' ? 'a full GPU' : 'a MIG device'} (request ${result.request}); use ${wanted}`,
          },
        ]);
      }
      return entry.config;
    }
  }
  return undefined;
}

/**
 * What can only be checked against the devices the claim got: a claim's own config without
 * `requests` must fit at least one of them (a MigDeviceConfig on a claim of whole GPUs would
 * otherwise be dropped without a word), and an MPS pinned-memory limit must not exceed the
 * device's memory, or a share's (consumable capacity): more would let it use memory the
 * scheduler gave other shares. Throws OpaqueConfigError naming the field.
 */
export function checkConfigsAgainstDevices(
  configs: readonly ValidatedConfig[],
  devices: readonly {
    readonly device: AllocatableDevice;
    readonly sharing?: SharingSettings;
    readonly consumedMemoryBytes?: number;
  }[],
): void {
  const issues: ConfigIssue[] = [];
  const kinds = new Set(devices.map((d) => kindFor(d.device)));
  for (const c of configs) {
    if (c.fromClass || c.requests.length > 0 || kinds.has(c.config.kind)) continue;
    issues.push({
      path: `config[${String(c.index)}].opaque.parameters.kind`,
      message: `${c.config.kind} applies to no device of this claim (it got ${[...kinds].map((k) => (k === 'GpuConfig' ? 'full GPUs' : 'MIG devices')).join(' and ')}); use ${[...kinds].join(' or ')}`,
    });
  }
  for (const { device, sharing, consumedMemoryBytes } of devices) {
    const limit = sharing?.mps?.defaultPinnedDeviceMemoryLimit;
    const memory = consumedMemoryBytes ?? device.memoryBytes;
    if (limit === undefined || memory === undefined) continue;
    const bytes = quantityBytes(limit);
    if (!(bytes <= memory)) {
      issues.push({
        path: 'sharing.mps.defaultPinnedDeviceMemoryLimit',
        message: `${limit} is more than the ${String(Math.round(memory / 2 ** 20))} MiB of memory of the ${consumedMemoryBytes === undefined ? 'device' : 'share of the device'} it limits (${device.uuid})`,
      });
    }
  }
  if (issues.length > 0) throw new OpaqueConfigError(issues);
}
