/**
 * Kubernetes `resource.Quantity` as the CEL `quantity()` library sees it: parsing with the
 * apimachinery grammar and exact arithmetic. Pure; no CEL here.
 *
 * Grammar (apimachinery `ParseQuantity`):
 *
 *   <quantity>  ::= <sign>? <digits> ( "." <digits>? )? <suffix>   |  <sign>? "." <digits> <suffix>
 *   <suffix>    ::= "" | Ki | Mi | Gi | Ti | Pi | Ei | n | u | m | k | M | G | T | P | E
 *                 | ( e | E ) <sign>? <digits>
 *
 * Values are kept exactly as an integer count of nano-units (10^-9), which is the precision
 * Kubernetes keeps: a non-zero value finer than 1n is rounded up (away from zero) to the next
 * nano, and a BinarySI value is capped at 2^63-1, as `ParseQuantity` does. So
 * `quantity("85520809984")` (an H100 80GB) is 79.65Gi and compares *less* than `80Gi`.
 */

export type QuantityFormat = 'BinarySI' | 'DecimalSI' | 'DecimalExponent';

const NANO = 1_000_000_000n;
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
/** Larger decimal exponents are refused rather than expanded into huge BigInts. */
const MAX_EXPONENT = 1000;

const BINARY: Readonly<Record<string, bigint>> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};
const DECIMAL: Readonly<Record<string, number>> = {
  n: -9,
  u: -6,
  m: -3,
  '': 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};

const QUANTITY_RE = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(.*)$/;

/** The string is not a Quantity (the same cases `resource.ParseQuantity` rejects). */
export class QuantityParseError extends Error {
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(
      `quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': "${input}" (${reason})`,
    );
    this.name = 'QuantityParseError';
  }
}

function pow10(n: number): bigint {
  return 10n ** BigInt(n);
}

/** Divides rounding away from zero (Go's `inf.RoundUp` on the magnitude). */
function divAwayFromZero(a: bigint, b: bigint): bigint {
  const q = a / b;
  return q * b === a ? q : a < 0n ? q - 1n : q + 1n;
}

export class Quantity {
  /** Exact value in units of 10^-9. */
  readonly nanos: bigint;
  /** The format a canonical string of this value would use (the suffix family it was written in). */
  readonly format: QuantityFormat;
  /** The text it was parsed from, when it came from a string. */
  readonly source?: string;

  private constructor(nanos: bigint, format: QuantityFormat, source?: string) {
    this.nanos = nanos;
    this.format = format;
    if (source !== undefined) this.source = source;
  }

  /** Parses with Kubernetes' rules; throws {@link QuantityParseError}. */
  static parse(input: string): Quantity {
    if (input.length === 0) throw new QuantityParseError(input, 'empty');
    const m = QUANTITY_RE.exec(input);
    if (!m) throw new QuantityParseError(input, 'no number');
    const [, sign = '', intPart, fracA, fracB, suffix = ''] = m;
    const frac = fracA ?? fracB ?? '';
    const digits = (intPart ?? '') + frac;
    let mantissa = BigInt(digits === '' ? '0' : digits);
    let exp10 = -frac.length;
    let format: QuantityFormat;
    const binary = BINARY[suffix];
    const decimal = DECIMAL[suffix];
    if (binary !== undefined) {
      mantissa *= binary;
      format = 'BinarySI';
    } else if (decimal !== undefined) {
      exp10 += decimal;
      format = 'DecimalSI';
    } else if (/^[eE][+-]?\d+$/.test(suffix)) {
      const e = Number(suffix.slice(1));
      if (!Number.isSafeInteger(e) || Math.abs(e) > MAX_EXPONENT) {
        throw new QuantityParseError(input, `exponent out of range (|e| <= ${MAX_EXPONENT})`);
      }
      exp10 += e;
      format = 'DecimalExponent';
    } else {
      throw new QuantityParseError(input, `unknown suffix "${suffix}"`);
    }
    const shift = exp10 + 9;
    let nanos = shift >= 0 ? mantissa * pow10(shift) : divAwayFromZero(mantissa, pow10(-shift));
    if (format === 'BinarySI' && nanos > INT64_MAX * NANO) nanos = INT64_MAX * NANO;
    if (format === 'BinarySI' && nanos > 0n && nanos < NANO) format = 'DecimalSI';
    if (sign === '-') nanos = -nanos;
    return new Quantity(nanos, format, input);
  }

