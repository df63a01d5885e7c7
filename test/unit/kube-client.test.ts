import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kubeClaimGetter } from '../../src/driver/claims.js';
import {
  KubeApiError,
  KubeRequestError,
  createKubeClient,
  type KubeClient,
  type KubeClientOptions,
} from '../../src/kube/client.js';
import { KubeConfigError, loadInClusterConfig, type KubeConfig } from '../../src/kube/config.js';
import { loadKubeconfigClient } from '../../src/kube/kubeconfig.js';
import { GpuDraError } from '../../src/util/errors.js';
import type { ResourceSlice } from '../../src/api/resource.js';
import { httpStatus, kubeSliceClient } from '../../src/resourceslice/sliceApi.js';
import { startConnectProxy } from '../support/connectProxy.js';

let dir: string;
const servers: (http.Server | https.Server)[] = [];
const clients: KubeClient[] = [];

interface Pki {
  ca: Buffer;
  serverCert: Buffer;
  serverKey: Buffer;
  otherCa: Buffer;
  clientCa: Buffer;
  clientCert: Buffer;
  clientKey: Buffer;
}
let pki: Pki;

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA and a leaf it signs (`ext` = extensions for the leaf). */
function makeCa(name: string): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
  );
}

function makeLeaf(name: string, ca: string, ext: string): void {
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
  openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
  );
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
  );
}

const read = (f: string): Buffer => fs.readFileSync(path.join(dir, f));

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-kube-'));
  makeCa('ca');
  makeCa('other-ca');
  makeCa('client-ca');
  makeLeaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  makeLeaf('driver', 'client-ca', 'extendedKeyUsage=clientAuth\n');
  pki = {
    ca: read('ca.crt'),
    serverCert: read('server.crt'),
    serverKey: read('server.key'),
    otherCa: read('other-ca.crt'),
    clientCa: read('client-ca.crt'),
    clientCert: read('driver.crt'),
    clientKey: read('driver.key'),
  };
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => {
            resolve();
          });
        }),
    ),
  );
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

function withBody(handler: Handler): http.RequestListener {
  return (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      handler(req, res, body);
    });
  };
}

async function listen(server: http.Server | https.Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return `${server instanceof https.Server ? 'https' : 'http'}://127.0.0.1:${String(port)}`;
}

function client(config: Omit<KubeConfig, 'source'>, opts?: KubeClientOptions): KubeClient {
  const c = createKubeClient({ source: 'test', ...config }, opts);
  clients.push(c);
  return c;
}

function json(res: http.ServerResponse, status: number, obj: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(obj));
}

