import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { FAILPOINTS, killsAt, parseFailpoints, type FailpointName } from '../../src/util/failpoint.js';
import { isGpuDraError } from '../../src/util/errors.js';

const repo = path.resolve(import.meta.dirname, '../..');

function srcFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? srcFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('parseFailpoints', () => {
  it('reads name, name@N and *@N, spaces and empty entries ignored', () => {
    const a = parseFailpoints(' cdi-written , mig-created@3,,*@7, mig-created@1, *@2 ');
    expect([...a.byName.entries()].map(([n, hits]) => [n, [...hits].sort()])).toEqual([
      ['cdi-written', [1]],
      ['mig-created', [1, 3]],
    ]);
    expect([...a.anyHit].sort()).toEqual([2, 7]);
    expect(parseFailpoints('')).toEqual({ byName: new Map(), anyHit: new Set() });
  });

  it.each([
    ['no-such-point', 'unknown name'],
    ['mig-created@0', 'hits count from 1'],
    ['mig-created@', 'no count'],
    ['mig-created@x', 'not a number'],
    ['*', 'any point needs a count'],
    ['*@-1', 'negative'],
    ['MIG-CREATED', 'names are lower case'],
    ['cdi-written@1@2', 'two counts'],
  ])('refuses %j (%s) with CONFIG_INVALID naming the entry', (spec) => {
    let thrown: unknown;
    try {
      parseFailpoints(`cdi-written,${spec}`);
    } catch (err) {
      thrown = err;
    }
    expect(isGpuDraError(thrown, 'CONFIG_INVALID')).toBe(true);
    expect((thrown as Error).message).toContain(JSON.stringify(spec));
  });
});

describe('killsAt', () => {
  const arming = parseFailpoints('cdi-written@2,*@5');
  it.each<[FailpointName, number, number, boolean]>([
    ['cdi-written', 1, 1, false],
    ['cdi-written', 2, 2, true],
    ['cdi-written', 3, 4, false],
    ['mig-created', 2, 2, false],
    ['mig-created', 1, 5, true],
  ])('%s hit %d (total %d): %s', (name, hit, total, kills) => {
    expect(killsAt(arming, name, hit, total)).toBe(kills);
  });
});

describe('failpoint() in a process armed by the environment', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
    vi.restoreAllMocks();
    vi.resetModules();
  });

  async function armed(env: Record<string, string>): Promise<{
    failpoint: (name: FailpointName) => void;
    kills: unknown[][];
  }> {
    Object.assign(process.env, env);
    vi.resetModules();
    const kills: unknown[][] = [];
    vi.spyOn(process, 'kill').mockImplementation((...args: unknown[]) => {
      kills.push(args);
      return true;
    });
    const mod = await import('../../src/util/failpoint.js');
    return { failpoint: mod.failpoint, kills };
  }

  it('SIGKILLs itself at the armed hits only, and traces every hit before that', async () => {
    const trace = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-fp-')), 'trace');
    const { failpoint, kills } = await armed({
      GPU_DRA_FAILPOINTS: 'cdi-written@2,*@4',
      GPU_DRA_FAILPOINT_TRACE: trace,
    });
    failpoint('cdi-written');
    expect(kills).toEqual([]);
    failpoint('mig-created');
    failpoint('cdi-written');
    expect(kills).toEqual([[process.pid, 'SIGKILL']]);
    failpoint('mig-created');
    expect(kills).toHaveLength(2);
    failpoint('mig-created');
    expect(kills).toHaveLength(2);
    expect(fs.readFileSync(trace, 'utf8')).toBe(
      'cdi-written\nmig-created\ncdi-written\nmig-created\nmig-created\n',
    );
  });

  it('unarmed and untraced, never kills', async () => {
    delete process.env['GPU_DRA_FAILPOINTS'];
    delete process.env['GPU_DRA_FAILPOINT_TRACE'];
    const { failpoint, kills } = await armed({});
    for (const name of FAILPOINTS) failpoint(name);
    expect(kills).toEqual([]);
  });
});

describe('FAILPOINTS', () => {
  it('lists exactly the points the code passes, each once', () => {
    const text = srcFiles(path.join(repo, 'src'))
      .map((f) => fs.readFileSync(f, 'utf8'))
      .join('\n');
    const used = [...text.matchAll(/\bfailpoint\('([a-z0-9-]+)'\)/g)].map((m) => m[1]);
    expect(new Set(used)).toEqual(new Set(FAILPOINTS));
    expect(new Set(FAILPOINTS).size).toBe(FAILPOINTS.length);
  });
});
