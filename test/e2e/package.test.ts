// What ships, run from where it ships: the npm tarball installed into an empty directory runs
// `npx gpu-dra demo` (so the fake NVML's C source and profiles must be in it), and the
// Dockerfile's runtime file set, assembled from the Dockerfile's own COPY lines, starts
// `gpu-dra driver` on a simulated node (no image can be built here). Both run outside the
// repository, so nothing resolves through the checkout's node_modules or sources. In the e2e
// project because npm pack/install/ci take ~30 s together; no Kubernetes peers needed.
// Needs `npm run build` (dist/) and the npm cache that `npm ci` filled (--prefer-offline).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { fakeNvmlLib, simNodeFlags } from '../support/sim.js';
import { freePort, httpGet } from './support/process.js';
import { driverReady } from './support/wait.js';

const repo = path.resolve(import.meta.dirname, '../..');
const execFileP = promisify(execFile);
const NPM_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];

async function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { cwd, env, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-pkg-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('installs into an empty directory and runs `npx gpu-dra demo` there', async () => {
    const packed = await run('npm', ['pack', '--json', '--pack-destination', tmp], repo);
    const [info] = JSON.parse(packed) as { filename: string; files: { path: string }[] }[];
    if (!info) throw new Error(`npm pack printed no package: ${packed}`);
    const files = info.files.map((f) => f.path);
    expect(files).toContain('src/sim/fake-nvml/fake_nvml.c');
    expect(files).toContain('src/sim/fake-nvml/profiles/h100-8x.json');
    // The simulated node's recording nvidia-smi / nvidia-cuda-mps-control ship with it.
    expect(files).toContain('src/sim/tools/nvidia-smi');
    // Only the simulated node's assets ship from src/, not the TypeScript or the test-only generator.
    expect(
      files.filter(
        (f) => f.startsWith('src/') && !f.startsWith('src/sim/fake-nvml/') && !f.startsWith('src/sim/tools/'),
      ),
    ).toEqual([]);

    const app = path.join(tmp, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), '{ "name": "try-gpu-dra", "private": true }\n');
    await run('npm', ['install', ...NPM_FLAGS, path.join(tmp, info.filename)], app);

    // A read-only install, and a cache the test owns: the library is compiled from the
    // shipped C source, into the cache, never into the package.
    const installed = path.join(app, 'node_modules', 'gpu-dra');
    await run('chmod', ['-R', 'a-w', installed], app);
    const cache = path.join(tmp, 'cache');
    const env: NodeJS.ProcessEnv = { ...process.env, GPU_DRA_CACHE: cache };
    delete env['GPU_DRA_FAKE_NVML_LIB']; // the global setup's build, which would skip the compile
    let stdout: string;
    try {
      stdout = await run('npx', ['--no', 'gpu-dra', 'demo'], app, env);
    } finally {
      await run('chmod', ['-R', 'u+w', installed], app); // or afterAll cannot remove it
    }

    expect(fs.readdirSync(path.join(cache, 'fake-nvml'))).toHaveLength(1);
    const lines = stdout.trimEnd().split('\n');
    expect(lines.length).toBeLessThanOrEqual(50);
    expect(stdout).toContain('fake NVML profile "h100-8x"');
    expect(lines.filter((l) => /^ {3}gpu \d+ +NVIDIA H100/.test(l))).toHaveLength(8);
    expect(stdout).toContain('request "gpu" → device gpu-0');
    expect(stdout).toMatch(/^ {3}device nodes {2}.*\/dev\/nvidia0$/m);
    expect(stdout).toContain('then NodeUnprepareResources: ok, CDI spec removed');
  }, 240_000);
});

/** The runtime stage of the Dockerfile: its WORKDIR, ENV and COPY lines, and the other stages' WORKDIRs. */
interface RuntimeStage {
  readonly workdir: string;
  readonly env: Record<string, string>;
  readonly copies: { from?: string; src: string; dest: string }[];
  readonly entrypoint: string[];
  readonly stageWorkdirs: Record<string, string>;
}

