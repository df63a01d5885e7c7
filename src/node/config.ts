/**
 * The driver's configuration: flags from the table in flags.ts (each with an environment twin)
 * validated once with zod into a frozen DriverConfig, reporting every bad flag at once with its
 * name. The schema below has one entry per table row, checked at compile time.
 */
import path from 'node:path';
import * as z from 'zod';
import type { HostPaths } from '../util/hostPaths.js';
import { ConfigError } from '../util/errors.js';
import { MIG_PARTITIONING_MODES } from '../resourceslice/partitions.js';
import {
  MAX_CONSUMABLE_SHARES,
  parseConsumableShares,
  type ConsumableShares,
} from '../resourceslice/shares.js';
import {
  DRIVER_FLAGS,
  LOG_LEVELS,
  driverFlagNames,
  flagName,
  type DriverFlagName,
  type DriverFlags,
  type FlagSpec,
} from './flags.js';

const absPath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path');
const dnsSubdomain = z
  .string()
  .max(63, 'must be at most 63 characters')
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'must be a lowercase DNS subdomain',
  );
const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:]*):\d{1,5}$/, 'must be host:port (e.g. :8080 or 127.0.0.1:8080)')
  .transform((s) => {
    const i = s.lastIndexOf(':');
    return { host: s.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(s.slice(i + 1)) };
  })
  .refine((l) => l.port <= 65535, 'port must be at most 65535');
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
/** A Go-style duration (`30s`, `1m`, `500ms`; a bare number is seconds) in milliseconds. */
const duration = z
  .string()
  .regex(/^\d+(\.\d+)?(ms|s|m|h)?$/, 'must be a duration such as 30s, 2m or 0 (off)')
  .transform((s) => {
    const unit = /(ms|s|m|h)$/.exec(s)?.[1] ?? 's';
    return Math.round(Number.parseFloat(s) * (DURATION_UNITS_MS[unit] ?? 1_000));
  });
const deviceCheckInterval = duration.refine(
  (ms) => ms === 0 || (ms >= 1_000 && ms <= 86_400_000),
  'must be 0 (off) or between 1s and 24h',
);
const BINARY_QUANTITY = /^(\d+)(Ki|Mi|Gi|Ti)?$/;
const QUANTITY_SHIFT: Readonly<Record<string, number>> = { '': 0, Ki: 10, Mi: 20, Gi: 30, Ti: 40 };
/** A byte size as `0`, `512Mi`, `1Gi`, in bytes. */
const byteSize = z
  .string()
  .regex(BINARY_QUANTITY, 'must be a size such as 1Gi, 512Mi or 0')
  .transform((s) => {
    const m = BINARY_QUANTITY.exec(s);
    return Number(m?.[1] ?? 0) * 2 ** (QUANTITY_SHIFT[m?.[2] ?? ''] ?? 0);
  })
  .refine((n) => Number.isSafeInteger(n), 'is too large');
const consumableShares = z.string().transform((s, ctx): ConsumableShares => {
  const mode = parseConsumableShares(s);
  if (mode !== undefined) return mode;
  ctx.addIssue({
    code: 'custom',
    message: `must be disabled, memory, unlimited or a number of shares from 1 to ${String(MAX_CONSUMABLE_SHARES)}`,
  });
  return z.NEVER;
});
const bool = z.union(
  [z.boolean(), z.enum(['true', 'false', '1', '0', '']).transform((s) => s === 'true' || s === '1')],
  { error: 'must be true, false, 1 or 0' },
);

/**
 * How each flag's value is checked and converted. A flag the table gives no default (and does
 * not require) is `.optional()` here; table defaults are filled in before validation, so they
 * pass the same checks as given values.
 */
const SCHEMA = {
  nodeName: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a node name (DNS subdomain)'),
  kubeconfig: z.string().min(1).optional(),
  driverName: dnsSubdomain,
  kubeletRegistryDir: absPath,
  kubeletPluginsDir: absPath,
  cdiRoot: absPath,
  nvmlLib: z.string().min(1).optional(),
  devRoot: absPath,
  procRoot: absPath,
  sysRoot: absPath,
  driverRoot: absPath,
  hostDriverRoot: absPath.optional(),
  httpListen: listen.optional(),
  cleanupOnExit: bool,
  logLevel: z.enum(LOG_LEVELS),
  deviceCheckInterval,
  deviceEvents: bool,
  namespace: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a namespace name (DNS label)')
    .optional(),
  // It names socket files: only a UUID, as the API server assigns pod UIDs.
  podUid: z
    .string()
    .regex(
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
      'must be a pod UID (a lowercase UUID)',
    )
    .optional(),
  image: z.string().min(1).optional(),
  mpsShmSize: byteSize,
  mpsReadyTimeout: duration.refine((ms) => ms >= 1_000 && ms <= 600_000, 'must be between 1s and 10m'),
  consumableShares,
  migPartitioning: z.enum(MIG_PARTITIONING_MODES, { error: 'must be static or dynamic' }),
  claimStatus: bool,
  deviceMetadata: bool,
} satisfies { readonly [K in DriverFlagName]: z.ZodType };

