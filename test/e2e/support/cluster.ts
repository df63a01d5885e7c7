// A real Kubernetes control plane for e2e tests: embedded etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler, each a child process of the gpu-dra-peers binary,
// listening on free loopback ports below a temp dir.
//
// Authentication is a static token file: an admin (system:masters), one identity per node
// (system:node:<name> in system:nodes, so the Node authorizer and NodeRestriction apply), a
// driver identity shaped like a service account, and any extra users the test asks for.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { KubeConfig } from '@kubernetes/client-node';

import { ensurePeersBinary, peersLog } from './peers.js';
import {
  describeExit,
  freePort,
  httpGet,
  spawnPeer,
  stopPeer,
  tailFile,
  waitUntilReady,
  type PeerProcess,
} from './process.js';
import { stringify } from 'yaml';

export interface TokenUser {
  /** User name, e.g. `system:serviceaccount:gpu-dra:driver`. */
  name: string;
  groups: string[];
  /** Generated when omitted. */
  token?: string;
  uid?: string;
}

export interface ClusterOptions {
  /** Path of gpu-dra-peers; built with ensurePeersBinary(version) when omitted. */
  binary?: string;
  version?: string;
  /** Nodes that get a token (tokens are static, so they must be known up front). */
  nodeNames?: string[];
  /** Identity the driver runs as. Default: system:serviceaccount:gpu-dra:gpu-dra-driver. */
  driverUser?: string;
  /** More token users (hook for tests that need other identities). */
  extraUsers?: TokenUser[];
  /** kube-controller-manager --controllers. */
  controllers?: string[];
  /** --feature-gates for apiserver, scheduler and controller-manager. */
  featureGates?: string;
  apiserverArgs?: string[];
  schedulerArgs?: string[];
  controllerManagerArgs?: string[];
  /**
   * Keep the TaintNodesByCondition admission plugin (new Nodes get node.kubernetes.io/not-ready).
   * Add node-lifecycle-controller to `controllers` then, or nothing gets scheduled.
   */
  keepNotReadyTaint?: boolean;
  /** Per-peer readiness timeout. */
  readyTimeoutMs?: number;
}

interface PeerSpec {
  readonly args: string[];
  ready: { readonly what: string; readonly probe: () => Promise<boolean> } | undefined;
}

export const DEFAULT_NODE_NAMES = ['node-a', 'node-b', 'node-c', 'node-d'];
export const DEFAULT_DRIVER_USER = 'system:serviceaccount:gpu-dra:gpu-dra-driver';
// resourceclaim-controller creates claims from templates and clears reservedFor; the garbage collector
// deletes generated claims whose pod was deleted (their ownerReference points at the pod).
export const DEFAULT_CONTROLLERS = [
  'resourceclaim-controller',
  'serviceaccount-controller',
  'garbage-collector-controller',
];

interface IssuedToken {
  user: string;
  groups: string[];
  token: string;
}

function randomToken(): string {
  return crypto.randomBytes(24).toString('hex');
}

