/**
 * Opaque device configuration (`status.allocation.devices.config[].opaque.parameters`) for
 * this driver: strict validation, per-result resolution and the checks that need the claim's
 * devices. Pure; no I/O.
 *
 * Two formats are accepted, whatever the driver is named, so that NVIDIA's manifests work
 * unchanged and an admin can switch driver names without rewriting claims:
 *
 *   apiVersion: gpu.dra.dev/v1alpha1              # ours
 *   kind: GpuConfig
 *   sharing:
 *     strategy: TimeSlicing | MPS
 *     timeSlicing: { interval: Default | Short | Medium | Long }    # TimeSlicing only
 *     mps: <mps settings>                                          # MPS only
 *
 *   apiVersion: resource.nvidia.com/v1beta1       # NVIDIA's k8s-dra-driver-gpu (gpu.nvidia.com)
 *   kind: GpuConfig
 *   sharing:
 *     strategy: TimeSlicing | MPS
 *     timeSlicingConfig: { interval: Default | Short | Medium | Long }   # TimeSlicing only; interval optional
 *     mpsConfig: <mps settings>                                         # MPS only
 *
 *   <mps settings>:
 *     defaultActiveThreadPercentage: 0..100
 *     defaultPinnedDeviceMemoryLimit: <quantity>           # 1Mi to below 2^63 bytes; applied in whole MiB
 *     defaultPerDevicePinnedMemoryLimit: { <key>: <quantity> }
 *       # key: index among the devices this config applies to in the claim (allocation order),
 *       # or the GPU-/MIG- UUID of one of them; overrides the default for that device
 *     multiUser: true | false                              # needs compute capability 7.0+
 *
 *   kind: MigDeviceConfig (either apiVersion): `sharing: { strategy, mps | mpsConfig }` only;
 *   a MIG device has no time-slice interval, so TimeSlicing on it takes no settings.
 *
 * `kind: VfioDeviceConfig` (NVIDIA's GPU passthrough) is refused: this driver has no passthrough.
 * Unknown fields are errors, as in NVIDIA's strict decoding. Every problem is reported with the
 * path of the field, e.g. `config[1].opaque.parameters.sharing.timeSlicing.interval`. Both
 * formats normalise to one `SharingSettings` (TimeSlicing on a full GPU without an interval →
 * `Default`; MPS without settings → no `mps`).
 */
import * as z from 'zod';
import type { MpsSettings, SharingSettings } from '../sharing/settings.js';
import { GpuDraError } from '../util/errors.js';
import { shorten, shownJson } from '../util/shorten.js';
import type { DeviceAllocationConfiguration, DeviceRequestAllocationResult } from '../api/resource.js';
import { deviceLabel, type PlanDevice } from './deviceNames.js';

export const CONFIG_API_VERSION = 'gpu.dra.dev/v1alpha1';
/** NVIDIA's DRA driver's config group, accepted as a drop-in. */
export const NVIDIA_CONFIG_API_VERSION = 'resource.nvidia.com/v1beta1';
export const CONFIG_API_VERSIONS = [CONFIG_API_VERSION, NVIDIA_CONFIG_API_VERSION] as const;
export type ConfigApiVersion = (typeof CONFIG_API_VERSIONS)[number];
export const CONFIG_KINDS = ['GpuConfig', 'MigDeviceConfig'] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

/** Where each format keeps its strategy settings under `sharing`. */
const SHARING_FIELDS: Readonly<Record<ConfigApiVersion, { timeSlicing: string; mps: string }>> = {
  [CONFIG_API_VERSION]: { timeSlicing: 'timeSlicing', mps: 'mps' },
  [NVIDIA_CONFIG_API_VERSION]: { timeSlicing: 'timeSlicingConfig', mps: 'mpsConfig' },
};

