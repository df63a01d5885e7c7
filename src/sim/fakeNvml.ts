/**
 * The fake NVML (`libnvidia-ml.so.1` built from src/sim/fake-nvml/fake_nvml.c) and its JSON
 * configuration ("profiles"). Used by `gpu-dra demo` and by the tests, so that the real koffi
 * code path runs against a library with the real nvml.h ABI. The C source and the profiles ship
 * in the npm package (package.json "files"), so an installed gpu-dra can build and run it.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import * as z from 'zod';

import { GpuDraError } from '../util/errors.js';
import { packageRoot } from '../util/packageRoot.js';

/** gcc flags; part of the cache key. */
const CFLAGS = ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror'] as const;

/** A number, or a string such as `"0x233010DE"` (the C side accepts both). */
const intLike = z.union([
  z.number().int().nonnegative(),
  z.string().regex(/^(0x[0-9a-fA-F]+|[0-9]+)$/, 'expected an integer or a "0x..." string'),
]);

/** NVML return code by name (`"GPU_IS_LOST"`, `"NVML_ERROR_GPU_IS_LOST"`) or number. */
const returnCode = z.union([z.string().min(1), z.number().int().nonnegative()]);

const placementSchema = z.object({
  start: z.number().int().nonnegative(),
  size: z.number().int().positive(),
});

const giProfileSchema = z.object({
  /** NVML_GPU_INSTANCE_PROFILE_* index (0 = 1_SLICE, ..., 9 = 1_SLICE_REV2). */
  index: z.number().int().min(0).max(16),
  /** Profile id as nvidia-smi shows it (19 = 1g.*, 0 = 7g.*). */
  id: z.number().int().nonnegative(),
  /** As NVML reports it, with the `MIG ` prefix: `MIG 1g.10gb`. */
  name: z.string().min(1).max(95),
  sliceCount: z.number().int().positive(),
  instanceCount: z.number().int().nonnegative(),
  multiprocessorCount: z.number().int().nonnegative(),
  copyEngineCount: z.number().int().nonnegative(),
  decoderCount: z.number().int().nonnegative(),
  encoderCount: z.number().int().nonnegative(),
  jpegCount: z.number().int().nonnegative(),
  ofaCount: z.number().int().nonnegative(),
  memorySizeMB: z.number().int().nonnegative(),
  isP2pSupported: z.number().int().nonnegative().optional(),
  capabilities: z.number().int().nonnegative().optional(),
  placements: z.array(placementSchema).max(8),
});

const migDeviceSchema = z.object({
  uuid: z.string().regex(/^MIG-/),
  gpuInstanceId: z.number().int().nonnegative(),
  computeInstanceId: z.number().int().nonnegative(),
  profileId: z.number().int().nonnegative(),
  placement: placementSchema,
  memory: z.object({ total: z.number().int().optional(), used: z.number().int().optional() }).optional(),
  /** A process runs on it: nvmlComputeInstanceDestroy answers IN_USE. */
  busy: z.boolean().optional(),
  errors: z.record(z.string(), returnCode).optional(),
});

