// The built CLI (dist/gpu-dra.mjs, what the image and `bin` run) against kubeconfigs written the
// way kubectl writes them: YAML, an inline CA, an exec credential plugin, a proxy-url. The
// bundle is what broke before (its dynamic import of `yaml` had no named exports), so these
// run it as a child process against a stand-in apiserver on loopback. Needs `npm run build`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultDeviceClasses } from '../../src/cel/classes.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import { simNodeFlags, withSimulatedNode, type TempSimulatedNode } from '../support/sim.js';
import { startConnectProxy, type ConnectProxy } from '../support/connectProxy.js';

const repo = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(repo, 'dist/gpu-dra.mjs');
const DRIVER = 'gpu.dra.dev';

let dir: string;
let ca: Buffer;
let serverCert: Buffer;
let serverKey: Buffer;
const closers: (() => void)[] = [];
const children = new Set<ChildProcess>();

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} missing: run npm run build first`);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-kube-cli-'));
  // Self-signed, so the certificate is its own CA, as with kind's or minikube's apiserver.
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=kube-apiserver',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      'server.key',
      '-out',
      'server.crt',
    ],
    { cwd: dir, stdio: 'pipe' },
  );
  serverCert = fs.readFileSync(path.join(dir, 'server.crt'));
  serverKey = fs.readFileSync(path.join(dir, 'server.key'));
  ca = serverCert;
});

afterEach(() => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  for (const close of closers.splice(0)) close();
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly auth: string | undefined;
  readonly at: number;
}

type Route = (req: http.IncomingMessage, body: string) => { status: number; body: unknown } | 'hold';

/** An https apiserver stand-in: `route` answers, every request is recorded in `seen`. */
async function apiserver(route: Route): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = https.createServer({ cert: serverCert, key: serverKey }, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        auth: req.headers.authorization,
        at: Date.now(),
      });
      const answer = route(req, body);
      if (answer === 'hold') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return;
      }
      res.writeHead(answer.status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `https://127.0.0.1:${String((server.address() as AddressInfo).port)}`, seen };
}

/** The CONNECT proxy of test/support, closed after the test. */
async function connectProxy(): Promise<ConnectProxy> {
  const proxy = await startConnectProxy();
  closers.push(() => {
    proxy.close();
  });
  return proxy;
}

/**
 * A kubeconfig in the layout `kubectl config view --raw` prints (keys sorted, YAML), in a
 * directory of its own with `files` beside it. `user` and `cluster` are extra YAML lines.
 */
function kubectlKubeconfig(
  server: string,
  user: string[],
  cluster: string[] = [],
  files: Record<string, string> = {},
): string {
  const sub = fs.mkdtempSync(path.join(dir, 'kube-'));
  for (const [name, content] of Object.entries(files)) {
    fs.writeFileSync(path.join(sub, name), content, { mode: 0o755 });
  }
  const file = path.join(sub, 'config');
  const text = [
    'apiVersion: v1',
    'clusters:',
    '- cluster:',
    `    certificate-authority-data: ${ca.toString('base64')}`,
    ...cluster.map((l) => `    ${l}`),
    `    server: ${server}`,
    '  name: managed',
    'contexts:',
    '- context:',
    '    cluster: managed',
    '    user: managed-user',
    '  name: managed',
    'current-context: managed',
    'kind: Config',
    'preferences: {}',
    'users:',
    '- name: managed-user',
    '  user:',
    ...user.map((l) => `    ${l}`),
    '',
  ].join('\n');
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}

/** An exec plugin like `aws eks get-token`: prints an ExecCredential with a bearer token. */
const EXEC_USER = [
  'exec:',
  '  apiVersion: client.authentication.k8s.io/v1beta1',
  '  command: ./get-token',
  '  args:',
  '  - --cluster',
  '  - managed',
  '  interactiveMode: IfAvailable',
  '  provideClusterInfo: false',
];
const EXEC_FILES = {
  'get-token': [
    '#!/bin/sh',
    'echo \'{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"token-for-\'"$2"\'"}}\'',
    '',
  ].join('\n'),
};

