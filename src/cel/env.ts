/**
 * Kubernetes-DRA-compatible CEL evaluation of device selectors on @marcbachmann/cel-js.
 *
 * The environment mirrors the one the scheduler uses (dynamic-resource-allocation
 * `cel/compile.go`): one variable `device` of object type `kubernetes.DRADevice`, standard
 * CEL with macros, optional types (`.?x`, `.orValue()`), `cel.bind`, strings (`startsWith`,
 * `endsWith`, `contains`, `matches`, `lowerAscii`, ...), regex `find`/`findAll`, and the
 * Kubernetes `quantity()` and `semver()` libraries. Verdicts follow Kubernetes:
 *
 * - an expression that does not compile (syntax, unknown function, non-bool type) is a
 *   compile error; so is one longer than 10 KiB;
 * - referencing a missing attribute is an evaluation *error*, not false (`no such key`);
 *   `&&`/`||` absorb an error when the other side decides the result, as CEL specifies;
 * - a result that is not a bool is an error;
 * - a selector whose worst-case cost, as the apiserver estimates it (cost.ts), is over the
 *   limit does not compile: the apiserver refuses it with the same message. The scheduler's
 *   run-time limit is the same number and an estimate bounds the actual cost, so a selector
 *   that passes never hits it.
 *
 * `has(device.attributes["d"].x)` is supported through {@link rewriteHasMacros}.
 */
import {
  Environment,
  EvaluationError,
  Optional,
  type ASTNode,
  type TypeCheckResult,
} from '@marcbachmann/cel-js';
import {
  COST_LIMIT_MESSAGE,
  CostEstimateUnsupported,
  SELECTOR_MAX_COST,
  estimateSelectorCost,
} from './cost.js';
import { CelDevice, DeviceConversionError, toCelDevice, type DeviceInput } from './device.js';
import { Quantity } from './quantity.js';
import { RE2JS } from 're2js';
import { RE2_MATCHES, childNodes, rewriteHasMacros } from './rewrite.js';
import { Semver } from './semver.js';

/** `CELSelectorExpressionMaxLength`. */
export const MAX_EXPRESSION_LENGTH = 10 * 1024;

const QUANTITY = 'kubernetes.Quantity';
const SEMVER = 'kubernetes.Semver';

function evalError(message: string): EvaluationError {
  return new EvaluationError(message);
}

function toQuantity(v: Quantity | bigint): Quantity {
  return v instanceof Quantity ? v : Quantity.fromInteger(v);
}

function parseQuantity(s: string): Quantity {
  const q = Quantity.tryParse(s);
  if (!q)
    throw evalError(
      `quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': "${s}"`,
    );
  return q;
}

function parseSemver(s: string, normalize: boolean): Semver {
  try {
    return normalize ? Semver.parseNormalized(s) : Semver.parse(s);
  } catch (err) {
    throw evalError(err instanceof Error ? err.message : String(err));
  }
}

/**
 * Patterns compiled with RE2 semantics, as Kubernetes' CEL (Go's regexp) has them: inline flags
 * such as `(?i)`, no backreferences or lookaround, `\z`, POSIX classes. JavaScript's RegExp
 * differs on each. Compiled once per pattern (selectors repeat them for every device).
 */
const compiled = new Map<string, RE2JS>();
const MAX_COMPILED = 1024;