function parseDockerfile(text: string): RuntimeStage {
  const stageWorkdirs: Record<string, string> = {};
  let stage: string | undefined;
  let runtime: {
    workdir: string;
    env: Record<string, string>;
    copies: RuntimeStage['copies'];
    entrypoint: string[];
  } = {
    workdir: '/',
    env: {},
    copies: [],
    entrypoint: [],
  };
  // Continuation lines joined; comments dropped.
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [instr = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    switch (instr.toUpperCase()) {
      case 'FROM': {
        const m = /\bAS\s+(\S+)$/i.exec(args);
        stage = m?.[1];
        runtime = { workdir: '/', env: {}, copies: [], entrypoint: [] };
        break;
      }
      case 'WORKDIR':
        if (stage) stageWorkdirs[stage] = args;
        runtime.workdir = args;
        break;
      case 'ENV':
        for (const m of args.matchAll(/(\w+)=(\S+)/g)) runtime.env[m[1] ?? ''] = m[2] ?? '';
        break;
      case 'COPY': {
        const parts = rest.filter((p) => !p.startsWith('--chown'));
        const from = parts.find((p) => p.startsWith('--from='))?.slice('--from='.length);
        const [src, dest] = parts.filter((p) => !p.startsWith('--'));
        if (!src || !dest) throw new Error(`cannot read COPY line: ${line}`);
        runtime.copies.push({ ...(from ? { from } : {}), src, dest });
        break;
      }
      case 'ENTRYPOINT':
        runtime.entrypoint = JSON.parse(args) as string[];
        break;
      default:
    }
  }
  return { ...runtime, stageWorkdirs };
}

