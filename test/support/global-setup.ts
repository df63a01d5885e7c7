/**
 * vitest globalSetup (unit and e2e projects): builds the fake NVML once per source hash and hands
 * its path to the tests, both as `inject('fakeNvmlLib')` and as `$GPU_DRA_FAKE_NVML_LIB` (which
 * child processes such as the driver under test inherit).
 */
import type { TestProject } from 'vitest/node';

import { buildFakeNvml } from '../../src/sim/fakeNvml.js';

declare module 'vitest' {
  export interface ProvidedContext {
    fakeNvmlLib: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const lib = await buildFakeNvml();
  process.env.GPU_DRA_FAKE_NVML_LIB = lib;
  project.provide('fakeNvmlLib', lib);
}