function regex(pattern: string): RE2JS {
  let re = compiled.get(pattern);
  if (re) return re;
  try {
    re = RE2JS.compile(pattern);
  } catch (err) {
    throw evalError(
      `invalid regular expression ${JSON.stringify(pattern)}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (compiled.size >= MAX_COMPILED) compiled.clear();
  compiled.set(pattern, re);
  return re;
}

/** Every non-overlapping match, left to right (Go's FindAllString). */
function findAll(s: string, pattern: string): string[] {
  const m = regex(pattern).matcher(s);
  const out: string[] = [];
  while (m.find()) out.push(m.group() ?? '');
  return out;
}

function buildEnvironment(): Environment {
  const env = new Environment({
    enableOptionalTypes: true,
    homogeneousAggregateLiterals: false,
    limits: { maxAstNodes: 100_000 },
  });
  env
    .registerType(QUANTITY, Quantity)
    .registerType(SEMVER, Semver)
    .registerType('kubernetes.DRADevice', {
      ctor: CelDevice,
      fields: {
        driver: 'string',
        attributes: 'map<string, map<string, dyn>>',
        capacity: `map<string, map<string, ${QUANTITY}>>`,
        allowMultipleAllocations: 'bool',
      },
    })
    .registerVariable('device', 'kubernetes.DRADevice');

  // A global function (no receiver) or a method on `receiverType`.
  const register = (
    receiverType: string | undefined,
    name: string,
    params: string[],
    returnType: string,
    handler: (...args: never[]) => unknown,
  ): void => {
    env.registerFunction({
      name,
      ...(receiverType === undefined ? {} : { receiverType }),
      returnType,
      params: params.map((type, i) => ({ name: `arg${i}`, type })),
      handler: handler as (...args: unknown[]) => unknown,
    });
  };
  const method = register;
  const fn = (
    name: string,
    params: string[],
    returnType: string,
    handler: (...args: never[]) => unknown,
  ): void => {
    register(undefined, name, params, returnType, handler);
  };

  // Quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go).
  fn('quantity', ['string'], QUANTITY, (s: string) => parseQuantity(s));
  fn('isQuantity', ['string'], 'bool', (s: string) => Quantity.tryParse(s) !== undefined);
  method(QUANTITY, 'sign', [], 'int', (q: Quantity) => BigInt(q.sign()));
  method(QUANTITY, 'isInteger', [], 'bool', (q: Quantity) => q.isInteger());
  method(QUANTITY, 'asInteger', [], 'int', (q: Quantity) => {
    const v = q.asInt64();
    if (v === undefined) throw evalError(`cannot convert value to integer: ${q.toString()}`);
    return v;
  });
  method(QUANTITY, 'asApproximateFloat', [], 'double', (q: Quantity) => q.asApproximateFloat());
  for (const other of [QUANTITY, 'int']) {
    method(QUANTITY, 'add', [other], QUANTITY, (a: Quantity, b: Quantity | bigint) => a.add(toQuantity(b)));
    method(QUANTITY, 'sub', [other], QUANTITY, (a: Quantity, b: Quantity | bigint) => a.sub(toQuantity(b)));
  }
  method(QUANTITY, 'isLessThan', [QUANTITY], 'bool', (a: Quantity, b: Quantity) => a.compareTo(b) < 0);
  method(QUANTITY, 'isGreaterThan', [QUANTITY], 'bool', (a: Quantity, b: Quantity) => a.compareTo(b) > 0);
  method(QUANTITY, 'compareTo', [QUANTITY], 'int', (a: Quantity, b: Quantity) => BigInt(a.compareTo(b)));
  env.registerOperator(`${QUANTITY} == ${QUANTITY}`, (a: Quantity, b: Quantity) => a.equals(b));

  // Semver library (k8s.io/apiserver/pkg/cel/library/semverlib.go).
  fn('semver', ['string'], SEMVER, (s: string) => parseSemver(s, false));
  fn('semver', ['string', 'bool'], SEMVER, (s: string, normalize: boolean) => parseSemver(s, normalize));
  fn('isSemver', ['string'], 'bool', (s: string) => Semver.tryParse(s) !== undefined);
  fn(
    'isSemver',
    ['string', 'bool'],
    'bool',
    (s: string, normalize: boolean) => Semver.tryParse(s, normalize) !== undefined,
  );
  method(SEMVER, 'major', [], 'int', (v: Semver) => v.major);
  method(SEMVER, 'minor', [], 'int', (v: Semver) => v.minor);
  method(SEMVER, 'patch', [], 'int', (v: Semver) => v.patch);
  method(SEMVER, 'isLessThan', [SEMVER], 'bool', (a: Semver, b: Semver) => a.compareTo(b) < 0);
  method(SEMVER, 'isGreaterThan', [SEMVER], 'bool', (a: Semver, b: Semver) => a.compareTo(b) > 0);
  method(SEMVER, 'compareTo', [SEMVER], 'int', (a: Semver, b: Semver) => BigInt(a.compareTo(b)));
  env.registerOperator(`${SEMVER} == ${SEMVER}`, (a: Semver, b: Semver) => a.equals(b));

  // Regex library (k8s.io/apiserver/pkg/cel/library/regex.go).
  // cel-js' own matches() uses JavaScript's RegExp and cannot be replaced: selectors' matches()
  // calls are rewritten to this one (rewrite.ts), a partial match as Go's MatchString.
  method('string', RE2_MATCHES, ['string'], 'bool', (s: string, p: string) => regex(p).matcher(s).find());
  method('string', 'find', ['string'], 'string', (s: string, p: string) => {
    const m = regex(p).matcher(s);
    return m.find() ? (m.group() ?? '') : '';
  });
  method('string', 'findAll', ['string'], 'list<string>', (s: string, p: string) => findAll(s, p));
  method('string', 'findAll', ['string', 'int'], 'list<string>', (s: string, p: string, n: bigint) => {
    const all = findAll(s, p);
    return n < 0n ? all : all.slice(0, Number(n));
  });

  // Strings extension (cel-go ext.Strings v2) where cel-js has less: replace, charAt.
  method('string', 'replace', ['string', 'string'], 'string', (s: string, from: string, to: string) =>
    replaceN(s, from, to, -1n),
  );
  method(
    'string',
    'replace',
    ['string', 'string', 'int'],
    'string',
    (s: string, from: string, to: string, n: bigint) => replaceN(s, from, to, n),
  );
  method('string', 'charAt', ['int'], 'string', (s: string, i: bigint) => {
    const points = Array.from(s);
    if (i < 0n || i > BigInt(points.length)) throw evalError(`index out of range: ${String(i)}`);
    return points[Number(i)] ?? '';
  });

  // Kubernetes' list library (k8s.io/apiserver/pkg/cel/library/lists.go); typed generically so
  // that `[1].indexOf("a")` is refused, as the apiserver refuses it.
  const generic = (signature: string, handler: (...args: never[]) => unknown): void => {
    env.registerFunction(signature, handler as (...args: unknown[]) => unknown);
  };
  generic('list<T>.isSorted(): bool', (l: unknown[]) =>
    l.every((v, i) => i === 0 || compare(l[i - 1], v) <= 0),
  );
  generic('list<T>.sum(): T', (l: unknown[]) => {
    if (l.length === 0) return 0n;
    return l.reduce((a, b) => {
      if (typeof a === 'bigint' && typeof b === 'bigint') return a + b;
      if (typeof a === 'number' && typeof b === 'number') return a + b;
      throw evalError('no such overload: sum() over mixed or non-numeric elements');
    });
  });
  for (const [name, prefer] of [
    ['min', -1],
    ['max', 1],
  ] as const) {
    generic(`list<T>.${name}(): T`, (l: unknown[]) => {
      if (l.length === 0) throw evalError(`${name} called on empty list`);
      return l.reduce((best, v) => (Math.sign(compare(v, best)) === prefer ? v : best));
    });
  }
  generic('list<T>.indexOf(T): int', (l: unknown[], x: unknown) =>
    BigInt(l.findIndex((v) => celEquals(v, x))),
  );
  generic('list<T>.lastIndexOf(T): int', (l: unknown[], x: unknown) =>
    BigInt(l.findLastIndex((v) => celEquals(v, x))),
  );
  return env;
}

/** Go's strings.Replace: at most `n` replacements, all when `n` < 0. */
function replaceN(s: string, from: string, to: string, n: bigint): string {
  if (from === '') {
    // An empty `from` matches before every code point and at the end.
    const points = Array.from(s);
    const limit = n < 0n ? points.length + 1 : Number(n);
    return points.map((p, i) => (i < limit ? to + p : p)).join('') + (points.length < limit ? to : '');
  }
  if (n < 0n) return s.split(from).join(to);
  let out = s;
  let at = 0;
  for (let done = 0n; done < n; done++) {
    const i = out.indexOf(from, at);
    if (i < 0) break;
    out = out.slice(0, i) + to + out.slice(i + from.length);
    at = i + to.length + (from === '' ? 1 : 0);
  }
  return out;
}

/** CEL ordering of two list elements of one comparable type (int, uint, double, string, bool). */
function compare(a: unknown, b: unknown): number {
  if ((typeof a === 'bigint' || typeof a === 'number') && (typeof b === 'bigint' || typeof b === 'number'))
    return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === typeof b && (typeof a === 'string' || typeof a === 'boolean'))
    return (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0;
  if (a instanceof Quantity && b instanceof Quantity) return a.compareTo(b);
  if (a instanceof Semver && b instanceof Semver) return a.compareTo(b);
  throw evalError('no such overload: elements are not comparable');
}

function celEquals(a: unknown, b: unknown): boolean {
  if (a instanceof Quantity && b instanceof Quantity) return a.equals(b);
  if (a instanceof Semver && b instanceof Semver) return a.equals(b);
  if ((typeof a === 'bigint' || typeof a === 'number') && (typeof b === 'bigint' || typeof b === 'number'))
    return a == b; // CEL compares numbers across int and double
  return a === b;
}

let sharedEnv: Environment | undefined;

/** The (lazily built, shared) selector environment. */
export function selectorEnvironment(): Environment {
  sharedEnv ??= buildEnvironment();
  return sharedEnv;
}

/** Parses an expression with the selector environment, without type checking. */
export function parseAst(expression: string): ASTNode {
  return selectorEnvironment().parse(expression).ast;
}

export type SelectorVerdict =
  { readonly ok: true; readonly matches: boolean } | { readonly ok: false; readonly error: string };

export interface CompiledSelector {
  readonly expression: string;
  /** What is actually evaluated (after the `has()` rewrite); equal to `expression` usually. */
  readonly evaluated: string;
  readonly ast: ASTNode;
  /** The checked result type (`bool` or `dyn`). */
  readonly type: string;
  /** Evaluates against a prepared `device` value. */
  run(device: CelDevice): SelectorVerdict;
  /** Evaluates against a ResourceSlice device of `driver`. */
  evaluate(driver: string, device: DeviceInput): SelectorVerdict;
}

export type CompileResult =
  | { readonly ok: true; readonly selector: CompiledSelector }
  | {
      readonly ok: false;
      readonly error: string;
      /** Valid for Kubernetes, but uses a function explain's evaluator does not have. */
      readonly unsupported?: true;
    };

/** First line of a cel-js error message (the rest is a source excerpt). */
export function celErrorMessage(err: unknown): string {
  if (err instanceof Error) {
    const line = err.message.split('\n')[0] ?? err.message;
    return line.trim();
  }
  return String(err);
}

/** Evaluates a value expression against `device` (for reports); throws on evaluation errors. */
export function evaluateValue(expression: string, device: CelDevice): unknown {
  const env = selectorEnvironment();
  return env.parse(rewriteHasMacros(expression, parseAst))({ device });
}

/** Whether a CEL runtime value is the bool Kubernetes requires. */
function describeType(v: unknown): string {
  if (v instanceof Quantity) return QUANTITY;
  if (v instanceof Semver) return SEMVER;
  if (v instanceof Optional) return 'optional_type';
  if (v === null) return 'null_type';
  if (Array.isArray(v)) return 'list';
  switch (typeof v) {
    case 'bigint':
      return 'int';
    case 'number':
      return 'double';
    case 'object':
      return 'map';
    default:
      return typeof v;
  }
}

const cache = new Map<string, CompileResult>();
const CACHE_LIMIT = 1000;

/**
 * Compiles a selector as Kubernetes validates it: length limit, syntax, types; the result
 * type must be bool (or dyn, checked again at run time). Results are cached by expression.
 */
export function compileSelector(expression: string): CompileResult {
  const hit = cache.get(expression);
  if (hit) return hit;
  const result = compileUncached(expression);
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(expression, result);
  return result;
}

function compileUncached(expression: string): CompileResult {
  if (expression.length > MAX_EXPRESSION_LENGTH) {
    return {
      ok: false,
      error: `expression too long (${expression.length} > ${MAX_EXPRESSION_LENGTH} bytes)`,
    };
  }
  if (expression.trim() === '') return { ok: false, error: 'expression is empty' };
  const env = selectorEnvironment();
  let evaluated: string;
  let program: ReturnType<Environment['parse']>;
  let original: ASTNode;
  try {
    original = parseAst(expression);
    evaluated = rewriteHasMacros(expression, parseAst);
    program = env.parse(evaluated);
  } catch (err) {
    return { ok: false, error: `compilation failed: ${celErrorMessage(err)}` };
  }
  let checked: TypeCheckResult;
  try {
    checked = program.check();
  } catch (err) {
    return { ok: false, error: `compilation failed: ${celErrorMessage(err)}` };
  }
  if (!checked.valid) {
    const missing = kubernetesOnlyFunction(original, celErrorMessage(checked.error));
    if (missing) {
      return {
        ok: false,
        unsupported: true,
        error: `explain cannot evaluate ${missing}, which Kubernetes' CEL has (the apiserver accepts it); check this selector on a cluster`,
      };
    }
    return { ok: false, error: `compilation failed: ${celErrorMessage(checked.error)}` };
  }
  const type = checked.type ?? 'dyn';
  if (type !== 'bool' && type !== 'dyn') {
    return { ok: false, error: `must evaluate to bool, but the expression has type ${type}` };
  }
  const cost = estimatedCost(original);
  if (cost !== undefined && cost > SELECTOR_MAX_COST) {
    return {
      ok: false,
      error: `${COST_LIMIT_MESSAGE} (estimated worst-case cost ${String(cost)}, limit ${String(SELECTOR_MAX_COST)})`,
    };
  }
  const run = (device: CelDevice): SelectorVerdict => {
    let value: unknown;
    try {
      value = program({ device });
    } catch (err) {
      return { ok: false, error: `CEL runtime error: ${celErrorMessage(err)}` };
    }
    if (typeof value !== 'boolean') {
      return { ok: false, error: `CEL result of type ${describeType(value)} could not be converted to bool` };
    }
    return { ok: true, matches: value };
  };
  const selector: CompiledSelector = {
    expression,
    evaluated,
    ast: original,
    type,
    run,
    evaluate(driver, device) {
      let celDevice: CelDevice;
      try {
        celDevice = toCelDevice(driver, device);
      } catch (err) {
        if (err instanceof DeviceConversionError) return { ok: false, error: err.message };
        throw err;
      }
      return run(celDevice);
    },
  };
  return { ok: true, selector };
}