// Kubernetes quantity grammar without a sign: number, then a binary or decimal SI suffix or a
// decimal exponent (`1E` is exa, `1E3` is 1000).
const QUANTITY =
  /^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?$/;
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
const MIB = 2 ** 20;
/**
 * No pinned-memory limit can be above this: Kubernetes' Quantity.Value() and NVIDIA's driver hold
 * bytes in an int64, so a larger quantity would overflow there (and is more than any GPU has).
 */
const MAX_PINNED_BYTES = 2 ** 63;

/** A quantity (already matching QUANTITY) in bytes; Infinity when it is too large to hold. */
export function quantityBytes(quantity: string): number {
  const m = QUANTITY.exec(quantity);
  if (!m?.[1]) return Number.NaN;
  const scale = m[3] === undefined ? QUANTITY_SCALE[m[2] ?? ''] : 10 ** Number(m[3]);
  return Number(m[1]) * (scale ?? Number.NaN);
}

/**
 * A quantity in whole MiB, as NVIDIA's driver hands it to MPS: bytes rounded up (Kubernetes'
 * `Quantity.Value()`), then divided down to MiB.
 */
export function quantityMiB(quantity: string): number {
  return Math.floor(Math.ceil(quantityBytes(quantity)) / MIB);
}

// YAML turns `limit: 1073741824` into a number; Kubernetes' Quantity decodes that too.
const pinnedLimitSchema = z
  .union([z.string(), z.number()], { error: 'must be a Kubernetes quantity, e.g. 10Gi' })
  .transform((value, ctx) => {
    const quantity = String(value);
    if (!QUANTITY.test(quantity)) {
      ctx.addIssue({
        code: 'custom',
        message: `must be a Kubernetes quantity, e.g. 10Gi (got ${shorten(quantity)})`,
      });
      return z.NEVER;
    }
    if (!(quantityMiB(quantity) >= 1)) {
      ctx.addIssue({
        code: 'custom',
        message: `${shorten(quantity)} is less than 1Mi: MPS takes pinned-memory limits in whole MiB`,
      });
      return z.NEVER;
    }
    if (!(quantityBytes(quantity) < MAX_PINNED_BYTES)) {
      ctx.addIssue({
        code: 'custom',
        message: `${shorten(quantity)} is more than any GPU's memory (at most 2^63 bytes, where int64 quantities overflow)`,
      });
      return z.NEVER;
    }
    return quantity;
  });

const DEVICE_INDEX = /^[0-9]+$/;
const deviceKeySchema = z
  .string()
  .regex(
    /^([0-9]+|(GPU|MIG)-.+)$/,
    'must be a device index (0, 1, ... among the devices this config applies to) or a GPU-/MIG- UUID',
  );

const mpsSchema = z.strictObject({
  defaultActiveThreadPercentage: z.number().int().min(0).max(100).optional(),
  defaultPinnedDeviceMemoryLimit: pinnedLimitSchema.optional(),
  defaultPerDevicePinnedMemoryLimit: z.record(deviceKeySchema, pinnedLimitSchema).optional(),
  multiUser: z.boolean().optional(),
});

const strategySchema = z.enum(['TimeSlicing', 'MPS']);
const intervalSchema = z.enum(['Default', 'Short', 'Medium', 'Long']);

/** NVIDIA's rule, in either format: settings of the other strategy are an error. */
function settingsMatchStrategy(timeSlicingField: string | undefined, mpsField: string) {
  return (sharing: Record<string, unknown> & { strategy: string }, ctx: z.RefinementCtx): void => {
    if (timeSlicingField && sharing.strategy !== 'TimeSlicing' && sharing[timeSlicingField] !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [timeSlicingField],
        message: 'only allowed with strategy TimeSlicing',
      });
    }
    if (sharing.strategy !== 'MPS' && sharing[mpsField] !== undefined) {
      ctx.addIssue({ code: 'custom', path: [mpsField], message: 'only allowed with strategy MPS' });
    }
  };
}