describe('KubeClient', () => {
  it('sends the bearer token, query and JSON body, and parses the answer', async () => {
    const seen: { method?: string; url?: string; auth?: string; type?: string; body?: string }[] = [];
    const server = await listen(
      http.createServer(
        withBody((req, res, body) => {
          seen.push({
            method: req.method,
            url: req.url,
            auth: req.headers.authorization,
            type: req.headers['content-type'],
            body,
          });
          json(res, 201, { ok: true });
        }),
      ),
    );
    const kc = client({ server, token: 'secret-token' });
    const out = await kc.request<{ ok: boolean }>('POST', '/apis/x/v1/things', {
      query: { fieldManager: 'gpu-dra', dryRun: undefined, limit: 5 },
      body: { a: 1 },
    });
    expect(out).toEqual({ ok: true });
    expect(seen).toEqual([
      {
        method: 'POST',
        url: '/apis/x/v1/things?fieldManager=gpu-dra&limit=5',
        auth: 'Bearer secret-token',
        type: 'application/json',
        body: '{"a":1}',
      },
    ]);
  });

  it('turns a Status answer into KubeApiError with code, reason and message', async () => {
    const server = await listen(
      http.createServer((_req, res) => {
        json(res, 409, {
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Failure',
          reason: 'Conflict',
          message: 'the object has been modified',
          code: 409,
        });
      }),
    );
    const err = await client({ server })
      .request('PUT', '/apis/x/v1/things/a', { body: {} })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    const e = err as KubeApiError;
    expect(e.statusCode).toBe(409);
    expect(e.reason).toBe('Conflict');
    expect(e.apiMessage).toBe('the object has been modified');
    expect(e.message).toContain('PUT /apis/x/v1/things/a: 409 Conflict');
    expect(httpStatus(e)).toBe(409);
  });

  it('keeps one TLS connection alive across requests', async () => {
    let connections = 0;
    const server = https.createServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) => {
      json(res, 200, { kind: 'Node', metadata: { uid: 'u' } });
    });
    server.on('secureConnection', () => connections++);
    const url = await listen(server);
    const kc = client({ server: url, ca: pki.ca, token: 't' });
    for (let i = 0; i < 10; i++) await kc.request('GET', '/api/v1/nodes/n');
    expect(connections).toBe(1);
  });

  it('authenticates with a client certificate', async () => {
    let subject: string | undefined;
    const server = https.createServer(
      {
        cert: pki.serverCert,
        key: pki.serverKey,
        ca: pki.clientCa,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        if (req.socket instanceof TLSSocket) subject = String(req.socket.getPeerCertificate().subject.CN);
        json(res, 200, {});
      },
    );
    const url = await listen(server);
    await client({ server: url, ca: pki.ca, cert: pki.clientCert, key: pki.clientKey }).request(
      'GET',
      '/version',
    );
    expect(subject).toBe('driver');
    // Without the certificate the TLS handshake is refused.
    await expect(client({ server: url, ca: pki.ca }).request('GET', '/version')).rejects.toBeInstanceOf(
      KubeRequestError,
    );
  });

  it('refuses a server its CA did not sign, unless told to skip verification', async () => {
    const server = https.createServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) => {
      json(res, 200, {});
    });
    const url = await listen(server);
    const err = await client({ server: url, ca: pki.otherCa })
      .request('GET', '/version')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeRequestError);
    expect((err as Error).message).toMatch(/certificate/i);
    await expect(
      client({ server: url, insecureSkipTlsVerify: true }).request('GET', '/version'),
    ).resolves.toEqual({});
    // tls-server-name: verify against a name the certificate has, while dialing the IP.
    await expect(
      client({
        server: url.replace('127.0.0.1', 'localhost'),
        ca: pki.ca,
        tlsServerName: 'localhost',
      }).request('GET', '/version'),
    ).resolves.toEqual({});
  });

  it('times out a request that gets no answer', async () => {
    const server = await listen(http.createServer(() => undefined));
    const err = await client({ server }, { timeoutMs: 100 })
      .request('GET', '/slow')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeRequestError);
    expect((err as Error).message).toContain('no answer within 100 ms');
  });

  it('re-reads a rotated token file after a 401 and retries', async () => {
    const tokenFile = path.join(dir, 'rotating-token');
    fs.writeFileSync(tokenFile, 'old\n');
    const auths: (string | undefined)[] = [];
    const server = await listen(
      http.createServer((req, res) => {
        auths.push(req.headers.authorization);
        if (req.headers.authorization === 'Bearer new') json(res, 200, { ok: 1 });
        else json(res, 401, { kind: 'Status', reason: 'Unauthorized', message: 'Unauthorized', code: 401 });
      }),
    );
    const kc = client({ server, tokenFile, tokenRefreshMs: 3_600_000 });
    await expect(kc.request('GET', '/a')).rejects.toMatchObject({ statusCode: 401, reason: 'Unauthorized' });
    fs.writeFileSync(tokenFile, 'new\n');
    await expect(kc.request('GET', '/a')).resolves.toEqual({ ok: 1 });
    expect(auths).toEqual(['Bearer old', 'Bearer old', 'Bearer old', 'Bearer new']);
  });
});