const gpuSchema = z.object({
  name: z.string().min(1).max(95),
  uuid: z.string().regex(/^GPU-/),
  /** nvmlBrandType_t; absent: NOT_SUPPORTED. */
  brand: z.number().int().nonnegative().optional(),
  /** nvmlDeviceArchitecture_t; absent: NOT_SUPPORTED. */
  architecture: z.number().int().nonnegative().optional(),
  computeCapability: z.object({
    major: z.number().int().nonnegative(),
    minor: z.number().int().nonnegative(),
  }),
  memory: z.object({ total: z.number().int().positive(), used: z.number().int().nonnegative().optional() }),
  /** /dev/nvidia<minor>. */
  minor: z.number().int().nonnegative(),
  pci: z.object({
    domain: z.number().int().nonnegative().optional(),
    bus: z.number().int().min(0).max(255),
    device: z.number().int().min(0).max(31),
    pciDeviceId: intLike,
    pciSubSystemId: intLike.optional(),
    /** For the simulated host only (sysfs layout): the PCIe root complex, e.g. `pci0000:80`. */
    pcieRoot: z
      .string()
      .regex(/^pci[0-9a-f]{4}:[0-9a-f]{2}$/)
      .optional(),
  }),
  /** Absent: nvmlDeviceGetNumaNodeId answers NOT_SUPPORTED. */
  numaNode: z.number().int().nonnegative().optional(),
  /** nvmlDeviceAddressingModeType_t (1 HMM, 2 ATS); absent: NOT_SUPPORTED. */
  addressingMode: z.number().int().nonnegative().optional(),
  /** nvmlGpuVirtualizationMode_t (0 NONE, 1 PASSTHROUGH, 2 VGPU guest: no MIG create); default 0. */
  virtualizationMode: z.number().int().min(0).max(4).optional(),
  /** SM count of the whole GPU (nvmlDeviceGetAttributes_v2); absent: NOT_SUPPORTED. */
  multiprocessorCount: z.number().int().nonnegative().optional(),
  migCapable: z.boolean().optional(),
  migMode: z
    .object({ current: z.number().int().min(0).max(1), pending: z.number().int().min(0).max(1) })
    .optional(),
  maxMigDeviceCount: z.number().int().min(0).max(16).optional(),
  /** Inline table or the name of an entry in `giProfileTables`. */
  giProfiles: z.union([z.string(), z.array(giProfileSchema)]).optional(),
  migDevices: z.array(migDeviceSchema).optional(),
  /** Injected errors: NVML function name (or `*`) to return code. */
  errors: z.record(z.string(), returnCode).optional(),
  /** Every per-device call after nvmlDeviceGetHandleByIndex_v2 answers GPU_IS_LOST. */
  lost: z.boolean().optional(),
  /** nvmlDeviceGetSupportedEventTypes; default SBE | DBE | XID | MIG config change (0x10b). */
  supportedEventTypes: z.number().int().nonnegative().optional(),
});

export const fakeNvmlConfigSchema = z.object({
  description: z.string().optional(),
  driverVersion: z.string().min(1).max(79),
  /** As nvmlSystemGetCudaDriverVersion reports it: 13000 = CUDA 13.0. */
  cudaDriverVersion: z.number().int().nonnegative(),
  nvmlVersion: z.string().optional(),
  /** nvmlInit fails with this code (e.g. `DRIVER_NOT_LOADED`). */
  initError: returnCode.optional(),
  /** System-wide injected errors (also apply to every device). */
  errors: z.record(z.string(), returnCode).optional(),
  giProfileTables: z.record(z.string(), z.array(giProfileSchema)).optional(),
  /** Each MIG GPU/compute instance create or destroy first sleeps this long (unlocked), as real ones take ~1 s. */
  migOperationDelayMs: z.number().int().nonnegative().optional(),
  /**
   * The simulated host's /dev (createSimulatedNode sets it): a MIG device the fake creates gets
   * its GI and CI access caps there, `nvidia-caps/nvidia-cap<N>`, as nvidia-modprobe makes them.
   */
  hostDevRoot: z.string().optional(),
  hostProcRoot: z.string().optional(),
  gpus: z.array(gpuSchema).max(64),
});

export type FakeNvmlConfig = z.infer<typeof fakeNvmlConfigSchema>;
export type FakeGpu = FakeNvmlConfig['gpus'][number];
export type FakeGiProfile = z.infer<typeof giProfileSchema>;
export type FakeMigDevice = z.infer<typeof migDeviceSchema>;

/**
 * src/sim/fake-nvml/ under the package root: read at run time, not bundled, and the same path in
 * a checkout (code under src/ or dist/) and in an installed package (code under dist/).
 */
function fakeNvmlDir(): string {
  return path.join(packageRoot(), 'src', 'sim', 'fake-nvml');
}

export function fakeNvmlSourcePath(): string {
  return path.join(fakeNvmlDir(), 'fake_nvml.c');
}

export function profilesDir(): string {
  return path.join(fakeNvmlDir(), 'profiles');
}

