// The driver's log in an in-process e2e test: kept for assertions, and echoed where it matters.
import { pino } from 'pino';

import type { Logger } from '../../../src/util/log.js';

/** A driver log record (pino JSON line). */
export type LogRecord = Record<string, unknown> & { level: number; msg?: string };

/**
 * The driver's logger: everything at debug goes to `records` (the gRPC layer logs each request
 * and response there), and what reaches GPU_DRA_E2E_LOG (default warn) also goes to stderr.
 */
export function recordingLogger(records: LogRecord[]): Logger {
  const threshold = pino.levels.values[process.env['GPU_DRA_E2E_LOG'] ?? 'warn'] ?? 40;
  return pino(
    { level: 'debug', name: 'driver' },
    {
      write(line: string): void {
        const record = JSON.parse(line) as LogRecord;
        records.push(record);
        if (record.level >= threshold) process.stderr.write(line);
      },
    },
  );
}
