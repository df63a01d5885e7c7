import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/**
 * The root logger. Only this module imports pino; others take a `Logger` (usually a child
 * bound to a request id or claim) as a parameter. Logs go to stderr so that command output
 * on stdout (`discover --json`, `demo`) stays machine-readable.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  const config: LoggerOptions = {
    name: options.name ?? 'gpu-dra',
    // No LOG_LEVEL read here: the driver's level comes from its config (--log-level, env twin).
    level: options.level ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return pino(config, pino.destination({ fd: 2, sync: false }));
}

/** A logger that drops everything: for library use and unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
