import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

const repo = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);

describe('gpu-dra demo (the embedded default)', () => {
  it('discovers the simulated h100-8x node and prints the ResourceSlices it becomes', async () => {
    const { stdout } = await run('node', [path.join(repo, 'dist/cli/main.js'), 'demo']);
    expect(stdout).toContain('driver 580.159.04, CUDA 13.0, 8 GPU(s)');
    expect(stdout).toContain('GPU-6a5915e5-c913-b8b9-41dc-75d55806210b');
    const yamlPart = stdout.slice(stdout.indexOf('---'));
    const slices = parseAllDocuments(yamlPart).map(
      (d) => d.toJSON() as { kind: string; spec: { devices: { name: string }[] } },
    );
    expect(slices.map((s) => s.kind)).toEqual(['ResourceSlice']);
    expect(slices[0]?.spec.devices.map((d) => d.name)).toEqual(
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `gpu-${i}`),
    );
  });

  it('runs another profile as JSON', async () => {
    const { stdout } = await run('node', [
      path.join(repo, 'dist/cli/main.js'),
      'demo',
      '--profile',
      'a100-mig',
      '--json',
    ]);
    const out = JSON.parse(stdout) as {
      inventory: { gpus: unknown[] };
      slices: { spec: { devices: { name: string }[] } }[];
    };
    expect(out.inventory.gpus).toHaveLength(2);
    const names = out.slices.flatMap((s) => s.spec.devices.map((d) => d.name));
    expect(names).toContain('gpu-0-mig-3g20gb-9-4');
    expect(names.every((n) => n.includes('-mig-'))).toBe(true);
  });

  it('names an unknown profile and lists the known ones', async () => {
    const err = (await run('node', [path.join(repo, 'dist/cli/main.js'), 'demo', '--profile', 'nope']).catch(
      (e: unknown) => e,
    )) as { code: number; stderr: string };
    expect(err.code).not.toBe(0);
    expect(err.stderr).toMatch(/nope/);
    expect(err.stderr).toMatch(/h100-8x/);
  });
});
