/**
 * A container's filesystem built the way a runtime builds it from an OCI spec, to check that
 * what the driver's CDI spec injects is enough to use the GPU. As root with mount namespaces
 * (`unshare --mount`), a child process:
 *   - mounts a tmpfs as the rootfs (private to its own mount namespace, so nothing leaks out);
 *   - creates each `linux.devices` entry with mknod(type, major, minor), as runc does for a
 *     root container; where mknod is refused it bind-mounts the host node instead, as runc does
 *     in a user namespace (the host path comes from the CDI spec: OCI devices carry none);
 *   - bind-mounts every `mounts` entry of type bind (source = host path in the node's tree),
 *     re-mounting read-only where the options say `ro`;
 *   - mounts proc/sysfs/tmpfs entries itself (and reports them as skipped where refused);
 *   - optionally bind-mounts a few host files as the "image" (a shell and its libraries) and
 *     runs a command in the rootfs with `chroot`, under exactly the spec's environment;
 *   - lists the resulting tree and its mounts, from inside the namespace.
 * Without unshare (not root, or no mount namespaces) it falls back to a tree of symlinks in a
 * temporary directory: the listing still shows which paths the container would get, but there
 * are no real device nodes, no read-only mounts and nothing is executed (`mode: 'symlink-tree'`).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { InjectedEdits } from '../../src/cdi/inject.js';

/** The parts of an OCI runtime spec a GPU container's filesystem depends on. */
export interface OciLikeSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string; type: string; major: number; minor: number }[] };
  mounts?: { destination: string; source?: string; type?: string; options?: string[] }[];
}

export type EntryType = 'file' | 'dir' | 'char' | 'block' | 'symlink' | 'other';

export interface RootfsEntry {
  /** Container path (`/dev/nvidia0`). */
  readonly path: string;
  readonly type: EntryType;
  readonly major?: number;
  readonly minor?: number;
}

export interface ContainerRootfs {
  readonly mode: 'namespace' | 'symlink-tree';
  readonly entries: readonly RootfsEntry[];
  /** How each device node was made: `mknod` (root runtime) or `bind` (host node bind-mounted). */
  readonly devices: Readonly<Record<string, 'mknod' | 'bind' | 'symlink' | 'missing'>>;
  /** Container path → mount options, as /proc/self/mountinfo reports them inside the namespace. */
  readonly mounts: Readonly<Record<string, string>>;
  /** Mounts of the spec that were not bind mounts (e.g. `/proc`) and could not be made. */
  readonly skippedMounts: readonly string[];
  /** Host files added as the "image" (not part of the spec). */
  readonly baseFiles: readonly string[];
  /** The command run inside the rootfs, when asked for and possible. */
  readonly exec?: { readonly code: number; readonly stdout: string; readonly stderr: string };
}

export interface BuildRootfsOptions {
  /** Host node for a device's container path (from the CDI spec), for the bind fallback. */
  readonly hostPathOf?: (containerPath: string) => string | undefined;
  /** Run `argv` inside the rootfs (chroot) with the spec's env plus `env`. */
  readonly exec?: {
    readonly argv: readonly string[];
    /** Host files (absolute) bind-mounted read-only at the same path: the shell, libc, ld.so. */
    readonly baseFiles?: readonly string[];
    readonly env?: readonly string[];
  };
  /**
   * Files bind-mounted read-only over the rootfs after every mount, as a runtime hook would
   * place them (created when missing).
   */
  readonly files?: readonly { readonly path: string; readonly content: string }[];
  /** Force the fallback (tests of the fallback itself). */
  readonly forceFallback?: boolean;
}

let probed: { ok: boolean; reason: string } | undefined;
let warned = false;

/** Can this process build a rootfs in a private mount namespace (root, unshare, tmpfs)? */
export function namespaceSupport(): { ok: boolean; reason: string } {
  if (probed) return probed;
  if (process.getuid?.() !== 0) {
    probed = { ok: false, reason: 'not root' };
    return probed;
  }
  const r = spawnSync(
    'unshare',
    ['--mount', '--propagation', 'private', '--fork', 'sh', '-c', 'd=$(mktemp -d) && mount -t tmpfs t "$d"'],
    { encoding: 'utf8', timeout: 10_000 },
  );
  probed =
    r.status === 0
      ? { ok: true, reason: 'unshare --mount works' }
      : { ok: false, reason: `unshare --mount failed: ${(r.error?.message ?? r.stderr).trim()}` };
  return probed;
}

/** `ldd` of a binary: the absolute paths of the libraries and loader it needs. */
export function sharedLibraries(binary: string): string[] {
  const r = spawnSync('ldd', [binary], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return [...r.stdout.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1] ?? '').filter((p) => p !== '');
}

