/**
 * `gpu-dra doctor`'s checks: each a pure function from facts gathered on the node
 * (./gather.ts) to findings, each finding saying what is wrong, the evidence and the fix.
 * Severity `error` is what breaks claims on this node (the exit status is 1 when any is found);
 * `warning` is what may, or will after the next event (a reset, a restart).
 */
import type { AdminStatus } from '../node/adminSocket.js';
import type { NodeInventory } from '../nvml/types.js';
import { xidInfo } from '../nvml/xids.js';
import {
  GPU_LOST_TAINT,
  GPU_UNAVAILABLE_TAINT,
  XID_TAINT,
  publishedDeviceNames,
} from '../resourceslice/gpuHealth.js';
import type { TaintMap } from '../resourceslice/model.js';
import type { MigPartitioning } from '../resourceslice/partitions.js';
import { naturalCompare } from '../util/naturalCompare.js';
import { containerdCdi, crioCdi, type CdiVerdict, type TomlKeys } from './runtimeConfig.js';

export const CHECKS = {
  nvml: 'NVML loads and matches the kernel module',
  'device-nodes': 'device nodes',
  mig: 'MIG mode',
  cdi: 'CDI specs',
  runtime: 'container runtime reads CDI specs',
  registration: 'kubelet registration',
  slices: 'published ResourceSlices match discovery',
  taints: 'device taints',
} as const;
export type CheckId = keyof typeof CHECKS;

export type Severity = 'error' | 'warning';

export interface Finding {
  readonly severity: Severity;
  /** What is wrong, in one line. */
  readonly problem: string;
  readonly evidence: readonly string[];
  readonly fix: string;
}

export interface CheckResult {
  readonly id: CheckId;
  readonly title: string;
  readonly findings: readonly Finding[];
  /** Why the check did not run (no kubeconfig, NVML unusable, nothing readable). */
  readonly skipped?: string;
  /** What was looked at when nothing was found, for the reader's confidence. */
  readonly ok?: string;
}

/** The NVML side of the node: an inventory, or why there is none. */
export type NvmlFact =
  | { readonly ok: true; readonly inventory: NodeInventory }
  | { readonly ok: false; readonly error: string; readonly code?: string | undefined };

export interface KernelModuleFact {
  readonly file: string;
  /** From `NVRM version: ... <version> ...`; absent when the file is missing or says none. */
  readonly version?: string;
  readonly error?: string;
}

export interface NodeFileFact {
  readonly hostPath: string;
  readonly exists: boolean;
  /** Set for a real character device (the simulated node's nodes are plain files). */
  readonly rdev?: { readonly major: number; readonly minor: number };
}

export interface DeviceNodesFact {
  /** Keyed by container path: `/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`. */
  readonly nodes: Readonly<Record<string, NodeFileFact>>;
  /** `/proc/devices`: character driver name → major. */
  readonly majors: Readonly<Record<string, number>>;
}

export interface CdiSpecFact {
  readonly file: string;
  readonly claimUid?: string;
  /** From validateCdiSpec (src/cdi/spec.ts), or why the file did not parse. */
  readonly problems: readonly string[];
}

export interface CheckpointFact {
  readonly file: string;
  readonly status: 'missing' | 'ok' | 'invalid';
  readonly error?: string;
  readonly claims: Readonly<Record<string, { readonly state: string; readonly cdiSpecFile?: string }>>;
  /** Set while the plugin rebuilds the claims of a lost checkpoint from the API. */
  readonly rebuild?: { readonly reason: string; readonly movedTo: string; readonly since: string };
}

export interface CdiFact {
  readonly root: string;
  /** undefined = writable; else why not. */
  readonly notWritable?: string;
  /** Why the directory could not be listed (a missing one lists as empty). */
  readonly unlisted?: string;
  readonly specs: readonly CdiSpecFact[];
  readonly checkpoint: CheckpointFact;
}

export interface RuntimeConfigFact {
  readonly runtime: 'containerd' | 'CRI-O';
  /** The files read, main file first. */
  readonly files: readonly string[];
  readonly keys: TomlKeys;
  /** Files named (imports, the main file) that could not be read, with why. */
  readonly unreadable: readonly string[];
}

