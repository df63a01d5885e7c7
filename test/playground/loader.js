// `node --import ./test/playground/loader.js file.ts`: runs the repository's TypeScript (src/,
// test/e2e/support/, test/playground/) without a build step. Node 20 cannot strip types, so
// hooks.js transpiles each .ts file with the project's own TypeScript compiler as it is
// loaded (no type checking: `npm run typecheck` and tsconfig.test.json do that).
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