export interface BuildFakeNvmlOptions {
  /** Cache root; default `$GPU_DRA_CACHE`, else `~/.cache/gpu-dra`, else `<tmpdir>/gpu-dra-<uid>`. */
  cacheDir?: string;
  /** C compiler; default `$CC` or `gcc`. */
  compiler?: string;
  /** Source file; default src/sim/fake-nvml/fake_nvml.c in this package. */
  source?: string;
}

const builds = new Map<string, Promise<string>>();

/**
 * Compiles the fake NVML (once per source hash) into
 * `<cache>/fake-nvml/<sha>/libnvidia-ml.so.1` and returns that path. Safe to call concurrently
 * from several processes: the library is written to a temporary name and renamed into place.
 */
export async function buildFakeNvml(opts: BuildFakeNvmlOptions = {}): Promise<string> {
  const source = opts.source ?? fakeNvmlSourcePath();
  const cacheRoot = opts.cacheDir ?? process.env.GPU_DRA_CACHE ?? defaultCacheRoot();
  const compiler = opts.compiler ?? process.env.CC ?? 'gcc';
  const key = `${source}\0${cacheRoot}\0${compiler}`;
  let pending = builds.get(key);
  if (pending === undefined) {
    pending = doBuild(source, cacheRoot, compiler);
    builds.set(key, pending);
    pending.catch(() => builds.delete(key));
  }
  return pending;
}

/**
 * Outside the package on purpose: an installed node_modules may be read-only or root-owned.
 * The home cache survives reboots; a user whose home is missing or not writable (system users,
 * HOME=/nonexistent in containers) gets a per-user directory under the temp dir instead.
 */
function defaultCacheRoot(): string {
  const home = os.homedir();
  const cache = path.join(home, '.cache');
  for (const dir of [cache, home]) {
    try {
      accessSync(dir, constants.W_OK);
      return path.join(cache, 'gpu-dra');
    } catch {
      // ~/.cache may not exist yet: then home itself must be writable to create it.
      if (existsSync(dir)) break;
    }
  }
  return path.join(os.tmpdir(), `gpu-dra-${os.userInfo().uid}`);
}

async function doBuild(source: string, cacheRoot: string, compiler: string): Promise<string> {
  let code: Buffer;
  try {
    code = await readFile(source);
  } catch (err) {
    throw new GpuDraError(
      'FAKE_NVML_SOURCE_NOT_FOUND',
      `fake NVML source ${source} not found (it ships in the gpu-dra package under src/sim/fake-nvml/)`,
      { cause: err },
    );
  }
  const sha = createHash('sha256').update(code).update(CFLAGS.join(' ')).digest('hex').slice(0, 16);
  const dir = path.join(cacheRoot, 'fake-nvml', sha);
  const out = path.join(dir, 'libnvidia-ml.so.1');
  if (await isFile(out)) return out;
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.libnvidia-ml.so.1.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    await run(compiler, [...CFLAGS, '-o', tmp, source]);
    await rename(tmp, out);
  } catch (err) {
    await rm(tmp, { force: true });
    if (err instanceof GpuDraError) throw err;
    throw new GpuDraError('FAKE_NVML_BUILD_FAILED', `building the fake NVML failed: ${String(err)}`, {
      cause: err,
    });
  }
  return out;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

function run(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 4 * 1024 * 1024 }, (err, _stdout, stderr) => {
      if (err === null) {
        resolve();
        return;
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new GpuDraError(
            'FAKE_NVML_NO_COMPILER',
            `C compiler '${cmd}' not found: the fake NVML needs gcc (apt-get install gcc, or set CC)`,
            { cause: err },
          ),
        );
        return;
      }
      reject(
        new GpuDraError('FAKE_NVML_BUILD_FAILED', `${cmd} failed building the fake NVML:\n${stderr.trim()}`, {
          cause: err,
        }),
      );
    });
  });
}

