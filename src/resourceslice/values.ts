/**
 * Value encodings used in ResourceSlices: semver `version` attributes and integer Quantities.
 * Pure functions; no Kubernetes client involved.
 */

/** Semantic Versioning 2.0.0, the grammar the apiserver validates `version` attributes with. */
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

/** Loose input: 1 to 3 numeric parts (leading zeros allowed), optional `v`, pre-release, build. */
const LOOSE_VERSION =
  /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

export function isSemver(value: string): boolean {
  return SEMVER.test(value);
}

/**
 * Turns an NVML version string into a Semantic Versioning 2.0.0 string, as NVIDIA's driver does
 * (it parses with Masterminds/semver and publishes `.String()`):
 * - missing parts become 0: `9.0` -> `9.0.0`, `13.0` -> `13.0.0`, `550` -> `550.0.0`;
 * - leading zeros are dropped, because semver forbids them: `580.159.04` -> `580.159.4`.
 *   Selectors therefore compare `semver('580.159.4')`, not the `nvidia-smi` spelling;
 * - numeric pre-release identifiers lose leading zeros too (`1.0.0-01` -> `1.0.0-1`).
 * Returns undefined when the input has no such reading (e.g. four numeric parts).
 */
export function normalizeVersion(raw: string): string | undefined {
  const m = LOOSE_VERSION.exec(raw.trim());
  if (!m) return undefined;
  const num = (s: string | undefined): string => (s === undefined ? '0' : BigInt(s).toString());
  let out = `${num(m[1])}.${num(m[2])}.${num(m[3])}`;
  const pre = m[4];
  if (pre !== undefined) {
    out +=
      '-' +
      pre
        .split('.')
        .map((id) => (/^\d+$/.test(id) ? BigInt(id).toString() : id))
        .join('.');
  }
  if (m[5] !== undefined) out += '+' + m[5];
  return SEMVER.test(out) ? out : undefined;
}

const BINARY_SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;
const DECIMAL_SUFFIXES = ['', 'k', 'M', 'G', 'T', 'P', 'E'] as const;

/**
 * Canonical string of an integer Quantity in BinarySI format, byte-for-byte what the apiserver
 * stores for it (Go `resource.NewQuantity(v, BinarySI).String()`): values with |v| < 1024 are
 * written as DecimalSI (`16`, `0`, `1k`), larger ones with the largest exact binary suffix
 * (`85520809984` -> `81559Mi`, `1025` -> `1025`). Emitting the canonical form means the object
 * read back equals the one sent, so comparisons never see spurious differences.
 */
export function formatQuantity(value: number | bigint): string {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new RangeError(`quantity ${value} is not a safe integer`);
  }
  let v = BigInt(value);
  const negative = v < 0n;
  if (negative) v = -v;
  let suffix: string;
  if (v < 1024n) {
    let i = 0;
    while (v !== 0n && v % 1000n === 0n && i < DECIMAL_SUFFIXES.length - 1) {
      v /= 1000n;
      i++;
    }
    suffix = DECIMAL_SUFFIXES[i] ?? '';
  } else {
    let i = 0;
    while (v % 1024n === 0n && i < BINARY_SUFFIXES.length - 1) {
      v /= 1024n;
      i++;
    }
    suffix = BINARY_SUFFIXES[i] ?? '';
  }
  return `${negative ? '-' : ''}${v.toString()}${suffix}`;
}

const QUANTITY = /^([+-]?)(\d+)(?:\.(\d+))?(?:(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$/;
const MULTIPLIER: Record<string, [bigint, number]> = {
  Ki: [1024n, 0],
  Mi: [1024n ** 2n, 0],
  Gi: [1024n ** 3n, 0],
  Ti: [1024n ** 4n, 0],
  Pi: [1024n ** 5n, 0],
  Ei: [1024n ** 6n, 0],
  m: [1n, -3],
  k: [1n, 3],
  M: [1n, 6],
  G: [1n, 9],
  T: [1n, 12],
  P: [1n, 15],
  E: [1n, 18],
};

/**
 * Exact value of a Quantity string as a rational `numerator / 10^scale` reduced to a string key
 * (`"85520809984"`, `"1.5"`), so that `81559Mi` and `85520809984` compare equal. Undefined when
 * the string is not a Quantity this parser understands.
 */
export function quantityKey(q: string): string | undefined {
  const m = QUANTITY.exec(q.trim());
  if (!m) return undefined;
  const [, sign = '', int = '0', frac = '', suffix, exp] = m;
  let mantissa = BigInt(int + frac);
  let exp10 = -frac.length;
  if (suffix !== undefined) {
    const [mul, e] = MULTIPLIER[suffix] ?? [1n, 0];
    mantissa *= mul;
    exp10 += e;
  } else if (exp !== undefined) {
    exp10 += Number(exp);
  }
  if (mantissa === 0n) return '0';
  while (exp10 < 0 && mantissa % 10n === 0n) {
    mantissa /= 10n;
    exp10++;
  }
  let digits: string;
  if (exp10 >= 0) {
    digits = mantissa.toString() + '0'.repeat(exp10);
  } else {
    const s = mantissa.toString().padStart(-exp10 + 1, '0');
    digits = `${s.slice(0, exp10)}.${s.slice(exp10)}`;
  }
  return (sign === '-' ? '-' : '') + digits;
}