/** The OCI spec a runtime would start from, with CDI edits applied (what the CDI library does). */
export function ociSpecFromEdits(edits: InjectedEdits, env: readonly string[] = []): OciLikeSpec {
  return {
    process: { env: [...env, ...edits.env] },
    linux: {
      devices: edits.deviceNodes.map((n) => ({
        path: n.path,
        type: n.type ?? 'c',
        major: n.major ?? 0,
        minor: n.minor ?? 0,
      })),
    },
    mounts: edits.mounts.map((m) => ({
      destination: m.containerPath,
      source: m.hostPath,
      type: 'bind',
      options: m.options ?? [],
    })),
  };
}

/** Non-bind mounts a runtime makes itself; each gets `mount -t <type>`. */
const KERNEL_FS = new Set(['proc', 'sysfs', 'tmpfs']);

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function isBind(m: NonNullable<OciLikeSpec['mounts']>[number]): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

function entryType(kind: string): EntryType {
  if (kind.startsWith('regular')) return 'file';
  if (kind === 'directory') return 'dir';
  if (kind === 'character special file') return 'char';
  if (kind === 'block special file') return 'block';
  if (kind === 'symbolic link') return 'symlink';
  return 'other';
}

/** Builds the container's rootfs from `spec` and reports what is in it. */
export function buildContainerRootfs(spec: OciLikeSpec, options: BuildRootfsOptions = {}): ContainerRootfs {
  const support = namespaceSupport();
  if (options.forceFallback || !support.ok) {
    if (!options.forceFallback && !warned) {
      warned = true;
      console.warn(`container rootfs: symlink fallback (${support.reason}); no device nodes, mounts or exec`);
    }
    return symlinkTree(spec, options);
  }

  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-rootfs-'));
  try {
    const lines: string[] = [
      'set -u',
      `OUT=${q(out)}`,
      'R=$(mktemp -d)',
      'mount -t tmpfs -o mode=0755 rootfs "$R" || exit 90',
      'mkdir -p "$R/dev"',
      ': > "$OUT/devs"; : > "$OUT/skipped"',
    ];
    for (const d of spec.linux?.devices ?? []) {
      const target = `"$R"${q(d.path)}`;
      const host = options.hostPathOf?.(d.path);
      lines.push(
        `mkdir -p "$(dirname ${target})"`,
        `if mknod ${target} ${q(d.type)} ${d.major} ${d.minor} 2>/dev/null; then echo ${q(`${d.path}|mknod`)} >> "$OUT/devs"`,
        host
          ? `elif touch ${target} && mount --bind ${q(host)} ${target}; then echo ${q(`${d.path}|bind`)} >> "$OUT/devs"`
          : '',
        `else echo ${q(`${d.path}|missing`)} >> "$OUT/devs"; fi`,
      );
    }
    const baseFiles = (options.exec?.baseFiles ?? []).filter(
      (f) => !(spec.mounts ?? []).some((m) => m.destination === f),
    );
    const mounts = [
      ...baseFiles.map((f) => ({ destination: f, source: f, type: 'bind', options: ['ro', 'bind'] })),
      ...(spec.mounts ?? []),
    ];
    for (const m of mounts) {
      const target = `"$R"${q(m.destination)}`;
      if (!isBind(m) || !m.source) {
        if (m.type && KERNEL_FS.has(m.type)) {
          lines.push(
            `mkdir -p ${target} && mount -t ${m.type}${(m.options ?? []).includes('ro') ? ' -o ro' : ''} ${q(m.source ?? m.type)} ${target} || echo ${q(m.destination)} >> "$OUT/skipped"`,
          );
        } else {
          lines.push(`echo ${q(m.destination)} >> "$OUT/skipped"`);
        }
        continue;
      }
      const isDir = fs.statSync(m.source).isDirectory();
      lines.push(
        isDir ? `mkdir -p ${target}` : `mkdir -p "$(dirname ${target})" && touch ${target}`,
        `mount --bind ${q(m.source)} ${target} || exit 91`,
      );
      const flags = (m.options ?? []).filter((o) => ['ro', 'nosuid', 'nodev', 'noexec'].includes(o));
      if (flags.includes('ro')) {
        lines.push(`mount -o ${['remount', 'bind', ...flags].join(',')} ${target} || exit 92`);
      }
    }
    // Files placed over what is mounted (e.g. the NVIDIA toolkit's procfs params override).
    (options.files ?? []).forEach((f, i) => {
      const src = path.join(out, `file-${String(i)}`);
      fs.writeFileSync(src, f.content);
      const target = `"$R"${q(f.path)}`;
      lines.push(
        `if [ -e ${target} ] || { mkdir -p "$(dirname ${target})" && touch ${target}; }; then mount --bind ${q(src)} ${target} && mount -o remount,bind,ro ${target} || exit 93; fi`,
      );
    });
    // A mounted /proc or /sys is the host's: list that it is there, not what is in it.
    const prune = mounts
      .filter((m) => m.type !== undefined && KERNEL_FS.has(m.type))
      .map((m) => `-path "$R"${q(m.destination)}/'*' -prune -o `)
      .join('');
    lines.push(
      `find "$R" -mindepth 1 ${prune}-print0 | xargs -0 -r stat -c '%F|%t|%T|%n' > "$OUT/list"`,
      // mountinfo field 5 is the mount point, field 6 its per-mount options.
      `awk -v r="$R" 'index($5, r) == 1 { print substr($5, length(r) + 1) "|" $6 }' /proc/self/mountinfo > "$OUT/mounts"`,
    );
    if (options.exec) {
      const env = [...(spec.process?.env ?? []), ...(options.exec.env ?? [])];
      lines.push(
        `env -i ${env.map(q).join(' ')} /usr/sbin/chroot "$R" ${options.exec.argv.map(q).join(' ')} > "$OUT/exec.out" 2> "$OUT/exec.err"`,
        `echo $? > "$OUT/exec.rc"`,
      );
    }
    lines.push('echo "R=$R" > "$OUT/root"');
    const script = path.join(out, 'build.sh');
    fs.writeFileSync(script, lines.filter((l) => l !== '').join('\n') + '\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', '--fork', 'sh', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (r.status !== 0) {
      throw new Error(
        `building the rootfs failed (exit ${String(r.status)}): ${r.stderr}\n${lines.join('\n')}`,
      );
    }
    const read = (f: string): string => {
      try {
        return fs.readFileSync(path.join(out, f), 'utf8');
      } catch {
        return '';
      }
    };
    const root = read('root').trim().replace(/^R=/, '');
    const entries = read('list')
      .split('\n')
      .filter((l) => l !== '')
      .map((l): RootfsEntry => {
        const [kind = '', major = '0', minor = '0', ...rest] = l.split('|');
        const p = rest.join('|').slice(root.length);
        const type = entryType(kind);
        return type === 'char' || type === 'block'
          ? { path: p, type, major: parseInt(major, 16), minor: parseInt(minor, 16) }
          : { path: p, type };
      })
      .sort((a, b) => a.path.localeCompare(b.path));
    fs.rmSync(root, { recursive: true, force: true }); // the tmpfs was only ever mounted in the child
    const devices = Object.fromEntries(
      read('devs')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => l.split('|') as [string, 'mknod' | 'bind' | 'missing']),
    );
    const mountTable = Object.fromEntries(
      read('mounts')
        .split('\n')
        .filter((l) => l.includes('|'))
        .map((l) => [l.slice(0, l.lastIndexOf('|')) || '/', l.slice(l.lastIndexOf('|') + 1)]),
    );
    return {
      mode: 'namespace',
      entries,
      devices,
      mounts: mountTable,
      skippedMounts: read('skipped')
        .split('\n')
        .filter((l) => l !== ''),
      baseFiles,
      ...(options.exec
        ? {
            exec: {
              code: Number(read('exec.rc').trim()),
              stdout: read('exec.out'),
              stderr: read('exec.err'),
            },
          }
        : {}),
    };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** The fallback: symlinks into the host tree, listed from the outside. */
function symlinkTree(spec: OciLikeSpec, options: BuildRootfsOptions): ContainerRootfs {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-rootfs-'));
  try {
    const devices: Record<string, 'symlink' | 'missing'> = {};
    const link = (target: string, containerPath: string): void => {
      const at = path.join(root, containerPath);
      fs.mkdirSync(path.dirname(at), { recursive: true });
      fs.symlinkSync(target, at);
    };
    for (const d of spec.linux?.devices ?? []) {
      const host = options.hostPathOf?.(d.path);
      if (host && fs.existsSync(host)) {
        link(host, d.path);
        devices[d.path] = 'symlink';
      } else devices[d.path] = 'missing';
    }
    const skippedMounts: string[] = [];
    for (const m of spec.mounts ?? []) {
      if (isBind(m) && m.source) link(m.source, m.destination);
      else skippedMounts.push(m.destination);
    }
    const entries: RootfsEntry[] = [];
    const walk = (dir: string): void => {
      for (const name of fs.readdirSync(dir)) {
        const abs = path.join(dir, name);
        const st = fs.statSync(abs); // through the link: what the container would see
        entries.push({
          path: abs.slice(root.length),
          type: st.isDirectory() ? 'dir' : st.isCharacterDevice() ? 'char' : st.isFile() ? 'file' : 'other',
        });
        if (st.isDirectory() && !fs.lstatSync(abs).isSymbolicLink()) walk(abs);
      }
    };
    walk(root);
    return {
      mode: 'symlink-tree',
      entries: entries.sort((a, b) => a.path.localeCompare(b.path)),
      devices,
      mounts: {},
      skippedMounts,
      baseFiles: [],
    };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}
