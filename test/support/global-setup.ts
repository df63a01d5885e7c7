/**
 * vitest globalSetup (unit and e2e projects): builds the fake NVML once per source hash and hands
 * its path to the tests, both as `inject('fakeNvmlLib')` and as `$GPU_DRA_FAKE_NVML_LIB` (which
 * child processes such as the driver under test inherit).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';

import { buildFakeNvml } from '../../src/sim/fakeNvml.js';

declare module 'vitest' {
  export interface ProvidedContext {
    fakeNvmlLib: string;
  }
}

/**
 * Debian has no helm package, so deploy/helm/install-helm.sh builds it from its Go module on
 * first use (a few minutes, cached under ~/.cache/gpu-dra/bin): the chart tests never skip.
 */
async function ensureHelm(): Promise<string> {
  const script = path.resolve(import.meta.dirname, '../../deploy/helm/install-helm.sh');
  const { stdout } = await promisify(execFile)('bash', [script], { maxBuffer: 16 * 1024 * 1024 });
  const helm = stdout.trim().split('\n').at(-1);
  if (!helm) throw new Error(`${script} printed no helm path`);
  return helm;
}

export default async function setup(project: TestProject): Promise<void> {
  process.env.GPU_DRA_HELM = await ensureHelm();
  const lib = await buildFakeNvml();
  process.env.GPU_DRA_FAKE_NVML_LIB = lib;
  project.provide('fakeNvmlLib', lib);
}
