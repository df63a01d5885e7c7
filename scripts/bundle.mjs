// Bundles the CLI into dist/gpu-dra.mjs, the entry point the image and `bin` use, plus the
// chunks its dynamic imports load (dist/chunks/). Why: unbundled, Node resolves and evaluates
// hundreds of files at start-up, which kept the driver from publishing its first ResourceSlice
// quickly; split, `gpu-dra driver` evaluates only what it needs before that first write (no
// gRPC, protobuf, CEL or simulator). koffi stays external: it loads a native addon.
import fs from 'node:fs';
import { build } from 'esbuild';

// Chunk names carry content hashes: drop the previous build's so dist/ holds one set.
fs.rmSync('dist/chunks', { recursive: true, force: true });

const result = await build({
  entryPoints: { 'gpu-dra': 'src/cli/main.ts' },
  outdir: 'dist',
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  outExtension: { '.js': '.mjs' },
  splitting: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['koffi'],
  // Minified: V8 parses every byte of a chunk it loads. keepNames
  // because error classes report `new.target.name`.
  minify: true,
  keepNames: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  logLevel: 'warning',
  // Which modules each chunk holds: test/unit/bundle.test.ts checks what `driver` loads early.
  metafile: true,
  // CommonJS dependencies call require() for Node built-ins; give each ESM chunk one.
  banner: {
    js: "import { createRequire as __gpuDraCreateRequire } from 'node:module'; const require = __gpuDraCreateRequire(import.meta.url);",
  },
});
fs.writeFileSync('dist/bundle-meta.json', JSON.stringify(result.metafile));
