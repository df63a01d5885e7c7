/**
 * The benchmark results file: `bench-results/results.json` holds one run (its start, the
 * machine) and every benchmark's result; `results.md` is rendered from it. Two producers write
 * into the same run: `dist/bench/main.js` (in-process discovery, starts the run) and the
 * `bench` vitest project (the driver against real Kubernetes peers), which merges its results
 * in as each benchmark finishes, so an interrupted run still leaves what it measured.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LatencySummary } from './stats.js';

export interface MachineInfo {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly platform: string;
  /** 1-minute load average when the run started (other work on the box skews figures). */
  readonly loadAverage: number;
}

export interface BenchResult {
  /** Stable key; a later result with the same id replaces the earlier one. */
  readonly id: string;
  readonly name: string;
  /** Unit of `summary` (latencies), e.g. `ms`. */
  readonly unit: string;
  readonly summary?: LatencySummary;
  /** Scalar figures (throughput, memory, counts), named with their unit. */
  readonly figures?: Readonly<Record<string, number | string>>;
  readonly note?: string;
  readonly measuredAt: string;
}

export interface BenchRun {
  readonly startedAt: string;
  readonly machine: MachineInfo;
  results: BenchResult[];
  /** Seconds from the run's start to the last merge. */
  wallSeconds?: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
  };
}

export function resultsDir(): string {
  return path.resolve(process.env['BENCH_OUT'] ?? 'bench-results');
}

export function readRun(dir = resultsDir()): BenchRun | undefined {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as Partial<BenchRun>;
    if (typeof parsed.startedAt !== 'string' || !Array.isArray(parsed.results) || !parsed.machine) {
      return undefined;
    }
    return parsed as BenchRun;
  } catch {
    return undefined;
  }
}

/** Starts a new run, replacing whatever results.json held. */
export function startRun(dir = resultsDir()): BenchRun {
  const run: BenchRun = { startedAt: new Date().toISOString(), machine: machineInfo(), results: [] };
  writeRun(run, dir);
  return run;
}

/**
 * The run a later producer adds to: the current one when it started at most `maxAgeMs` ago,
 * else a new run that keeps the earlier results (each carries its own `measuredAt`).
 */
export function continueRun(maxAgeMs: number, dir = resultsDir()): BenchRun {
  const existing = readRun(dir);
  if (existing !== undefined && Date.now() - Date.parse(existing.startedAt) <= maxAgeMs) return existing;
  const run: BenchRun = {
    startedAt: new Date().toISOString(),
    machine: machineInfo(),
    results: existing?.results ?? [],
  };
  writeRun(run, dir);
  return run;
}

/** Adds results to the current run (replacing those with the same id) and rewrites both files. */
export function mergeResults(results: readonly BenchResult[], dir = resultsDir()): BenchRun {
  const run: BenchRun = readRun(dir) ?? {
    startedAt: new Date().toISOString(),
    machine: machineInfo(),
    results: [],
  };
  const ids = new Set(results.map((r) => r.id));
  run.results = [...run.results.filter((r) => !ids.has(r.id)), ...results];
  run.wallSeconds = Math.round((Date.now() - Date.parse(run.startedAt)) / 100) / 10;
  writeRun(run, dir);
  return run;
}

export function writeRun(run: BenchRun, dir = resultsDir()): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'results.json'), JSON.stringify(run, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'results.md'), renderMarkdown(run));
}

function cell(v: number | string | undefined): string {
  return v === undefined ? '' : String(v).replaceAll('|', '\\|');
}

export function machineLine(run: BenchRun): string {
  const m = run.machine;
  return `${run.startedAt}, ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}, load average ${m.loadAverage} at start`;
}

/** The full report: every latency summary and every figure. */
export function renderMarkdown(run: BenchRun): string {
  const latency = run.results.filter((r) => r.summary !== undefined);
  const figures = run.results.filter((r) => r.figures !== undefined);
  const lines = [
    '# gpu-dra benchmark results',
    '',
    `Run: ${machineLine(run)}.`,
    ...(run.wallSeconds !== undefined ? [`Wall time so far: ${run.wallSeconds} s.`] : []),
    '',
    '## Latencies',
    '',
    '| benchmark | n | p50 | p90 | p99 | max | mean | unit | note |',
    '|---|---|---|---|---|---|---|---|---|',
    ...latency.map((r) => {
      const s = r.summary as LatencySummary;
      return `| ${cell(r.name)} | ${s.count} | ${s.p50} | ${s.p90} | ${s.p99} | ${s.max} | ${s.mean} | ${r.unit} | ${cell(r.note)} |`;
    }),
    ...(figures.length === 0
      ? []
      : [
          '',
          '## Other figures',
          '',
          '| benchmark | figure | value |',
          '|---|---|---|',
          ...figures.flatMap((r) =>
            Object.entries(r.figures ?? {}).map(([k, v]) => `| ${cell(r.name)} | ${cell(k)} | ${cell(v)} |`),
          ),
        ]),
    '',
  ];
  return lines.join('\n');
}