export interface PluginFact {
  readonly socket: string;
  readonly status?: AdminStatus;
  readonly error?: string;
  /** Whether the sockets the plugin reports exist on disk, by path. */
  readonly socketsOnDisk?: Readonly<Record<string, boolean>>;
}

export type SlicesFact =
  | { readonly skipped: string }
  | { readonly error: string }
  | { readonly devices: readonly { readonly name: string; readonly taints: readonly SliceTaint[] }[] };

export interface SliceTaint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
}

export interface DoctorFacts {
  readonly driverName: string;
  readonly migPartitioning: MigPartitioning;
  readonly nvml: NvmlFact;
  readonly kernelModule: KernelModuleFact;
  readonly deviceNodes?: DeviceNodesFact;
  readonly cdi: CdiFact;
  /** Runtime configs found; empty when none was readable. */
  readonly runtimes: readonly RuntimeConfigFact[];
  /** Where the runtime configs were looked for (for the skip note). */
  readonly runtimeConfigPaths: readonly string[];
  readonly plugin: PluginFact;
  readonly slices: SlicesFact;
}

const result = (
  id: CheckId,
  findings: Finding[],
  extra: { skipped?: string; ok?: string } = {},
): CheckResult => ({
  id,
  title: CHECKS[id],
  findings,
  ...extra,
});

/** `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.105.08  Release Build ...` → 580.105.08. */
export function parseKernelModuleVersion(text: string): string | undefined {
  const line = text.split('\n').find((l) => l.startsWith('NVRM version:'));
  return line ? /\s(\d+\.\d+(?:\.\d+)?)\s/.exec(`${line} `)?.[1] : undefined;
}

export function checkNvml(f: DoctorFacts): CheckResult {
  const km = f.kernelModule;
  if (!f.nvml.ok) {
    const { error, code } = f.nvml;
    const mismatch = code === 'LIB_RM_VERSION_MISMATCH';
    return result('nvml', [
      {
        severity: 'error',
        problem: mismatch
          ? 'NVML refuses to start: the NVIDIA library and the loaded kernel module are different versions'
          : 'NVML cannot be used, so the plugin sees no GPU',
        evidence: [
          error,
          km.version
            ? `kernel module ${km.version} (${km.file})`
            : `kernel module: ${km.error ?? 'version unknown'}`,
        ],
        fix: mismatch
          ? 'the driver was upgraded without reloading the module: reboot the node (or unload and reload the nvidia modules)'
          : code === 'DRIVER_NOT_LOADED' || !km.version
            ? 'load the NVIDIA kernel module (GPU operator driver pod, or `modprobe nvidia`), then restart the plugin'
            : 'point --nvml-lib or --driver-root (NVIDIA_DRIVER_ROOT) at the host driver install',
      },
    ]);
  }
  const nvmlVersion = f.nvml.inventory.driverVersion;
  if (!km.version) {
    return result('nvml', [
      {
        severity: 'warning',
        problem: 'cannot read the kernel module version, so a library/module mismatch cannot be ruled out',
        evidence: [`NVML ${nvmlVersion}`, `${km.file}: ${km.error ?? 'no NVRM version line'}`],
        fix: "check --proc-root points at the host's /proc",
      },
    ]);
  }
  if (km.version !== nvmlVersion) {
    return result('nvml', [
      {
        severity: 'error',
        problem: 'the NVIDIA library (NVML) and the loaded kernel module are different versions',
        evidence: [`NVML reports driver ${nvmlVersion}`, `${km.file} says ${km.version}`],
        fix: 'the driver was upgraded without reloading the module (or --driver-root points at another install): reboot the node, or fix --driver-root',
      },
    ]);
  }
  return result('nvml', [], { ok: `NVML and kernel module both ${nvmlVersion}` });
}

