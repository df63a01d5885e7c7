/**
 * CDI naming and the pure per-claim spec builder. No I/O: what exists on the host (driver
 * files, device-node numbers) is passed in, so the output is deterministic and golden-tested.
 *
 * Naming (all derived from the driver name and the validated claim UID, never from the
 * claim's name or namespace):
 * - kind:      `k8s.<driver>/claim`
 * - device:    `<claimUID>-<deviceName>`, qualified `k8s.<driver>/claim=<claimUID>-<deviceName>`;
 *              a share of a device (consumable capacity) `<claimUID>-<deviceName>-share-<id>`,
 *              `<id>` the first 8 of the share ID's lowercase letters and digits, so two shares
 *              of one device in one claim are two CDI devices. A share's CDI device also sets
 *              `GPU_DRA_MEMORY_LIMIT_<DEVICE>` (`gpu-0` → `GPU_0`) to the bytes it holds.
 * - spec file: `k8s.<driver>-claim_<claimUID>.json` (CDI's transient-spec naming)
 *
 * Layout of a claim's spec: each CDI device carries its own device nodes (the GPU's
 * `/dev/nvidia<minor>`, or a MIG device's parent node and GI/CI access caps) and its own env
 * entry `GPU_DRA_DEVICE_<NAME>=<uuid>` (see {@link deviceEnvKey}). What every device shares goes
 * into the spec-level containerEdits, which CDI applies whenever any device of the spec is
 * injected: control nodes (`/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`),
 * read-only mounts of the driver's user-space files, the ldcache hook, and the env that is the
 * same for every claim on the node (`NVIDIA_VISIBLE_DEVICES=void`, the driver-file env).
 *
 * Why per-device keys: CDI merges env by key, later entries winning, across all the specs a
 * container's devices come from. A per-claim list under one key (a comma-joined UUID list, the
 * claim's UID) would show a container that uses two claims only the last claim's value. Keys
 * named after the device never collide across claims (device names are unique on a node), and
 * two claims sharing one device (time-slicing) write the same value; spec-level entries are
 * identical in every claim, so merging them is harmless.
 *
 * `void`, as NVIDIA's driver and `nvidia-ctk cdi generate` write it: CDI has already injected
 * the devices, and the variable is read only by NVIDIA's container runtime, which given GPU IDs
 * would inject them a second time (legacy hook) or, in its `cdi` mode, ask for
 * `nvidia.com/gpu=<id>` devices that a node without nvidia-ctk's spec cannot resolve, failing
 * the container. `void` also overrides an image's `NVIDIA_VISIBLE_DEVICES=all`. CUDA itself
 * never reads it; the UUIDs are in `GPU_DRA_DEVICE_<NAME>` for the workload's information.
 */
import path from 'node:path';
import { underRoot, type HostPaths } from '../util/hostPaths.js';
import { isValidClaimUid } from '../util/kubeNames.js';
import type { GpuDevice, MigDevice } from '../nvml/types.js';
import { naturalCompare } from '../util/naturalCompare.js';
import { GpuDraError } from '../util/errors.js';

export const CDI_VERSION = '0.6.0';
export const CDI_CLASS = 'claim';

export interface CdiDeviceNode {
  path: string;
  hostPath?: string;
  type?: 'c' | 'b';
  major?: number;
  minor?: number;
  /** Mode of a node the runtime creates; unset, it copies the host node's. */
  fileMode?: number;
}
export interface CdiMount {
  hostPath: string;
  containerPath: string;
  options?: string[];
}
export interface CdiHook {
  hookName: string;
  path: string;
  args?: string[];
  env?: string[];
}
export interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
  mounts?: CdiMount[];
  hooks?: CdiHook[];
}
export interface CdiDevice {
  name: string;
  containerEdits: CdiContainerEdits;
}
export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  /** Spec-level annotations (CDI 0.6.0 on): the claim's identity, see {@link claimAnnotations}. */
  annotations?: Record<string, string>;
  devices: CdiDevice[];
  containerEdits?: CdiContainerEdits;
}

