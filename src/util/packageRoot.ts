import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The gpu-dra package root (where package.json and proto/ live), found by walking up from this
 * module. The code runs from src/ (vitest), dist/<dir>/ (tsc) and dist/gpu-dra.mjs (the
 * bundle), so a fixed number of `..` would be wrong in one of them.
 */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      const { name } = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string };
      if (name === 'gpu-dra') return (cached = dir);
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the gpu-dra package root above ${import.meta.url}`);
    dir = parent;
  }
}