const gpuConfigSchema = z.strictObject({
  apiVersion: z.literal(CONFIG_API_VERSION),
  kind: z.literal('GpuConfig'),
  sharing: z
    .strictObject({
      strategy: strategySchema,
      timeSlicing: z.strictObject({ interval: intervalSchema }).optional(),
      mps: mpsSchema.optional(),
    })
    .superRefine(settingsMatchStrategy('timeSlicing', 'mps'))
    .optional(),
});

const migConfigSchema = z.strictObject({
  apiVersion: z.literal(CONFIG_API_VERSION),
  kind: z.literal('MigDeviceConfig'),
  sharing: z
    .strictObject({ strategy: strategySchema, mps: mpsSchema.optional() })
    .superRefine(settingsMatchStrategy(undefined, 'mps'))
    .optional(),
});

const nvidiaGpuConfigSchema = z.strictObject({
  apiVersion: z.literal(NVIDIA_CONFIG_API_VERSION),
  kind: z.literal('GpuConfig'),
  sharing: z
    .strictObject({
      strategy: strategySchema,
      timeSlicingConfig: z.strictObject({ interval: intervalSchema.optional() }).optional(),
      mpsConfig: mpsSchema.optional(),
    })
    .superRefine(settingsMatchStrategy('timeSlicingConfig', 'mpsConfig'))
    .optional(),
});

const nvidiaMigConfigSchema = z.strictObject({
  apiVersion: z.literal(NVIDIA_CONFIG_API_VERSION),
  kind: z.literal('MigDeviceConfig'),
  sharing: z
    .strictObject({ strategy: strategySchema, mpsConfig: mpsSchema.optional() })
    .superRefine(settingsMatchStrategy(undefined, 'mpsConfig'))
    .optional(),
});

const SCHEMAS = {
  [CONFIG_API_VERSION]: { GpuConfig: gpuConfigSchema, MigDeviceConfig: migConfigSchema },
  [NVIDIA_CONFIG_API_VERSION]: { GpuConfig: nvidiaGpuConfigSchema, MigDeviceConfig: nvidiaMigConfigSchema },
} as const;

/**
 * Messages for unknown fields under `sharing` that are a known mistake: the other format's
 * name, or time-slice settings on a MIG device.
 */
function sharingFieldHints(apiVersion: ConfigApiVersion, kind: ConfigKind): Readonly<Record<string, string>> {
  const other = apiVersion === CONFIG_API_VERSION ? NVIDIA_CONFIG_API_VERSION : CONFIG_API_VERSION;
  const mine = SHARING_FIELDS[apiVersion];
  const theirs = SHARING_FIELDS[other];
  const noSlice = 'unknown field: a MIG device has no time-slice setting (TimeSlicing on it takes none)';
  return {
    [theirs.mps]: `unknown field: ${apiVersion} calls it ${mine.mps} (${theirs.mps} is ${other})`,
    [theirs.timeSlicing]:
      kind === 'MigDeviceConfig'
        ? noSlice
        : `unknown field: ${apiVersion} calls it ${mine.timeSlicing} (${theirs.timeSlicing} is ${other})`,
    ...(kind === 'MigDeviceConfig' ? { [mine.timeSlicing]: noSlice } : {}),
  };
}

export type GpuConfig = z.infer<typeof gpuConfigSchema>;
export type MigDeviceConfig = z.infer<typeof migConfigSchema>;
export type NvidiaGpuConfig = z.infer<typeof nvidiaGpuConfigSchema>;
export type NvidiaMigDeviceConfig = z.infer<typeof nvidiaMigConfigSchema>;
export type DeviceConfig = GpuConfig | MigDeviceConfig | NvidiaGpuConfig | NvidiaMigDeviceConfig;

/**
 * MPS settings in the normalized form; quantities and per-device keys are kept as given. A type
 * rather than an interface so that it fits the checkpoint's open record (`{[k: string]: unknown}`).
 */
export type { MpsSettings, SharingSettings } from '../sharing/settings.js';