export function checkDeviceNodes(f: DoctorFacts): CheckResult {
  if (!f.nvml.ok || !f.deviceNodes)
    return result('device-nodes', [], { skipped: 'NVML reported no GPUs to check' });
  const { nodes, majors } = f.deviceNodes;
  const frontend = majors['nvidia-frontend'] ?? majors['nvidia'];
  const findings: Finding[] = [];
  const missing = (path: string, why: string, fix: string): void => {
    const n = nodes[path];
    if (n && !n.exists)
      findings.push({
        severity: 'error',
        problem: `${path} is missing (${why})`,
        evidence: [`no file at ${n.hostPath}`],
        fix,
      });
  };
  for (const gpu of f.nvml.inventory.gpus) {
    const path = `/dev/nvidia${String(gpu.minor)}`;
    missing(
      path,
      `GPU ${gpu.uuid} has minor ${String(gpu.minor)}`,
      'create it with `nvidia-modprobe -c ' +
        String(gpu.minor) +
        '` (or reload the driver), and check --dev-root',
    );
    const n = nodes[path];
    if (
      n?.exists &&
      n.rdev &&
      (n.rdev.minor !== gpu.minor || (frontend !== undefined && n.rdev.major !== frontend))
    ) {
      findings.push({
        severity: 'error',
        problem: `${path} is not GPU ${gpu.uuid}'s device node`,
        evidence: [
          `NVML: minor ${String(gpu.minor)}, major ${frontend === undefined ? 'unknown' : String(frontend)} (nvidia-frontend in /proc/devices)`,
          `${n.hostPath}: ${String(n.rdev.major)}:${String(n.rdev.minor)}`,
        ],
        fix: 'remove the stale node and recreate it (`nvidia-modprobe -c <minor>`), or reboot',
      });
    }
  }
  missing(
    '/dev/nvidiactl',
    'every CUDA process opens it',
    'load the nvidia module and run `nvidia-modprobe`',
  );
  missing(
    '/dev/nvidia-uvm',
    'CUDA needs the unified-memory module',
    'load it: `nvidia-modprobe -u -c=0` (or `modprobe nvidia-uvm`)',
  );
  const checked = Object.keys(nodes).length;
  return result('device-nodes', findings, { ok: `${String(checked)} device nodes present` });
}

export function checkMig(f: DoctorFacts): CheckResult {
  if (!f.nvml.ok) return result('mig', [], { skipped: 'NVML unusable' });
  const findings: Finding[] = [];
  for (const gpu of f.nvml.inventory.gpus) {
    const m = gpu.migMode;
    if (!m || m.current === m.pending) continue;
    findings.push({
      severity: 'warning',
      problem: `GPU ${String(gpu.index)} (${gpu.uuid}) has a MIG mode change pending: it is published as MIG ${m.current ? 'on' : 'off'} until it is reset`,
      evidence: [
        `MIG mode current ${m.current ? 'enabled' : 'disabled'}, pending ${m.pending ? 'enabled' : 'disabled'}`,
      ],
      fix: `drain the GPU's claims, then \`nvidia-smi -r -i ${String(gpu.index)}\` (or reboot); the plugin republishes on its next device check`,
    });
  }
  const mig = f.nvml.inventory.gpus.filter((g) => g.migMode !== undefined).length;
  return result('mig', findings, { ok: `${String(mig)} MIG-capable GPU(s), none with a pending change` });
}

