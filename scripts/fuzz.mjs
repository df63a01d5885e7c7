#!/usr/bin/env node
// `npm run test:fuzz`: the fuzz properties of the gRPC surface and the opaque configs
// (test/unit/fuzz-*.test.ts) at GPU_DRA_FUZZ_SCALE times their CI counts (default 100), then the
// number of inputs each property tried and their total. `npm run test:soak` runs it after the
// crash points. GPU_DRA_FUZZ_SEED picks other inputs than CI's.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const scale = process.env.GPU_DRA_FUZZ_SCALE || '100';
const report = path.join(root, 'bench-results', 'fuzz-inputs.txt');
fs.mkdirSync(path.dirname(report), { recursive: true });
fs.rmSync(report, { force: true });

const started = Date.now();
const r = spawnSync(
  'npx',
  [
    'vitest',
    'run',
    '--project',
    'unit',
    // The CI timeouts are sized for scale 1; a property's time grows with its run count.
    `--testTimeout=${String(30_000 * Number(scale))}`,
    'test/unit/fuzz-grpc.test.ts',
    'test/unit/fuzz-opaque-config.test.ts',
  ],
  {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, GPU_DRA_FUZZ_SCALE: scale, GPU_DRA_FUZZ_REPORT: report },
  },
);
const lines = fs.existsSync(report) ? fs.readFileSync(report, 'utf8').trim().split('\n') : [];
const total = lines.reduce((sum, line) => sum + Number(line.split(' ')[1] ?? 0), 0);
const secs = ((Date.now() - started) / 1000).toFixed(0);
process.stdout.write(
  `fuzz: ${String(total)} inputs tried at scale ${scale} in ${secs} s (${report}):\n${lines.join('\n')}\n`,
);
process.exit(r.status ?? 1);