export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

const MAX_LISTED_ISSUES = 10;

/** One or more opaque parameters are invalid; `issues` names each bad field. */
export class OpaqueConfigError extends GpuDraError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    // The message ends up in the kubelet's reply and the pod's events: a config with thousands of
    // bad fields lists the first few and counts the rest.
    const listed = issues.slice(0, MAX_LISTED_ISSUES).map((i) => `${i.path}: ${i.message}`);
    const more = issues.length - listed.length;
    super(
      'OPAQUE_CONFIG_INVALID',
      `invalid opaque config: ${listed.join('; ')}${more > 0 ? `; and ${String(more)} more` : ''}`,
    );
    this.issues = issues;
  }
}

/** Fields whose keys are data (device keys), rendered `field["key"]` rather than `field.key`. */
const MAP_FIELDS: ReadonlySet<PropertyKey> = new Set(['defaultPerDevicePinnedMemoryLimit']);

function joinPath(prefix: string, segments: readonly PropertyKey[]): string {
  let out = prefix;
  let previous: PropertyKey | undefined;
  for (const seg of segments) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (previous !== undefined && MAP_FIELDS.has(previous))
      out += `[${JSON.stringify(shorten(String(seg)))}]`;
    else out += `${out ? '.' : ''}${shorten(String(seg))}`;
    previous = seg;
  }
  return out;
}

function zodIssues(
  error: z.ZodError,
  prefix: string,
  hints: Readonly<Record<string, string>>,
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const underSharing = issue.path.length === 1 && issue.path[0] === 'sharing';
      for (const key of issue.keys) {
        issues.push({
          path: joinPath(prefix, [...issue.path, key]),
          message: (underSharing ? hints[key] : undefined) ?? 'unknown field',
        });
      }
    } else if (issue.code === 'invalid_key') {
      // zod's own message ("Invalid key in record") does not say what a key may be.
      issues.push({ path: joinPath(prefix, issue.path), message: issue.issues[0]?.message ?? issue.message });
    } else {
      issues.push({ path: joinPath(prefix, issue.path), message: issue.message });
    }
  }
  return issues;
}

function isApiVersion(value: unknown): value is ConfigApiVersion {
  return (CONFIG_API_VERSIONS as readonly unknown[]).includes(value);
}

function isKind(value: unknown): value is ConfigKind {
  return (CONFIG_KINDS as readonly unknown[]).includes(value);
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
  const { apiVersion, kind } = parameters as { apiVersion?: unknown; kind?: unknown };
  const issues: ConfigIssue[] = [];
  if (!isApiVersion(apiVersion)) {
    issues.push({
      path: `${prefix}.apiVersion`,
      message: `must be ${CONFIG_API_VERSIONS.join(' or ')} (got ${shownJson(apiVersion)})`,
    });
  }
  if (kind === 'VfioDeviceConfig') {
    issues.push({
      path: `${prefix}.kind`,
      message: `VfioDeviceConfig (GPU passthrough to a VM) is not supported: this driver does not do passthrough; use ${CONFIG_KINDS.join(' or ')}`,
    });
  } else if (!isKind(kind)) {
    issues.push({
      path: `${prefix}.kind`,
      message: `must be one of ${CONFIG_KINDS.join(', ')} (got ${shownJson(kind)})`,
    });
  }
  if (issues.length > 0 || !isApiVersion(apiVersion) || !isKind(kind)) return { ok: false, issues };
  const parsed = SCHEMAS[apiVersion][kind].safeParse(parameters);
  if (!parsed.success) {
    return { ok: false, issues: zodIssues(parsed.error, prefix, sharingFieldHints(apiVersion, kind)) };
  }
  return { ok: true, config: parsed.data };
}

type RawMps = z.infer<typeof mpsSchema>;

function rawMps(config: DeviceConfig): RawMps | undefined {
  return config.apiVersion === NVIDIA_CONFIG_API_VERSION ? config.sharing?.mpsConfig : config.sharing?.mps;
}