export function checkCdi(f: DoctorFacts): CheckResult {
  const { root, notWritable, unlisted, specs, checkpoint } = f.cdi;
  const findings: Finding[] = [];
  if (notWritable !== undefined || unlisted !== undefined)
    findings.push({
      severity: 'error',
      problem:
        notWritable !== undefined
          ? `the CDI directory ${root} is not writable, so no claim can be prepared`
          : `the CDI directory ${root} cannot be read`,
      evidence: [notWritable, unlisted].filter((e): e is string => e !== undefined),
      fix: 'mount the host CDI directory read-write into the plugin pod, and check --cdi-root',
    });
  if (checkpoint.status === 'invalid')
    findings.push({
      severity: 'error',
      problem:
        'the checkpoint cannot be read; the plugin will keep it aside and rebuild its claims from the API at its next start',
      evidence: [`${checkpoint.file}: ${checkpoint.error ?? 'invalid'}`],
      fix: 'let the plugin reach the API at its next start (resourceclaims get); see CHECKPOINT_UNREADABLE / CHECKPOINT_TOO_NEW',
    });
  if (checkpoint.rebuild)
    findings.push({
      severity: 'warning',
      problem: `the plugin is rebuilding its prepared claims from the API (checkpoint ${checkpoint.rebuild.reason === 'tooNew' ? 'written by a newer gpu-dra' : 'unreadable'}); until done it prepares no other claim`,
      evidence: [`since ${checkpoint.rebuild.since}; the old file is kept as ${checkpoint.rebuild.movedTo}`],
      fix: 'let the plugin reach the API server (resourceclaims get); see CHECKPOINT_REBUILD_PENDING',
    });
  for (const s of specs) {
    if (s.problems.length > 0)
      findings.push({
        severity: 'error',
        problem: `CDI spec ${s.file} is invalid: containers using it fail to start`,
        evidence: s.problems.slice(0, 5),
        fix: 'restart the plugin (it rewrites the specs of prepared claims from its checkpoint); if it comes back, report it',
      });
    // While rebuilding, a spec is how the plugin finds its claim: not an orphan yet.
    if (
      s.claimUid !== undefined &&
      checkpoint.status !== 'invalid' &&
      !checkpoint.rebuild &&
      !checkpoint.claims[s.claimUid]
    )
      findings.push({
        severity: 'warning',
        problem: `orphan CDI spec ${s.file}: no claim in the checkpoint owns it`,
        evidence: [`claim ${s.claimUid} is not in ${checkpoint.file}`],
        fix: 'the plugin removes orphans when it starts; with no plugin of this driver on the node, delete the file',
      });
  }
  const onDisk = new Set(specs.map((s) => s.claimUid));
  for (const [uid, claim] of Object.entries(checkpoint.claims)) {
    if (claim.state !== 'PrepareCompleted' || onDisk.has(uid)) continue;
    findings.push({
      severity: 'error',
      problem: `prepared claim ${uid} has no CDI spec: its containers cannot start`,
      evidence: [
        `checkpoint: ${uid} PrepareCompleted, spec ${claim.cdiSpecFile ?? '(unnamed)'} not in ${root}`,
      ],
      fix: 'the plugin restores it on the kubelet\u2019s next prepare; restart the plugin or the pod to get one now',
    });
  }
  return result('cdi', findings, {
    ok: `${root} writable, ${String(specs.length)} spec(s) valid and owned by ${String(Object.keys(checkpoint.claims).length)} checkpointed claim(s)`,
  });
}

function runtimeFinding(rt: RuntimeConfigFact, v: CdiVerdict, cdiRoot: string): Finding | undefined {
  const evidence = [`${rt.files.join(', ')}: ${v.evidence}`, ...rt.unreadable];
  const restart = rt.runtime === 'containerd' ? 'systemctl restart containerd' : 'systemctl restart crio';
  switch (v.state) {
    case 'on':
      return undefined;
    case 'off':
      return {
        severity: 'error',
        problem: `${rt.runtime} has CDI turned off: pods with claims fail with "unresolvable CDI devices"`,
        evidence,
        fix: `set enable_cdi = true in that table and \`${restart}\``,
      };
    case 'depends':
      return {
        severity: 'warning',
        problem: `${rt.runtime}'s config does not turn CDI on: containerd 1.7 leaves it off (2.x turns it on)`,
        evidence,
        fix: `on containerd 1.7 add enable_cdi = true under [plugins."io.containerd.grpc.v1.cri"] and \`${restart}\``,
      };
    case 'wrong-dirs':
      return {
        severity: 'error',
        problem: `${rt.runtime} does not read CDI specs from ${cdiRoot}, where the plugin writes them`,
        evidence,
        fix: `add ${cdiRoot} to cdi_spec_dirs (or set --cdi-root to one of them) and \`${restart}\``,
      };
  }
}

