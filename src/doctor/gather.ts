/**
 * The I/O half of `gpu-dra doctor`: reads the node (NVML, /proc, /dev, the CDI directory, the
 * checkpoint, the container runtime's config), asks the running plugin over its admin socket
 * and, given a kubeconfig, the apiserver. Read-only: nothing here writes, moves or repairs
 * (unlike the plugin's checkpoint load, which quarantines a bad file). Each source failing is a
 * fact for the checks (./checks.ts), never an exception.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CdiStore } from '../cdi/store.js';
import { readCharDeviceMajors } from '../cdi/host.js';
import { claimUidOfSpecFile, validateCdiSpec } from '../cdi/spec.js';
import { CHECKPOINT_FILE, CHECKPOINT_VERSION, checkpointSchema } from '../checkpoint/schema.js';
import { adminSocketPath, fetchAdminStatus } from '../node/adminSocket.js';
import { discoverInventory } from '../nvml/discover.js';
import { NvmlError, NvmlLibraryNotFoundError } from '../nvml/errors.js';
import type { NodeInventory } from '../nvml/types.js';
import type { MigPartitioning } from '../resourceslice/partitions.js';
import { kubeSliceClient } from '../resourceslice/sliceApi.js';
import { errorMessage } from '../util/errors.js';
import { underRoot, type HostPaths } from '../util/hostPaths.js';
import type {
  CdiFact,
  CdiSpecFact,
  CheckpointFact,
  DeviceNodesFact,
  DoctorFacts,
  KernelModuleFact,
  NodeFileFact,
  NvmlFact,
  PluginFact,
  RuntimeConfigFact,
  SlicesFact,
} from './checks.js';
import { parseKernelModuleVersion } from './checks.js';
import { containerdImports, mergeTomlKeys, parseTomlKeys, type TomlKeys } from './runtimeConfig.js';

export interface DoctorOptions {
  readonly driverName: string;
  readonly nodeName?: string | undefined;
  readonly kubeconfig?: string | undefined;
  readonly kubeletPluginsDir: string;
  readonly cdiRoot: string;
  readonly nvmlLib?: string | undefined;
  readonly hostPaths: HostPaths;
  readonly migPartitioning: MigPartitioning;
  /** The host's `/` as the doctor sees it; runtime config paths are below it. */
  readonly hostRoot: string;
  readonly containerdConfig: string;
  readonly crioConfig: string;
  /** How long to wait for the plugin and the apiserver. */
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

function gatherNvml(opts: DoctorOptions): NvmlFact {
  try {
    return { ok: true, inventory: discoverInventory({ nvmlLib: opts.nvmlLib, hostPaths: opts.hostPaths }) };
  } catch (err) {
    const code =
      err instanceof NvmlError
        ? err.returnName
        : err instanceof NvmlLibraryNotFoundError
          ? 'LIBRARY_NOT_FOUND'
          : undefined;
    return { ok: false, error: errorMessage(err), code };
  }
}

function gatherKernelModule(hostPaths: HostPaths): KernelModuleFact {
  const file = underRoot(hostPaths.procRoot, 'driver', 'nvidia', 'version');
  try {
    const version = parseKernelModuleVersion(fs.readFileSync(file, 'utf8'));
    return version ? { file, version } : { file, error: 'no NVRM version line' };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      file,
      error: code === 'ENOENT' ? 'missing: the nvidia kernel module is not loaded' : errorMessage(err),
    };
  }
}

function nodeFact(hostPath: string): NodeFileFact {
  let st: fs.Stats;
  try {
    st = fs.statSync(hostPath);
  } catch {
    return { hostPath, exists: false };
  }
  if (!st.isCharacterDevice()) return { hostPath, exists: true };
  // Linux dev_t encoding, as src/cdi/host.ts decodes it.
  const major = ((st.rdev >>> 8) & 0xfff) | (Math.floor(st.rdev / 2 ** 32) & ~0xfff);
  const minor = (st.rdev & 0xff) | ((st.rdev >>> 12) & 0xfff00);
  return { hostPath, exists: true, rdev: { major, minor } };
}