function rawInterval(config: DeviceConfig): SharingSettings['interval'] {
  if (config.kind !== 'GpuConfig') return undefined;
  return config.apiVersion === NVIDIA_CONFIG_API_VERSION
    ? config.sharing?.timeSlicingConfig?.interval
    : config.sharing?.timeSlicing?.interval;
}

function mpsSettingsOf(raw: RawMps | undefined): MpsSettings | undefined {
  if (!raw) return undefined;
  const perDevice = raw.defaultPerDevicePinnedMemoryLimit;
  const mps: MpsSettings = {
    ...(raw.defaultActiveThreadPercentage !== undefined
      ? { defaultActiveThreadPercentage: raw.defaultActiveThreadPercentage }
      : {}),
    ...(raw.defaultPinnedDeviceMemoryLimit !== undefined
      ? { defaultPinnedDeviceMemoryLimit: raw.defaultPinnedDeviceMemoryLimit }
      : {}),
    ...(perDevice && Object.keys(perDevice).length > 0
      ? { defaultPerDevicePinnedMemoryLimit: { ...perDevice } }
      : {}),
    ...(raw.multiUser !== undefined ? { multiUser: raw.multiUser } : {}),
  };
  return Object.keys(mps).length > 0 ? mps : undefined;
}

/**
 * Normalized sharing settings of a config, equal for equivalent configs of either format:
 * TimeSlicing on a full GPU without interval → `Default`; TimeSlicing on a MIG device has no
 * interval (NVIDIA treats it as a no-op); MPS without settings (or with empty ones) → no `mps`.
 */
export function sharingOf(config: DeviceConfig | undefined): SharingSettings | undefined {
  if (!config?.sharing) return undefined;
  if (config.sharing.strategy === 'TimeSlicing') {
    if (config.kind === 'MigDeviceConfig') return { strategy: 'TimeSlicing' };
    return { strategy: 'TimeSlicing', interval: rawInterval(config) ?? 'Default' };
  }
  const mps = mpsSettingsOf(rawMps(config));
  return mps ? { strategy: 'MPS', mps } : { strategy: 'MPS' };
}

/** `req/sub` → `req`. */
export function baseRequestName(request: string): string {
  const slash = request.indexOf('/');
  return slash < 0 ? request : request.slice(0, slash);
}

function kindFor(device: Pick<PlanDevice, 'kind'>): ConfigKind {
  return device.kind === 'gpu' ? 'GpuConfig' : 'MigDeviceConfig';
}