/** Runs the bundle to completion. */
function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('close', (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('gpu-dra explain --kubeconfig (built bundle)', () => {
  let slices: unknown[];

  beforeAll(async () => {
    await withSimulatedNode('h100-8x', (node) => {
      const inventory = discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths });
      slices = [...buildSlices(inventory, { driverName: DRIVER, nodeName: 'gpu-node-1' }).slices];
    });
  });

  const clusterRoute: Route = (req) =>
    req.url === '/apis/resource.k8s.io/v1/resourceslices'
      ? { status: 200, body: { kind: 'ResourceSliceList', apiVersion: 'resource.k8s.io/v1', items: slices } }
      : req.url === '/apis/resource.k8s.io/v1/deviceclasses'
        ? {
            status: 200,
            body: {
              kind: 'DeviceClassList',
              apiVersion: 'resource.k8s.io/v1',
              // What deploy/deviceclass.yaml installs.
              items: defaultDeviceClasses(DRIVER),
            },
          }
        : { status: 404, body: { kind: 'Status', reason: 'NotFound', code: 404 } };

  const claim = path.join(repo, 'examples/claims/single-gpu.yaml');

  it('logs in with an exec credential plugin and explains against the cluster', async () => {
    const api = await apiserver(clusterRoute);
    const kubeconfig = kubectlKubeconfig(api.url, EXEC_USER, [], EXEC_FILES);
    const out = await runCli(['explain', '-f', claim, '--kubeconfig', kubeconfig, '--json']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ satisfiable: true });
    expect(api.seen.map((s) => [s.url, s.auth]).sort()).toEqual([
      ['/apis/resource.k8s.io/v1/deviceclasses', 'Bearer token-for-managed'],
      ['/apis/resource.k8s.io/v1/resourceslices', 'Bearer token-for-managed'],
    ]);
  });

  it('reaches the apiserver through proxy-url', async () => {
    const api = await apiserver(clusterRoute);
    const proxy = await connectProxy();
    const kubeconfig = kubectlKubeconfig(api.url, ['token: static-token'], [`proxy-url: ${proxy.url}`]);
    const out = await runCli(['explain', '-f', claim, '--kubeconfig', kubeconfig, '--json']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(proxy.tunnels.length).toBeGreaterThan(0);
    expect(new Set(proxy.tunnels)).toEqual(new Set([new URL(api.url).host]));
    expect(api.seen.map((s) => s.auth)).toEqual(['Bearer static-token', 'Bearer static-token']);
  });

  it('names the kubeconfig field that is wrong', async () => {
    const kubeconfig = kubectlKubeconfig('https://127.0.0.1:1', ['client-certificate-data: QQ==']);
    const out = await runCli(['explain', '-f', claim, '--kubeconfig', kubeconfig]);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toContain('users[managed-user].user.client-key');
    expect(out.stderr).toContain(kubeconfig);
  });
});

describe('gpu-dra driver --kubeconfig (built bundle)', () => {
  let node: TempSimulatedNode;

  beforeAll(async () => {
    node = await withSimulatedNode('h100-8x');
  });

  afterAll(async () => {
    await node.cleanup();
  });

  it('publishes its ResourceSlices with the token an exec plugin prints', async () => {
    const api = await apiserver((req, body) => {
      const url = req.url ?? '';
      if (url.startsWith('/api/v1/nodes/'))
        return { status: 200, body: { metadata: { name: 'gpu-node-1', uid: 'node-uid' } } };
      if (url.includes('watch=true')) return 'hold';
      if (req.method === 'GET' && url.startsWith('/apis/resource.k8s.io/v1/resourceslices'))
        return {
          status: 200,
          body: { kind: 'ResourceSliceList', metadata: { resourceVersion: '1' }, items: [] },
        };
      if (req.method === 'POST') {
        const slice = JSON.parse(body) as { metadata: Record<string, unknown> };
        return {
          status: 201,
          body: { ...slice, metadata: { ...slice.metadata, uid: 'u', resourceVersion: '2' } },
        };
      }
      return { status: 404, body: { kind: 'Status', reason: 'NotFound', code: 404 } };
    });
    const kubeconfig = kubectlKubeconfig(api.url, EXEC_USER, [], EXEC_FILES);
    const root = fs.mkdtempSync(path.join(dir, 'kubelet-'));
    const started = Date.now();
    const child = spawn(
      process.execPath,
      [
        CLI,
        'driver',
        '--node-name=gpu-node-1',
        `--kubeconfig=${kubeconfig}`,
        `--driver-name=${DRIVER}`,
        `--kubelet-registry-dir=${path.join(root, 'plugins_registry')}`,
        `--kubelet-plugins-dir=${path.join(root, 'plugins')}`,
        `--cdi-root=${path.join(root, 'cdi')}`,
        ...simNodeFlags(node),
        '--log-level=warn',
      ],
      { env: { ...process.env, ...node.env }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.add(child);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    await expect
      .poll(
        () => {
          if (child.exitCode !== null) throw new Error(`driver exited ${String(child.exitCode)}:\n${stderr}`);
          return api.seen.some((s) => s.method === 'POST');
        },
        { timeout: 20_000, interval: 50 },
      )
      .toBe(true);
    const post = api.seen.find((s) => s.method === 'POST');
    expect(post).toMatchObject({
      url: '/apis/resource.k8s.io/v1/resourceslices?fieldManager=gpu-dra',
      auth: 'Bearer token-for-managed',
    });
    expect(api.seen.every((s) => s.auth === 'Bearer token-for-managed')).toBe(true);
    // Not a budget (this machine is shared): the number goes into the report for comparison.
    process.stdout.write(`driver --kubeconfig: spawn → first POST ${String((post?.at ?? 0) - started)} ms\n`);
    child.kill('SIGTERM');
  });
});