/** The NVIDIA driver's user-space files found under the driver root, as container paths. */
export interface DriverFiles {
  /** e.g. `/usr/lib/x86_64-linux-gnu/libcuda.so.580.105.08`. */
  readonly libraries: readonly string[];
  readonly binaries: readonly string[];
  /** GSP firmware directories, e.g. `/lib/firmware/nvidia/580.105.08`. */
  readonly firmware: readonly string[];
  /** `nvidia-cdi-hook` (preferred) or `nvidia-ctk`, when present. */
  readonly hook?: { readonly path: string; readonly kind: 'nvidia-cdi-hook' | 'nvidia-ctk' };
}

export const NO_DRIVER_FILES: DriverFiles = Object.freeze({ libraries: [], binaries: [], firmware: [] });

/** Character-device numbers of a host device node, when it is a real one. */
export interface DeviceNodeInfo {
  readonly type: 'c' | 'b';
  readonly major: number;
  readonly minor: number;
  /**
   * False for a MIG access cap with no node on the host (one NVML just made): the runtime
   * creates it in the container from its numbers, so the spec names no host path.
   */
  readonly onHost?: false;
}

export function cdiVendor(driverName: string): string {
  return `k8s.${driverName}`;
}
export function cdiKind(driverName: string): string {
  return `${cdiVendor(driverName)}/${CDI_CLASS}`;
}
export function cdiDeviceName(claimUid: string, deviceName: string): string {
  return `${claimUid}-${deviceName}`;
}
/** `-share-<id>` for a share ID: its lowercase letters and digits, the first `length` of them. */
export function shareSuffix(shareId: string, length = 8): string {
  return `-share-${shareId
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, length)}`;
}
/** How {@link ClaimCdiSpec.cdiIds} names a device of the claim: its name, plus its share ID. */
export function claimDeviceKey(d: {
  readonly deviceName: string;
  readonly shareId?: string | undefined;
}): string {
  return d.shareId ? `${d.deviceName}/${d.shareId}` : d.deviceName;
}
export function qualifiedCdiId(driverName: string, claimUid: string, deviceName: string): string {
  return `${cdiKind(driverName)}=${cdiDeviceName(claimUid, deviceName)}`;
}
/** Prefix shared by every spec file this driver writes (used by the orphan sweep). */
export function claimSpecFilePrefix(driverName: string): string {
  return `${cdiVendor(driverName)}-${CDI_CLASS}_`;
}
export function claimSpecFileName(driverName: string, claimUid: string): string {
  return `${claimSpecFilePrefix(driverName)}${claimUid}.json`;
}

export interface CdiClaimDevice {
  readonly deviceName: string;
  readonly device: GpuDevice | MigDevice;
  /** Set for a share of a device (consumable capacity): the share gets a CDI device of its own. */
  readonly shareId?: string | undefined;
  /** The share's memory, in bytes: its limit, told to the container. */
  readonly consumedMemoryBytes?: number | undefined;
}

export interface ClaimCdiInput {
  readonly driverName: string;
  readonly claimUid: string;
  readonly devices: readonly CdiClaimDevice[];
  readonly hostPaths: Pick<HostPaths, 'devRoot' | 'driverRoot' | 'hostDriverRoot'>;
  readonly driverFiles: DriverFiles;
  /** The host driver's version (NVML), for the CUDA forward-compatibility hook. */
  readonly driverVersion: string;
  /** Keyed by container path (`/dev/nvidia0`); absent entries get no type/major/minor. */
  readonly nodeInfo?: ReadonlyMap<string, DeviceNodeInfo>;
  /**
   * Extra edits per device name (an MPS daemon's pipes and /dev/shm): on the device, not the
   * spec, because two devices of one claim may be served by different daemons.
   */
  readonly deviceEdits?: ReadonlyMap<string, CdiContainerEdits>;
  /** The claim's namespace and name, written into the spec (see {@link claimAnnotations}). */
  readonly claim?: { readonly namespace: string; readonly name: string };
}

export interface ClaimCdiSpec {
  readonly spec: CdiSpec;
  readonly fileName: string;
  /** {@link claimDeviceKey} (the device name, for a device that is not a share) → fully qualified CDI id. */
  readonly cdiIds: ReadonlyMap<string, string>;
}

export const CONTROL_NODES: readonly string[] = Object.freeze([
  '/dev/nvidiactl',
  '/dev/nvidia-uvm',
  '/dev/nvidia-uvm-tools',
]);