export interface ValidatedConfig {
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
 * The config entry that applies to one allocation result: scanning from the end (last wins),
 * the first config naming the result's request (full or base name) applies, and must fit the
 * device type; a config without `requests` applies only to devices of its own type.
 */
export function configEntryForResult(
  configs: readonly ValidatedConfig[],
  result: Pick<DeviceRequestAllocationResult, 'request'>,
  device: Pick<PlanDevice, 'kind'>,
): ValidatedConfig | undefined {
  const wanted = kindFor(device);
  const base = baseRequestName(result.request);
  for (let i = configs.length - 1; i >= 0; i--) {
    const entry = configs[i];
    if (!entry) continue;
    if (entry.requests.length === 0) {
      if (entry.config.kind === wanted) return entry;
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
      return entry;
    }
  }
  return undefined;
}

/** The effective config for one allocation result (see configEntryForResult). */
export function configForResult(
  configs: readonly ValidatedConfig[],
  result: Pick<DeviceRequestAllocationResult, 'request'>,
  device: Pick<PlanDevice, 'kind'>,
): DeviceConfig | undefined {
  return configEntryForResult(configs, result, device)?.config;
}

/**
 * Which of `devices` a `defaultPerDevicePinnedMemoryLimit` key names: an index among them (in
 * allocation order) or one's UUID; undefined when it names none.
 */
function deviceForKey(key: string, devices: readonly { readonly uuid?: string }[]): number | undefined {
  if (DEVICE_INDEX.test(key)) {
    const index = Number(key);
    return index < devices.length ? index : undefined;
  }
  // A slot (dynamic MIG) has no UUID before prepare: only an index can name it.
  const index = devices.findIndex((d) => d.uuid !== undefined && d.uuid === key);
  return index < 0 ? undefined : index;
}

/**
 * Pinned-memory limit per device UUID in whole MiB, as the MPS control daemon takes it: the
 * device's `defaultPerDevicePinnedMemoryLimit` entry (by index among `devices`, in allocation
 * order, or by UUID) else the default; devices with neither are absent. `devices` are those the
 * config applies to in the claim. Expects settings that passed checkConfigsAgainstDevices;
 * should two keys name one device anyway, the UUID key wins, being the more specific.
 */
export function mpsPinnedLimitsMiB(
  mps: MpsSettings | undefined,
  devices: readonly { readonly uuid: string; readonly memoryBytes?: number }[],
): Record<string, number> {
  const limits: Record<string, number> = {};
  if (!mps) return limits;
  const fallback = mps.defaultPinnedDeviceMemoryLimit;
  if (fallback !== undefined) for (const d of devices) limits[d.uuid] = quantityMiB(fallback);
  const entries = Object.entries(mps.defaultPerDevicePinnedMemoryLimit ?? {});
  const ordered = [
    ...entries.filter(([key]) => DEVICE_INDEX.test(key)),
    ...entries.filter(([key]) => !DEVICE_INDEX.test(key)),
  ];
  for (const [key, limit] of ordered) {
    const device = devices[deviceForKey(key, devices) ?? -1];
    if (device) limits[device.uuid] = quantityMiB(limit);
  }
  return limits;
}

function computeCapabilityBelow(capability: string | undefined, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)$/.exec(capability ?? '');
  if (!m) return false; // unknown: NVML did not say; starting the MPS daemon will tell
  const [have, haveMinor] = [Number(m[1]), Number(m[2])];
  return have < major || (have === major && haveMinor < minor);
}

/**
 * Issues of one MPS config against the devices it applies to; `field` is its path. A device held
 * as a share (`shareBytes`, consumable capacity) may pin no more than its share: more would let
 * it use memory the scheduler gave other shares.
 */
