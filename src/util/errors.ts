/**
 * The driver's error family. Every error has a stable `code` (for logs, metrics and tests)
 * and keeps its `cause`; messages name the field, file or claim they are about.
 */
export class GpuDraError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad user input: a flag, a config file, an opaque claim parameter. */
export class ConfigError extends GpuDraError {
  /** Dotted path of the offending field, e.g. `parameters.sharing.strategy`. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', `${field}: ${message}`, options);
    this.field = field;
  }
}

/** Text of an unknown thrown value, for logs and per-claim error strings. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