describe('the Dockerfile runtime stage', () => {
  const children: ChildProcess[] = [];
  let apiserver: http.Server | undefined;
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    const server = apiserver;
    if (server) {
      server.closeAllConnections(); // the held-open watch
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('assembled the way the Dockerfile does, starts `gpu-dra driver`, publishes and serves', async () => {
    const stage = parseDockerfile(fs.readFileSync(path.join(repo, 'Dockerfile'), 'utf8'));
    expect(stage.stageWorkdirs).toMatchObject({ build: '/src', deps: '/src' });

    // The `deps` stage: production dependencies from the lock file, as the Dockerfile installs them.
    const deps = path.join(tmp, 'deps');
    fs.mkdirSync(deps);
    for (const f of ['package.json', 'package-lock.json'])
      fs.copyFileSync(path.join(repo, f), path.join(deps, f));
    await run('npm', ['ci', '--omit=dev', ...NPM_FLAGS], deps);
    // The `build` stage's /src after `npm run build` is this checkout (dist/ built before the tests).
    const stageRoots: Record<string, string> = { build: repo, deps };

    // `/app` of the image, under the temp dir; each COPY as the Dockerfile says it.
    const root = path.join(tmp, 'image');
    const toHost = (p: string): string => path.join(root, p);
    const workdir = toHost(stage.workdir);
    fs.mkdirSync(workdir, { recursive: true });
    for (const c of stage.copies) {
      let src: string;
      if (c.from === undefined) {
        src = path.join(repo, c.src);
      } else {
        const stageRoot = stageRoots[c.from];
        const stageWorkdir = stage.stageWorkdirs[c.from];
        if (!stageRoot || !stageWorkdir) throw new Error(`unknown stage ${c.from}`);
        src = path.join(stageRoot, path.relative(stageWorkdir, c.src));
      }
      const dest = path.resolve(workdir, c.dest);
      const target =
        c.dest.endsWith('/') && !fs.statSync(src).isDirectory() ? path.join(dest, path.basename(src)) : dest;
      fs.cpSync(src, target, { recursive: true });
    }
    expect(fs.readdirSync(workdir).sort()).toEqual(['dist', 'node_modules', 'package.json', 'proto']);
    // Dev-only packages stay out of the image.
    expect(fs.existsSync(path.join(workdir, 'node_modules', 'vitest'))).toBe(false);

    // A minimal apiserver: the Node the slices are owned by, and the ResourceSlice calls.
    const created: { metadata: { name: string }; spec: { nodeName: string; devices: unknown[] } }[] = [];
    apiserver = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const reply = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'GET' && url.pathname === '/api/v1/nodes/node-a') {
        reply(200, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', uid: 'node-a-uid' } });
      } else if (url.pathname === '/apis/resource.k8s.io/v1/resourceslices' && req.method === 'GET') {
        if (url.searchParams.get('watch') === 'true') {
          res.writeHead(200, { 'content-type': 'application/json' }); // held open, no events
          res.flushHeaders();
        } else {
          reply(200, { kind: 'ResourceSliceList', items: [], metadata: { resourceVersion: '1' } });
        }
      } else if (url.pathname === '/apis/resource.k8s.io/v1/resourceslices' && req.method === 'POST') {
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (chunk: string) => (body += chunk));
        req.on('end', () => {
          const slice = JSON.parse(body) as (typeof created)[number] & { metadata: Record<string, unknown> };
          created.push(slice);
          reply(201, {
            ...slice,
            metadata: { ...slice.metadata, uid: `uid-${created.length}`, resourceVersion: '2' },
          });
        });
      } else {
        reply(404, { kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404 });
      }
    });
    await new Promise<void>((resolve) => apiserver?.listen(0, '127.0.0.1', resolve));
    const apiPort = (apiserver.address() as AddressInfo).port;
    const kubeconfig = path.join(tmp, 'kubeconfig');
    // JSON (valid YAML): the bundle's YAML kubeconfig loading is being fixed separately.
    fs.writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: `http://127.0.0.1:${String(apiPort)}` } }],
        users: [{ name: 'u', user: {} }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );

    const simDir = fs.mkdtempSync(path.join(tmp, 's'));
    const sim = await createSimulatedNode('h100-8x', simDir, { libPath: fakeNvmlLib() });
    const port = await freePort();
    // ENTRYPOINT ["node", ...flags, "/app/dist/gpu-dra.mjs"] with the image's ENV, cwd = WORKDIR.
    const [node, ...rest] = stage.entrypoint;
    expect(node).toBe('node');
    const script = rest.at(-1);
    if (!script) throw new Error('Dockerfile has no ENTRYPOINT script');
    const child = spawn(
      process.execPath,
      [
        ...rest.slice(0, -1),
        toHost(script),
        'driver',
        '--node-name=node-a',
        `--kubeconfig=${kubeconfig}`,
        `--kubelet-registry-dir=${path.join(simDir, 'registry')}`,
        `--kubelet-plugins-dir=${path.join(simDir, 'plugins')}`,
        `--cdi-root=${path.join(simDir, 'cdi')}`,
        ...simNodeFlags(sim),
        `--http-listen=127.0.0.1:${String(port)}`,
      ],
      {
        cwd: workdir,
        env: { PATH: process.env['PATH'] ?? '', HOME: tmp, ...stage.env, FAKE_NVML_CONFIG: sim.configPath },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    children.push(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (stderr += chunk));

    // Ready means the slices are published; healthz dials the plugin's own gRPC sockets, so it
    // proves proto/ and the lazily loaded serving chunks came along.
    await driverReady(child, port, () => stderr);
    expect((await httpGet(`http://127.0.0.1:${String(port)}/healthz`)).status).toBe(200);
    expect(created).toHaveLength(1);
    expect(created[0]?.spec.nodeName).toBe('node-a');
    expect(created[0]?.spec.devices).toHaveLength(8);
    expect(fs.existsSync(path.join(simDir, 'registry', 'gpu.dra.dev-reg.sock'))).toBe(true);

    child.kill('SIGTERM');
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(0);
  }, 240_000);
});
