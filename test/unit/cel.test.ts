import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Quantity,
  Semver,
  compileSelector,
  evaluateSelector,
  isQuantity,
  isSemver,
  parseAst,
  rewriteHasMacros,
  toCelDevice,
  type DeviceInput,
  type SelectorVerdict,
} from '../../src/cel/index.js';

const D = 'gpu.dra.dev';

/** An H100 80GB as gpu-dra publishes it (values from shared facts h100.md). */
const h100: DeviceInput = {
  name: 'gpu-0',
  attributes: {
    type: { string: 'gpu' },
    uuid: { string: 'GPU-6a5915e5-c913-b8b9-41dc-75d55806210b' },
    productName: { string: 'NVIDIA H100 80GB HBM3' },
    brand: { string: 'Nvidia' },
    architecture: { string: 'Hopper' },
    cudaComputeCapability: { version: '9.0.0' },
    driverVersion: { version: '580.159.4' },
    cudaDriverVersion: { version: '13.0.0' },
    'resource.kubernetes.io/pciBusID': { string: '0000:00:06.0' },
    'resource.kubernetes.io/pcieRoot': { string: 'pci0000:00' },
    numa: { int: 1 },
    coherent: { bool: false },
  },
  capacity: { memory: { value: '81559Mi' } },
};

const mig: DeviceInput = {
  name: 'gpu-0-mig-1g5gb-19-2',
  attributes: {
    type: { string: 'mig' },
    profile: { string: '1g.5gb' },
    cudaComputeCapability: { version: '8.0.0' },
  },
  capacity: { memory: { value: '4864Mi' }, multiprocessors: { value: '14' } },
};

function run(expression: string, device: DeviceInput = h100, driver = D): SelectorVerdict {
  return evaluateSelector(expression, driver, device);
}
function yes(expression: string, device?: DeviceInput): void {
  expect(run(expression, device), expression).toEqual({ ok: true, matches: true });
}
function no(expression: string, device?: DeviceInput): void {
  expect(run(expression, device), expression).toEqual({ ok: true, matches: false });
}
function fails(expression: string, pattern: RegExp, device?: DeviceInput): void {
  const v = run(expression, device);
  expect(v.ok, expression).toBe(false);
  if (!v.ok) expect(v.error, expression).toMatch(pattern);
}

describe('Quantity', () => {
  const n = (s: string): bigint => Quantity.parse(s).nanos;
  const G = 1_000_000_000n;

  it.each([
    ['0', 0n],
    ['1', G],
    ['+1', G],
    ['-1', -G],
    ['80Gi', 80n * 1024n ** 3n * G],
    ['85520809984', 85520809984n * G],
    ['81559Mi', 85520809984n * G],
    ['1.5Gi', 1610612736n * G],
    ['1Ki', 1024n * G],
    ['1k', 1000n * G],
    ['1M', 1_000_000n * G],
    ['1E', 10n ** 18n * G],
    ['100m', 100_000_000n],
    ['1u', 1000n],
    ['1n', 1n],
    ['1e3', 1000n * G],
    ['1E3', 1000n * G],
    ['1e-3', 1_000_000n],
    ['1e+3', 1000n * G],
    ['.5', G / 2n],
    ['5.', 5n * G],
    ['1.G', G * G],
    ['0.1n', 1n],
    ['-0.1n', -1n],
    ['1e-10', 1n],
  ])('parses %s', (s, nanos) => {
    expect(n(s)).toBe(nanos);
  });

  it.each(['', 'abc', '1Kb', '1K', '1.1.1', ' 1', '1 ', '1e', '--1', 'Ki', '.', '1i', '0.1mi', '1e1000000'])(
    'rejects %j',
    (s) => {
      expect(() => Quantity.parse(s)).toThrow();
      expect(isQuantity(s)).toBe(false);
    },
  );

  it('caps BinarySI values at int64 max, as Kubernetes does', () => {
    expect(Quantity.parse('100Ei').asInt64()).toBe((1n << 63n) - 1n);
  });

  it('compares exactly: an H100 80GB (85520809984 bytes) is less than 80Gi', () => {
    const h = Quantity.parse('85520809984');
    expect(h.compareTo(Quantity.parse('80Gi'))).toBe(-1);
    expect(h.compareTo(Quantity.parse('79Gi'))).toBe(1);
    expect(h.compareTo(Quantity.parse('81559Mi'))).toBe(0);
    expect(h.equals(Quantity.parse('81559Mi'))).toBe(true);
    expect(Quantity.parse('1Gi').compareTo(Quantity.parse('1G'))).toBe(1);
    expect(Quantity.parse('1000m').equals(Quantity.parse('1'))).toBe(true);
    expect(Quantity.parse('85.52G').compareTo(h)).toBe(-1);
    expect(Quantity.parse('85.53G').compareTo(h)).toBe(1);
  });

  it('converts and does arithmetic', () => {
    expect(Quantity.parse('1.5Gi').asInt64()).toBe(1610612736n);
    expect(Quantity.parse('1500m').asInt64()).toBeUndefined();
    expect(Quantity.parse('1500m').isInteger()).toBe(false);
    expect(Quantity.parse('2').isInteger()).toBe(true);
    expect(Quantity.parse('1500m').asApproximateFloat()).toBe(1.5);
    expect(Quantity.parse('-3').sign()).toBe(-1);
    expect(Quantity.parse('0').sign()).toBe(0);
    expect(Quantity.parse('1Gi').add(Quantity.parse('512Mi')).asInt64()).toBe(1610612736n);
    expect(Quantity.parse('1').sub(Quantity.parse('250m')).toString()).toBe('750m');
    expect(Quantity.parse('1e30').asInt64()).toBeUndefined();
  });

  it('prints readably', () => {
    expect(Quantity.parse('85520809984').describe()).toBe('85520809984 (79.65Gi)');
    expect(Quantity.parse('81559Mi').describe()).toBe('81559Mi = 85520809984 (79.65Gi)');
    expect(Quantity.parse('80Gi').toString()).toBe('80Gi');
    expect(Quantity.parse('2000').toString()).toBe('2k');
    expect(Quantity.parse('16').describe()).toBe('16');
  });
});

