/**
 * Semantic versions as Kubernetes' CEL `semver()` library and `version` device attributes see
 * them (github.com/blang/semver/v4 `Parse`, with the optional normalization of
 * `semver(string, true)`). Pure; no CEL here.
 */

const NUMERIC = /^(0|[1-9]\d*)$/;
const ALNUM = /^[0-9A-Za-z-]+$/;

export class SemverParseError extends Error {
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(`invalid semver "${input}": ${reason}`);
    this.name = 'SemverParseError';
  }
}

function parseNumber(input: string, part: string, what: string): bigint {
  if (part === '') throw new SemverParseError(input, `${what} number is empty`);
  if (!/^\d+$/.test(part))
    throw new SemverParseError(input, `invalid character(s) in ${what} number "${part}"`);
  if (!NUMERIC.test(part))
    throw new SemverParseError(input, `${what} number must not contain leading zeroes "${part}"`);
  const v = BigInt(part);
  if (v > 18446744073709551615n) throw new SemverParseError(input, `${what} number out of range`);
  return v;
}

export class Semver {
  readonly major: bigint;
  readonly minor: bigint;
  readonly patch: bigint;
  /** Pre-release identifiers (`1.0.0-rc.1` → `["rc", "1"]`). */
  readonly pre: readonly string[];
  readonly build: readonly string[];

  private constructor(
    major: bigint,
    minor: bigint,
    patch: bigint,
    pre: readonly string[],
    build: readonly string[],
  ) {
    this.major = major;
    this.minor = minor;
    this.patch = patch;
    this.pre = pre;
    this.build = build;
  }

  /** Strict Semantic Versioning 2.0.0, as blang/semver `Parse`; throws {@link SemverParseError}. */
  static parse(input: string): Semver {
    if (input.length === 0) throw new SemverParseError(input, 'version string empty');
    let rest = input;
    let build: string[] = [];
    const plus = rest.indexOf('+');
    if (plus >= 0) {
      build = rest.slice(plus + 1).split('.');
      rest = rest.slice(0, plus);
      for (const b of build) {
        if (b === '') throw new SemverParseError(input, 'build meta data is empty');
        if (!ALNUM.test(b))
          throw new SemverParseError(input, `invalid character(s) in build meta data "${b}"`);
      }
    }
    let pre: string[] = [];
    const dash = rest.indexOf('-');
    if (dash >= 0) {
      pre = rest.slice(dash + 1).split('.');
      rest = rest.slice(0, dash);
      for (const p of pre) {
        if (p === '') throw new SemverParseError(input, 'prerelease is empty');
        if (!ALNUM.test(p)) throw new SemverParseError(input, `invalid character(s) in prerelease "${p}"`);
        if (/^\d+$/.test(p) && !NUMERIC.test(p)) {
          throw new SemverParseError(input, `prerelease number must not contain leading zeroes "${p}"`);
        }
      }
    }
    const parts = rest.split('.');
    if (parts.length !== 3) throw new SemverParseError(input, 'no Major.Minor.Patch elements found');
    const [a = '', b = '', c = ''] = parts;
    return new Semver(
      parseNumber(input, a, 'major'),
      parseNumber(input, b, 'minor'),
      parseNumber(input, c, 'patch'),
      pre,
      build,
    );
  }

  /**
   * `semver(s, true)`: strips a leading `v`, fills missing minor/patch with 0 and drops leading
   * zeros of numeric parts before parsing strictly (`v1.02` → `1.2.0`).
   */
  static parseNormalized(input: string): Semver {
    let s = input.startsWith('v') ? input.slice(1) : input;
    const m = /^([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?(.*)$/.exec(s);
    if (m) {
      const strip = (x: string | undefined): string => (x === undefined ? '0' : x.replace(/^0+(?=\d)/, ''));
      s = `${strip(m[1])}.${strip(m[2])}.${strip(m[3])}${m[4] ?? ''}`;
    }
    return Semver.parse(s);
  }

  static tryParse(input: string, normalize = false): Semver | undefined {
    try {
      return normalize ? Semver.parseNormalized(input) : Semver.parse(input);
    } catch {
      return undefined;
    }
  }

  /** Semantic Versioning precedence: -1, 0 or 1 (build metadata ignored). */
  compareTo(other: Semver): -1 | 0 | 1 {
    for (const [a, b] of [
      [this.major, other.major],
      [this.minor, other.minor],
      [this.patch, other.patch],
    ] as const) {
      if (a !== b) return a < b ? -1 : 1;
    }
    if (this.pre.length === 0 && other.pre.length === 0) return 0;
    if (this.pre.length === 0) return 1;
    if (other.pre.length === 0) return -1;
    const n = Math.min(this.pre.length, other.pre.length);
    for (let i = 0; i < n; i++) {
      const c = comparePrerelease(this.pre[i] ?? '', other.pre[i] ?? '');
      if (c !== 0) return c;
    }
    return this.pre.length === other.pre.length ? 0 : this.pre.length < other.pre.length ? -1 : 1;
  }

  equals(other: Semver): boolean {
    return this.compareTo(other) === 0;
  }

  toString(): string {
    let s = `${this.major}.${this.minor}.${this.patch}`;
    if (this.pre.length > 0) s += `-${this.pre.join('.')}`;
    if (this.build.length > 0) s += `+${this.build.join('.')}`;
    return s;
  }
}

function comparePrerelease(a: string, b: string): -1 | 0 | 1 {
  const an = /^\d+$/.test(a);
  const bn = /^\d+$/.test(b);
  if (an && bn) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x === y ? 0 : x < y ? -1 : 1;
  }
  if (an) return -1;
  if (bn) return 1;
  return a === b ? 0 : a < b ? -1 : 1;
}

/** `isSemver(string)` / `isSemver(string, bool)`. */
export function isSemver(input: string, normalize = false): boolean {
  return Semver.tryParse(input, normalize) !== undefined;
}
