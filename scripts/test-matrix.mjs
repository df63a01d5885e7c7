#!/usr/bin/env node
// `npm run test:matrix`: the e2e project once per Kubernetes release the peers can be built for
// (test/peers: go.mod and every go.k8s-1.NN.mod, one pinned k8s.io/kubernetes each, oldest first).
// For each version it builds (or reuses) the peers with test/peers/build.sh, then runs
// `vitest run --project e2e` with GPU_DRA_K8S_VERSION set, and goes on to the next version
// whatever happened. At the end it prints a table (version, passed, failed, skipped, duration)
// and writes it, with the failed tests' names, to matrix-results/summary.md (and summary.json,
// plus each run's vitest JSON report). Exits 1 when any test failed or a build or run broke.
//
//   npm run test:matrix                          # every version
//   npm run test:matrix -- 1.35 v1.36.3          # only these (a minor picks its pinned patch)
//   npm run test:matrix -- 1.36 -- test/e2e/smoke.test.ts   # after a second --: vitest arguments
//
// Not part of CI (.ci/run runs 1.37 and 1.34): a cold peers build costs ~10-20 min per version
// on 2 cores, each e2e run ~5 min on an idle machine.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const peersDir = path.join(root, 'test', 'peers');
const outDir = path.join(root, process.env['GPU_DRA_MATRIX_OUT'] ?? 'matrix-results');

/** The k8s.io/kubernetes version each module file of test/peers pins, oldest minor first. */
function pinnedVersions() {
  const files = fs.readdirSync(peersDir).filter((f) => f === 'go.mod' || /^go\.k8s-1\.\d+\.mod$/.test(f));
  const versions = [];
  for (const f of files) {
    const m = /^\s*(?:require\s+)?k8s\.io\/kubernetes\s+(v1\.\d+\.\d+)\s*$/m.exec(
      fs.readFileSync(path.join(peersDir, f), 'utf8'),
    );
    if (m) versions.push(m[1]);
  }
  return versions.sort((a, b) => minor(a) - minor(b));
}

function minor(version) {
  return Number(/^v?1\.(\d+)/.exec(version)?.[1] ?? NaN);
}

function parseArgs(argv) {
  const sep = argv.indexOf('--');
  const picks = sep < 0 ? argv : argv.slice(0, sep);
  const vitestArgs = sep < 0 ? [] : argv.slice(sep + 1);
  const all = pinnedVersions();
  if (picks.length === 0) return { versions: all, vitestArgs };
  const versions = picks.map((p) => {
    const v = all.find(
      (a) => a === p || a === `v${p}` || minor(a) === minor(p.startsWith('v') ? p : `v${p}`),
    );
    if (v === undefined) {
      process.stderr.write(`test-matrix: no peers module for ${p} (have: ${all.join(', ')})\n`);
      process.exit(2);
    }
    return v;
  });
  return { versions, vitestArgs };
}

/** Runs a command with inherited stdio (or stdout captured), resolving its exit code. */
function run(cmd, args, { env = process.env, capture = false } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env,
      stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'],
    });
    let out = '';
    if (capture) {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c) => (out += c));
    }
    child.on('error', (err) => resolve({ code: -1, out: String(err) }));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), out }));
  });
}

function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

function log(msg) {
  process.stderr.write(`[matrix] ${msg}\n`);
}

async function main() {
  const { versions, vitestArgs } = parseArgs(process.argv.slice(2));
  fs.mkdirSync(outDir, { recursive: true });
  log(`versions: ${versions.join(', ')}`);

  const started = Date.now();
  if ((await run('npm', ['run', 'build'])).code !== 0) {
    log('npm run build failed; nothing was tested');
    process.exit(1);
  }

  const rows = [];
  for (const version of versions) {
    const row = { version, passed: 0, failed: 0, skipped: 0, buildMs: 0, testMs: 0, error: '', failures: [] };
    rows.push(row);
    log(`${version}: peers`);
    const b0 = Date.now();
    const build = await run('bash', [path.join(peersDir, 'build.sh'), version], { capture: true });
    row.buildMs = Date.now() - b0;
    if (build.code !== 0) {
      row.error = `peers build failed (exit ${build.code})`;
      log(`${version}: ${row.error}`);
      continue;
    }
    log(`${version}: e2e`);
    const report = path.join(outDir, `e2e-${version}.json`);
    fs.rmSync(report, { force: true });
    const t0 = Date.now();
    const test = await run(
      'npx',
      [
        'vitest',
        'run',
        '--project',
        'e2e',
        '--reporter=default',
        '--reporter=json',
        `--outputFile.json=${report}`,
        ...vitestArgs,
      ],
      { env: { ...process.env, GPU_DRA_K8S_VERSION: version } },
    );
    row.testMs = Date.now() - t0;
    if (!fs.existsSync(report)) {
      row.error = `vitest wrote no report (exit ${test.code})`;
      continue;
    }
    const r = JSON.parse(fs.readFileSync(report, 'utf8'));
    row.passed = r.numPassedTests;
    row.failed = r.numFailedTests;
    row.skipped = r.numPendingTests + r.numTodoTests;
    for (const file of r.testResults ?? []) {
      const rel = path.relative(root, file.name);
      for (const t of file.assertionResults ?? []) {
        if (t.status === 'failed') row.failures.push(`${rel} > ${t.fullName}`);
      }
      // A file whose beforeAll (or import) failed reports no failed test: its tests are skipped.
      if (file.status === 'failed' && !(file.assertionResults ?? []).some((t) => t.status === 'failed')) {
        const why = String(file.message ?? '').split('\n')[0];
        row.failures.push(
          `${rel}: failed outside its tests (a hook or the import${why ? `: ${why}` : '; see the log'})`,
        );
      }
    }
    if (test.code !== 0 && row.failed === 0) {
      row.error =
        row.failures.length > 0 ? 'a test file failed outside its tests' : `vitest exited ${test.code}`;
    }
  }

  const lines = [
    `# e2e matrix (${new Date().toISOString()}, total ${fmtDuration(Date.now() - started)})`,
    '',
    '| Kubernetes | passed | failed | skipped | e2e duration | peers build | note |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows.map(
      (r) =>
        `| ${r.version} | ${r.passed} | ${r.failed} | ${r.skipped} | ${fmtDuration(r.testMs)} | ${fmtDuration(r.buildMs)} | ${r.error} |`,
    ),
  ];
  const failed = rows.filter((r) => r.failures.length > 0);
  if (failed.length > 0) {
    lines.push('', '## Failures');
    for (const r of failed) {
      lines.push('', `### ${r.version}`, '', ...r.failures.map((f) => `- ${f}`));
    }
  }
  const text = `${lines.join('\n')}\n`;
  fs.writeFileSync(path.join(outDir, 'summary.md'), text);
  fs.writeFileSync(path.join(outDir, 'summary.json'), `${JSON.stringify(rows, null, 2)}\n`);
  process.stdout.write(`\n${text}\nwritten to ${path.relative(root, path.join(outDir, 'summary.md'))}\n`);
  const bad = rows.some((r) => r.failed > 0 || r.error !== '' || r.failures.length > 0);
  process.exit(bad ? 1 : 0);
}

await main();
