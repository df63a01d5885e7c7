import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { discoverInventory } from '../nvml/discover.js';
import { createSimulatedNode } from '../sim/fakeHost.js';
import { mergeResults, startRun, type BenchResult } from './results.js';
import { summarize } from './stats.js';

/**
 * `npm run bench`, first part: in-process figures on a simulated node. Starts a new run in
 * bench-results/ (JSON + Markdown); the `bench` vitest project (test/bench/) then adds the
 * driver's figures against real Kubernetes peers. Never run from unit tests: timings on a
 * shared 2-core CI box are not assertions.
 */

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
      id: `discovery-${profile}`,
      name: `discovery (${profile}, in process, nvmlInit→nvmlShutdown)`,
      unit: 'ms',
      summary: summarize(samples),
      note: `first call (dlopen, koffi binding, JIT) ${coldMs.toFixed(1)} ms`,
      measuredAt: new Date().toISOString(),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  startRun();
  const results: BenchResult[] = [];
  for (const profile of ['h100-8x', 'a100-mig']) results.push(await benchDiscovery(profile, 200));
  const run = mergeResults(results);
  for (const r of run.results) {
    const s = r.summary;
    if (s) process.stdout.write(`${r.name}: p50 ${s.p50} ${r.unit}, p99 ${s.p99} ${r.unit} (n=${s.count})\n`);
  }
}

await main();
