// explain's cost estimate (src/cel/cost.ts) against the apiserver's own: the DRA selector
// compiler of k8s.io/dynamic-resource-allocation v0.37.2 (test/celcost, built from the Go module
// proxy), which is what kube-apiserver runs when a claim is written. Selectors come from a
// generator over the functions a selector can use, nested (comprehensions inside
// comprehensions are what crosses the limit), and the estimates must be equal, not close.
// Pinned to 1.37's compiler: a run for another version (GPU_DRA_K8S_VERSION) skips it.
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { COST_LIMIT_MESSAGE, SELECTOR_MAX_COST, estimateSelectorCost } from '../../src/cel/cost.js';
import { compileSelector, parseAst } from '../../src/cel/env.js';
import { buildOnce } from './support/peers.js';

const ANOTHER_VERSION_RUN = process.env['GPU_DRA_K8S_VERSION'] !== undefined;

interface GoResult {
  readonly maxCost?: string;
  readonly error?: string;
}

let celcost: string;

function goEstimates(expressions: readonly string[]): GoResult[] {
  const run = spawnSync(celcost, [], { input: JSON.stringify(expressions), encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`celcost failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as GoResult[];
}

const A = "device.attributes['gpu.dra.dev']";
const MEMORY = "device.capacity['gpu.dra.dev'].memory";

// Typed expression generators, `depth` levels deep.
type Gen = (depth: number) => fc.Arbitrary<string>;
const word = fc.stringMatching(/^[a-z0-9.]{0,12}$/);
const quoted = word.map((w) => `'${w}'`);
const regex = fc.constantFrom("'^H100'", "'[0-9]+'", "'(?i)hbm3$'", "'a|b|c'", "'^pci0000:[0-9a-f]{2}$'");

const str: Gen = (d) =>
  d <= 0
    ? fc.oneof(
        quoted,
        fc.constantFrom(
          'device.driver',
          `${A}.productName`,
          `${A}.architecture`,
          "device.attributes['resource.kubernetes.io'].pcieRoot",
        ),
      )
    : fc.oneof(
        str(0),
        str(d - 1).map((s) => `${s}.lowerAscii()`),
        str(d - 1).map((s) => `${s}.upperAscii()`),
        str(d - 1).map((s) => `${s}.trim()`),
        str(d - 1).map((s) => `${s}.substring(1)`),
        fc.tuple(str(d - 1), quoted, quoted).map(([s, a, b]) => `${s}.replace(${a}, ${b})`),
        fc.tuple(str(d - 1), quoted, quoted, int(0)).map(([s, a, b, n]) => `${s}.replace(${a}, ${b}, ${n})`),
        fc.tuple(str(d - 1), int(d - 1)).map(([s, i]) => `${s}.charAt(${i})`),
        fc.tuple(str(d - 1), str(d - 1)).map(([a, b]) => `${a} + ${b}`),
        fc.tuple(str(d - 1), regex).map(([s, r]) => `${s}.find(${r})`),
        int(d - 1).map((i) => `string(${i})`),
        fc.tuple(bool(d - 1), str(d - 1), str(d - 1)).map(([c, a, b]) => `(${c} ? ${a} : ${b})`),
        fc.tuple(str(d - 1), quoted).map(([s, w]) => `${s}.split(',').join(${w})`),
        str(d - 1).map((s) => `${A}.?productName.orValue(${s})`),
      );

const int: Gen = (d) =>
  d <= 0
    ? fc.oneof(fc.integer({ min: -5, max: 100 }).map(String), fc.constantFrom(`${A}.index`, `${A}.minor`))
    : fc.oneof(
        int(0),
        str(d - 1).map((s) => `size(${s})`),
        fc.tuple(int(d - 1), int(d - 1)).map(([a, b]) => `(${a} + ${b})`),
        fc.tuple(int(d - 1), int(d - 1)).map(([a, b]) => `(${a} * ${b})`),
        fc.tuple(quantity(d - 1), quantity(d - 1)).map(([a, b]) => `${a}.compareTo(${b})`),
        semver(d - 1).map((v) => `${v}.major()`),
        fc.tuple(str(d - 1), quoted).map(([s, w]) => `${s}.indexOf(${w})`),
        fc.constantFrom(`size(${A})`, 'size(device.attributes)', `size(${A}.productName.split('-'))`),
        fc
          .tuple(list(d - 1), fc.constantFrom('sum', 'min', 'max'))
          .map(([l, f]) => `[1, 2, 3].${f}() + size(${l})`),
        fc.tuple(list(d - 1), str(d - 1)).map(([l, s]) => `${l}.indexOf(${s}) + ${l}.lastIndexOf(${s})`),
      );

const quantity: Gen = (d) =>
  d <= 0
    ? fc.oneof(
        fc.constantFrom(MEMORY, "device.capacity['gpu.dra.dev']['memory']"),
        fc.constantFrom("quantity('1Gi')", "quantity('80Gi')", "quantity('500m')"),
      )
    : fc.oneof(
        quantity(0),
        fc.tuple(quantity(d - 1), quantity(d - 1)).map(([a, b]) => `${a}.add(${b})`),
        fc.tuple(quantity(d - 1), int(d - 1)).map(([a, b]) => `${a}.sub(${b})`),
      );

const semver: Gen = () =>
  fc.constantFrom(
    `${A}.driverVersion`,
    `${A}.cudaComputeCapability`,
    "semver('9.0.0')",
    "semver('v1.2', true)",
  );

const list: Gen = (d) =>
  fc.oneof(
    fc.constantFrom("['a', 'b']", '[1, 2, 3]', `${A}.productName.split(' ')`),
    ...(d > 0
      ? [
          str(d - 1).map((s) => `${s}.findAll('[a-z]+')`),
          fc.tuple(list(d - 1), bool(d - 1)).map(([l, p]) => `${l}.filter(x, ${p})`),
          list(d - 1).map((l) => `${l}.map(x, x)`),
          fc.tuple(list(d - 1), list(d - 1)).map(([a, b]) => `${a} + ${b}`),
        ]
      : []),
  );

const comprehensionRange = (d: number): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constantFrom(A, 'device.attributes', 'device.capacity', "device.capacity['gpu.dra.dev']"),
    list(d),
  );

const bool: Gen = (d) =>
  d <= 0
    ? fc.oneof(
        fc.constantFrom('true', 'false', `has(${A}.profile)`, "'gpu.dra.dev' in device.attributes"),
        fc.constantFrom(`${A}.type == 'gpu'`, 'device.allowMultipleAllocations', `${A}.index > 3`),
      )
    : fc.oneof(
        bool(0),
        fc
          .tuple(str(d - 1), str(d - 1), fc.constantFrom('==', '!=', '<', '>='))
          .map(([a, b, op]) => `${a} ${op} ${b}`),
        fc
          .tuple(int(d - 1), int(d - 1), fc.constantFrom('==', '!=', '<', '>'))
          .map(([a, b, op]) => `${a} ${op} ${b}`),
        fc
          .tuple(quantity(d - 1), quantity(d - 1), fc.constantFrom('==', '!='))
          .map(([a, b, op]) => `${a} ${op} ${b}`),
        fc.tuple(quantity(d - 1), quantity(d - 1)).map(([a, b]) => `${a}.isLessThan(${b})`),
        fc.tuple(semver(d - 1), semver(d - 1)).map(([a, b]) => `${a}.isGreaterThan(${b})`),
        fc.tuple(semver(d - 1), semver(d - 1)).map(([a, b]) => `${a} == ${b}`),
        fc
          .tuple(str(d - 1), str(d - 1), fc.constantFrom('startsWith', 'endsWith', 'contains'))
          .map(([a, b, f]) => `${a}.${f}(${b})`),
        fc.tuple(str(d - 1), regex).map(([s, r]) => `${s}.matches(${r})`),
        fc
          .tuple(bool(d - 1), bool(d - 1), fc.constantFrom('&&', '||'))
          .map(([a, b, op]) => `(${a} ${op} ${b})`),
        bool(d - 1).map((b) => `!(${b})`),
        fc.tuple(bool(d - 1), bool(d - 1), bool(d - 1)).map(([c, a, b]) => `(${c} ? ${a} : ${b})`),
        fc
          .tuple(comprehensionRange(d - 1), fc.constantFrom('all', 'exists', 'exists_one'), bool(d - 1))
          .map(([r, m, p]) => `${r}.${m}(k, ${p})`),
        fc
          .tuple(comprehensionRange(d - 1), fc.constantFrom('all', 'exists'), bool(d - 1))
          .map(([r, m, p]) => `${r}.${m}(k, ${r}.${m}(j, ${p}))`),
        fc.tuple(str(d - 1), list(d - 1)).map(([s, l]) => `${s} in ${l}`),
        bool(d - 1).map((b) => `cel.bind(attrs, ${A}, attrs.type == 'gpu' && ${b})`),
        fc.tuple(list(d - 1), int(d - 1)).map(([l, i]) => `size(${l}) > ${i}`),
        list(d - 1).map((l) => `${l}.isSorted()`),
        fc.constantFrom(
          `${A}.all(k, ${A}[k] == ${A}[k])`,
          `device.attributes.all(d, device.attributes[d].all(k, device.attributes[d][k] == 'x'))`,
          `device.attributes.exists(d, d.startsWith('gpu'))`,
          `device.capacity['gpu.dra.dev'].exists(k, k == 'memory')`,
          `${A}.productName.split(' ').exists(w, w.matches('^H[0-9]+$'))`,
          `dyn(${A}.productName) == 'x'`,
          `${A}.?profile.hasValue()`,
          `${A}.productName == ${A}.brand`,
        ),
      );

describe.skipIf(ANOTHER_VERSION_RUN)('selector cost estimate = the apiserver compiler (v1.37.2)', () => {
  beforeAll(async () => {
    celcost = await buildOnce('test/celcost/build.sh', 'v0.37.2', 'celcost');
  }, 600_000);

  it('agrees on hand-picked selectors, including ones over the limit', () => {
    const selectors = [
      `device.driver == 'gpu.dra.dev'`,
      `${A}.productName.matches('^NVIDIA H100')`,
      `device.attributes.all(d, device.attributes[d].all(k, device.attributes.all(e, device.attributes[e].all(j, device.attributes[d][k] == device.attributes[e][j]))))`,
      `${MEMORY} != quantity('1Gi')`,
      `${MEMORY} == quantity('1Gi')`,
      `cel.bind(a, ${A}, a.productName.contains(a.brand))`,
      `[1, 2, 3].map(x, x * 2).exists(y, y > 4)`,
      `${A}.productName.split('-').filter(w, w != '').size() > 1`,
    ];
    const go = goEstimates(selectors);
    const ours = selectors.map((s) => String(estimateSelectorCost(parseAst(s)).max));
    expect(ours).toEqual(go.map((g) => g.maxCost ?? g.error));
    // Over the limit both ways: the apiserver refuses these; so must explain.
    expect(
      go.filter((g) => g.maxCost !== undefined && BigInt(g.maxCost) > SELECTOR_MAX_COST),
    ).not.toHaveLength(0);
  });

  it('agrees on generated selectors', () => {
    const samples = fc.sample(bool(4), { numRuns: 2000, seed: 20261202 });
    const go = goEstimates(samples);
    let compared = 0;
    let overLimit = 0;
    const mismatches: string[] = [];
    const validityMismatches: string[] = [];
    samples.forEach((s, i) => {
      const g = go[i];
      const explained = compileSelector(s);
      if (!g || g.error !== undefined || g.maxCost === undefined) {
        // Not a valid selector for the apiserver (a type error the generator made): explain's
        // compiler must refuse it too.
        if (explained.ok) validityMismatches.push(`${s}\n  apiserver: ${g?.error ?? '?'}`);
        return;
      }
      compared++;
      const ours = estimateSelectorCost(parseAst(s)).max;
      if (String(ours) !== g.maxCost) mismatches.push(`${s}\n  apiserver ${g.maxCost}, ours ${String(ours)}`);
      // The apiserver refuses exactly the selectors over the limit; explain must say the same.
      if (BigInt(g.maxCost) > SELECTOR_MAX_COST) {
        overLimit++;
        if (explained.ok || !explained.error.startsWith(COST_LIMIT_MESSAGE))
          validityMismatches.push(
            `${s}\n  apiserver: ${COST_LIMIT_MESSAGE}; explain: ${explained.ok ? 'ok' : explained.error}`,
          );
      } else if (!explained.ok) {
        validityMismatches.push(`${s}\n  apiserver accepts it; explain: ${explained.error}`);
      }
    });
    expect(mismatches.slice(0, 10)).toEqual([]);
    expect(validityMismatches.slice(0, 10)).toEqual([]);
    expect(compared).toBeGreaterThan(1000);
    expect(overLimit).toBeGreaterThan(10);
    expect(COST_LIMIT_MESSAGE).toBe('too complex, exceeds cost limit');
  });
});
