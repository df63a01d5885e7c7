/**
 * Does the container runtime read the CDI specs this plugin writes? Pure: reads the settings
 * out of TOML text. Only what the CDI check needs is understood (tables, dotted and quoted
 * keys, booleans, numbers, strings and string arrays, arrays spanning lines); a value of any
 * other form is kept as its raw text and never matches.
 *
 * The facts (containerd's and CRI-O's docs and release notes):
 * - containerd 1.7 supports CDI but leaves it off: `enable_cdi = true` under
 *   `[plugins."io.containerd.grpc.v1.cri"]` (config `version = 2`; `[plugins.cri]` in version 1).
 * - containerd 2.x turns it on by default (containerd PR #9621); its own config format,
 *   `version = 3`, moved the switch to `[plugins."io.containerd.cri.v1.runtime"]`. A version 2
 *   file still works on 2.x, so for one the version of containerd decides, which a config
 *   file does not say.
 * - Both read specs from `cdi_spec_dirs`, default `["/etc/cdi", "/var/run/cdi"]`.
 * - CRI-O always has CDI on (since 1.23); `[crio.runtime] cdi_spec_dirs`, same default, set in
 *   `crio.conf` or a drop-in in `crio.conf.d/` (read in name order, later ones winning).
 */

export type TomlValue = boolean | number | string | readonly string[] | { readonly raw: string };

/** Flat `key path → value`; the path's segments are joined with NUL, so dots in quotes stay. */
export type TomlKeys = ReadonlyMap<string, TomlValue>;

export function tomlKey(...segments: string[]): string {
  return segments.join('\0');
}

/** `a."b.c".d` → ['a', 'b.c', 'd']. */
function keySegments(text: string): string[] {
  const out: string[] = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(?:\.|$)/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < text.length && (m = re.exec(text))) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

/** Drops a `#` comment that is not inside a string. */
function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#') return line.slice(0, i);
  }
  return line;
}

function parseValue(text: string): TomlValue {
  const t = text.trim();
  if (t === 'true' || t === 'false') return t === 'true';
  if (/^[+-]?\d+$/.test(t)) return Number(t);
  const str = /^"((?:[^"\\]|\\.)*)"$|^'([^']*)'$/.exec(t);
  if (str) return str[1] !== undefined ? str[1].replace(/\\(.)/g, '$1') : (str[2] ?? '');
  if (t.startsWith('[') && t.endsWith(']')) {
    const items: string[] = [];
    const inner = t.slice(1, -1);
    const re = /\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*(?:,|$)/y;
    let m: RegExpExecArray | null;
    while (re.lastIndex < inner.length && (m = re.exec(inner))) items.push(m[1] ?? m[2] ?? '');
    if (inner.replace(/["'][^"']*["']|[\s,]/g, '') === '') return items;
  }
  return { raw: t };
}