describe('KubeClient.watch', () => {
  it('streams newline-delimited events and stops on stop()', async () => {
    let serverSawClose!: () => void;
    const closed = new Promise<void>((resolve) => (serverSawClose = resolve));
    let url: string | undefined;
    const server = await listen(
      http.createServer((req, res) => {
        url = req.url;
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write(JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'a' } } }) + '\n');
        // An event split across chunks.
        const second = JSON.stringify({ type: 'MODIFIED', object: { metadata: { name: 'b' } } }) + '\n';
        res.write(second.slice(0, 10));
        setTimeout(() => res.write(second.slice(10)), 20);
        res.on('close', serverSawClose);
      }),
    );
    const events: [string, unknown][] = [];
    const done: unknown[] = [];
    const kc = client({ server });
    const handle = await kc.watch(
      '/apis/resource.k8s.io/v1/resourceslices',
      { fieldSelector: 'spec.nodeName=n', resourceVersion: undefined },
      (type, obj) => events.push([type, obj]),
      (err) => done.push(err),
    );
    await expect.poll(() => events.length).toBe(2);
    expect(url).toBe('/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3Dn&watch=true');
    expect(events).toEqual([
      ['ADDED', { metadata: { name: 'a' } }],
      ['MODIFIED', { metadata: { name: 'b' } }],
    ]);
    handle.stop();
    await closed;
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toEqual([]);
  });

  it('calls onDone once when the server ends the stream', async () => {
    const server = await listen(
      http.createServer((_req, res) => {
        res.writeHead(200);
        res.end(JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '7' } } }) + '\n');
      }),
    );
    const done: unknown[] = [];
    const events: string[] = [];
    await client({ server }).watch(
      '/w',
      {},
      (t) => events.push(t),
      (err) => done.push(err),
    );
    await expect.poll(() => done.length).toBe(1);
    expect(done).toEqual([undefined]);
    expect(events).toEqual(['BOOKMARK']);
  });

  it('rejects with KubeApiError when the apiserver refuses the watch', async () => {
    const server = await listen(
      http.createServer((_req, res) => {
        json(res, 403, { kind: 'Status', reason: 'Forbidden', message: 'cannot watch', code: 403 });
      }),
    );
    await expect(
      client({ server }).watch(
        '/w',
        {},
        () => undefined,
        () => undefined,
      ),
    ).rejects.toMatchObject({ statusCode: 403, reason: 'Forbidden' });
  });
});

describe('kubeSliceClient and kubeClaimGetter over KubeClient', () => {
  it('speaks resource.k8s.io/v1 on the expected paths', async () => {
    const calls: string[] = [];
    const slice: ResourceSlice = {
      metadata: { name: 's1' },
      spec: {
        driver: 'gpu.example.com',
        nodeName: 'n',
        pool: { name: 'n', generation: 1, resourceSliceCount: 1 },
      },
    };
    const server = await listen(
      http.createServer(
        withBody((req, res, body) => {
          calls.push(`${req.method ?? ''} ${req.url ?? ''}${body ? ` ${body}` : ''}`);
          if (req.url?.startsWith('/api/v1/nodes/')) json(res, 200, { metadata: { uid: 'node-uid' } });
          else if (req.url === '/version') json(res, 200, { major: '1', minor: '37', gitVersion: 'v1.37.2' });
          else if (req.method === 'GET' && req.url?.includes('/resourceclaims/'))
            json(res, 200, { metadata: { name: 'c', namespace: 'ns', uid: 'cu' } });
          else if (req.method === 'GET')
            json(res, 200, {
              kind: 'ResourceSliceList',
              metadata: { resourceVersion: '42' },
              items: [slice],
            });
          else if (req.method === 'DELETE')
            json(res, 404, { kind: 'Status', reason: 'NotFound', message: 'not found', code: 404 });
          else json(res, 200, JSON.parse(body) as unknown);
        }),
      ),
    );
    const kc = client({ server, token: 't' });
    const sc = kubeSliceClient(kc);
    expect(await sc.list('spec.nodeName=n')).toEqual({ items: [slice], resourceVersion: '42' });
    expect((await sc.create(slice)).metadata.name).toBe('s1');
    await sc.update(slice);
    const err = await sc.delete('s1', { uid: 'u1' }).catch((e: unknown) => e);
    expect(httpStatus(err)).toBe(404);
    expect(await sc.getNodeUid('n')).toBe('node-uid');
    expect(await sc.serverVersion()).toEqual({ major: '1', minor: '37', gitVersion: 'v1.37.2' });
    const claims = await kubeClaimGetter(kc);
    expect((await claims.get('ns', 'c')).metadata?.uid).toBe('cu');
    const body = JSON.stringify({ apiVersion: 'resource.k8s.io/v1', kind: 'ResourceSlice', ...slice });
    expect(calls).toEqual([
      'GET /apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3Dn',
      `POST /apis/resource.k8s.io/v1/resourceslices?fieldManager=gpu-dra ${body}`,
      `PUT /apis/resource.k8s.io/v1/resourceslices/s1?fieldManager=gpu-dra ${body}`,
      'DELETE /apis/resource.k8s.io/v1/resourceslices/s1 {"apiVersion":"v1","kind":"DeleteOptions","preconditions":{"uid":"u1"}}',
      'GET /api/v1/nodes/n',
      'GET /version',
      'GET /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c',
    ]);
  });
});