describe('Semver', () => {
  it('parses strictly like blang/semver', () => {
    const v = Semver.parse('580.159.4');
    expect([v.major, v.minor, v.patch]).toEqual([580n, 159n, 4n]);
    expect(Semver.parse('1.0.0-rc.1+build.5').toString()).toBe('1.0.0-rc.1+build.5');
    for (const bad of [
      '',
      '1.2',
      '1',
      'v1.2.3',
      '01.2.3',
      '1.02.3',
      '1.2.3-01',
      '1.2.3-',
      '1.2.3+',
      '1.2.3.4',
      '1.2.x',
      '580.159.04',
    ]) {
      expect(isSemver(bad), bad).toBe(false);
    }
  });

  it('normalizes when asked (semver(s, true))', () => {
    expect(Semver.parseNormalized('v1.2').toString()).toBe('1.2.0');
    expect(Semver.parseNormalized('580.159.04').toString()).toBe('580.159.4');
    expect(Semver.parseNormalized('9').toString()).toBe('9.0.0');
    expect(isSemver('v9.0', true)).toBe(true);
  });

  it('orders by Semantic Versioning precedence', () => {
    const order = [
      '1.0.0-alpha',
      '1.0.0-alpha.1',
      '1.0.0-alpha.beta',
      '1.0.0-beta',
      '1.0.0-beta.2',
      '1.0.0-beta.11',
      '1.0.0-rc.1',
      '1.0.0',
      '1.0.1',
      '1.1.0',
      '2.0.0',
      '10.0.0',
    ];
    for (let i = 0; i < order.length; i++) {
      for (let j = 0; j < order.length; j++) {
        const a = Semver.parse(order[i] ?? '');
        const b = Semver.parse(order[j] ?? '');
        expect(a.compareTo(b), `${order[i]} vs ${order[j]}`).toBe(Math.sign(i - j));
      }
    }
    expect(Semver.parse('1.0.0+a').equals(Semver.parse('1.0.0+b'))).toBe(true);
  });
});