/** Names of the bundled profiles (src/sim/fake-nvml/profiles/*.json), sorted. */
export async function listProfiles(): Promise<string[]> {
  const entries = await readdir(profilesDir());
  return entries
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/** Validates a fake NVML configuration (a parsed profile). */
export function parseFakeNvmlConfig(value: unknown, source = 'fake NVML config'): FakeNvmlConfig {
  const res = fakeNvmlConfigSchema.safeParse(value);
  if (!res.success) {
    const issue = res.error.issues[0];
    const where = issue?.path.join('.') ?? '';
    throw new GpuDraError(
      'FAKE_NVML_CONFIG_INVALID',
      `${source}: ${where === '' ? '' : `${where}: `}${issue?.message ?? 'invalid'}`,
      { cause: res.error },
    );
  }
  const cfg = res.data;
  for (const [i, gpu] of cfg.gpus.entries()) {
    if (typeof gpu.giProfiles === 'string' && cfg.giProfileTables?.[gpu.giProfiles] === undefined) {
      throw new GpuDraError(
        'FAKE_NVML_CONFIG_INVALID',
        `${source}: gpus.${i}.giProfiles: no giProfileTables entry '${gpu.giProfiles}'`,
      );
    }
  }
  return cfg;
}

/** Loads and validates a bundled profile by name (e.g. `h100-8x`). */
export async function loadProfile(name: string): Promise<FakeNvmlConfig> {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) {
    throw new GpuDraError('FAKE_NVML_PROFILE_NOT_FOUND', `invalid fake NVML profile name '${name}'`);
  }
  const file = path.join(profilesDir(), `${name}.json`);
  if (!existsSync(file)) {
    const known = await listProfiles().catch(() => []);
    throw new GpuDraError(
      'FAKE_NVML_PROFILE_NOT_FOUND',
      `unknown fake NVML profile '${name}' (known: ${known.join(', ')})`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new GpuDraError('FAKE_NVML_CONFIG_INVALID', `${file}: ${String(err)}`, { cause: err });
  }
  return parseFakeNvmlConfig(parsed, file);
}

/** The GI profile table of a GPU, with `giProfileTables` references resolved. */
export function gpuProfiles(cfg: FakeNvmlConfig, gpu: FakeGpu): FakeGiProfile[] {
  if (gpu.giProfiles === undefined) return [];
  if (typeof gpu.giProfiles === 'string') return cfg.giProfileTables?.[gpu.giProfiles] ?? [];
  return gpu.giProfiles;
}

/** Parses an int-like config value (`590352606` or `"0x233010DE"`). */
export function intValue(v: number | string): number {
  return typeof v === 'number' ? v : Number(v);
}

// ---- MIG instances the fake made or destroyed (its state file) ----

const statePlacement = z.object({ start: z.number().int().nonnegative(), size: z.number().int().positive() });

/** The fake NVML's MIG state file (fake_nvml.c write_state): the whole layout of each GPU listed. */
export const fakeMigStateSchema = z.object({
  version: z.literal(1),
  gpus: z.array(
    z.object({
      uuid: z.string(),
      /** Set through nvmlDeviceSetMigMode; absent in state files written before it was. */
      migMode: z.object({ current: z.number().int(), pending: z.number().int() }).optional(),
      gpuInstances: z.array(
        z.object({
          id: z.number().int().nonnegative(),
          profileId: z.number().int().nonnegative(),
          placement: statePlacement,
          computeInstances: z.array(
            z.object({
              id: z.number().int().nonnegative(),
              /** NVML_COMPUTE_INSTANCE_PROFILE_* (the CI profile id). */
              profileId: z.number().int().nonnegative(),
              placement: statePlacement,
              uuid: z.string(),
              busy: z.boolean(),
            }),
          ),
        }),
      ),
    }),
  ),
});

export type FakeMigState = z.infer<typeof fakeMigStateSchema>;

/** Where the fake keeps MIG instances for a config: `$FAKE_NVML_STATE`, else `<config>.mig-state`. */
export function fakeMigStatePath(configPath: string, env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.FAKE_NVML_STATE;
  return explicit !== undefined && explicit !== '' ? explicit : `${configPath}.mig-state`;
}

/** One GPU instance of a simulated node, with its compute instance (absent for a bare GI). */
export interface FakeMigInstance {
  readonly gpuIndex: number;
  readonly parentUuid: string;
  readonly gpuInstanceId: number;
  readonly profileId: number;
  readonly placement: { readonly start: number; readonly size: number };
  /** Absent for a GPU instance without a compute instance (e.g. one a failed create left). */
  readonly computeInstanceId?: number;
  /** The MIG device's UUID; absent with `computeInstanceId`. */
  readonly uuid?: string;
  readonly busy?: boolean;
}

export interface ReadFakeMigOptions {
  /** Config file; default `<simDir>/fake-nvml.json`. */
  readonly configPath?: string;
  /** State file; default {@link fakeMigStatePath} of the config. */
  readonly statePath?: string;
}

async function readState(file: string): Promise<FakeMigState | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const res = fakeMigStateSchema.safeParse(JSON.parse(text));
  if (!res.success) {
    throw new GpuDraError('FAKE_NVML_CONFIG_INVALID', `${file}: not a fake NVML MIG state`, {
      cause: res.error,
    });
  }
  return res.data;
}

