import { configDefaults, defineConfig } from 'vitest/config';

// Three projects: `unit` is fast and needs only node and gcc (the fake NVML); `deploy` checks
// deploy/ (manifests, Helm chart, Dockerfile) and needs Go too, to build helm on first use;
// `e2e` starts the real Kubernetes peers built from test/peers (first run compiles them, hence
// the long hook timeout).
// A fourth, `bench` (test/bench/, measurements rather than tests), exists only when
// GPU_DRA_BENCH=1, so plain `vitest run` / `npm test` never runs it; `npm run bench` sets it.
const bench = process.env['GPU_DRA_BENCH'] === '1';
// test/e2e/parity.test.ts runs NVIDIA's driver, whose cold build (~9 min on 2 cores) does not fit
// CI's budget: it joins the e2e project only when GPU_DRA_PARITY=1 (`npm run test:parity`).
const parity = process.env['GPU_DRA_PARITY'] === '1';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'deploy',
          include: ['test/deploy/**/*.test.ts'],
          globalSetup: ['test/support/helm-setup.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          exclude: parity ? configDefaults.exclude : [...configDefaults.exclude, 'test/e2e/parity.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 3_600_000,
          fileParallelism: false,
        },
      },
      ...(bench
        ? [
            {
              test: {
                name: 'bench',
                include: ['test/bench/**/*.bench.ts'],
                globalSetup: ['test/support/global-setup.ts'],
                testTimeout: 1_800_000,
                hookTimeout: 3_600_000,
                fileParallelism: false,
              },
            },
          ]
        : []),
    ],
  },
});