describe('in-cluster config', () => {
  it('loads the in-cluster service account from an injectable directory', () => {
    const sa = fs.mkdtempSync(path.join(dir, 'sa-'));
    fs.writeFileSync(path.join(sa, 'token'), 'sa-token');
    fs.writeFileSync(path.join(sa, 'ca.crt'), 'SA-CA');
    const kc = loadInClusterConfig({
      env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' },
      dir: sa,
      tokenRefreshMs: 1000,
    });
    expect(kc).toMatchObject({
      server: 'https://[fd00::1]:443',
      tokenFile: path.join(sa, 'token'),
      tokenRefreshMs: 1000,
      source: 'in-cluster',
    });
    expect(kc.ca?.toString()).toBe('SA-CA');
    expect(() => loadInClusterConfig({ env: {}, dir: sa })).toThrow(/KUBERNETES_SERVICE_HOST: is not set/);
    expect(() =>
      loadInClusterConfig({
        env: { KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '1' },
        dir: path.join(sa, 'x'),
      }),
    ).toThrow(KubeConfigError);
  });

  it('re-reads the in-cluster token file periodically', async () => {
    const sa = fs.mkdtempSync(path.join(dir, 'sa-'));
    fs.writeFileSync(path.join(sa, 'token'), 'one');
    fs.writeFileSync(path.join(sa, 'ca.crt'), 'CA');
    const auths: (string | undefined)[] = [];
    const server = await listen(
      http.createServer((req, res) => {
        auths.push(req.headers.authorization);
        json(res, 200, {});
      }),
    );
    const cfg = loadInClusterConfig({
      env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '1' },
      dir: sa,
      // Long enough that the second request comes inside it even on a loaded machine.
      tokenRefreshMs: 1_000,
    });
    const kc = client({ ...cfg, server });
    await kc.request('GET', '/x');
    fs.writeFileSync(path.join(sa, 'token'), 'two');
    await kc.request('GET', '/x');
    await new Promise((r) => setTimeout(r, 1_100));
    await kc.request('GET', '/x');
    expect(auths).toEqual(['Bearer one', 'Bearer one', 'Bearer two']);
  });
});