function csvField(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

/** Something started against the cluster (a node, a driver) that stop() and dumpLogs() cover. */
export interface Attachment {
  readonly name: string;
  /** Log tail for dumpLogs(). */
  logs(lines: number): string;
  stop(): Promise<void>;
}

export class Cluster {
  private readonly peers: PeerProcess[] = [];
  /** How each peer was started, so that startPeer() can start it again, same port and data. */
  private readonly peerSpecs = new Map<string, PeerSpec>();
  private readonly attachments: Attachment[] = [];
  private readonly tokens = new Map<string, IssuedToken>();
  private stopped = false;
  private caData = '';
  apiserverUrl = '';
  /** Admin (system:masters) client configuration. */
  kubeConfig: KubeConfig = new KubeConfig();
  /** Path of the admin kubeconfig file. */
  adminKubeconfigPath = '';
  /** How long start() took from the first spawn until every peer was ready. */
  startMs = 0;

  private constructor(
    readonly dir: string,
    readonly binary: string,
    readonly version: string,
    private readonly opts: ClusterOptions,
  ) {}

  static async start(opts: ClusterOptions = {}): Promise<Cluster> {
    const binary = opts.binary ?? (await ensurePeersBinary(opts.version));
    // Free ports are picked by binding port 0 and closing it; until a peer binds it, another
    // process's outgoing connection can take it from the same ephemeral range. Such a clash
    // (and only that) is retried with new ports; any other failure fails at once with its log.
    for (let attempt = 1; ; attempt++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-dra-e2e-'));
      const cluster = new Cluster(dir, binary, opts.version ?? 'default', opts);
      try {
        await cluster.boot();
        return cluster;
      } catch (err) {
        await cluster.stop();
        const portClash = err instanceof Error && err.message.includes('address already in use');
        if (!portClash || attempt >= 3) throw err;
        process.stderr.write(
          `[peers] port clash starting the control plane, retrying (${String(attempt)})\n`,
        );
      }
    }
  }

  /** The admin token (system:masters). */
  get adminToken(): string {
    return this.tokenFor('admin');
  }

  /** The driver identity's token. */
  get driverToken(): string {
    return this.tokenFor(this.opts.driverUser ?? DEFAULT_DRIVER_USER);
  }

  get driverUser(): string {
    return this.opts.driverUser ?? DEFAULT_DRIVER_USER;
  }

  /** Token of `system:node:<nodeName>`; the node must be in `nodeNames`. */
  nodeToken(nodeName: string): string {
    return this.tokenFor(`system:node:${nodeName}`);
  }

  tokenFor(user: string): string {
    const issued = this.tokens.get(user);
    if (issued === undefined) {
      throw new Error(
        `no token for user ${user}; known users: ${[...this.tokens.keys()].join(', ')} (tokens are static: pass nodeNames/extraUsers to Cluster.start)`,
      );
    }
    return issued.token;
  }

  /** Writes a kubeconfig that authenticates with `token` and returns its path. */
  makeKubeconfig(token: string, name = `kubeconfig-${crypto.randomBytes(4).toString('hex')}`): string {
    const file = path.join(this.dir, 'kubeconfigs', `${name}.yaml`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, this.kubeconfigText(token), { mode: 0o600 });
    return file;
  }

  /** A client-node KubeConfig that authenticates with `token`. */
  kubeConfigFor(token: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromString(this.kubeconfigText(token));
    return kc;
  }

  private kubeconfigText(token: string): string {
    // YAML, as kubectl writes it: every driver and CLI the tests start reads what users have.
    return stringify(
      {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'e2e', cluster: { server: this.apiserverUrl, 'certificate-authority-data': this.caData } },
        ],
        users: [{ name: 'e2e', user: { token } }],
        contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: 'e2e' } }],
        'current-context': 'e2e',
      },
      { lineWidth: 0 },
    );
  }

  private issueTokens(): string {
    const add = (user: string, groups: string[], token = randomToken()): void => {
      this.tokens.set(user, { user, groups, token });
    };
    add('admin', ['system:masters']);
    for (const node of this.opts.nodeNames ?? DEFAULT_NODE_NAMES) {
      add(`system:node:${node}`, ['system:nodes']);
    }
    const driverUser = this.driverUser;
    const saMatch = /^system:serviceaccount:([^:]+):/.exec(driverUser);
    add(
      driverUser,
      saMatch?.[1] !== undefined ? ['system:serviceaccounts', `system:serviceaccounts:${saMatch[1]}`] : [],
    );
    for (const extra of this.opts.extraUsers ?? []) {
      add(extra.name, extra.groups, extra.token);
    }
    const lines = [...this.tokens.values()].map(
      (t, i) => `${t.token},${csvField(t.user)},${csvField(`uid-${i}`)},${csvField(t.groups.join(','))}`,
    );
    const file = path.join(this.dir, 'tokens.csv');
    fs.writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
    return file;
  }

  private spawn(name: string, args: string[]): PeerProcess {
    // A restart keeps the readiness probe, so a peer can be restarted again.
    this.peerSpecs.set(name, { args, ready: this.peerSpecs.get(name)?.ready });
    const logDir = path.join(this.dir, 'logs');
    fs.mkdirSync(logDir, { recursive: true });
    const peer = spawnPeer({
      name,
      command: this.binary,
      args,
      logFile: path.join(logDir, `${name}.log`),
      cwd: this.dir,
    });
    this.peers.push(peer);
    return peer;
  }

  private async boot(): Promise<void> {
    const timeout = this.opts.readyTimeoutMs ?? 120_000;
    const started = Date.now();
    const tokenFile = this.issueTokens();

    // Service-account signing key (ECDSA P-256), as the apiserver's test server uses.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const saKey = path.join(this.dir, 'sa.key');
    const saPub = path.join(this.dir, 'sa.pub');
    fs.writeFileSync(saKey, privateKey.export({ format: 'pem', type: 'sec1' }), { mode: 0o600 });
    fs.writeFileSync(saPub, publicKey.export({ format: 'pem', type: 'spki' }));

    const [etcdPort, apiPort, schedPort, kcmPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    const etcdUrl = `http://127.0.0.1:${String(etcdPort)}`;

    const etcd = this.spawn('etcd', [
      'etcd',
      `--data-dir=${path.join(this.dir, 'etcd')}`,
      `--listen-client-url=${etcdUrl}`,
    ]);
    await waitUntilReady(
      etcd,
      'ready',
      async () => (await httpGet(`${etcdUrl}/health`)).body.includes('"health":"true"'),
      timeout,
    );

    const certDir = path.join(this.dir, 'apiserver-certs');
    const featureGates =
      this.opts.featureGates !== undefined ? [`--feature-gates=${this.opts.featureGates}`] : [];
    const apiserverCommand = [
      'apiserver',
      `--etcd-servers=${etcdUrl}`,
      `--etcd-prefix=/gpu-dra-e2e`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${String(apiPort)}`,
      `--cert-dir=${certDir}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      `--token-auth-file=${tokenFile}`,
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      // TaintNodesByCondition puts node.kubernetes.io/not-ready on every new Node and only the
      // node-lifecycle-controller removes it (the node itself may not touch its taints). That
      // controller is not run by default, so the taint is never added.
      ...(this.opts.keepNotReadyTaint === true ? [] : ['--disable-admission-plugins=TaintNodesByCondition']),
      '--enable-priority-and-fairness=false',
      '--profiling=false',
      '--endpoint-reconciler-type=none',
      ...featureGates,
      ...(this.opts.apiserverArgs ?? []),
    ];
    const apiserver = this.spawn('apiserver', apiserverCommand);
    this.apiserverUrl = `https://127.0.0.1:${String(apiPort)}`;
    const apiserverReady = async (): Promise<boolean> =>
      (await httpGet(`${this.apiserverUrl}/readyz`, this.adminToken)).status === 200;
    this.readyProbe('apiserver', 'ready (/readyz)', apiserverReady);
    await waitUntilReady(apiserver, 'ready (/readyz)', apiserverReady, timeout);
    const certFile = path.join(certDir, 'apiserver.crt');
    this.caData = Buffer.from(fs.readFileSync(certFile)).toString('base64');
    this.adminKubeconfigPath = this.makeKubeconfig(this.adminToken, 'admin');
    this.kubeConfig = this.kubeConfigFor(this.adminToken);

    const common = [
      '--leader-elect=false',
      `--kubeconfig=${this.adminKubeconfigPath}`,
      '--bind-address=127.0.0.1',
    ];
    const kcm = this.spawn('controller-manager', [
      'controller-manager',
      ...common,
      `--secure-port=${String(kcmPort)}`,
      `--cert-dir=${path.join(this.dir, 'kcm-certs')}`,
      `--controllers=${(this.opts.controllers ?? DEFAULT_CONTROLLERS).join(',')}`,
      '--authentication-skip-lookup=true',
      ...featureGates,
      ...(this.opts.controllerManagerArgs ?? []),
    ]);
    const scheduler = this.spawn('scheduler', [
      'scheduler',
      ...common,
      `--secure-port=${String(schedPort)}`,
      `--cert-dir=${path.join(this.dir, 'scheduler-certs')}`,
      ...featureGates,
      ...(this.opts.schedulerArgs ?? []),
    ]);
    await Promise.all([
      waitUntilReady(
        kcm,
        'healthy (/healthz)',
        async () => (await httpGet(`https://127.0.0.1:${String(kcmPort)}/healthz`)).status === 200,
        timeout,
      ),
      waitUntilReady(
        scheduler,
        'ready (/readyz)',
        async () => (await httpGet(`https://127.0.0.1:${String(schedPort)}/readyz`)).status === 200,
        timeout,
      ),
    ]);
    this.startMs = Date.now() - started;
    peersLog(`control plane ready in ${String(this.startMs)}ms (${this.apiserverUrl}, dir ${this.dir})`);
  }

  private readyProbe(name: string, what: string, probe: () => Promise<boolean>): void {
    const spec = this.peerSpecs.get(name);
    if (spec) spec.ready = { what, probe };
  }

  private livePeer(name: string): PeerProcess {
    const peer = this.peers.find((p) => p.name === name && p.exit === undefined);
    if (!peer) throw new Error(`no running peer ${name}; peers: ${this.peers.map((p) => p.name).join(', ')}`);
    return peer;
  }

  /**
   * Freezes a peer (SIGSTOP): its port still accepts connections and nothing answers on them,
   * as with a hung apiserver. resumePeer() thaws it; stopPeer() kills it frozen.
   */
  pausePeer(name: string): void {
    this.livePeer(name).child.kill('SIGSTOP');
  }

  resumePeer(name: string): void {
    this.livePeer(name).child.kill('SIGCONT');
  }

  /** Kills a peer at once (SIGKILL, as a crash): its port refuses connections until startPeer(). */
  async stopPeer(name: string): Promise<void> {
    const peer = this.livePeer(name);
    peer.child.kill('SIGKILL');
    await peer.exited;
  }

  /**
   * Starts a peer stopped by stopPeer() again with the same arguments (port, certificates, data)
   * and waits until it is ready. Only peers with a readiness probe (the apiserver) can restart.
   */
  async startPeer(name: string, timeoutMs = this.opts.readyTimeoutMs ?? 120_000): Promise<void> {
    const spec = this.peerSpecs.get(name);
    const ready = spec?.ready;
    if (!spec || !ready) throw new Error(`peer ${name} cannot be restarted (no readiness probe)`);
    if (this.peers.some((p) => p.name === name && p.exit === undefined))
      throw new Error(`peer ${name} is still running; stopPeer() it first`);
    const index = this.peers.findIndex((p) => p.name === name);
    const peer = this.spawn(name, spec.args);
    // The new process replaces the dead one in stop() and logs() (same log file, appended).
    if (index >= 0) this.peers.splice(index, 1);
    await waitUntilReady(peer, ready.what, ready.probe, timeoutMs);
  }

  /**
   * Stops the apiserver (SIGTERM, as a rolling control-plane upgrade does) and starts it again
   * with the same command line: same port, certificates, tokens and etcd, so every client's
   * kubeconfig stays valid and only its connections break. Resolves once /readyz answers 200;
   * returns when it was signalled, when it had exited (its clients' connections broke then) and
   * when the new one was ready (epoch ms).
   */
  async restartApiserver(): Promise<{ stoppedAt: number; exitedAt: number; readyAt: number }> {
    const old = this.peers.find((p) => p.name === 'apiserver' && p.exit === undefined);
    if (old === undefined) throw new Error('no running apiserver to restart');
    const stoppedAt = Date.now();
    await stopPeer(old);
    const exitedAt = Date.now();
    await this.startPeer('apiserver');
    return { stoppedAt, exitedAt, readyAt: Date.now() };
  }

  /**
   * Registers a process started against this cluster: stop() stops it before the control plane
   * and dumpLogs() includes its log.
   */
  attach(attachment: Attachment): void {
    this.attachments.push(attachment);
  }

  /** The last `lines` lines of every peer's (and attachment's) log, with its exit state. */
  logs(lines = 60): string {
    return [
      ...this.peers.map(
        (p) => `===== ${p.name} (${describeExit(p)}) ${p.logFile}\n${tailFile(p.logFile, lines)}`,
      ),
      ...this.attachments.map((a) => a.logs(lines)),
    ].join('\n');
  }

  /** Prints the tail of each peer's log to stderr. Tests call this when they fail. */
  dumpLogs(lines = 60): void {
    process.stderr.write(`${this.logs(lines)}\n`);
  }

  /** Kills every peer (scheduler and controller-manager first, etcd last) and removes the temp dir. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.attachments.map((a) => a.stop()));
    // A peer a test left frozen would hold SIGTERM pending until the SIGKILL grace ran out.
    for (const p of this.peers) if (p.exit === undefined) p.child.kill('SIGCONT');
    const order = ['scheduler', 'controller-manager', 'apiserver', 'etcd'];
    for (const name of order) {
      await Promise.all(this.peers.filter((p) => p.name === name).map((p) => stopPeer(p)));
    }
    await Promise.all(this.peers.map((p) => stopPeer(p)));
    if (process.env['GPU_DRA_KEEP_TMP'] === '1') {
      peersLog(`keeping ${this.dir} (GPU_DRA_KEEP_TMP=1)`);
      return;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  return Cluster.start(opts);
}
