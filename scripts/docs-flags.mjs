// Rewrites the `gpu-dra driver` flag table in README.md (between its driver-flags markers)
// from src/node/flags.ts, so the README cannot drift from the flags. Node 20 cannot import
// TypeScript, so esbuild bundles the renderer in memory first; no build of dist/ is needed.
// test/unit/flags.test.ts fails when README.md is stale and names this command.
import { Buffer } from 'node:buffer';
import fs from 'node:fs';
import process from 'node:process';
import { build } from 'esbuild';

const out = await build({
  entryPoints: ['src/node/flagDocs.ts'],
  bundle: true,
  write: false,
  format: 'esm',
  platform: 'node',
  logLevel: 'warning',
});
const source = out.outputFiles[0].text;
const { withDriverFlagTable } = await import(
  `data:text/javascript;base64,${Buffer.from(source).toString('base64')}`
);
const readme = fs.readFileSync('README.md', 'utf8');
const updated = withDriverFlagTable(readme);
if (updated === readme) {
  process.stdout.write('README.md: driver flag table up to date\n');
} else {
  fs.writeFileSync('README.md', updated);
  process.stdout.write('README.md: driver flag table rewritten\n');
}