describe('has() rewrite', () => {
  it('rewrites has() over an index expression to `in`', () => {
    expect(rewriteHasMacros(`has(device.attributes["gpu.dra.dev"].profile)`, parseAst)).toBe(
      `"profile" in device.attributes["gpu.dra.dev"]`,
    );
    expect(rewriteHasMacros(`a && has( device.capacity['d'].memory ) || b`, parseAst)).toBe(
      `a && "memory" in device.capacity["d"] || b`,
    );
    expect(rewriteHasMacros(`has(x[0].y.z)`, parseAst)).toBe(`"z" in x[0].y`);
  });

  it('rewrites several and nested calls', () => {
    const out = rewriteHasMacros(
      `has(m["a"].x) && !has(m["b"].y) && cel.bind(v, m["c"], has(v.z))`,
      parseAst,
    );
    expect(out).toBe(`"x" in m["a"] && !("y" in m["b"]) && cel.bind(v, m["c"], has(v.z))`);
    expect(rewriteHasMacros(`has(m[has(n["k"].f) ? "a" : "b"].x)`, parseAst)).toBe(
      `"x" in m["f" in n["k"] ? "a" : "b"]`,
    );
  });

  it('rewrites a call on a parenthesized receiver (whose node starts inside the parenthesis)', () => {
    expect(rewriteHasMacros(`(a ? "x" : b).lowerAscii().matches("p")`, parseAst)).toBe(
      `(a ? "x" : b).lowerAscii().matchesRE2("p")`,
    );
    yes(
      `(device.driver == "x" ? "a" : device.attributes["gpu.dra.dev"].productName).lowerAscii().matches("^nvidia")`,
    );
  });

  it('answers `in` on the device maps for the domains the device has, as the scheduler does', () => {
    expect(rewriteHasMacros(`"gpu.dra.dev" in device.attributes`, parseAst)).toBe(
      `size(device.attributes["gpu.dra.dev"]) > 0`,
    );
    yes(`"gpu.dra.dev" in device.attributes`);
    yes(`"resource.kubernetes.io" in device.attributes`);
    yes(`"gpu.dra.dev" in device.capacity`);
    // Kubernetes: a lookup of another domain is an empty map, but `in` asks the real map.
    no(`"other.example.com" in device.attributes`);
    no(`"other.example.com" in device.capacity`);
    yes(`!("other.example.com" in device.attributes) && size(device.attributes["other.example.com"]) == 0`);
    yes(`"profile" in device.attributes["gpu.dra.dev"]`, mig);
  });

  it('leaves forms cel-js handles alone', () => {
    for (const e of ['has(device.driver)', 'has(a.b.c)', 'device.driver == "x"', '"has(x[0].y)" == s']) {
      expect(rewriteHasMacros(e, parseAst)).toBe(e);
    }
  });

  it('gives Kubernetes verdicts', () => {
    yes(`has(device.attributes["gpu.dra.dev"].productName)`);
    no(`has(device.attributes["gpu.dra.dev"].profile)`);
    yes(`has(device.attributes["gpu.dra.dev"].profile)`, mig);
    yes(`has(device.attributes["resource.kubernetes.io"].pcieRoot)`);
    yes(`has(device.capacity["gpu.dra.dev"].memory)`);
    no(`has(device.capacity["gpu.dra.dev"].multiprocessors)`);
    // A domain the device does not use is an empty map: has() is false, not an error.
    no(`has(device.attributes["other.example.com"].x)`);
    yes(
      `!has(device.attributes["gpu.dra.dev"].profile) || device.attributes["gpu.dra.dev"].profile == "1g.5gb"`,
    );
    yes(
      `!has(device.attributes["gpu.dra.dev"].profile) || device.attributes["gpu.dra.dev"].profile == "1g.5gb"`,
      mig,
    );
    yes(`has(device.driver)`);
    // has() on a non-map value is an error, as in Kubernetes.
    fails(`has(device.attributes["gpu.dra.dev"].type.x)`, /runtime error/);
  });
});

