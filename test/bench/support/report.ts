// Rewrites the "latest figures" section of BENCHMARKS.md from a run: a short table for humans
// (the full figures stay in bench-results/). Formatted with prettier so `npm run lint` passes.
import fs from 'node:fs';
import path from 'node:path';

import { machineLine, type BenchResult, type BenchRun } from '../../../src/bench/results.js';
import { repoRoot } from '../../e2e/support/peers.js';

const START = '<!-- bench:latest:start -->';
const END = '<!-- bench:latest:end -->';

function find(run: BenchRun, id: string): BenchResult | undefined {
  return run.results.find((r) => r.id === id);
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

function p50p99(r: BenchResult | undefined): string {
  const s = r?.summary;
  return s ? `p50 ${ms(s.p50)} ms, p99 ${ms(s.p99)} ms (n = ${s.count})` : 'not measured';
}

function fig(r: BenchResult | undefined, key: string): string {
  const v = r?.figures?.[key];
  return v === undefined ? '?' : typeof v === 'number' && key.includes('(ms)') ? ms(v) : String(v);
}

export function renderSummary(run: BenchRun, extra: { clusterSeconds: number }): string {
  const kubelet = find(run, 'kubelet-prepare');
  const kubeletFigures = find(run, 'kubelet-figures');
  const burst = find(run, 'grpc-prepare-burst');
  const throughput = find(run, 'grpc-throughput');
  const start = find(run, 'start-first-slice');
  const baselines = find(run, 'start-baselines');
  const mem = find(run, 'memory');
  const attribution = find(run, 'prepare-attribution');
  const burstKey = Object.keys(throughput?.figures ?? {}).find((k) => k.includes('claims/s')) ?? '';
  const rows: [string, string][] = [
    ['Discovery, h100-8x, in process', p50p99(find(run, 'discovery-h100-8x'))],
    ['Discovery, a100-mig, in process', p50p99(find(run, 'discovery-a100-mig'))],
    [
      `Prepare through the kubelet (pod bound → prepared), ${fig(kubeletFigures, 'claims measured')} of ${fig(kubeletFigures, 'claims requested')} claims`,
      p50p99(kubelet),
    ],
    [
      'Prepare through the kubelet, pods prepared on the first attempt',
      p50p99(find(run, 'kubelet-prepare-first-try')),
    ],
    ['Prepare over dra.sock, sequential', p50p99(find(run, 'grpc-prepare-sequential'))],
    ['Unprepare over dra.sock, sequential', p50p99(find(run, 'grpc-unprepare-sequential'))],
    [
      'Prepare over dra.sock, bursts of 8 concurrent calls',
      `per call ${p50p99(burst)}; ${fig(throughput, burstKey)} claims/s`,
    ],
    [
      'Claim GET alone: client-node (TLS handshake per call) vs one keep-alive connection',
      `p50 ${fig(attribution, 'claim GET via client-node 1.4 (new https.Agent, TLS handshake per call) p50 (ms)')} ms vs ${fig(attribution, 'claim GET over one keep-alive connection p50 (ms)')} ms; durable file write p50 ${fig(attribution, 'atomic durable write (temp, fsync, rename, dir fsync) p50 (ms)')} ms`,
    ],
    [
      'Start → first ResourceSlice (target < 300 ms)',
      start?.summary
        ? `p50 ${ms(start.summary.p50)} ms, p99 ${ms(start.summary.p99)} ms, max ${ms(start.summary.max)} ms (n = ${start.summary.count}); p50 of spawn → GPUs discovered ${fig(baselines, 'spawn → "GPUs discovered" log, p50 (ms)')} ms, → sockets serving ${fig(baselines, 'spawn → "kubelet plugin serving" log, p50 (ms)')} ms; bare \`node -e 0\` ${fig(baselines, 'node -e 0, p50 (ms)')} ms`
        : 'not measured',
    ],
    [
      'Start → complete pool, 8 × H100 in dynamic MIG mode',
      ((r) =>
        r?.summary
          ? `p50 ${ms(r.summary.p50)} ms, max ${ms(r.summary.max)} ms; ${r.note ?? ''}`
          : 'not measured')(find(run, 'start-complete-pool-dynamic-mig')),
    ],
    [
      'Driver RSS over prepare/unprepare cycles',
      `start ${fig(mem, 'RSS start, after 100 warm-up cycles (MiB)')} MiB, end ${fig(mem, 'RSS end (MiB)')} MiB, max ${fig(mem, 'RSS max (MiB)')} MiB; slope ${fig(mem, 'RSS slope (KiB per 1000 cycles)')} KiB per 1000 cycles (second half ${fig(mem, 'RSS slope, second half (KiB per 1000 cycles)')}); open fds ${fig(mem, 'open file descriptors start → end')}`,
    ],
    [
      'Driver heap used (after full GC)',
      `start ${fig(mem, 'heap used start (MiB)')} MiB, end ${fig(mem, 'heap used end (MiB)')} MiB, max ${fig(mem, 'heap used max (MiB)')} MiB; slope ${fig(mem, 'heap used slope (KiB per 1000 cycles)')} KiB per 1000 cycles (second half ${fig(mem, 'heap used slope, second half (KiB per 1000 cycles)')})`,
    ],
    [
      'Wall time',
      `${String(run.wallSeconds ?? '?')} s from the in-process part's start (cluster part ${String(extra.clusterSeconds)} s)`,
    ],
  ];
  return [
    START,
    '',
    `Last run: ${machineLine(run)}.`,
    '',
    '| benchmark | result |',
    '| --- | --- |',
    ...rows.map(([k, v]) => `| ${k} | ${v.replaceAll('|', '\\|')} |`),
    '',
    END,
  ].join('\n');
}

/** The ids in `required` this run has not measured (a result older than the run's start is stale). */
export function missingFromRun(run: BenchRun, required: readonly string[]): string[] {
  return required.filter(
    (id) => !run.results.some((r) => r.id === id && Date.parse(r.measuredAt) >= Date.parse(run.startedAt)),
  );
}

/**
 * Replaces the marked section of BENCHMARKS.md, only when every id in `required` was measured
 * in this run (a partial run leaves the committed figures alone). Returns whether it wrote.
 */
export async function updateBenchmarksDoc(
  run: BenchRun,
  extra: { clusterSeconds: number; required: readonly string[] },
): Promise<boolean> {
  const missing = missingFromRun(run, extra.required);
  if (missing.length > 0) {
    process.stderr.write(`[bench] BENCHMARKS.md left as it was: this run lacks ${missing.join(', ')}\n`);
    return false;
  }
  await replaceMarkedSection(START, END, renderSummary(run, extra));
  return true;
}

/**
 * Replaces `start` … `end` (both kept, `section` includes them) in BENCHMARKS.md and formats the
 * file with the repository's prettier settings, so `npm run lint` passes after a run.
 */
export async function replaceMarkedSection(start: string, end: string, section: string): Promise<void> {
  const file = path.join(repoRoot, 'BENCHMARKS.md');
  const text = fs.readFileSync(file, 'utf8');
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error(`${file} lacks the ${start} … ${end} markers`);
  let next = text.slice(0, i) + section + text.slice(j + end.length);
  const prettier = await import('prettier');
  const options = (await prettier.resolveConfig(file)) ?? {};
  next = await prettier.format(next, { ...options, filepath: file });
  fs.writeFileSync(file, next);
}
