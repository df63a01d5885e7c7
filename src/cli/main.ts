#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { NvmlLibraryNotFoundError } from '../nvml/errors.js';
import { ConfigError, GpuDraError, errorMessage } from '../util/errors.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDiscoverCommand } from './commands/discover.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerDriverCommand } from './commands/driver.js';
import { registerExplainCommand } from './commands/explain.js';
import { registerMpsDaemonCommand } from './commands/mpsDaemon.js';
import { registerSlicesCommand } from './commands/slices.js';
import { registerTaintsCommand } from './commands/taints.js';

/** Exit codes: 1 runtime failure, 2 environment/usage problem (no NVML, bad flags). */
export function exitCodeFor(err: unknown): number {
  if (err instanceof NvmlLibraryNotFoundError || err instanceof ConfigError) return 2;
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  return 1;
}

export function buildProgram(): Command {
  const program = new Command('gpu-dra')
    .description('Kubernetes DRA driver for NVIDIA GPUs')
    .showHelpAfterError()
    .exitOverride();
  registerDiscoverCommand(program);
  registerDriverCommand(program);
  registerSlicesCommand(program);
  registerExplainCommand(program);
  registerDemoCommand(program);
  registerMpsDaemonCommand(program);
  registerDoctorCommand(program);
  registerTaintsCommand(program);
  return program;
}

/** The causes behind an error, outermost first, each said once (a wrapper often repeats its cause). */
export function causeLines(err: unknown): string[] {
  const lines: string[] = [];
  let seen = errorMessage(err);
  for (let cause = (err as { cause?: unknown }).cause, depth = 0; cause !== undefined && depth < 5; depth++) {
    const text = errorMessage(cause);
    if (!seen.includes(text)) lines.push(`  caused by: ${text}`);
    seen += text;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return lines;
}

// `gpu-dra demo | head` closes our stdout early: that is the reader's choice, not a failure.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = exitCodeFor(err);
      return;
    }
    const code = err instanceof GpuDraError ? ` [${err.code}]` : '';
    process.stderr.write([`gpu-dra: ${errorMessage(err)}${code}`, ...causeLines(err)].join('\n') + '\n');
    process.exitCode = exitCodeFor(err);
  }
}

await main(process.argv);