/**
 * Functions, namespaces and macros Kubernetes' selector environment has (apiserver
 * `cel/environment/base.go` as of 1.37: ext.Strings v2, ext.Sets, ext.Lists v3, two-variable
 * comprehensions, the URL, IP, CIDR and format libraries) that explain's evaluator does not.
 */
const KUBERNETES_ONLY_FUNCTIONS = new Set([
  'format',
  'quote',
  'slice',
  'flatten',
  'distinct',
  'reverse',
  'sort',
  'sortBy',
  'first',
  'last',
  'transformList',
  'transformMap',
  'transformMapEntry',
  'url',
  'isURL',
  'getScheme',
  'getHost',
  'getHostname',
  'getPort',
  'getEscapedPath',
  'getQuery',
  'ip',
  'isIP',
  'cidr',
  'isCIDR',
  'containsIP',
  'containsCIDR',
  'family',
  'isCanonical',
  'isLoopback',
  'isUnspecified',
  'isLinkLocalMulticast',
  'isLinkLocalUnicast',
  'isGlobalUnicast',
  'masked',
  'prefixLength',
  'validate',
  'named',
]);
const KUBERNETES_ONLY_NAMESPACES = new Set(['sets', 'lists', 'strings', 'format']);

/** Which Kubernetes-only function made cel-js refuse a selector, if that is the reason. */
function kubernetesOnlyFunction(ast: ASTNode, message: string): string | undefined {
  const overload = /found no matching overload for '(?:[\w<>, ]+\.)?(\w+)\(/.exec(message)?.[1];
  if (overload && KUBERNETES_ONLY_FUNCTIONS.has(overload)) return `${overload}()`;
  const variable = /Unknown variable: (\w+)/.exec(message)?.[1];
  if (variable && KUBERNETES_ONLY_NAMESPACES.has(variable)) return `${variable}.*`;
  // Two-variable comprehensions (`m.all(k, v, p)`): cel-js reads the names as variables.
  let twoVar: string | undefined;
  const visit = (n: ASTNode): void => {
    if (n.op === 'rcall') {
      const [name, , args] = n.args;
      if (['all', 'exists', 'exists_one', 'existsOne'].includes(name) && args.length === 3) twoVar ??= name;
    }
    for (const c of childNodes(n)) visit(c);
  };
  visit(ast);
  return twoVar === undefined ? undefined : `${twoVar}() with two variables`;
}

/**
 * The apiserver's worst-case cost estimate of a selector; undefined for a form the estimator
 * does not model, which is then not refused here (the apiserver remains the judge).
 */
function estimatedCost(ast: ASTNode): bigint | undefined {
  try {
    return estimateSelectorCost(ast).max;
  } catch (err) {
    if (err instanceof CostEstimateUnsupported) return undefined;
    throw err;
  }
}

/** Compiles (cached) and evaluates one selector against one device. */
export function evaluateSelector(expression: string, driver: string, device: DeviceInput): SelectorVerdict {
  const compiled = compileSelector(expression);
  if (!compiled.ok) return { ok: false, error: compiled.error };
  return compiled.selector.evaluate(driver, device);
}