describe('kubeconfig files (client-node KubeConfig)', () => {
  const b64 = (b: Buffer): string => b.toString('base64');

  /** Writes `text` as a kubeconfig in a fresh directory and returns its path. */
  function kubeconfigFile(text: string, extra: Record<string, string> = {}): string {
    const sub = fs.mkdtempSync(path.join(dir, 'kc-'));
    for (const [name, content] of Object.entries(extra)) {
      fs.writeFileSync(path.join(sub, name), content, { mode: 0o755 });
    }
    const file = path.join(sub, 'config');
    fs.writeFileSync(file, text);
    return file;
  }

  /** A kubeconfig as `kubectl config view --raw` prints it; `user` and `cluster` are YAML lines. */
  function kubectlYaml(server: string, user: string[], cluster: string[] = []): string {
    return [
      'apiVersion: v1',
      'clusters:',
      '- cluster:',
      ...cluster.map((l) => `    ${l}`),
      `    server: ${server}`,
      '  name: test-cluster',
      'contexts:',
      '- context:',
      '    cluster: test-cluster',
      '    user: test-user',
      '  name: test',
      'current-context: test',
      'kind: Config',
      'preferences: {}',
      'users:',
      '- name: test-user',
      '  user:',
      ...user.map((l) => `    ${l}`),
      '',
    ].join('\n');
  }

  async function load(file: string): Promise<KubeClient> {
    const c = await loadKubeconfigClient(file);
    clients.push(c);
    return c;
  }

  /** An https apiserver stand-in that records the Authorization header of each request. */
  async function tlsServer(opts: https.ServerOptions = {}): Promise<{ url: string; auths: string[] }> {
    const auths: string[] = [];
    const server = https.createServer({ cert: pki.serverCert, key: pki.serverKey, ...opts }, (req, res) => {
      auths.push(req.headers.authorization ?? '<none>');
      json(res, 200, { kind: 'Node', metadata: { uid: 'u' } });
    });
    return { url: await listen(server), auths };
  }

  it('reads YAML as kubectl writes it: inline CA, token, keep-alive across requests', async () => {
    let connections = 0;
    const { url, auths } = await tlsServer();
    (servers.at(-1) as https.Server).on('secureConnection', () => connections++);
    const kc = await load(
      kubeconfigFile(kubectlYaml(url, ['token: abc'], [`certificate-authority-data: ${b64(pki.ca)}`])),
    );
    for (let i = 0; i < 5; i++) await kc.request('GET', '/api/v1/nodes/n');
    expect(auths).toEqual(Array(5).fill('Bearer abc'));
    expect(connections).toBe(1);
  });

  it('resolves relative certificate and token files against the kubeconfig directory', async () => {
    let subject: string | undefined;
    const server = https.createServer(
      { cert: pki.serverCert, key: pki.serverKey, ca: pki.clientCa, requestCert: true },
      (req, res) => {
        if (req.socket instanceof TLSSocket) subject = String(req.socket.getPeerCertificate().subject.CN);
        json(res, 200, { auth: req.headers.authorization });
      },
    );
    const url = await listen(server);
    const file = kubeconfigFile(
      kubectlYaml(
        url,
        ['client-certificate: driver.crt', 'client-key: driver.key', 'tokenFile: token'],
        ['certificate-authority: ca.crt'],
      ),
      {
        'ca.crt': pki.ca.toString(),
        'driver.crt': pki.clientCert.toString(),
        'driver.key': pki.clientKey.toString(),
        token: 'from-file\n',
      },
    );
    await expect((await load(file)).request('GET', '/version')).resolves.toEqual({
      auth: 'Bearer from-file',
    });
    expect(subject).toBe('driver');
  });

  it('runs an exec credential plugin and sends the token it prints', async () => {
    const { url, auths } = await tlsServer();
    const plugin = [
      '#!/bin/sh',
      // The env from the kubeconfig reaches the plugin, as with kubectl.
      `printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}' "$TOKEN_FROM_ENV"`,
      '',
    ].join('\n');
    const file = kubeconfigFile(
      kubectlYaml(
        url,
        [
          'exec:',
          '  apiVersion: client.authentication.k8s.io/v1',
          '  command: ./get-token.sh',
          '  env:',
          '  - name: TOKEN_FROM_ENV',
          '    value: exec-token',
          '  interactiveMode: Never',
        ],
        [`certificate-authority-data: ${b64(pki.ca)}`],
      ),
      { 'get-token.sh': plugin },
    );
    const kc = await load(file);
    await kc.request('GET', '/api/v1/nodes/n');
    expect(auths).toEqual(['Bearer exec-token']);
  });

  it('runs the plugin once for concurrent requests, and again after a 401', async () => {
    let rejectOld = false;
    const auths: string[] = [];
    const url = await listen(
      https.createServer({ cert: pki.serverCert, key: pki.serverKey }, (req, res) => {
        const auth = req.headers.authorization ?? '<none>';
        auths.push(auth);
        if (rejectOld && auth === 'Bearer token-1')
          json(res, 401, { kind: 'Status', reason: 'Unauthorized' });
        else json(res, 200, {});
      }),
    );
    // No expirationTimestamp: client-node alone would run it for every request.
    const plugin = [
      '#!/bin/sh',
      'cd "$(dirname "$0")"',
      'n=$(($(cat count 2>/dev/null || echo 0) + 1)); echo $n > count',
      'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"token-%s"}}\' $n',
      '',
    ].join('\n');
    const file = kubeconfigFile(
      kubectlYaml(
        url,
        ['exec:', '  apiVersion: client.authentication.k8s.io/v1', '  command: ./plugin.sh'],
        [`certificate-authority-data: ${b64(pki.ca)}`],
      ),
      { 'plugin.sh': plugin },
    );
    const count = (): string => fs.readFileSync(path.join(path.dirname(file), 'count'), 'utf8').trim();
    const kc = await load(file);
    await Promise.all([kc.request('GET', '/a'), kc.request('GET', '/b'), kc.request('GET', '/c')]);
    expect(count()).toBe('1');
    rejectOld = true;
    await kc.request('GET', '/d');
    expect(count()).toBe('2');
    expect(auths).toEqual([...Array<string>(4).fill('Bearer token-1'), 'Bearer token-2']);
  });

  it('reports a failing credential plugin as KUBE_CREDENTIALS_FAILED with its stderr', async () => {
    const { url, auths } = await tlsServer();
    const file = kubeconfigFile(
      kubectlYaml(
        url,
        ['exec:', '  apiVersion: client.authentication.k8s.io/v1', '  command: ./fail.sh'],
        [],
      ),
      { 'fail.sh': '#!/bin/sh\necho "please run: cloud login" >&2\nexit 1\n' },
    );
    const err = await (await load(file)).request('GET', '/x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GpuDraError);
    expect((err as GpuDraError).code).toBe('KUBE_CREDENTIALS_FAILED');
    expect((err as Error).message).toContain('please run: cloud login');
    expect((err as Error).message).toContain(file);
    expect(auths).toEqual([]);
  });

  it('tunnels through proxy-url (HTTP CONNECT)', async () => {
    const { url, auths } = await tlsServer();
    const proxy = await startConnectProxy();
    const { tunnels, url: proxyUrl } = proxy;
    const kc = await load(
      kubeconfigFile(
        kubectlYaml(
          url,
          ['token: via-proxy'],
          [`certificate-authority-data: ${b64(pki.ca)}`, `proxy-url: ${proxyUrl}`],
        ),
      ),
    );
    await kc.request('GET', '/api/v1/nodes/n');
    expect(auths).toEqual(['Bearer via-proxy']);
    expect(tunnels).toEqual([new URL(url).host]);
    kc.close();
    proxy.close();
  });

  it('talks to a plain http:// server (kubectl proxy) without insecure-skip-tls-verify', async () => {
    const auths: (string | undefined)[] = [];
    const url = await listen(
      http.createServer((req, res) => {
        auths.push(req.headers.authorization);
        json(res, 200, {});
      }),
    );
    await (await load(kubeconfigFile(kubectlYaml(url, ['token: t'])))).request('GET', '/version');
    expect(auths).toEqual(['Bearer t']);
  });

  const doc = (user: Record<string, unknown>, cluster: Record<string, unknown> = {}): string =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: 'https://10.0.0.1:6443/', ...cluster } }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
    });

  it.each([
    [
      doc({ exec: { apiVersion: 'client.authentication.k8s.io/v1' } }),
      'users[u].user.exec.command',
      /is not set/,
    ],
    [doc({ 'auth-provider': { config: {} } }), 'users[u].user.auth-provider.name', /is not set/],
    [doc({ 'client-certificate-data': 'QQ==' }), 'users[u].user.client-key', /required/],
    [doc({ tokenFile: 'missing-token' }), 'users[u].user.tokenFile', /cannot read/],
    [doc({}, { server: 'not a url' }), 'clusters[c].cluster.server', /not a URL/],
    [doc({}, { 'proxy-url': 'proxy:3128' }), 'clusters[c].cluster.proxy-url', /must be an http/],
    [
      doc({}, { 'certificate-authority': '/nonexistent/ca.crt' }),
      'clusters[c].cluster.certificate-authority',
      /cannot read/,
    ],
    [JSON.stringify({ contexts: [] }), 'current-context', /not set/],
    [
      JSON.stringify({ contexts: [{ name: 'x', context: { cluster: 'gone' } }], 'current-context': 'x' }),
      'contexts[x].context.cluster',
      /refers to cluster "gone"/,
    ],
    ['a: [unclosed', '<document>', /not valid YAML/],
  ])('names the field in errors (%#)', async (text, field, message) => {
    const file = kubeconfigFile(text);
    const err = await loadKubeconfigClient(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeConfigError);
    expect((err as KubeConfigError).field).toBe(field);
    expect((err as KubeConfigError).message).toMatch(message);
    expect((err as KubeConfigError).message).toContain(file);
  });

  it('names the file it cannot read', async () => {
    const err = await loadKubeconfigClient(path.join(dir, 'no-such-kubeconfig')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeConfigError);
    expect((err as KubeConfigError).field).toBe('kubeconfig');
  });
});