describe('selector evaluation (Kubernetes semantics)', () => {
  it('exposes driver, attributes by domain and capacity', () => {
    yes(`device.driver == "gpu.dra.dev"`);
    no(`device.driver == "gpu.nvidia.com"`);
    yes(`device.attributes["gpu.dra.dev"].type == "gpu"`);
    yes(`device.attributes["resource.kubernetes.io"].pciBusID == "0000:00:06.0"`);
    yes(`device.attributes["gpu.dra.dev"].numa == 1`);
    yes(`device.attributes["gpu.dra.dev"].numa > 0`);
    yes(`device.attributes["gpu.dra.dev"].coherent == false`);
    yes(`device.allowMultipleAllocations == false`);
    // Unqualified names belong to the driver's domain, whatever the driver is called.
    expect(
      evaluateSelector(`device.attributes["gpu.nvidia.com"].type == "gpu"`, 'gpu.nvidia.com', h100),
    ).toEqual({ ok: true, matches: true });
  });

  it('string functions', () => {
    yes(`device.attributes["gpu.dra.dev"].productName.startsWith("NVIDIA H100")`);
    no(`device.attributes["gpu.dra.dev"].productName.startsWith("NVIDIA A100")`);
    yes(`device.attributes["gpu.dra.dev"].productName.endsWith("HBM3")`);
    yes(`device.attributes["gpu.dra.dev"].productName.contains("80GB")`);
    yes(`device.attributes["gpu.dra.dev"].productName.matches("^NVIDIA H1[0-9]{2} ")`);
    yes(
      `device.attributes["resource.kubernetes.io"].pciBusID.matches("^0000:[0-9a-f]{2}:[0-9a-f]{2}\\\\.[0-7]$")`,
    );
    yes(`device.attributes["gpu.dra.dev"].architecture.lowerAscii() == "hopper"`);
    yes(`device.attributes["gpu.dra.dev"].productName.find("H[0-9]+") == "H100"`);
    yes(`device.attributes["gpu.dra.dev"].productName.findAll("[0-9]+") == ["100", "80", "3"]`);
    yes(`size(device.attributes["gpu.dra.dev"].uuid) == 40`);
    yes(`device.attributes["gpu.dra.dev"].productName.split(" ")[1] == "H100"`);
    // ext.Strings v2 (Go's strings.Replace: all, or the first n; an empty `from` matches
    // before every code point), charAt by code point.
    yes(`device.attributes["gpu.dra.dev"].productName.replace(" ", "_") == "NVIDIA_H100_80GB_HBM3"`);
    yes(`device.attributes["gpu.dra.dev"].productName.replace(" ", "_", 1) == "NVIDIA_H100 80GB HBM3"`);
    yes(`"ab".replace("", "-") == "-a-b-" && "ab".replace("", "-", 2) == "-a-b"`);
    yes(`"héllo".charAt(1) == "é" && "ab".charAt(2) == ""`);
    fails(`"ab".charAt(3) == ""`, /index out of range: 3/);
  });

  it("Kubernetes' list functions", () => {
    yes(`[3, 1, 2].sum() == 6 && [3, 1, 2].min() == 1 && [3, 1, 2].max() == 3`);
    yes(`[1, 2, 2].isSorted() && ![2, 1].isSorted()`);
    // Strings of unknown length: the apiserver estimates this one over the limit.
    expect(compileSelector(`!["b", "a"].isSorted()`)).toMatchObject({ ok: false });
    yes(`[1, 2, 1].indexOf(1) == 0 && [1, 2, 1].lastIndexOf(1) == 2 && [1].indexOf(5) == -1`);
    // Over lists of strings of unknown length the apiserver's estimate is over the limit.
    expect(compileSelector(`["a", "b"].indexOf("a") == 0`)).toMatchObject({ ok: false });
    fails(`[1].filter(x, x > 1).min() == 0`, /min called on empty list/);
    expect(compileSelector(`[1, 2].indexOf("a") == 0`).ok).toBe(false);
  });

  it('says so when a selector uses a Kubernetes function explain cannot evaluate', () => {
    for (const [e, what] of [
      [`[2, 1].sort() == [1, 2]`, 'sort()'],
      [`sets.contains([1, 2], [1])`, 'sets.*'],
      [`isIP("10.0.0.1")`, 'isIP()'],
      [`device.attributes["gpu.dra.dev"].all(k, v, k != "")`, 'all() with two variables'],
    ] as const) {
      const c = compileSelector(e);
      expect(c, e).toMatchObject({ ok: false, unsupported: true });
      if (!c.ok) expect(c.error).toContain(`explain cannot evaluate ${what}`);
    }
    // A real mistake stays a compile error.
    expect(compileSelector('nosuchfunction(1)')).not.toHaveProperty('unsupported');
  });

  it('refuses selectors over the cost limit with the apiserver message', () => {
    const A = 'device.attributes';
    const c = compileSelector(
      `${A}.all(d, ${A}[d].all(k, ${A}.all(e, ${A}[e].all(j, ${A}[d][k] == ${A}[e][j]))))`,
    );
    expect(c).toEqual({
      ok: false,
      error: 'too complex, exceeds cost limit (estimated worst-case cost 23337219, limit 1000000)',
    });
  });

  it('regular expressions are RE2, as in Kubernetes (Go regexp), not JavaScript', () => {
    const name = 'device.attributes["gpu.dra.dev"].productName';
    // Inline flags: RE2 has them; JavaScript's RegExp (Node 20) refuses `(?i)`.
    yes(`${name}.matches("(?i)nvidia h100")`);
    yes(`matches(${name}, "(?i)^nvidia")`);
    no(`${name}.matches("nvidia h100")`);
    yes(`${name}.find("(?i)hbm[0-9]") == "HBM3"`);
    yes(`${name}.findAll("(?i)[a-z]+[0-9]+") == ["H100", "HBM3"]`);
    // \z ends the text in RE2; POSIX classes work inside brackets.
    yes(`${name}.matches("HBM3\\\\z")`);
    yes(`${name}.matches("^[[:upper:]]+ ")`);
    // No backreferences or lookaround in RE2: an evaluation error, as the scheduler reports.
    fails(`${name}.matches("(N)\\\\1")`, /invalid regular expression/);
    fails(`${name}.matches("NVIDIA(?= )")`, /invalid regular expression/);
  });

  it('quantity()', () => {
    yes(`device.capacity["gpu.dra.dev"].memory.compareTo(quantity("40Gi")) >= 0`);
    no(`device.capacity["gpu.dra.dev"].memory.compareTo(quantity("80Gi")) >= 0`);
    yes(`device.capacity["gpu.dra.dev"].memory.isLessThan(quantity("80Gi"))`);
    yes(`device.capacity["gpu.dra.dev"].memory.isGreaterThan(quantity("79Gi"))`);
    yes(`device.capacity["gpu.dra.dev"].memory == quantity("85520809984")`);
    // The apiserver refuses `!=` on quantities: only `==` has Kubernetes' constant cost, `!=`
    // is estimated by an unknown size (test/e2e/cel-cost.test.ts checks it against the apiserver).
    fails(
      `device.capacity["gpu.dra.dev"].memory != quantity("85520809984")`,
      /^too complex, exceeds cost limit/,
    );
    no(`!(device.capacity["gpu.dra.dev"].memory == quantity("85520809984"))`);
    yes(`device.capacity["gpu.dra.dev"].memory.asInteger() == 85520809984`);
    yes(`device.capacity["gpu.dra.dev"].memory.asApproximateFloat() > 8.5e10`);
    yes(`device.capacity["gpu.dra.dev"].memory.isInteger()`);
    yes(`device.capacity["gpu.dra.dev"].memory.sign() == 1`);
    yes(`device.capacity["gpu.dra.dev"].memory.add(quantity("361Mi")) == quantity("80Gi")`);
    yes(`device.capacity["gpu.dra.dev"].memory.add(1).sub(1) == quantity("81559Mi")`);
    yes(`quantity("1.5Gi").asInteger() == 1610612736`);
    yes(`isQuantity("80Gi") && !isQuantity("80GB")`);
    fails(`quantity("80GB").sign() == 1`, /quantities must match/);
    fails(`quantity("500m").asInteger() == 0`, /cannot convert value to integer/);
  });

  it('semver() and version attributes', () => {
    yes(`device.attributes["gpu.dra.dev"].cudaComputeCapability.compareTo(semver("9.0.0")) >= 0`);
    no(`device.attributes["gpu.dra.dev"].cudaComputeCapability.compareTo(semver("9.0.0")) >= 0`, mig);
    yes(`device.attributes["gpu.dra.dev"].cudaComputeCapability.isGreaterThan(semver("8.9.0"))`);
    yes(`device.attributes["gpu.dra.dev"].cudaComputeCapability.isLessThan(semver("10.0.0"))`);
    yes(`device.attributes["gpu.dra.dev"].cudaComputeCapability == semver("9.0.0")`);
    yes(
      `device.attributes["gpu.dra.dev"].driverVersion.major() == 580 && device.attributes["gpu.dra.dev"].driverVersion.minor() == 159 && device.attributes["gpu.dra.dev"].driverVersion.patch() == 4`,
    );
    yes(`device.attributes["gpu.dra.dev"].driverVersion.compareTo(semver("580.159.04", true)) == 0`);
    yes(`isSemver("1.2.3") && !isSemver("1.2") && isSemver("v1.2", true)`);
    fails(`semver("1.2").major() == 1`, /invalid semver/);
    // A version attribute is a semver object, not a string.
    no(`device.attributes["gpu.dra.dev"].cudaComputeCapability == "9.0.0"`);
  });

  it('optionals and cel.bind', () => {
    yes(`device.attributes["gpu.dra.dev"].?profile.orValue("none") == "none"`);
    yes(`device.attributes["gpu.dra.dev"].?profile.orValue("none") == "1g.5gb"`, mig);
    yes(`device.attributes[?"other.io"].hasValue()`);
    yes(`cel.bind(a, device.attributes["gpu.dra.dev"], a.architecture == "Hopper" && a.brand == "Nvidia")`);
    yes(`device.attributes["gpu.dra.dev"].exists(k, k == "uuid")`);
    yes(`["Hopper", "Blackwell"].exists(x, x == device.attributes["gpu.dra.dev"].architecture)`);
    yes(`device.attributes["gpu.dra.dev"].architecture in ["Hopper", "Blackwell"]`);
  });

  it('a missing attribute is an evaluation error, not false', () => {
    fails(`device.attributes["gpu.dra.dev"].profile == "1g.5gb"`, /runtime error: No such key: profile/);
    fails(`device.attributes["other.example.com"].x == 1`, /No such key: x/);
    fails(`device.capacity["gpu.dra.dev"].multiprocessors.compareTo(quantity("1")) > 0`, /No such key/);
    fails(`!(device.attributes["gpu.dra.dev"].profile == "1g.5gb")`, /No such key/);
  });

  it('&& and || absorb an error when the other side decides, as CEL specifies', () => {
    no(`device.attributes["gpu.dra.dev"].profile == "x" && false`);
    no(`false && device.attributes["gpu.dra.dev"].profile == "x"`);
    yes(`device.attributes["gpu.dra.dev"].profile == "x" || true`);
    fails(`device.attributes["gpu.dra.dev"].profile == "x" || false`, /No such key/);
    fails(`true && device.attributes["gpu.dra.dev"].profile == "x"`, /No such key/);
  });

  it('a non-bool result is an error', () => {
    expect(compileSelector('1 + 1')).toEqual({
      ok: false,
      error: expect.stringMatching(/must evaluate to bool/) as unknown,
    });
    fails(
      `device.attributes["gpu.dra.dev"].productName`,
      /CEL result of type string could not be converted to bool/,
    );
    fails(`device.attributes["gpu.dra.dev"].numa`, /type int/);
  });

  it('rejects what does not compile', () => {
    for (const e of [
      'device.driver ==',
      'device.nosuchfield == 1',
      'device.driver == 1 +',
      'nosuchfunction(1)',
      '',
      'x == 1',
    ]) {
      const c = compileSelector(e);
      expect(c.ok, e).toBe(false);
    }
    const long = `device.driver == "${'x'.repeat(11 * 1024)}"`;
    expect(compileSelector(long)).toEqual({ ok: false, error: expect.stringMatching(/too long/) as unknown });
  });

  it('fails evaluation for device data Kubernetes would not convert', () => {
    const bad: DeviceInput = { name: 'x', attributes: { v: { version: '1.2' } } };
    fails2(evaluateSelector('device.driver == "gpu.dra.dev"', D, bad), /parse semantic version/);
    expect(() => toCelDevice(D, { name: 'y', capacity: { memory: { value: '80GB' } } })).toThrow(
      /not a quantity/,
    );
  });
});

