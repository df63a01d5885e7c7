// Bundles the CLI into one ESM file, dist/gpu-dra.mjs: the entry point the image and `bin` use.
// Why: unbundled, Node resolves and evaluates thousands of files at start-up
// (@kubernetes/client-node alone costs ~600 ms on 2 cores), which kept the driver from
// publishing its first ResourceSlice quickly. koffi stays external: it loads a native addon.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/gpu-dra.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['koffi'],
  // Minified: V8 parses the 14 MB client-node part of the bundle at start-up. keepNames
  // because error classes report `new.target.name`.
  minify: true,
  keepNames: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  logLevel: 'warning',
  // CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
  banner: {
    js: "import { createRequire as __gpuDraCreateRequire } from 'node:module'; const require = __gpuDraCreateRequire(import.meta.url);",
  },
});
