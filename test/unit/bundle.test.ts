// What the bundled CLI evaluates before `gpu-dra driver` publishes its first ResourceSlice.
// Start-up time is mostly module compilation and evaluation, so the modules the driver does
// not need for that first write (gRPC, protobuf, CEL, YAML, the simulator) must stay in chunks
// loaded later. Reads the esbuild metafile that scripts/bundle.mjs writes next to the bundle.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

interface Metafile {
  outputs: Record<
    string,
    {
      entryPoint?: string;
      imports: { path: string; kind: string; external?: boolean }[];
      inputs: Record<string, { bytesInOutput: number }>;
      bytes: number;
    }
  >;
}

const META = path.resolve(import.meta.dirname, '../../dist/bundle-meta.json');

let meta: Metafile;

function outputOf(entryPoint: string): string {
  const found = Object.entries(meta.outputs).find(([, o]) => o.entryPoint === entryPoint);
  if (!found) throw new Error(`no bundle output for ${entryPoint}`);
  return found[0];
}

/** The outputs Node loads, and so evaluates, when it imports `output`: static imports only. */
function staticClosure(output: string, seen = new Set<string>()): Set<string> {
  if (seen.has(output)) return seen;
  seen.add(output);
  for (const imp of meta.outputs[output]?.imports ?? []) {
    if (imp.kind === 'import-statement' && !imp.external) staticClosure(imp.path, seen);
  }
  return seen;
}

function inputsOf(outputs: Iterable<string>): string[] {
  return [...outputs].flatMap((o) => Object.keys(meta.outputs[o]?.inputs ?? {}));
}

function bytesOf(outputs: Iterable<string>): number {
  return [...outputs].reduce((n, o) => n + (meta.outputs[o]?.bytes ?? 0), 0);
}

const LATE = [
  /node_modules\/@grpc\//,
  /node_modules\/protobufjs\//,
  /node_modules\/yaml\//,
  // Only a kubeconfig file needs client-node; the DaemonSet's in-cluster driver must not load it.
  /node_modules\/@kubernetes\/client-node\//,
  /^src\/kube\/kubeconfig\.ts$/,
  /node_modules\/@marcbachmann\/cel-js\//,
  /node_modules\/zod\/v4\/locales\/(?!en\.js)/,
  /^src\/cel\//,
  /^src\/sim\//,
  /^src\/driver\/(plugin|proto|service|state)\.ts$/,
];

describe('bundle layout (dist/gpu-dra.mjs and its chunks)', () => {
  beforeAll(() => {
    if (!fs.existsSync(META)) throw new Error(`${META} missing: run npm run build first`);
    meta = JSON.parse(fs.readFileSync(META, 'utf8')) as Metafile;
  });

  it('`gpu-dra driver` evaluates no gRPC, protobuf, YAML, CEL or simulator code before its first publish', () => {
    const early = new Set([
      ...staticClosure(outputOf('src/cli/main.ts')),
      ...staticClosure(outputOf('src/cli/actions/driver.ts')),
    ]);
    const inputs = inputsOf(early);
    expect(inputs).toContain('src/resourceslice/publisher.ts');
    expect(inputs).toContain('src/nvml/discover.ts');
    expect(inputs.filter((i) => LATE.some((re) => re.test(i)))).toEqual([]);
    // Headroom check on size too: V8 compiles every byte of what it loads (was 1.4 MB, one file).
    expect(bytesOf(early)).toBeLessThan(400 * 1024);
  });

  it('the serving half (gRPC sockets, device state) is a chunk of its own, loaded after the publish starts', () => {
    const serving = inputsOf(staticClosure(outputOf('src/node/serving.ts')));
    expect(serving.some((i) => i.includes('node_modules/@grpc/grpc-js/'))).toBe(true);
    expect(serving).toContain('src/kubelet/plugin.ts');
  });

  it('the entry chunk holds flag definitions only: no command implementation, no validator', () => {
    const inputs = inputsOf(staticClosure(outputOf('src/cli/main.ts')));
    expect(inputs.filter((i) => /^src\/(driver\/run|cli\/actions\/)|node_modules\/zod\//.test(i))).toEqual(
      [],
    );
  });
});
