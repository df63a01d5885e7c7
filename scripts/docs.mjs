// Rewrites the generated tables in README.md (the driver flags from src/node/flags.ts, the
// troubleshooting table from src/util/errorCatalog.ts), so the README cannot drift from the
// code. Node 20 cannot import TypeScript, so esbuild bundles the renderers in memory first; no
// build of dist/ is needed. test/unit/flags.test.ts and errors.test.ts fail when README.md is
// stale and name this command.
import { Buffer } from 'node:buffer';
import fs from 'node:fs';
import process from 'node:process';
import { build } from 'esbuild';

const out = await build({
  entryPoints: ['src/node/readmeTables.ts'],
  bundle: true,
  write: false,
  format: 'esm',
  platform: 'node',
  logLevel: 'warning',
});
const source = out.outputFiles[0].text;
const { withGeneratedTables } = await import(
  `data:text/javascript;base64,${Buffer.from(source).toString('base64')}`
);
const readme = fs.readFileSync('README.md', 'utf8');
const updated = withGeneratedTables(readme);
if (updated === readme) {
  process.stdout.write('README.md: generated tables up to date\n');
} else {
  fs.writeFileSync('README.md', updated);
  process.stdout.write('README.md: generated tables rewritten\n');
}