function gatherDeviceNodes(hostPaths: HostPaths, inventory: NodeInventory): DeviceNodesFact {
  const names = [...inventory.gpus.map((g) => `nvidia${String(g.minor)}`), 'nvidiactl', 'nvidia-uvm'];
  const nodes = Object.fromEntries(
    names.map((n) => [`/dev/${n}`, nodeFact(underRoot(hostPaths.devRoot, n))]),
  );
  return { nodes, majors: Object.fromEntries(readCharDeviceMajors(hostPaths)) };
}

/** Why `dir` is not writable, or undefined; a missing one counts by its nearest parent (the plugin creates it). */
function notWritable(dir: string): string | undefined {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      fs.accessSync(d, fs.constants.W_OK);
      return undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' || d === path.dirname(d)) return `${d}: ${errorMessage(err)}`;
    }
  }
}

function gatherCheckpoint(file: string): CheckpointFact {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { file, status: 'missing', claims: {} };
    return { file, status: 'invalid', error: errorMessage(err), claims: {} };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { file, status: 'invalid', error: `invalid JSON: ${errorMessage(err)}`, claims: {} };
  }
  const parsed = checkpointSchema.safeParse(raw);
  if (!parsed.success) return { file, status: 'invalid', error: parsed.error.message, claims: {} };
  if (parsed.data.minReaderVersion > CHECKPOINT_VERSION)
    return {
      file,
      status: 'invalid',
      error: `written for readers of version ${String(parsed.data.minReaderVersion)}; this gpu-dra reads ${String(CHECKPOINT_VERSION)}`,
      claims: {},
    };
  const claims = Object.fromEntries(
    Object.entries(parsed.data.claims).map(([uid, c]) => [
      uid,
      { state: c.state, ...(c.cdiSpecFile ? { cdiSpecFile: c.cdiSpecFile } : {}) },
    ]),
  );
  const { rebuild } = parsed.data;
  return {
    file,
    status: 'ok',
    claims,
    ...(rebuild
      ? { rebuild: { reason: rebuild.reason, movedTo: rebuild.movedTo, since: rebuild.since } }
      : {}),
  };
}

async function gatherCdi(opts: DoctorOptions): Promise<CdiFact> {
  const root = opts.cdiRoot;
  const store = new CdiStore(root, opts.driverName);
  const specs: CdiSpecFact[] = [];
  let names: string[] = [];
  let unlisted: string | undefined;
  try {
    names = await store.list();
  } catch (err) {
    unlisted = `cannot list ${root}: ${errorMessage(err)}`;
  }
  for (const file of names) {
    const uid = claimUidOfSpecFile(opts.driverName, file);
    const base = { file: path.join(root, file), ...(uid ? { claimUid: uid } : {}) };
    let raw: unknown;
    try {
      raw = JSON.parse((await store.read(file)) ?? 'null');
    } catch (err) {
      specs.push({ ...base, problems: [`does not parse: ${errorMessage(err)}`] });
      continue;
    }
    specs.push({ ...base, problems: validateCdiSpec(raw, opts.driverName, file) });
  }
  const why = notWritable(root);
  const checkpoint = gatherCheckpoint(
    path.join(path.resolve(opts.kubeletPluginsDir, opts.driverName), CHECKPOINT_FILE),
  );
  return { root, ...(why ? { notWritable: why } : {}), ...(unlisted ? { unlisted } : {}), specs, checkpoint };
}

