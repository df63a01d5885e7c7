import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { discoverInventory } from '../nvml/discover.js';
import { createSimulatedNode } from '../sim/fakeHost.js';
import { summarize, type LatencySummary } from './stats.js';

/**
 * `npm run bench`: performance figures of the driver on a simulated node, written to
 * bench-results/ (JSON + a Markdown table). Never run from unit tests: timings on a shared
 * 2-core CI box are not assertions.
 */

interface BenchResult {
  readonly name: string;
  readonly unit: string;
  readonly summary: LatencySummary;
  readonly note?: string;
}

async function benchDiscovery(profile: string, iterations: number): Promise<BenchResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-bench-'));
  try {
    const node = await createSimulatedNode(profile, dir);
    process.env['FAKE_NVML_CONFIG'] = node.configPath;
    const coldStart = performance.now();
    discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }); // dlopen + binding + JIT
    const coldMs = performance.now() - coldStart;
    const samples: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const start = performance.now();
      discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
      samples.push(performance.now() - start);
    }
    return {
      name: `discovery (${profile}, in process, nvmlInit→nvmlShutdown)`,
      unit: 'ms',
      summary: summarize(samples),
      note: `first call (dlopen, koffi binding, JIT) ${coldMs.toFixed(1)} ms`,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function renderMarkdown(results: readonly BenchResult[]): string {
  const lines = [
    `# gpu-dra benchmark (${new Date().toISOString()}, ${os.cpus().length} CPUs, Node ${process.version})`,
    '',
    '| benchmark | n | p50 | p90 | p99 | max | unit | note |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map(
      (r) =>
        `| ${r.name} | ${r.summary.count} | ${r.summary.p50} | ${r.summary.p90} | ${r.summary.p99} | ${r.summary.max} | ${r.unit} | ${r.note ?? ''} |`,
    ),
  ];
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const outDir = path.resolve(process.env['BENCH_OUT'] ?? 'bench-results');
  const results: BenchResult[] = [];
  for (const profile of ['h100-8x', 'a100-mig']) results.push(await benchDiscovery(profile, 200));
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  const markdown = renderMarkdown(results);
  fs.writeFileSync(path.join(outDir, 'results.md'), markdown);
  process.stdout.write(markdown);
}

await main();