  /** Like {@link parse} but returns undefined instead of throwing. */
  static tryParse(input: string): Quantity | undefined {
    try {
      return Quantity.parse(input);
    } catch {
      return undefined;
    }
  }

  static fromInteger(value: bigint | number, format: QuantityFormat = 'DecimalSI'): Quantity {
    const v = BigInt(value);
    return new Quantity(v * NANO, format);
  }

  static fromNanos(nanos: bigint, format: QuantityFormat = 'DecimalSI'): Quantity {
    return new Quantity(nanos, format);
  }

  /** -1, 0 or 1, as `Quantity.Cmp`. */
  compareTo(other: Quantity): -1 | 0 | 1 {
    return this.nanos < other.nanos ? -1 : this.nanos > other.nanos ? 1 : 0;
  }

  equals(other: Quantity): boolean {
    return this.nanos === other.nanos;
  }

  sign(): -1 | 0 | 1 {
    return this.nanos < 0n ? -1 : this.nanos > 0n ? 1 : 0;
  }

  add(other: Quantity): Quantity {
    return new Quantity(this.nanos + other.nanos, this.format);
  }

  sub(other: Quantity): Quantity {
    return new Quantity(this.nanos - other.nanos, this.format);
  }

  /** The value as int64 when it is a whole number in range (`Quantity.AsInt64`). */
  asInt64(): bigint | undefined {
    if (this.nanos % NANO !== 0n) return undefined;
    const v = this.nanos / NANO;
    return v >= INT64_MIN && v <= INT64_MAX ? v : undefined;
  }

  isInteger(): boolean {
    return this.asInt64() !== undefined;
  }

  asApproximateFloat(): number {
    const whole = this.nanos / NANO;
    const frac = this.nanos % NANO;
    return Number(whole) + Number(frac) / 1e9;
  }

  /**
   * Canonical-ish string: integers in their format's largest exact suffix (`81559Mi`, `2k`),
   * fractions in milli or nano units (`1500m`). Used for display, not for equality.
   */
  toString(): string {
    const neg = this.nanos < 0n;
    const abs = neg ? -this.nanos : this.nanos;
    const s = neg ? '-' : '';
    if (abs % NANO !== 0n) {
      if (abs % 1_000_000n === 0n) return `${s}${abs / 1_000_000n}m`;
      if (abs % 1000n === 0n) return `${s}${abs / 1000n}u`;
      return `${s}${abs}n`;
    }
    let v = abs / NANO;
    if (this.format === 'BinarySI' && v >= 1024n) {
      const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
      let i = 0;
      while (v % 1024n === 0n && i < suffixes.length - 1) {
        v /= 1024n;
        i++;
      }
      return `${s}${v}${suffixes[i] ?? ''}`;
    }
    const suffixes = ['', 'k', 'M', 'G', 'T', 'P', 'E'];
    let i = 0;
    while (v !== 0n && v % 1000n === 0n && i < suffixes.length - 1) {
      v /= 1000n;
      i++;
    }
    return `${s}${v}${suffixes[i] ?? ''}`;
  }

  /** Human reading for reports: `85520809984 (79.65Gi)`. */
  describe(): string {
    const exact = this.toString();
    const int = this.asInt64();
    if (int === undefined) return exact;
    const abs = int < 0n ? -int : int;
    if (abs < 1024n) return exact;
    const units: [bigint, string][] = [
      [1n << 60n, 'Ei'],
      [1n << 50n, 'Pi'],
      [1n << 40n, 'Ti'],
      [1n << 30n, 'Gi'],
      [1n << 20n, 'Mi'],
      [1n << 10n, 'Ki'],
    ];
    const unit = units.find(([size]) => abs >= size) ?? [1n, ''];
    const approx = (Number(int) / Number(unit[0])).toFixed(2).replace(/\.?0+$/, '');
    const plain = int.toString();
    const approxText = `${approx}${unit[1]}`;
    return exact === plain ? `${plain} (${approxText})` : `${exact} = ${plain} (${approxText})`;
  }
}

/** `isQuantity(string)`. */
export function isQuantity(input: string): boolean {
  return Quantity.tryParse(input) !== undefined;
}