/** The files a `*` in a path's last segment names, sorted; the path itself when it has none. */
function expand(pattern: string): string[] {
  const base = path.basename(pattern);
  if (!base.includes('*')) return [pattern];
  const re = new RegExp(`^${base.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
  try {
    return fs
      .readdirSync(path.dirname(pattern))
      .filter((n) => re.test(n))
      .sort()
      .map((n) => path.join(path.dirname(pattern), n));
  } catch {
    return [];
  }
}

function readToml(file: string, unreadable: string[]): TomlKeys | undefined {
  try {
    return parseTomlKeys(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') unreadable.push(`${file}: ${errorMessage(err)}`);
    return undefined;
  }
}

function gatherRuntimes(opts: DoctorOptions): RuntimeConfigFact[] {
  const out: RuntimeConfigFact[] = [];
  const host = (p: string): string => underRoot(opts.hostRoot, p);
  const unreadableContainerd: string[] = [];
  const containerd = host(opts.containerdConfig);
  const main = readToml(containerd, unreadableContainerd);
  if (main) {
    const docs: TomlKeys[] = [main];
    const files = [containerd];
    for (const imp of containerdImports(main)) {
      // Relative imports are relative to the main file's directory, as containerd resolves them.
      const onHost = path.isAbsolute(imp) ? imp : path.join(path.dirname(opts.containerdConfig), imp);
      for (const f of expand(host(onHost))) {
        const doc = readToml(f, unreadableContainerd);
        if (doc) {
          docs.push(doc);
          files.push(f);
        }
      }
    }
    out.push({ runtime: 'containerd', files, keys: mergeTomlKeys(docs), unreadable: unreadableContainerd });
  }
  const unreadableCrio: string[] = [];
  const crio = host(opts.crioConfig);
  const crioFiles = [crio, ...expand(path.join(`${crio}.d`, '*.conf'))];
  const crioDocs = crioFiles
    .map((f) => [f, readToml(f, unreadableCrio)] as const)
    .filter(([, d]) => d !== undefined);
  if (crioDocs.length > 0)
    out.push({
      runtime: 'CRI-O',
      files: crioDocs.map(([f]) => f),
      keys: mergeTomlKeys(crioDocs.map(([, d]) => d as TomlKeys)),
      unreadable: unreadableCrio,
    });
  return out;
}

async function gatherPlugin(opts: DoctorOptions): Promise<PluginFact> {
  const socket = adminSocketPath(opts.kubeletPluginsDir, opts.driverName);
  try {
    const status = await fetchAdminStatus(socket, opts.timeoutMs);
    const socketsOnDisk = Object.fromEntries(
      Object.values(status.sockets).map((s) => {
        try {
          return [s, fs.lstatSync(s).isSocket()];
        } catch {
          return [s, false];
        }
      }),
    );
    return { socket, status, socketsOnDisk };
  } catch (err) {
    return { socket, error: errorMessage(err) };
  }
}

async function gatherSlices(opts: DoctorOptions): Promise<SlicesFact> {
  const env = opts.env ?? process.env;
  if (!opts.nodeName)
    return { skipped: 'no --node-name (NODE_NAME): which node’s slices to compare is unknown' };
  if (!opts.kubeconfig && !env['KUBERNETES_SERVICE_HOST'])
    return { skipped: 'no --kubeconfig and not in a cluster: the published slices were not compared' };
  try {
    const kube = opts.kubeconfig
      ? await (await import('../kube/kubeconfig.js')).loadKubeconfigClient(opts.kubeconfig)
      : (await import('../kube/client.js')).createKubeClient(
          (await import('../kube/config.js')).loadInClusterConfig(),
        );
    const { items } = await kubeSliceClient(kube).list(
      `spec.nodeName=${opts.nodeName},spec.driver=${opts.driverName}`,
    );
    const devices = items
      .filter((s) => s.spec.driver === opts.driverName && s.spec.nodeName === opts.nodeName)
      .flatMap((s) => s.spec.devices ?? [])
      .map((d) => ({
        name: d.name,
        taints: (d.taints ?? []).map((t) => ({
          key: t.key,
          effect: t.effect,
          ...(t.value === undefined ? {} : { value: t.value }),
        })),
      }));
    return { devices };
  } catch (err) {
    return { error: errorMessage(err) };
  }
}

/** Everything the checks read, gathered once. */
export async function gatherFacts(opts: DoctorOptions): Promise<DoctorFacts> {
  const nvml = gatherNvml(opts);
  const [cdi, plugin, slices] = await Promise.all([gatherCdi(opts), gatherPlugin(opts), gatherSlices(opts)]);
  return {
    driverName: opts.driverName,
    migPartitioning: opts.migPartitioning,
    nvml,
    kernelModule: gatherKernelModule(opts.hostPaths),
    ...(nvml.ok ? { deviceNodes: gatherDeviceNodes(opts.hostPaths, nvml.inventory) } : {}),
    cdi,
    runtimes: gatherRuntimes(opts),
    runtimeConfigPaths: [
      underRoot(opts.hostRoot, opts.containerdConfig),
      underRoot(opts.hostRoot, opts.crioConfig),
    ],
    plugin,
    slices,
  };
}