function mpsIssues(
  mps: MpsSettings,
  devices: readonly (PlanDevice & { readonly shareBytes?: number | undefined })[],
  field: string,
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const perDeviceField = `${field}.defaultPerDevicePinnedMemoryLimit`;
  // device index → [path of the limit that applies, the limit]
  const applied = new Map<number, readonly [string, string]>();
  if (mps.defaultPinnedDeviceMemoryLimit !== undefined) {
    for (const i of devices.keys()) {
      applied.set(i, [`${field}.defaultPinnedDeviceMemoryLimit`, mps.defaultPinnedDeviceMemoryLimit]);
    }
  }
  const keyOf = new Map<number, string>();
  for (const [key, limit] of Object.entries(mps.defaultPerDevicePinnedMemoryLimit ?? {})) {
    const path = `${perDeviceField}[${JSON.stringify(shorten(key))}]`;
    const index = deviceForKey(key, devices);
    const uuids = devices.map(deviceLabel).join(', ');
    if (index === undefined) {
      issues.push({
        path,
        message: DEVICE_INDEX.test(key)
          ? `device index ${shorten(key)} is out of range: this config applies to ${String(devices.length)} device(s) of the claim, index 0..${String(devices.length - 1)} in allocation order (${uuids})`
          : `${shorten(key)} is not a device this config applies to in the claim (${uuids})`,
      });
      continue;
    }
    const earlier = keyOf.get(index);
    if (earlier !== undefined) {
      // Two limits for one device: NVIDIA would pick one at random (map order).
      issues.push({
        path,
        message: `names the same device as key ${JSON.stringify(shorten(earlier))} (${devices[index] ? deviceLabel(devices[index]) : ''}); give one`,
      });
      continue;
    }
    keyOf.set(index, key);
    applied.set(index, [path, limit]);
  }
  // One issue per limit, naming every device it does not fit.
  const tooBig = new Map<string, { limit: string; devices: string[] }>();
  for (const [i, [path, limit]] of applied) {
    const device = devices[i];
    const memory = device?.shareBytes ?? device?.memoryBytes;
    if (!device || memory === undefined || quantityBytes(limit) <= memory) continue;
    const entry = tooBig.get(path) ?? { limit, devices: [] };
    entry.devices.push(
      device.shareBytes === undefined
        ? `${String(Math.floor(memory / MIB))} MiB on ${deviceLabel(device)}`
        : `the ${String(Math.floor(memory / MIB))} MiB share of ${deviceLabel(device)}`,
    );
    tooBig.set(path, entry);
  }
  for (const [path, { limit, devices: on }] of tooBig) {
    issues.push({
      path,
      message: `${shorten(limit)} is more than the memory of the device it limits: ${on.join(', ')}`,
    });
  }
  if (mps.multiUser === true) {
    // A MIG device reports no capability of its own; MIG needs Ampere (8.0) anyway.
    const old = devices.filter(
      (d) => d.kind === 'gpu' && computeCapabilityBelow(d.cudaComputeCapability, 7, 0),
    );
    if (old.length > 0) {
      issues.push({
        path: `${field}.multiUser`,
        message: `needs compute capability 7.0 (Volta) or newer on every device it applies to; ${old
          .map((d) => `${deviceLabel(d)} has ${d.kind === 'gpu' ? (d.cudaComputeCapability ?? '') : ''}`)
          .join(', ')}`,
      });
    }
  }
  return issues;
}

/**
 * What can only be checked against the devices the claim got:
 * - a claim's own config without `requests` must fit at least one of them (a MigDeviceConfig on
 *   a claim of whole GPUs would otherwise be dropped without a word);
 * - per MPS config, over the devices it applies to (grouped by `configIndex`, in the order
 *   given, which must be allocation order): every `defaultPerDevicePinnedMemoryLimit` key names
 *   one of them, once; no pinned-memory limit exceeds the memory of the device it limits; and
 *   `multiUser` only on compute capability 7.0+.
 * A device with sharing but no `configIndex` is checked on its own. Throws OpaqueConfigError
 * naming the field.
 */
export function checkConfigsAgainstDevices(
  configs: readonly ValidatedConfig[],
  devices: readonly {
    readonly device: PlanDevice;
    readonly sharing?: SharingSettings;
    /** `index` of the ValidatedConfig the sharing came from. */
    readonly configIndex?: number;
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
  const groups = new Map<
    number | string,
    { mps: MpsSettings; configIndex?: number; devices: (PlanDevice & { shareBytes?: number })[] }
  >();
  devices.forEach(({ device, sharing, configIndex, consumedMemoryBytes }, i) => {
    if (!sharing?.mps) return;
    const key = configIndex ?? `device ${String(i)}`;
    const group = groups.get(key) ?? { mps: sharing.mps, configIndex, devices: [] };
    group.devices.push(
      consumedMemoryBytes === undefined ? device : { ...device, shareBytes: consumedMemoryBytes },
    );
    groups.set(key, group);
  });
  for (const { mps, configIndex, devices: applied } of groups.values()) {
    const entry = configs.find((c) => c.index === configIndex);
    const field = entry
      ? `config[${String(entry.index)}].opaque.parameters.sharing.${SHARING_FIELDS[entry.config.apiVersion].mps}`
      : 'parameters.sharing.mps';
    issues.push(...mpsIssues(mps, applied, field));
  }
  if (issues.length > 0) throw new OpaqueConfigError(issues);
}
