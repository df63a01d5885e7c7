import { pino } from 'pino';

/** One JSON log record as pino writes it. */
export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A real pino logger whose records land, parsed, in `lines`: tests read what an operator would. */
export function capturingLogger(level: pino.LevelWithSilent = 'debug'): {
  logger: pino.Logger;
  lines: LogLine[];
} {
  const lines: LogLine[] = [];
  const logger = pino(
    { level },
    {
      write(msg: string) {
        lines.push(JSON.parse(msg) as LogLine);
      },
    },
  );
  return { logger, lines };
}