/** Flags that may stay unset: in the table, no default and not required; here, optional. */
type UnsetInTable = {
  [K in DriverFlagName]: (typeof DRIVER_FLAGS)[K] extends { default: string } | { required: true }
    ? never
    : K;
}[DriverFlagName];
type OptionalInSchema = {
  [K in DriverFlagName]: (typeof SCHEMA)[K] extends z.ZodOptional ? K : never;
}[DriverFlagName];
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
/** Compiles only when the table and the schema agree on which flags may stay unset. */
export type TableAndSchemaAgree = Assert<Same<UnsetInTable, OptionalInSchema>>;

const flagsSchema = z.strictObject(SCHEMA);
type ParsedFlags = z.output<typeof flagsSchema>;
type HostPathFlag = 'devRoot' | 'procRoot' | 'sysRoot' | 'driverRoot' | 'hostDriverRoot';

/**
 * The parsed flags, reshaped only where the rest of the driver wants it: the host path flags
 * as one `hostPaths`, the check interval in milliseconds. Every field's meaning is its flag's
 * help in flags.ts.
 */
export type DriverConfig = Readonly<
  Omit<ParsedFlags, HostPathFlag | 'deviceCheckInterval' | 'mpsShmSize' | 'mpsReadyTimeout'>
> & {
  /** Bytes; 0 = no tmpfs. */
  readonly mpsShmSizeBytes: number;
  readonly mpsReadyTimeoutMs: number;
  readonly hostPaths: HostPaths;
  /** 0 = never re-discover. */
  readonly deviceCheckIntervalMs: number;
};

const TABLE_DEFAULTS: Readonly<Record<string, string>> = Object.fromEntries(
  driverFlagNames().flatMap((k) => {
    const spec: FlagSpec = DRIVER_FLAGS[k];
    return spec.default === undefined ? [] : [[k, spec.default]];
  }),
);

function isFlagName(k: string): k is DriverFlagName {
  return Object.hasOwn(DRIVER_FLAGS, k);
}

function deepFreeze<T extends object>(o: T): Readonly<T> {
  for (const v of Object.values(o)) if (v && typeof v === 'object') deepFreeze(v as object);
  return Object.freeze(o);
}

/**
 * Validates raw flags into a frozen DriverConfig. Empty strings count as unset (an env twin
 * defined but empty). Throws one ConfigError naming every bad flag.
 */
export function parseDriverConfig(flags: DriverFlags, env: NodeJS.ProcessEnv = process.env): DriverConfig {
  const given = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = flagsSchema.safeParse({ ...TABLE_DEFAULTS, ...given });
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const keys = issue.code === 'unrecognized_keys' ? issue.keys : [String(issue.path[0] ?? '')];
      for (const k of keys) {
        if (!isFlagName(k)) problems.push(`${k}: unknown option`);
        else if (given[k] === undefined)
          problems.push(`${flagName(k)}: is required (env ${DRIVER_FLAGS[k].env})`);
        else problems.push(`${flagName(k)}: ${issue.message}`);
      }
    }
  }
  if (parsed.success && !parsed.data.kubeconfig && !env['KUBERNETES_SERVICE_HOST']) {
    problems.push(
      `${flagName('kubeconfig')}: required when not running in a cluster (env ${DRIVER_FLAGS.kubeconfig.env})`,
    );
  }
  if (!parsed.success || problems.length > 0) {
    const n = problems.length;
    throw new ConfigError(
      'flags',
      `${String(n)} invalid option${n === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`,
    );
  }
  // Optional flags left unset are absent from `parsed.data`, so the spread adds no undefined keys.
  const {
    devRoot,
    procRoot,
    sysRoot,
    driverRoot,
    hostDriverRoot,
    deviceCheckInterval,
    mpsShmSize,
    mpsReadyTimeout,
    ...rest
  } = parsed.data;
  return deepFreeze({
    ...rest,
    hostPaths: { devRoot, procRoot, sysRoot, driverRoot, ...(hostDriverRoot ? { hostDriverRoot } : {}) },
    deviceCheckIntervalMs: deviceCheckInterval,
    mpsShmSizeBytes: mpsShmSize,
    mpsReadyTimeoutMs: mpsReadyTimeout,
  });
}
