#!/usr/bin/env node
// `npm run fleet -- --nodes N [--profile h100-8x] [--pods K] [--kubelets S] [--driver gpu-dra|nvidia]`
// (issue 18): checks the arguments (the same parser the bench uses, loaded through the
// playground's TypeScript loader), builds the bundle every driver process runs, then runs
// test/bench/fleet.bench.ts in the vitest `bench` project, which builds the fake NVML and uses
// the cached Kubernetes peers (built on first use, as for `npm run test:e2e`).
import { spawnSync } from 'node:child_process';
import { register } from 'node:module';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
register('../test/playground/hooks.js', import.meta.url);
const { parseFleetArgs, FleetArgsError, FLEET_USAGE } = await import('../test/bench/support/fleetConfig.ts');

const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`${FLEET_USAGE}\n`);
  process.exit(0);
}
let config;
try {
  config = parseFleetArgs(argv);
} catch (err) {
  if (!(err instanceof FleetArgsError)) throw err;
  process.stderr.write(`fleet: ${err.message}\n${FLEET_USAGE}\n`);
  process.exit(2);
}
process.stderr.write(`fleet: ${JSON.stringify(config)}\n`);

function run(command, args, env = process.env) {
  const r = spawnSync(command, args, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run('npm', ['run', 'build', '--silent']);
run('npx', ['vitest', 'run', '--project', 'bench', 'test/bench/fleet.bench.ts'], {
  ...process.env,
  GPU_DRA_BENCH: '1',
  FLEET_ARGS: JSON.stringify(argv),
});