export function checkRuntime(f: DoctorFacts): CheckResult {
  if (f.runtimes.length === 0)
    return result('runtime', [], {
      skipped: `no container runtime config readable at ${f.runtimeConfigPaths.join(', ')} (run on the node, or pass --host-root)`,
    });
  const findings: Finding[] = [];
  for (const rt of f.runtimes) {
    const verdict =
      rt.runtime === 'containerd' ? containerdCdi(rt.keys, f.cdi.root) : crioCdi(rt.keys, f.cdi.root);
    const finding = runtimeFinding(rt, verdict, f.cdi.root);
    if (finding) findings.push(finding);
  }
  return result('runtime', findings, { ok: f.runtimes.map((r) => `${r.runtime}: CDI on`).join(', ') });
}

export function checkRegistration(f: DoctorFacts): CheckResult {
  const { status, error, socket, socketsOnDisk } = f.plugin;
  if (!status)
    return result('registration', [
      {
        severity: 'error',
        problem: 'the plugin cannot be asked: it is not running on this node, or runs with other flags',
        evidence: [error ?? `no answer on ${socket}`],
        fix: '`kubectl -n <namespace> get pods -o wide` for the plugin pod on this node and its logs; give the doctor the plugin\u2019s --kubelet-plugins-dir and --driver-name',
      },
    ]);
  const findings: Finding[] = [];
  const reg = status.registration;
  if (reg.registered === false)
    findings.push({
      severity: 'error',
      problem: 'the kubelet rejected the plugin\u2019s registration',
      evidence: [`NotifyRegistrationStatus at ${reg.at ?? '?'}: ${reg.error ?? '(no error given)'}`],
      fix: 'read the kubelet\u2019s error: usually a DRA version the kubelet does not serve (upgrade one of them) or a clashing driver name',
    });
  else if (reg.registered === undefined)
    findings.push({
      severity: 'warning',
      problem: 'the kubelet has not confirmed the registration yet',
      evidence: [`registration socket ${status.sockets.registration}; no NotifyRegistrationStatus received`],
      fix: "--kubelet-registry-dir must be the kubelet's plugins_registry (mounted from the host); check the kubelet's log for the driver name",
    });
  for (const [path, present] of Object.entries(socketsOnDisk ?? {}))
    if (!present)
      findings.push({
        severity: 'error',
        problem: `the plugin's socket ${path} is gone: the kubelet cannot reach the plugin`,
        evidence: [`the plugin (pid ${String(status.pid)}) serves it, but no file is there`],
        fix: 'restart the plugin pod; something removed the socket (a second plugin instance, a cleanup job)',
      });
  if (status.slicesPublished === false)
    findings.push({
      severity: 'warning',
      problem: 'the plugin has not published its ResourceSlices yet',
      evidence: ['the plugin reports its first publish pending'],
      fix: "check the plugin's log for `ResourceSlice publish failed` (apiserver reachability, RBAC)",
    });
  return result('registration', findings, { ok: `registered with the kubelet at ${reg.at ?? '?'}` });
}

/** The device names discovery would publish (gpuHealth.ts publishedDeviceNames, per GPU). */
export function expectedDeviceNames(inventory: NodeInventory, migPartitioning: MigPartitioning): string[] {
  return inventory.gpus.flatMap((g) => publishedDeviceNames(g, migPartitioning)).sort(naturalCompare);
}