const RO_BIND = ['ro', 'nosuid', 'nodev', 'bind'];

function node(containerPath: string, input: Pick<ClaimCdiInput, 'hostPaths' | 'nodeInfo'>): CdiDeviceNode {
  const hostPath = underRoot(input.hostPaths.devRoot, containerPath.replace(/^\/dev\//, ''));
  const info = input.nodeInfo?.get(containerPath);
  if (!info) return { path: containerPath, hostPath };
  const numbers = { type: info.type, major: info.major, minor: info.minor };
  // A MIG access cap the kernel module lists but no host node backs is made read-only, as the
  // module makes it (/proc/driver/nvidia/capabilities: DeviceFileMode 292, 0444).
  return info.onHost === false
    ? { path: containerPath, ...numbers, fileMode: 0o444 }
    : { path: containerPath, hostPath, ...numbers };
}

/** Device nodes of one device (container paths). */
export function deviceNodePaths(device: GpuDevice | MigDevice): string[] {
  if (device.kind === 'gpu') return [`/dev/nvidia${device.minor}`];
  const paths = [`/dev/nvidia${device.parentMinor}`];
  if (device.accessCaps) {
    paths.push(
      `/dev/nvidia-caps/nvidia-cap${device.accessCaps.gi}`,
      `/dev/nvidia-caps/nvidia-cap${device.accessCaps.ci}`,
    );
  }
  return paths;
}

/**
 * Every device node a claim's spec will reference (its devices' nodes and the control nodes),
 * with host paths but no numbers: what the caller inspects on the host before the one build.
 */
export function claimDeviceNodes(input: Pick<ClaimCdiInput, 'devices' | 'hostPaths'>): CdiDeviceNode[] {
  const paths = new Set(input.devices.flatMap((d) => deviceNodePaths(d.device)));
  for (const p of CONTROL_NODES) paths.add(p);
  return [...paths].map((p) => node(p, input));
}

function ldcacheFolders(libraries: readonly string[]): string[] {
  return [...new Set(libraries.map((lib) => path.posix.dirname(lib)))].sort();
}

function commonEdits(input: ClaimCdiInput): CdiContainerEdits {
  const files = driverFileEdits(input);
  return {
    // Only values identical in every claim: CDI merges env by key across specs.
    env: ['NVIDIA_VISIBLE_DEVICES=void', ...files.env],
    deviceNodes: CONTROL_NODES.map((p) => node(p, input)),
    ...(files.mounts.length > 0 ? { mounts: files.mounts } : {}),
    ...(files.hooks.length > 0 ? { hooks: files.hooks } : {}),
  };
}

/**
 * The env key naming one device, `GPU_DRA_DEVICE_<NAME>`: the device name uppercased, every
 * character other than a letter or digit turned into `_` (`gpu-1-mig-1g10gb-19-0` →
 * `GPU_DRA_DEVICE_GPU_1_MIG_1G10GB_19_0`), so it is a portable shell variable name. Keyed by
 * device, not claim, so that a container using several claims sees every device (CDI merges env
 * by key). Device names are DNS labels, unique on a node, and map to distinct keys.
 */
export function deviceEnvKey(deviceName: string): string {
  return `GPU_DRA_DEVICE_${envSuffix(deviceName)}`;
}

/** `GPU_DRA_MEMORY_LIMIT_<NAME>`: a share's memory in bytes (consumable capacity), keyed as above. */
export function memoryLimitEnvKey(deviceName: string): string {
  return `GPU_DRA_MEMORY_LIMIT_${envSuffix(deviceName)}`;
}

function envSuffix(deviceName: string): string {
  return deviceName.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

interface DriverFileEdits {
  readonly key: string;
  readonly env: readonly string[];
  readonly mounts: CdiMount[];
  readonly hooks: CdiHook[];
}

/**
 * One scan of the driver root serves many prepares (driver/state.ts), and so do the edits built
 * from it: memoized per scan result, for the same host root and driver version. Frozen, since
 * every spec built from the scan shares them.
 */
const driverFileEditsCache = new WeakMap<DriverFiles, DriverFileEdits>();

function driverFileEdits(input: ClaimCdiInput): DriverFileEdits {
  // Mount sources and the hook are resolved by the runtime on the host, not in our container.
  const hostDriverRoot = input.hostPaths.hostDriverRoot ?? input.hostPaths.driverRoot;
  const key = `${hostDriverRoot}\0${input.driverVersion ?? ''}`;
  const cached = driverFileEditsCache.get(input.driverFiles);
  if (cached?.key === key) return cached;

  const { libraries, binaries, firmware, hook } = input.driverFiles;
  const mounts = [...new Set([...libraries, ...binaries, ...firmware])].sort().map((containerPath) => ({
    hostPath: underRoot(hostDriverRoot, containerPath),
    containerPath,
    options: [...RO_BIND],
  }));
  const env: string[] = [];
  let hooks: CdiHook[] = [];
  const folders = ldcacheFolders(libraries);
  if (hook && folders.length > 0) {
    const libcuda = libraries.find((l) => /\/libcuda\.so\.\d+\.\d+(\.\d+)?$/.test(l));
    const libcudaDir = libcuda === undefined ? undefined : path.posix.dirname(libcuda);
    if (libcudaDir !== undefined) env.push(`NVIDIA_CTK_LIBCUDA_DIR=${libcudaDir}`);
    hooks = driverHooks(input, folders, libcudaDir).map((args) => ({
      hookName: 'createContainer',
      path: underRoot(hostDriverRoot, hook.path),
      args: [...(hook.kind === 'nvidia-ctk' ? ['nvidia-ctk', 'hook'] : ['nvidia-cdi-hook']), ...args],
      env: ['NVIDIA_CTK_DEBUG=false'],
    }));
  }
  const edits: DriverFileEdits = deepFreeze({ key, env, mounts, hooks });
  driverFileEditsCache.set(input.driverFiles, edits);
  return edits;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * The nvidia-cdi-hook calls a CUDA container needs, in the order NVIDIA's toolkit emits them:
 * the `libcuda.so` development link many programs dlopen, the CUDA forward-compatibility
 * libraries an image may bring for a newer CUDA than the host driver, the linker cache for the
 * mounted libraries, and a guard that stops the driver inside the container from re-creating
 * device nodes the claim did not get.
 */
function driverHooks(
  input: ClaimCdiInput,
  folders: readonly string[],
  libcudaDir: string | undefined,
): string[][] {
  return [
    ...(libcudaDir === undefined
      ? []
      : [['create-symlinks', '--link', `libcuda.so.1::${path.posix.join(libcudaDir, 'libcuda.so')}`]]),
    ['enable-cuda-compat', ...(input.driverVersion ? [`--host-driver-version=${input.driverVersion}`] : [])],
    ['update-ldcache', ...folders.flatMap((f) => ['--folder', f])],
    ['disable-device-node-modification'],
  ];
}

/**
 * The CDI device names of a claim's devices, by {@link claimDeviceKey}. A share is named by the
 * first 8 characters of its ID; should two shares of one device agree on those, the later (in
 * ID order) takes its whole ID, so they stay two devices.
 */
function cdiNames(claimUid: string, devices: readonly CdiClaimDevice[]): Map<string, string> {
  const names = new Map<string, string>();
  const taken = new Set<string>();
  for (const d of devices) {
    let name = cdiDeviceName(claimUid, d.deviceName);
    if (d.shareId) {
      const short = name + shareSuffix(d.shareId);
      name = taken.has(short) ? name + shareSuffix(d.shareId, Infinity) : short;
      if (taken.has(name) || name.endsWith('-share-'))
        throw new GpuDraError(
          'CDI_SPEC_INVALID',
          `share ID ${JSON.stringify(d.shareId)} of ${d.deviceName} gives no distinct CDI device name`,
          {
            claimUid,
          },
        );
    }
    taken.add(name);
    names.set(claimDeviceKey(d), name);
  }
  return names;
}

/**
 * Builds the claim's CDI spec. Devices are sorted by name (natural order; shares of a device by
 * share ID) and de-duplicated (a device listed by two results of one claim is one CDI device,
 * each share of it one more), so the same claim always gives the same bytes.
 */
export function buildClaimCdiSpec(input: ClaimCdiInput): ClaimCdiSpec {
  if (!isValidClaimUid(input.claimUid))
    throw new GpuDraError('CLAIM_UID_INVALID', `invalid claim UID ${JSON.stringify(input.claimUid)}`);
  // CDI rejects a spec without devices ("invalid spec, no devices"): never write one.
  if (input.devices.length === 0)
    throw new GpuDraError('CDI_SPEC_INVALID', `claim ${input.claimUid} has no devices to put in a CDI spec`, {
      claimUid: input.claimUid,
    });
  const byKey = new Map<string, CdiClaimDevice>();
  for (const d of input.devices) byKey.set(claimDeviceKey(d), d);
  const devices = [...byKey.values()].sort(
    (a, b) => naturalCompare(a.deviceName, b.deviceName) || naturalCompare(a.shareId ?? '', b.shareId ?? ''),
  );
  const names = cdiNames(input.claimUid, devices);

  const cdiIds = new Map<string, string>();
  const cdiDevices: CdiDevice[] = devices.map((d) => {
    const name = names.get(claimDeviceKey(d)) ?? '';
    cdiIds.set(claimDeviceKey(d), `${cdiKind(input.driverName)}=${name}`);
    const nodes = deviceNodePaths(d.device).map((p) => node(p, input));
    const extra = input.deviceEdits?.get(d.deviceName);
    // CDI merges env by key: the key names the device, so devices (and shares of two GPUs) of
    // several claims in one container do not collide. Two shares of one GPU given to one
    // container (rare: two requests of one claim) leave the value of one of them: too low
    // rather than too high, the safe side for a limit.
    const env = [
      `${deviceEnvKey(d.deviceName)}=${d.device.uuid}`,
      ...(d.shareId && d.consumedMemoryBytes !== undefined
        ? [`${memoryLimitEnvKey(d.deviceName)}=${String(d.consumedMemoryBytes)}`]
        : []),
      ...(extra?.env ?? []),
    ];
    return {
      name,
      containerEdits: {
        env,
        deviceNodes: nodes,
        ...(extra?.mounts ? { mounts: structuredClone(extra.mounts) } : {}),
      },
    };
  });
  const containerEdits = commonEdits(input);

  const annotations =
    input.claim && input.claim.namespace && input.claim.name
      ? claimAnnotations(input.driverName, { uid: input.claimUid, ...input.claim })
      : undefined;
  return {
    spec: {
      cdiVersion: CDI_VERSION,
      kind: cdiKind(input.driverName),
      ...(annotations ? { annotations } : {}),
      devices: cdiDevices,
      containerEdits,
    },
    fileName: claimSpecFileName(input.driverName, input.claimUid),
    cdiIds,
  };
}

/**
 * Annotations naming the claim a spec was written for. The plugin may only GET claims (no list,
 * deploy/rbac.yaml), so when its checkpoint is lost these are how it finds each prepared claim
 * in the API again (DeviceState's rebuild). Spec-level annotations exist from CDI 0.6.0 on, the
 * version we write anyway; runtimes ignore them. Keys are qualified names under the driver's
 * name, as CDI requires of annotation keys.
 */
export function claimAnnotations(
  driverName: string,
  claim: { readonly uid: string; readonly namespace: string; readonly name: string },
): Record<string, string> {
  return {
    [`${driverName}/claim-namespace`]: claim.namespace,
    [`${driverName}/claim-name`]: claim.name,
    [`${driverName}/claim-uid`]: claim.uid,
  };
}

/** The claim a spec names in its annotations ({@link claimAnnotations}); undefined if it names none. */
export function claimOfSpec(
  raw: unknown,
  driverName: string,
): { readonly uid: string; readonly namespace: string; readonly name: string } | undefined {
  const annotations =
    typeof raw === 'object' && raw !== null ? (raw as { annotations?: unknown }).annotations : undefined;
  if (typeof annotations !== 'object' || annotations === null) return undefined;
  const get = (key: string): string | undefined => {
    const v = (annotations as Record<string, unknown>)[`${driverName}/${key}`];
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const [uid, namespace, name] = [get('claim-uid'), get('claim-namespace'), get('claim-name')];
  return uid && namespace && name ? { uid, namespace, name } : undefined;
}

/** Stable serialization (2-space JSON + newline); CDI reads `.json` specs. */
export function serializeCdiSpec(spec: CdiSpec): string {
  return `${JSON.stringify(spec, null, 2)}\n`;
}

/** The claim UID a spec file of this driver is named after; undefined for any other name. */
export function claimUidOfSpecFile(driverName: string, fileName: string): string | undefined {
  const prefix = claimSpecFilePrefix(driverName);
  if (!fileName.startsWith(prefix) || !fileName.endsWith('.json')) return undefined;
  const uid = fileName.slice(prefix.length, -'.json'.length);
  return isValidClaimUid(uid) ? uid : undefined;
}

/** CDI device names: letters, digits, `-`, `_`, `.`, `:`, starting with a letter or digit. */
const CDI_DEVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

/**
 * What is wrong with one of this driver's spec files, as a container runtime would see it
 * (the CDI library refuses the whole spec for any of these), plus what only this driver
 * promises: its kind, and device names that start with the claim UID of the file name. Pure;
 * an empty list means valid.
 */
export function validateCdiSpec(raw: unknown, driverName: string, fileName: string): string[] {
  const problems: string[] = [];
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(raw)) return ['not a JSON object'];
  if (typeof raw['cdiVersion'] !== 'string' || !/^\d+\.\d+\.\d+$/.test(raw['cdiVersion']))
    problems.push(`cdiVersion ${JSON.stringify(raw['cdiVersion'])} is not a version such as ${CDI_VERSION}`);
  if (raw['kind'] !== cdiKind(driverName))
    problems.push(`kind ${JSON.stringify(raw['kind'])} is not ${JSON.stringify(cdiKind(driverName))}`);
  const uid = claimUidOfSpecFile(driverName, fileName);
  if (uid === undefined) problems.push(`file name ${JSON.stringify(fileName)} names no claim UID`);
  const editProblems = (edits: unknown, where: string): void => {
    if (edits === undefined) return;
    if (!isObject(edits)) {
      problems.push(`${where}: containerEdits is not an object`);
      return;
    }
    const list = (key: string): unknown[] => {
      const v = edits[key];
      if (v === undefined) return [];
      if (Array.isArray(v)) return v;
      problems.push(`${where}: ${key} is not a list`);
      return [];
    };
    for (const e of list('env'))
      if (typeof e !== 'string' || !e.includes('='))
        problems.push(`${where}: env entry ${JSON.stringify(e)} is not KEY=value`);
    for (const n of list('deviceNodes'))
      if (!isObject(n) || typeof n['path'] !== 'string' || !path.posix.isAbsolute(n['path']))
        problems.push(`${where}: a device node has no absolute path`);
    for (const m of list('mounts'))
      if (!isObject(m) || typeof m['hostPath'] !== 'string' || typeof m['containerPath'] !== 'string')
        problems.push(`${where}: a mount lacks hostPath or containerPath`);
    for (const h of list('hooks'))
      if (!isObject(h) || typeof h['hookName'] !== 'string' || typeof h['path'] !== 'string')
        problems.push(`${where}: a hook lacks hookName or path`);
  };
  const devices = raw['devices'];
  if (!Array.isArray(devices) || devices.length === 0)
    problems.push('no devices (CDI refuses a spec without any)');
  else {
    const seen = new Set<string>();
    for (const [i, d] of devices.entries()) {
      const name = isObject(d) ? d['name'] : undefined;
      if (typeof name !== 'string' || !CDI_DEVICE_NAME.test(name)) {
        problems.push(`devices[${String(i)}]: name ${JSON.stringify(name)} is not a valid CDI device name`);
        continue;
      }
      if (seen.has(name)) problems.push(`devices[${String(i)}]: name ${name} is used twice`);
      seen.add(name);
      if (uid !== undefined && !name.startsWith(`${uid}-`))
        problems.push(`devices[${String(i)}]: name ${name} does not belong to claim ${uid}`);
      if (!isObject(d) || !isObject(d['containerEdits']))
        problems.push(`devices[${String(i)}]: no containerEdits`);
      else editProblems(d['containerEdits'], `devices[${String(i)}]`);
    }
  }
  editProblems(raw['containerEdits'], 'spec');
  return problems;
}
