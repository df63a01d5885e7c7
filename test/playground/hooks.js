// Module hooks for loader.js: `./x.js` imports that name a `.ts` file (the NodeNext
// convention) resolve to it, and `.ts` files are transpiled to JavaScript with an inline source
// map. Type-only imports disappear in the transpile, as with tsc.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** @type {import('node:module').ResolveHook} */
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const relative =
      specifier.startsWith('./') || specifier.startsWith('../') || specifier.startsWith('file:');
    if (!relative || !specifier.endsWith('.js') || !context.parentURL?.endsWith('.ts')) throw err;
    return nextResolve(`${specifier.slice(0, -3)}.ts`, context);
  }
}

/** @type {import('node:module').LoadHook} */
export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
  const file = fileURLToPath(url);
  const source = await readFile(file, 'utf8');
  const { outputText } = ts.transpileModule(source, {
    fileName: file,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      inlineSourceMap: true,
      inlineSources: true,
      isolatedModules: true,
    },
  });
  return { format: 'module', source: outputText, shortCircuit: true };
}
