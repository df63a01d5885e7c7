/**
 * `gpu-dra driver`: parses flags into a DriverConfig, runs the driver, and turns SIGTERM/SIGINT
 * into a clean stop and exit 0.
 */
import { parseDriverConfig } from '../../node/config.js';
import type { DriverFlags } from '../../node/flags.js';
import { runDriver, type RunningDriver } from '../../node/run.js';

export async function runDriverCommand(opts: DriverFlags): Promise<void> {
  const config = parseDriverConfig(opts);
  const abort = new AbortController();
  let signalled = false;
  const done = new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      if (signalled) return;
      signalled = true;
      process.stderr.write(`gpu-dra driver: ${sig}, shutting down\n`);
      abort.abort(new Error(`${sig} during start-up`));
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  let running: RunningDriver;
  try {
    running = await runDriver(config, { signal: abort.signal });
  } catch (err) {
    if (signalled) {
      process.exitCode = 0;
      return;
    }
    throw err;
  }
  await done;
  await running.stop();
  process.exitCode = 0;
  // Lingering handles (watches, keep-alive sockets) must not hold the process after a clean stop.
  setTimeout(() => process.exit(0), 2_000).unref();
}