/** Counts `[` minus `]` outside strings: an array value continues while it is positive. */
function bracketDepth(text: string): number {
  let depth = 0;
  let quote: string | undefined;
  for (const c of text) {
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[') depth++;
    else if (c === ']') depth--;
  }
  return depth;
}

/** The keys of a TOML document, flattened; lines it cannot read are skipped. */
export function parseTomlKeys(text: string): Map<string, TomlValue> {
  const keys = new Map<string, TomlValue>();
  let table: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = stripComment(lines[i] ?? '').trim();
    if (line === '') continue;
    const header = /^\[\[?(.+?)\]\]?$/.exec(line);
    if (header?.[1] !== undefined && !line.includes('=')) {
      table = keySegments(header[1]);
      continue;
    }
    const eq = line.search(/=(?=(?:[^"']|"[^"]*"|'[^']*')*$)/);
    if (eq < 0) continue;
    let value = line.slice(eq + 1);
    // A multi-line array: gather lines until its brackets close.
    while (bracketDepth(value) > 0 && i + 1 < lines.length) value += ' ' + stripComment(lines[++i] ?? '');
    keys.set(tomlKey(...table, ...keySegments(line.slice(0, eq))), parseValue(value));
  }
  return keys;
}

export const DEFAULT_CDI_SPEC_DIRS: readonly string[] = ['/etc/cdi', '/var/run/cdi'];

/** `/run/...` and `/var/run/...` are one directory on every distribution (a symlink). */
export function sameHostDir(a: string, b: string): boolean {
  const norm = (p: string): string => p.replace(/\/+$/, '').replace(/^\/var\/run(\/|$)/, '/run$1');
  return norm(a) === norm(b);
}

export type CdiVerdict =
  /** CDI on, and the plugin's directory among the ones read. */
  | { readonly state: 'on'; readonly evidence: string }
  | { readonly state: 'off'; readonly evidence: string }
  /** On or off depending on the runtime's version, which the file does not say. */
  | { readonly state: 'depends'; readonly evidence: string }
  /** CDI on, but the spec dirs leave out where the plugin writes. */
  | { readonly state: 'wrong-dirs'; readonly evidence: string; readonly dirs: readonly string[] };

function dirsVerdict(dirs: TomlValue | undefined, cdiRoot: string, where: string): CdiVerdict | undefined {
  if (dirs === undefined) return undefined;
  if (!Array.isArray(dirs))
    return {
      state: 'wrong-dirs',
      evidence: `${where}cdi_spec_dirs = ${JSON.stringify(dirs)} is not a list`,
      dirs: [],
    };
  const list = dirs as readonly string[];
  if (list.some((d) => sameHostDir(d, cdiRoot))) return undefined;
  return { state: 'wrong-dirs', evidence: `${where}cdi_spec_dirs = ${JSON.stringify(list)}`, dirs: list };
}

/** containerd's CRI plugin table for a config version. */
export function containerdCriTable(version: number): string[] {
  if (version >= 3) return ['plugins', 'io.containerd.cri.v1.runtime'];
  if (version === 2) return ['plugins', 'io.containerd.grpc.v1.cri'];
  return ['plugins', 'cri'];
}

/** containerd's CDI setting from its merged config keys (the main file, then its imports). */
export function containerdCdi(keys: TomlKeys, cdiRoot: string): CdiVerdict {
  const rawVersion = keys.get(tomlKey('version'));
  const version = typeof rawVersion === 'number' ? rawVersion : 1;
  const table = containerdCriTable(version);
  const where = `[${table.map((s, i) => (i === 0 ? s : JSON.stringify(s))).join('.')}] `;
  const enable = keys.get(tomlKey(...table, 'enable_cdi'));
  const dirs = dirsVerdict(keys.get(tomlKey(...table, 'cdi_spec_dirs')), cdiRoot, where);
  if (enable === false) return { state: 'off', evidence: `${where}enable_cdi = false` };
  if (enable !== true && enable !== undefined)
    return { state: 'off', evidence: `${where}enable_cdi = ${JSON.stringify(enable)} is not true` };
  if (dirs) return dirs;
  if (enable === undefined && version < 3)
    return {
      state: 'depends',
      evidence: `config version ${String(version)} without ${where}enable_cdi: off on containerd 1.7, on by default on 2.x`,
    };
  return {
    state: 'on',
    evidence:
      enable === true
        ? `${where}enable_cdi = true`
        : `config version 3 (containerd 2.x), where CDI is on by default`,
  };
}

/** CRI-O's CDI setting from its merged config keys (crio.conf, then crio.conf.d/ in order). */
export function crioCdi(keys: TomlKeys, cdiRoot: string): CdiVerdict {
  const where = '[crio.runtime] ';
  const dirs = dirsVerdict(keys.get(tomlKey('crio', 'runtime', 'cdi_spec_dirs')), cdiRoot, where);
  return (
    dirs ?? { state: 'on', evidence: 'CRI-O always reads CDI specs; its cdi_spec_dirs include the plugin’s' }
  );
}

/** `imports` of a containerd config: the files (or `*` globs in the last segment) it merges. */
export function containerdImports(keys: TomlKeys): readonly string[] {
  const v = keys.get(tomlKey('imports'));
  return Array.isArray(v) ? (v as readonly string[]) : [];
}

/** Later documents win, key by key, as containerd's imports and CRI-O's drop-ins do. */
export function mergeTomlKeys(docs: readonly TomlKeys[]): Map<string, TomlValue> {
  const out = new Map<string, TomlValue>();
  for (const d of docs) for (const [k, v] of d) out.set(k, v);
  return out;
}
