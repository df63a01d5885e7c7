// The rooms of src/ and which may import which (README "Layout"): arrows point down only, so a
// room can be understood, tested and changed without the ones above it. A new import across
// rooms must fit this table; changing the table is a design decision, not a test fix.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../../src');

const MAY_IMPORT: Readonly<Record<string, readonly string[]>> = {
  util: [],
  api: ['util'],
  checkpoint: ['util'],
  nvml: ['util', 'api'],
  kube: ['util', 'api'],
  cel: ['util', 'api'],
  cdi: ['util', 'api', 'nvml'],
  resourceslice: ['util', 'api', 'nvml', 'kube'],
  sharing: ['util', 'api', 'nvml', 'kube', 'cdi'],
  driver: ['util', 'api', 'nvml', 'kube', 'cdi', 'checkpoint', 'resourceslice', 'sharing'],
  kubelet: ['util', 'api', 'driver'],
  node: ['util', 'api', 'nvml', 'kube', 'cdi', 'checkpoint', 'resourceslice', 'sharing', 'driver', 'kubelet'],
  sim: ['util', 'api', 'nvml', 'kube', 'cdi', 'checkpoint', 'resourceslice', 'driver', 'kubelet'],
  bench: ['util', 'api', 'nvml', 'sim'],
  // The node doctor reads what the plugin writes and asks it over its admin socket (node).
  doctor: ['util', 'api', 'nvml', 'kube', 'cdi', 'checkpoint', 'resourceslice', 'node'],
  cli: [
    'util',
    'api',
    'nvml',
    'kube',
    'cdi',
    'checkpoint',
    'resourceslice',
    'sharing',
    'driver',
    'kubelet',
    'node',
    'cel',
    'sim',
    'doctor',
  ],
};

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return files(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const roomOf = (file: string): string => path.relative(SRC, file).split(path.sep)[0] ?? '';

/** Relative import specifiers of a module: static, type-only and dynamic. */
function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1] ?? '');
}

describe('layout', () => {
  it('has a room for every file and no loose files in src/', () => {
    const rooms = new Set(files(SRC).map(roomOf));
    expect([...rooms].filter((r) => r.endsWith('.ts'))).toEqual([]);
    expect([...rooms].filter((r) => !(r in MAY_IMPORT)).sort()).toEqual([]);
  });

  it('imports across rooms only downwards', () => {
    const wrong: string[] = [];
    for (const file of files(SRC)) {
      const from = roomOf(file);
      for (const spec of imports(file)) {
        const to = roomOf(path.resolve(path.dirname(file), spec));
        if (to !== from && !(MAY_IMPORT[from] ?? []).includes(to)) {
          wrong.push(`${path.relative(SRC, file)} -> ${spec}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});