function fails2(v: SelectorVerdict, pattern: RegExp): void {
  expect(v.ok).toBe(false);
  if (!v.ok) expect(v.error).toMatch(pattern);
}

describe('property: simple comparisons agree with a reference computation', () => {
  const ident = fc.constantFrom('alpha', 'beta', 'gamma', 'delta', 'count', 'model');
  const intOps = ['==', '!=', '<', '<=', '>', '>='] as const;
  const refInt = (op: (typeof intOps)[number], a: bigint, b: bigint): boolean =>
    ({ '==': a === b, '!=': a !== b, '<': a < b, '<=': a <= b, '>': a > b, '>=': a >= b })[op];
  const cmp = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

  type Attr =
    | { kind: 'int'; v: bigint }
    | { kind: 'string'; v: string }
    | { kind: 'version'; v: [number, number, number] }
    | { kind: 'bool'; v: boolean };
  const attr: fc.Arbitrary<Attr> = fc.oneof(
    fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }).map((v) => ({ kind: 'int' as const, v })),
    fc
      .string({ unit: fc.constantFrom('a', 'b', 'H', '1', ' ', '-', '.'), maxLength: 8 })
      .map((v) => ({ kind: 'string' as const, v })),
    fc.tuple(fc.nat(20), fc.nat(20), fc.nat(20)).map((v) => ({ kind: 'version' as const, v })),
    fc.boolean().map((v) => ({ kind: 'bool' as const, v })),
  );

  it('int, string, version, bool and quantity comparisons', () => {
    fc.assert(
      fc.property(
        fc.dictionary(ident, attr, { maxKeys: 4 }),
        ident,
        fc.constantFrom(...intOps),
        fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }),
        fc.string({ unit: fc.constantFrom('a', 'b', 'H', '1'), maxLength: 3 }),
        fc.tuple(fc.nat(20), fc.nat(20), fc.nat(20)),
        fc.nat({ max: 2 ** 40 }),
        fc.nat({ max: 2 ** 40 }),
        (attrs, name, op, n, prefix, ver, memBytes, wantKi) => {
          const attributes: Record<
            string,
            { int?: bigint; string?: string; version?: string; bool?: boolean }
          > = {};
          for (const [k, a] of Object.entries(attrs)) {
            if (a.kind === 'int') attributes[k] = { int: a.v };
            else if (a.kind === 'string') attributes[k] = { string: a.v };
            else if (a.kind === 'bool') attributes[k] = { bool: a.v };
            else attributes[k] = { version: a.v.join('.') };
          }
          const device: DeviceInput = {
            name: 'd',
            attributes,
            capacity: { memory: { value: String(memBytes) } },
          };
          const a = attrs[name];
          const ref = `device.attributes["${D}"].${name}`;

          // Quantity: exact comparison against Ki.
          const q = run(`device.capacity["${D}"].memory.compareTo(quantity("${wantKi}Ki")) ${op} 0`, device);
          expect(q).toEqual({
            ok: true,
            matches: refInt(op, BigInt(cmp(BigInt(memBytes), BigInt(wantKi) * 1024n)), 0n),
          });

          if (a === undefined) {
            // Missing attribute: an error, never a verdict.
            expect(run(`${ref} == 1`, device).ok).toBe(false);
            expect(run(`has(${ref})`, device)).toEqual({ ok: true, matches: false });
            return;
          }
          expect(run(`has(${ref})`, device)).toEqual({ ok: true, matches: true });
          if (a.kind === 'int') {
            expect(run(`${ref} ${op} ${n}`, device)).toEqual({ ok: true, matches: refInt(op, a.v, n) });
          } else if (a.kind === 'string') {
            expect(run(`${ref}.startsWith(${JSON.stringify(prefix)})`, device)).toEqual({
              ok: true,
              matches: a.v.startsWith(prefix),
            });
            expect(run(`${ref} == ${JSON.stringify(prefix)}`, device)).toEqual({
              ok: true,
              matches: a.v === prefix,
            });
            expect(run(`${ref}.contains(${JSON.stringify(prefix)})`, device)).toEqual({
              ok: true,
              matches: a.v.includes(prefix),
            });
          } else if (a.kind === 'bool') {
            expect(run(`${ref} == true`, device)).toEqual({ ok: true, matches: a.v });
          } else {
            const want = a.v.map(BigInt);
            const other = ver.map(BigInt);
            const c =
              cmp(want[0] ?? 0n, other[0] ?? 0n) ||
              cmp(want[1] ?? 0n, other[1] ?? 0n) ||
              cmp(want[2] ?? 0n, other[2] ?? 0n);
            expect(run(`${ref}.compareTo(semver("${ver.join('.')}")) ${op} 0`, device)).toEqual({
              ok: true,
              matches: refInt(op, BigInt(c), 0n),
            });
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