/**
 * Every MIG instance the fake NVML holds for a simulated node, as its next nvmlInit would see
 * them: a GPU the state file lists has the file's layout, any other GPU its configured
 * `migDevices` (whatever its MIG mode). Sorted by GPU index, GI id, CI id. Tests use it to check
 * what a driver created, and that it left nothing behind.
 */
export async function readFakeMigInstances(
  simDir: string,
  opts: ReadFakeMigOptions = {},
): Promise<FakeMigInstance[]> {
  const configPath = opts.configPath ?? path.join(simDir, 'fake-nvml.json');
  const config = parseFakeNvmlConfig(JSON.parse(await readFile(configPath, 'utf8')), configPath);
  const state = await readState(opts.statePath ?? fakeMigStatePath(configPath));
  const out: FakeMigInstance[] = [];
  for (const [gpuIndex, gpu] of config.gpus.entries()) {
    const stated = state?.gpus.find((g) => g.uuid === gpu.uuid);
    if (stated === undefined) {
      for (const m of gpu.migDevices ?? []) {
        out.push({
          gpuIndex,
          parentUuid: gpu.uuid,
          gpuInstanceId: m.gpuInstanceId,
          profileId: m.profileId,
          placement: m.placement,
          computeInstanceId: m.computeInstanceId,
          uuid: m.uuid,
          busy: m.busy ?? false,
        });
      }
      continue;
    }
    for (const gi of stated.gpuInstances) {
      const base = {
        gpuIndex,
        parentUuid: gpu.uuid,
        gpuInstanceId: gi.id,
        profileId: gi.profileId,
        placement: gi.placement,
      };
      if (gi.computeInstances.length === 0) out.push(base);
      for (const ci of gi.computeInstances) {
        out.push({ ...base, computeInstanceId: ci.id, uuid: ci.uuid, busy: ci.busy });
      }
    }
  }
  return out.sort(
    (a, b) =>
      a.gpuIndex - b.gpuIndex ||
      a.gpuInstanceId - b.gpuInstanceId ||
      (a.computeInstanceId ?? -1) - (b.computeInstanceId ?? -1),
  );
}

/**
 * Marks a MIG device the fake created as running a process (or not): destroying its compute
 * instance then answers IN_USE. The state file is rewritten atomically; the fake sees it at its
 * next nvmlInit or MIG change. For a configured MIG device, set `busy` in the config instead.
 */
export async function setFakeMigInstanceBusy(
  simDir: string,
  migUuid: string,
  busy: boolean,
  opts: ReadFakeMigOptions = {},
): Promise<void> {
  const configPath = opts.configPath ?? path.join(simDir, 'fake-nvml.json');
  const file = opts.statePath ?? fakeMigStatePath(configPath);
  const state = await readState(file);
  const ci = state?.gpus
    .flatMap((g) => g.gpuInstances)
    .flatMap((gi) => gi.computeInstances)
    .find((c) => c.uuid === migUuid);
  if (state === undefined || ci === undefined) {
    throw new GpuDraError(
      'FAKE_NVML_CONFIG_INVALID',
      `${file}: no MIG device ${migUuid} in the fake's MIG state`,
    );
  }
  ci.busy = busy;
  const tmp = `${file}.tmp.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, file);
}
