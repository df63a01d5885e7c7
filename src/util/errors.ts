/**
 * The driver's error family. Every error has a code from the closed catalog
 * (src/util/errorCatalog.ts, the README's troubleshooting table), keeps its `cause`, and on the
 * claim path carries the claim's UID; messages name the field, file or claim they are about.
 */
import type { ErrorCode } from './errorCatalog.js';

export type { ErrorCode } from './errorCatalog.js';

/** Marks our errors across copies of this module (a test importing src/ next to dist/). */
const BRAND = Symbol.for('gpu-dra.error');

export interface GpuDraErrorOptions {
  readonly cause?: unknown;
  /** The claim this error is about, when it happened on the claim path. */
  readonly claimUid?: string;
}

export class GpuDraError extends Error {
  readonly code: ErrorCode;
  /** Set on every error of the claim path, by the thrower or by {@link inClaim}. */
  claimUid: string | undefined;

  constructor(code: ErrorCode, message: string, options?: GpuDraErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.claimUid = options?.claimUid;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/** Bad user input: a flag, a config file, an input document. */
export class ConfigError extends GpuDraError {
  /** Dotted path of the offending field, e.g. `--node-name` or `users[admin].user.exec`. */
  readonly field: string;

  constructor(field: string, message: string, options?: GpuDraErrorOptions) {
    super('CONFIG_INVALID', `${field}: ${message}`, options);
    this.field = field;
  }
}

/** Is `err` one of ours (optionally: with this code)? The one way to branch on a code. */
export function isGpuDraError(err: unknown, code?: ErrorCode): err is GpuDraError {
  if (typeof err !== 'object' || err === null || !(BRAND in err)) return false;
  return code === undefined || (err as unknown as GpuDraError).code === code;
}

/**
 * The error as it leaves the claim path: ours with the claim UID attached, or, for a foreign
 * error (an fs or gRPC failure nobody wrapped), one of ours with `fallback` as its code and the
 * original as its cause.
 */
export function inClaim(err: unknown, claimUid: string, fallback: ErrorCode): GpuDraError {
  if (isGpuDraError(err)) {
    err.claimUid ??= claimUid;
    return err;
  }
  return new GpuDraError(fallback, errorMessage(err), { cause: err, claimUid });
}

/** Text of an unknown thrown value, for per-claim error strings and CLI output. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