export function checkSlices(f: DoctorFacts): CheckResult {
  if ('skipped' in f.slices) return result('slices', [], { skipped: f.slices.skipped });
  if ('error' in f.slices)
    return result('slices', [
      {
        severity: 'warning',
        problem: 'cannot list this node\u2019s ResourceSlices',
        evidence: [f.slices.error],
        fix: 'check the kubeconfig and that it may list resourceslices',
      },
    ]);
  if (!f.nvml.ok) return result('slices', [], { skipped: 'NVML unusable: nothing to compare with' });
  const published = new Map(f.slices.devices.map((d) => [d.name, d]));
  const expected = expectedDeviceNames(f.nvml.inventory, f.migPartitioning);
  const findings: Finding[] = [];
  const missing = expected.filter((n) => !published.has(n));
  if (missing.length > 0)
    findings.push({
      severity: 'error',
      problem: `${String(missing.length)} device(s) discovery sees are not published: no claim can get them`,
      evidence: [`missing: ${missing.join(', ')}`, `published: ${String(published.size)} device(s)`],
      fix: 'the plugin republishes on its next device check (--device-check-interval); if it does not, read its log for `ResourceSlice publish failed`',
    });
  const want = new Set(expected);
  // A lost GPU stays published, tainted, on purpose (gpuHealth.ts): only untainted extras are stale.
  const extra = [...published.values()]
    .filter((d) => !want.has(d.name) && d.taints.length === 0)
    .map((d) => d.name);
  if (extra.length > 0)
    findings.push({
      severity: 'warning',
      problem: `${String(extra.length)} published device(s) are not on this node now: claims for them will fail to prepare`,
      evidence: [`published but not discovered: ${extra.join(', ')}`],
      fix: 'the plugin republishes on its next device check; if MIG devices were re-made by hand, wait for it or restart the plugin',
    });
  return result('slices', findings, { ok: `${String(published.size)} published device(s) match discovery` });
}

/** The taints to explain: the plugin's own view when it answered, else what the slices hold. */
function activeTaints(f: DoctorFacts): TaintMap | undefined {
  if (f.plugin.status) return f.plugin.status.taints;
  if ('devices' in f.slices)
    return Object.fromEntries(
      f.slices.devices.filter((d) => d.taints.length > 0).map((d) => [d.name, d.taints as TaintMap[string]]),
    );
  return undefined;
}

export function checkTaints(f: DoctorFacts): CheckResult {
  const taints = activeTaints(f);
  if (!taints)
    return result('taints', [], { skipped: 'neither the plugin nor the apiserver could be asked' });
  const findings: Finding[] = [];
  const prefix = `${f.driverName}/`;
  for (const device of Object.keys(taints).sort(naturalCompare)) {
    for (const t of taints[device] ?? []) {
      const key = t.key.startsWith(prefix) ? t.key.slice(prefix.length) : t.key;
      const taint = `${t.key}${t.value === undefined ? '' : `=${t.value}`}:${t.effect}`;
      if (key === XID_TAINT) {
        const info = xidInfo(Number(t.value));
        findings.push({
          severity: 'warning',
          problem: `${device} is tainted by XID ${t.value ?? '?'}: ${info.meaning}`,
          evidence: [taint],
          fix: `${info.action}; then \`gpu-dra taints clear --device ${device}\` (or its GPU's name) lets claims use it again`,
        });
      } else if (key === GPU_LOST_TAINT || key === GPU_UNAVAILABLE_TAINT) {
        findings.push({
          severity: 'error',
          problem: `${device} is tainted: its GPU ${key === GPU_LOST_TAINT ? 'fell off the bus (GPU_IS_LOST)' : `cannot be read (${t.value ?? '?'})`}`,
          evidence: [taint],
          fix: 'reset the GPU or reboot the node; the taint goes by itself at the first device check that reads the GPU again',
        });
      } else {
        findings.push({
          severity: 'warning',
          problem: `${device} carries a taint gpu-dra does not set`,
          evidence: [taint],
          fix: 'it comes from a DeviceTaintRule or another writer: `kubectl get devicetaintrules`',
        });
      }
    }
  }
  return result('taints', findings, { ok: 'no device tainted' });
}

/** Every check, in the order a reader follows a broken node. */
export function runChecks(f: DoctorFacts): CheckResult[] {
  return [
    checkNvml,
    checkDeviceNodes,
    checkMig,
    checkCdi,
    checkRuntime,
    checkRegistration,
    checkSlices,
    checkTaints,
  ].map((c) => c(f));
}

export function hasErrors(results: readonly CheckResult[]): boolean {
  return results.some((r) => r.findings.some((x) => x.severity === 'error'));
}
