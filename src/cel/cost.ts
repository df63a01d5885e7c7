/**
 * The worst-case cost of a device selector, computed as the apiserver computes it when a claim
 * or DeviceClass is written: cel-go's static estimator (`checker/cost.go`) with Kubernetes'
 * function costs (`apiserver/pkg/cel/library/cost.go`) and the DRA environment's size limits
 * (`dynamic-resource-allocation/cel/compile.go`: a driver name is at most 63 characters, a
 * domain 63, an attribute name 32, an attribute value 64, at most 32 entries per map). A
 * selector whose estimate is over {@link SELECTOR_MAX_COST} is refused with
 * {@link COST_LIMIT_MESSAGE}, so explain refuses it too.
 *
 * The estimator works on the checked AST: which overloads a call may resolve to decides its
 * cost (`a + b` costs by length for strings, 1 for numbers). This module therefore carries the
 * small type checker the estimate needs: the types of the selector environment, the
 * overloads of the operators and functions the environment has, and the macro expansions
 * (`all`, `exists`, `exists_one`, `map`, `filter`, `cel.bind`) as cel-go's parser writes them.
 * Unsigned 64-bit arithmetic saturates, as in Go; sizes and costs are bigints for that reason.
 * test/unit/cel-cost.test.ts compares it with the apiserver's own compiler on generated
 * selectors.
 */
import type { ASTNode } from '@marcbachmann/cel-js';

/** `CELSelectorExpressionMaxCost`: the apiserver's and the scheduler's limit. */
export const SELECTOR_MAX_COST = 1_000_000n;
/** The apiserver's message (a `Forbidden` field error on the selector's `cel.expression`). */
export const COST_LIMIT_MESSAGE = 'too complex, exceeds cost limit';

// ---------------------------------------------------------------------------------------------
// Saturating uint64 ranges (checker.SizeEstimate / checker.CostEstimate).

const MAX_U64 = (1n << 64n) - 1n;
const TWO_TO_64 = 2 ** 64;
const STRING_TRAVERSAL = 0.1;
const REGEX_LENGTH = 0.25;
const LIST_CREATE = 10n;
const MAP_CREATE = 30n;

interface Range {
  readonly min: bigint;
  readonly max: bigint;
}

const fixed = (n: bigint): Range => ({ min: n, max: n });
const ZERO = fixed(0n);
const ONE = fixed(1n);
const UNKNOWN: Range = { min: 0n, max: MAX_U64 };

const addU = (x: bigint, y: bigint): bigint => (x + y > MAX_U64 ? MAX_U64 : x + y);
const mulU = (x: bigint, y: bigint): bigint => (x * y > MAX_U64 ? MAX_U64 : x * y);
/** Go's multiplyByCostFactor: float64 arithmetic, rounded up, saturating. */
function mulFactor(x: bigint, f: number): bigint {
  const xf = Number(x);
  if (xf > 0 && f > 0 && xf > Number(MAX_U64) / f) return MAX_U64;
  const c = Math.ceil(xf * f);
  return c >= TWO_TO_64 ? MAX_U64 : BigInt(c);
}
const add = (a: Range, b: Range): Range => ({ min: addU(a.min, b.min), max: addU(a.max, b.max) });
const mul = (a: Range, b: Range): Range => ({ min: mulU(a.min, b.min), max: mulU(a.max, b.max) });
const factor = (a: Range, f: number): Range => ({ min: mulFactor(a.min, f), max: mulFactor(a.max, f) });
const union = (a: Range, b: Range): Range => ({
  min: b.min < a.min ? b.min : a.min,
  max: b.max > a.max ? b.max : a.max,
});
const sum = (rs: readonly Range[]): Range => rs.reduce(add, ZERO);

// ---------------------------------------------------------------------------------------------
// Types (the subset of cel-go's the selector environment produces).

type CelType =
  | {
      readonly k:
        | 'bool'
        | 'int'
        | 'uint'
        | 'double'
        | 'string'
        | 'bytes'
        | 'null'
        | 'dyn'
        | 'any'
        | 'type'
        | 'duration'
        | 'timestamp';
    }
  | { readonly k: 'list'; readonly elem: CelType }
  | { readonly k: 'map'; readonly key: CelType; readonly val: CelType }
  | { readonly k: 'struct'; readonly name: string }
  | { readonly k: 'optional'; readonly elem: CelType }
  | { readonly k: 'param'; readonly name: string }
  /** The element type of an empty literal: bound by whatever it meets first. */
  | { readonly k: 'free' };

const T = {
  bool: { k: 'bool' },
  int: { k: 'int' },
  uint: { k: 'uint' },
  double: { k: 'double' },
  string: { k: 'string' },
  bytes: { k: 'bytes' },
  null: { k: 'null' },
  dyn: { k: 'dyn' },
  any: { k: 'any' },
  type: { k: 'type' },
  duration: { k: 'duration' },
  timestamp: { k: 'timestamp' },
} as const satisfies Record<string, CelType>;
const list = (elem: CelType): CelType => ({ k: 'list', elem });
const map = (key: CelType, val: CelType): CelType => ({ k: 'map', key, val });
const struct = (name: string): CelType => ({ k: 'struct', name });
const optional = (elem: CelType): CelType => ({ k: 'optional', elem });
const A: CelType = { k: 'param', name: 'A' };
const B: CelType = { k: 'param', name: 'B' };

const QUANTITY = struct('kubernetes.Quantity');
const SEMVER = struct('kubernetes.Semver');
const DEVICE = struct('kubernetes.DRADevice');
// An attribute value is declared `any` (google.protobuf.Any): dynamic for overloads, but not
// a map or struct for the select cost.
const ATTRIBUTES = map(T.string, map(T.string, T.any));
const CAPACITY = map(T.string, map(T.string, QUANTITY));
const DEVICE_FIELDS: Record<string, CelType> = {
  driver: T.string,
  attributes: ATTRIBUTES,
  capacity: CAPACITY,
  allowMultipleAllocations: T.bool,
};

const isDyn = (t: CelType): boolean => t.k === 'dyn' || t.k === 'any' || t.k === 'param';
const FREE: CelType = { k: 'free' };

function sameType(a: CelType, b: CelType): boolean {
  if (a.k !== b.k) return false;
  switch (a.k) {
    case 'list':
    case 'optional':
      return sameType(a.elem, (b as typeof a).elem);
    case 'map':
      return sameType(a.key, (b as typeof a).key) && sameType(a.val, (b as typeof a).val);
    case 'struct':
      return a.name === (b as typeof a).name;
    default:
      return true;
  }
}

/** Unifies `actual` with an overload parameter, binding type parameters; false if it cannot. */
function assignable(param: CelType, actual: CelType, bound: Map<string, CelType>): boolean {
  if (param.k === 'param') {
    const b = bound.get(param.name);
    if (!b || b.k === 'free') {
      bound.set(param.name, actual);
      return true;
    }
    if (actual.k === 'free' || isDyn(b)) return true;
    // A parameter met again keeps the most general of its types, as cel-go's checker does.
    if (isDyn(actual)) {
      bound.set(param.name, actual);
      return true;
    }
    return assignable(b, actual, bound);
  }
  if (isDyn(actual) || actual.k === 'free' || param.k === 'dyn') return true;
  if (param.k !== actual.k) return false;
  switch (param.k) {
    case 'list':
    case 'optional':
      return assignable(param.elem, (actual as typeof param).elem, bound);
    case 'map':
      return (
        assignable(param.key, (actual as typeof param).key, bound) &&
        assignable(param.val, (actual as typeof param).val, bound)
      );
    case 'struct':
      return param.name === (actual as typeof param).name;
    default:
      return true;
  }
}

function substitute(t: CelType, bound: Map<string, CelType>): CelType {
  switch (t.k) {
    case 'param':
      return bound.get(t.name) ?? T.dyn;
    case 'list':
      return list(substitute(t.elem, bound));
    case 'optional':
      return optional(substitute(t.elem, bound));
    case 'map':
      return map(substitute(t.key, bound), substitute(t.val, bound));
    default:
      return t;
  }
}

// ---------------------------------------------------------------------------------------------
// Overloads: cel-go's ids where the estimate depends on them, any unique name otherwise.

interface Overload {
  readonly id: string;
  /** The receiver type of a member overload. */
  readonly target?: CelType;
  readonly params: readonly CelType[];
  readonly result: CelType;
}

const NUMERIC = [T.int, T.uint, T.double] as const;
const ORDERED = [...NUMERIC, T.string, T.bytes, T.bool, T.timestamp, T.duration] as const;

function operatorOverloads(): Map<string, Overload[]> {
  const m = new Map<string, Overload[]>();
  const def = (fn: string, o: Overload): void => {
    m.set(fn, [...(m.get(fn) ?? []), o]);
  };
  def('_==_', { id: 'equals', params: [A, A], result: T.bool });
  def('_!=_', { id: 'not_equals', params: [A, A], result: T.bool });
  for (const [fn, name] of [
    ['_<_', 'less'],
    ['_<=_', 'less_equals'],
    ['_>_', 'greater'],
    ['_>=_', 'greater_equals'],
  ] as const) {
    for (const t of ORDERED) def(fn, { id: `${name}_${t.k}`, params: [t, t], result: T.bool });
    for (const a of NUMERIC)
      for (const b of NUMERIC)
        if (a !== b) def(fn, { id: `${name}_${a.k}_${b.k}`, params: [a, b], result: T.bool });
  }
  for (const t of [...NUMERIC, T.string, T.bytes])
    def('_+_', { id: `add_${t.k}`, params: [t, t], result: t });
  def('_+_', { id: 'add_list', params: [list(A), list(A)], result: list(A) });
  def('_+_', { id: 'add_timestamp_duration', params: [T.timestamp, T.duration], result: T.timestamp });
  def('_+_', { id: 'add_duration_timestamp', params: [T.duration, T.timestamp], result: T.timestamp });
  def('_+_', { id: 'add_duration_duration', params: [T.duration, T.duration], result: T.duration });
  for (const t of NUMERIC) {
    def('_-_', { id: `subtract_${t.k}`, params: [t, t], result: t });
    def('_*_', { id: `multiply_${t.k}`, params: [t, t], result: t });
    def('_/_', { id: `divide_${t.k}`, params: [t, t], result: t });
  }
  def('_-_', { id: 'subtract_timestamp_timestamp', params: [T.timestamp, T.timestamp], result: T.duration });
  def('_-_', { id: 'subtract_timestamp_duration', params: [T.timestamp, T.duration], result: T.timestamp });
  def('_-_', { id: 'subtract_duration_duration', params: [T.duration, T.duration], result: T.duration });
  def('_%_', { id: 'modulo_int', params: [T.int, T.int], result: T.int });
  def('_%_', { id: 'modulo_uint', params: [T.uint, T.uint], result: T.uint });
  def('-_', { id: 'negate_int', params: [T.int], result: T.int });
  def('-_', { id: 'negate_double', params: [T.double], result: T.double });
  def('!_', { id: 'logical_not', params: [T.bool], result: T.bool });
  def('_&&_', { id: 'logical_and', params: [T.bool, T.bool], result: T.bool });
  def('_||_', { id: 'logical_or', params: [T.bool, T.bool], result: T.bool });
  def('_?_:_', { id: 'conditional', params: [T.bool, A, A], result: A });
  def('@not_strictly_false', { id: 'not_strictly_false', params: [T.bool], result: T.bool });
  def('_[_]', { id: 'index_list', params: [list(A), T.int], result: A });
  def('_[_]', { id: 'index_map', params: [map(A, B), A], result: B });
  def('_[?_]', { id: 'list_optindex_optional_int', params: [list(A), T.int], result: optional(A) });
  def('_[?_]', { id: 'map_optindex_optional_value', params: [map(A, B), A], result: optional(B) });
  def('_?._', { id: 'select_optional_field', params: [T.dyn, T.string], result: optional(T.dyn) });
  def('@in', { id: 'in_list', params: [A, list(A)], result: T.bool });
  def('@in', { id: 'in_map', params: [A, map(A, B)], result: T.bool });
  return m;
}

function functionOverloads(): Map<string, Overload[]> {
  const m = new Map<string, Overload[]>();
  const g = (fn: string, id: string, params: CelType[], result: CelType): void => {
    m.set(fn, [...(m.get(fn) ?? []), { id, params, result }]);
  };
  const member = (fn: string, id: string, target: CelType, params: CelType[], result: CelType): void => {
    m.set(fn, [...(m.get(fn) ?? []), { id, target, params, result }]);
  };
  // Standard library.
  for (const t of [T.string, T.bytes, list(A), map(A, B)]) {
    g('size', `size_${t.k}`, [t], T.int);
    member('size', `${t.k}_size`, t, [], T.int);
  }
  g('int', 'int64_to_int64', [T.int], T.int);
  for (const t of [T.uint, T.double, T.string, T.timestamp, T.duration])
    g('int', `${t.k}_to_int64`, [t], T.int);
  for (const t of [T.int, T.uint, T.double, T.string]) g('uint', `${t.k}_to_uint64`, [t], T.uint);
  for (const t of [T.int, T.uint, T.double, T.string]) g('double', `${t.k}_to_double`, [t], T.double);
  for (const t of [T.int, T.uint, T.double, T.bool, T.timestamp, T.duration, T.string])
    g('string', `${t.k}_to_string`, [t], T.string);
  g('string', 'bytes_to_string', [T.bytes], T.string);
  g('bytes', 'string_to_bytes', [T.string], T.bytes);
  g('bytes', 'bytes_to_bytes', [T.bytes], T.bytes);
  g('bool', 'bool_to_bool', [T.bool], T.bool);
  g('bool', 'string_to_bool', [T.string], T.bool);
  g('type', 'type', [A], T.type);
  g('duration', 'string_to_duration', [T.string], T.duration);
  g('timestamp', 'string_to_timestamp', [T.string], T.timestamp);
  g('dyn', 'to_dyn', [A], T.dyn);
  g('matches', 'matches', [T.string, T.string], T.bool);
  member('matches', 'matches_string', T.string, [T.string], T.bool);
  member('startsWith', 'starts_with_string', T.string, [T.string], T.bool);
  member('endsWith', 'ends_with_string', T.string, [T.string], T.bool);
  member('contains', 'contains_string', T.string, [T.string], T.bool);
  // Strings extension.
  member('charAt', 'string_char_at_int', T.string, [T.int], T.string);
  member('indexOf', 'string_index_of_string', T.string, [T.string], T.int);
  member('indexOf', 'string_index_of_string_int', T.string, [T.string, T.int], T.int);
  member('lastIndexOf', 'string_last_index_of_string', T.string, [T.string], T.int);
  member('lastIndexOf', 'string_last_index_of_string_int', T.string, [T.string, T.int], T.int);
  member('lowerAscii', 'string_lower_ascii', T.string, [], T.string);
  member('upperAscii', 'string_upper_ascii', T.string, [], T.string);
  member('trim', 'string_trim', T.string, [], T.string);
  member('replace', 'string_replace_string_string', T.string, [T.string, T.string], T.string);
  member('replace', 'string_replace_string_string_int', T.string, [T.string, T.string, T.int], T.string);
  member('split', 'string_split_string', T.string, [T.string], list(T.string));
  member('split', 'string_split_string_int', T.string, [T.string, T.int], list(T.string));
  member('substring', 'string_substring_int', T.string, [T.int], T.string);
  member('substring', 'string_substring_int_int', T.string, [T.int, T.int], T.string);
  member('join', 'list_join', list(T.string), [], T.string);
  member('join', 'list_join_string', list(T.string), [T.string], T.string);
  member('reverse', 'string_reverse', T.string, [], T.string);
  // Kubernetes' list library.
  member('isSorted', 'list_is_sorted', list(A), [], T.bool);
  member('sum', 'list_sum', list(A), [], A);
  member('min', 'list_min', list(A), [], A);
  member('max', 'list_max', list(A), [], A);
  member('indexOf', 'list_index_of', list(A), [A], T.int);
  member('lastIndexOf', 'list_last_index_of', list(A), [A], T.int);
  // Regex library.
  member('find', 'string_find_string', T.string, [T.string], T.string);
  member('findAll', 'string_find_all_string', T.string, [T.string], list(T.string));
  member('findAll', 'string_find_all_string_int', T.string, [T.string, T.int], list(T.string));
  // Quantity and semver libraries.
  g('quantity', 'string_to_quantity', [T.string], QUANTITY);
  g('isQuantity', 'is_quantity_string', [T.string], T.bool);
  g('semver', 'string_to_semver', [T.string], SEMVER);
  g('semver', 'string_bool_to_semver', [T.string, T.bool], SEMVER);
  g('isSemver', 'is_semver_string', [T.string], T.bool);
  g('isSemver', 'is_semver_string_bool', [T.string, T.bool], T.bool);
  for (const [name, t] of [
    ['quantity', QUANTITY],
    ['semver', SEMVER],
  ] as const) {
    member('isLessThan', `${name}_less`, t, [t], T.bool);
    member('isGreaterThan', `${name}_greater`, t, [t], T.bool);
    member('compareTo', `${name}_compare_to`, t, [t], T.int);
  }
  member('sign', 'quantity_sign', QUANTITY, [], T.int);
  member('isInteger', 'quantity_is_integer', QUANTITY, [], T.bool);
  member('asInteger', 'quantity_as_integer', QUANTITY, [], T.int);
  member('asApproximateFloat', 'quantity_as_float', QUANTITY, [], T.double);
  member('add', 'quantity_add', QUANTITY, [QUANTITY], QUANTITY);
  member('add', 'quantity_add_int', QUANTITY, [T.int], QUANTITY);
  member('sub', 'quantity_sub', QUANTITY, [QUANTITY], QUANTITY);
  member('sub', 'quantity_sub_int', QUANTITY, [T.int], QUANTITY);
  member('major', 'semver_major', SEMVER, [], T.int);
  member('minor', 'semver_minor', SEMVER, [], T.int);
  member('patch', 'semver_patch', SEMVER, [], T.int);
  // Optional types.
  g('optional.of', 'optional_of', [A], optional(A));
  g('optional.ofNonZeroValue', 'optional_ofNonZeroValue', [A], optional(A));
  g('optional.none', 'optional_none', [], optional(T.dyn));
  member('value', 'optional_value', optional(A), [], A);
  member('hasValue', 'optional_hasValue', optional(A), [], T.bool);
  member('or', 'optional_or_optional', optional(A), [optional(A)], optional(A));
  member('orValue', 'optional_orValue_value', optional(A), [A], A);
  return m;
}

const OPERATORS = operatorOverloads();
const FUNCTIONS = functionOverloads();

interface Resolution {
  readonly ids: readonly string[];
  readonly result: CelType;
}

/** The overloads a call may resolve to, as cel-go's checker collects them, and the result type. */
function resolve(fn: string, target: CelType | undefined, args: readonly CelType[]): Resolution {
  const candidates = (OPERATORS.get(fn) ?? FUNCTIONS.get(fn) ?? []).filter(
    (o) => (o.target !== undefined) === (target !== undefined) && o.params.length === args.length,
  );
  const ids: string[] = [];
  let result: CelType | undefined;
  for (const o of candidates) {
    const bound = new Map<string, CelType>();
    if (o.target && target && !assignable(o.target, target, bound)) continue;
    if (!o.params.every((p, i) => assignable(p, args[i] ?? T.dyn, bound))) continue;
    ids.push(o.id);
    const r = substitute(o.result, bound);
    result = result === undefined ? r : sameType(result, r) ? result : T.dyn;
  }
  return { ids, result: result ?? T.dyn };
}

// ---------------------------------------------------------------------------------------------
// The expression tree cel-go estimates: cel-js' AST with macros expanded as cel-go's parser
// expands them.

type Expr =
  | { readonly kind: 'literal'; readonly type: CelType; readonly size?: bigint; readonly value?: bigint }
  | { readonly kind: 'ident'; readonly name: string }
  | { readonly kind: 'select'; readonly operand: Expr; readonly field: string; readonly test: boolean }
  | { readonly kind: 'call'; readonly fn: string; readonly target?: Expr; readonly args: readonly Expr[] }
  | { readonly kind: 'list'; readonly items: readonly Expr[] }
  | { readonly kind: 'map'; readonly entries: readonly (readonly [Expr, Expr])[] }
  | {
      readonly kind: 'comprehension';
      readonly range: Expr;
      readonly iterVar: string;
      readonly accuVar: string;
      readonly init: Expr;
      readonly condition: Expr;
      readonly step: Expr;
      readonly result: Expr;
    };

const ACCU = '@result';
const BINARY: Record<string, string> = {
  '==': '_==_',
  '!=': '_!=_',
  '<': '_<_',
  '<=': '_<=_',
  '>': '_>_',
  '>=': '_>=_',
  '+': '_+_',
  '-': '_-_',
  '*': '_*_',
  '/': '_/_',
  '%': '_%_',
  '&&': '_&&_',
  '||': '_||_',
  in: '@in',
  '[]': '_[_]',
  '[?]': '_[?_]',
};

/** An AST form the estimate does not know; the caller reports the estimate as unavailable. */
export class CostEstimateUnsupported extends Error {}

const lit = (type: CelType, size?: bigint): Expr => ({
  kind: 'literal',
  type,
  ...(size === undefined ? {} : { size }),
});
const ident = (name: string): Expr => ({ kind: 'ident', name });
const call = (fn: string, args: Expr[], target?: Expr): Expr => ({
  kind: 'call',
  fn,
  args,
  ...(target ? { target } : {}),
});

/** Go's `len([]rune(s))`: a string's size is counted in code points. */
function runeCount(s: string): bigint {
  let n = 0n;
  for (const _codePoint of s) n++; // eslint-disable-line @typescript-eslint/no-unused-vars
  return n;
}

function literal(value: unknown): Expr {
  switch (typeof value) {
    case 'string':
      return lit(T.string, runeCount(value));
    case 'bigint':
      return { kind: 'literal', type: T.int, size: 1n, value };
    case 'number':
      return lit(T.double, 1n);
    case 'boolean':
      return lit(T.bool, 1n);
    default:
      if (value === null) return lit(T.null, 1n);
      if (value instanceof Uint8Array) return lit(T.bytes, BigInt(value.length));
      // cel-js' unsigned integer.
      return lit(T.uint, 1n);
  }
}

function toExpr(node: ASTNode): Expr {
  const a = node.args as unknown;
  switch (node.op) {
    case 'value':
      return literal(a);
    case 'id':
      return ident(a as string);
    case '.': {
      const [operand, field] = a as [ASTNode, string];
      return { kind: 'select', operand: toExpr(operand), field, test: false };
    }
    case '.?': {
      const [operand, field] = a as [ASTNode, string];
      return call('_?._', [toExpr(operand), lit(T.string, runeCount(field))]);
    }
    case '!_':
      return call('!_', [toExpr(a as ASTNode)]);
    case '-_': {
      // cel-go's parser reads `-1` as one literal; cel-js negates a literal.
      const operand = a as ASTNode;
      if (operand.op === 'value' && (typeof operand.args === 'bigint' || typeof operand.args === 'number'))
        return literal(-(operand.args as number));
      return call('-_', [toExpr(operand)]);
    }
    case '?:':
      return call(
        '_?_:_',
        (a as ASTNode[]).map((x) => toExpr(x)),
      );
    case 'list':
      return { kind: 'list', items: (a as ASTNode[]).map((x) => toExpr(x)) };
    case 'map':
      return {
        kind: 'map',
        entries: (a as [ASTNode, ASTNode][]).map(([k, v]) => [toExpr(k), toExpr(v)] as const),
      };
    case 'call': {
      const [name, args] = a as [string, ASTNode[]];
      if (name === 'has' && args.length === 1 && args[0]?.op === '.') {
        const [operand, field] = args[0].args;
        return { kind: 'select', operand: toExpr(operand), field, test: true };
      }
      return call(
        name,
        args.map((x) => toExpr(x)),
      );
    }
    case 'rcall': {
      const [name, target, args] = a as [string, ASTNode, ASTNode[]];
      const macro = expandMacro(name, target, args);
      if (macro) return macro;
      if (target.op === 'id' && (target.args === 'optional' || target.args === 'cel'))
        return call(
          `${target.args}.${name}`,
          args.map((x) => toExpr(x)),
        );
      return call(
        name,
        args.map((x) => toExpr(x)),
        toExpr(target),
      );
    }
    default: {
      const fn = BINARY[node.op];
      if (fn)
        return call(
          fn,
          (a as ASTNode[]).map((x) => toExpr(x)),
        );
      throw new CostEstimateUnsupported(`cost estimate: unsupported expression ${node.op}`);
    }
  }
}

function iterVarName(node: ASTNode | undefined): string | undefined {
  return node?.op === 'id' ? node.args : undefined;
}

function expandMacro(name: string, target: ASTNode, args: readonly ASTNode[]): Expr | undefined {
  if (name === 'bind' && target.op === 'id' && target.args === 'cel' && args.length === 3) {
    const v = iterVarName(args[0]);
    if (!v || !args[1] || !args[2]) return undefined;
    return {
      kind: 'comprehension',
      range: { kind: 'list', items: [] },
      iterVar: '#unused',
      accuVar: v,
      init: toExpr(args[1]),
      condition: lit(T.bool, 1n),
      step: ident(v),
      result: toExpr(args[2]),
    };
  }
  const v = iterVarName(args[0]);
  if (!v) return undefined;
  const range = (): Expr => toExpr(target);
  const accu = ident(ACCU);
  const comp = (init: Expr, condition: Expr, step: Expr, result: Expr): Expr => ({
    kind: 'comprehension',
    range: range(),
    iterVar: v,
    accuVar: ACCU,
    init,
    condition,
    step,
    result,
  });
  const p = args[1] ? toExpr(args[1]) : undefined;
  if (!p) return undefined;
  switch (name) {
    case 'all':
      if (args.length !== 2) return undefined;
      return comp(lit(T.bool, 1n), call('@not_strictly_false', [accu]), call('_&&_', [accu, p]), accu);
    case 'exists':
      if (args.length !== 2) return undefined;
      return comp(
        lit(T.bool, 1n),
        call('@not_strictly_false', [call('!_', [accu])]),
        call('_||_', [accu, p]),
        accu,
      );
    case 'exists_one':
      if (args.length !== 2) return undefined;
      return comp(
        lit(T.int, 1n),
        lit(T.bool, 1n),
        call('_?_:_', [p, call('_+_', [accu, lit(T.int, 1n)]), accu]),
        call('_==_', [accu, lit(T.int, 1n)]),
      );
    case 'map': {
      if (args.length === 2)
        return comp(
          { kind: 'list', items: [] },
          lit(T.bool, 1n),
          call('_+_', [accu, { kind: 'list', items: [p] }]),
          accu,
        );
      const t = args[2] ? toExpr(args[2]) : undefined;
      if (args.length !== 3 || !t) return undefined;
      return comp(
        { kind: 'list', items: [] },
        lit(T.bool, 1n),
        call('_?_:_', [p, call('_+_', [accu, { kind: 'list', items: [t] }]), accu]),
        accu,
      );
    }
    case 'filter':
      if (args.length !== 2) return undefined;
      return comp(
        { kind: 'list', items: [] },
        lit(T.bool, 1n),
        call('_?_:_', [p, call('_+_', [accu, { kind: 'list', items: [ident(v)] }]), accu]),
        accu,
      );
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Types of every node (what cel-go's checker records for the estimator).

interface Checked {
  readonly types: Map<Expr, CelType>;
  readonly overloads: Map<Expr, readonly string[]>;
}

function check(root: Expr): Checked {
  const types = new Map<Expr, CelType>();
  const overloads = new Map<Expr, readonly string[]>();
  const scope = new Map<string, CelType[]>();
  const push = (name: string, t: CelType): void => {
    scope.set(name, [...(scope.get(name) ?? []), t]);
  };
  const pop = (name: string): void => {
    scope.set(name, (scope.get(name) ?? []).slice(0, -1));
  };
  const visit = (e: Expr): CelType => {
    const t = typeOf(e);
    types.set(e, t);
    return t;
  };
  const joined = (ts: readonly CelType[]): CelType => {
    const [first, ...rest] = ts;
    if (!first) return T.dyn;
    return rest.every((t) => sameType(t, first)) ? first : T.dyn;
  };
  const typeOf = (e: Expr): CelType => {
    switch (e.kind) {
      case 'literal':
        return e.type;
      case 'ident': {
        const local = scope.get(e.name);
        if (local && local.length > 0) return local[local.length - 1] ?? T.dyn;
        return e.name === 'device' ? DEVICE : T.dyn;
      }
      case 'select': {
        const operand = visit(e.operand);
        if (e.test) return T.bool;
        if (operand.k === 'struct')
          return operand.name === 'kubernetes.DRADevice' ? (DEVICE_FIELDS[e.field] ?? T.dyn) : T.dyn;
        if (operand.k === 'map') return operand.val;
        return T.dyn;
      }
      case 'call': {
        const target = e.target ? visit(e.target) : undefined;
        const args = e.args.map(visit);
        const r = resolve(e.fn, target, args);
        overloads.set(e, r.ids);
        return r.result;
      }
      case 'list':
        return e.items.length === 0 ? list(FREE) : list(joined(e.items.map(visit)));
      case 'map':
        if (e.entries.length === 0) return map(FREE, FREE);
        return map(joined(e.entries.map(([k]) => visit(k))), joined(e.entries.map(([, v]) => visit(v))));
      case 'comprehension': {
        const range = visit(e.range);
        const init = visit(e.init);
        push(e.accuVar, init);
        push(e.iterVar, range.k === 'list' ? range.elem : range.k === 'map' ? range.key : T.dyn);
        visit(e.condition);
        const step = visit(e.step);
        pop(e.iterVar);
        // An accumulator that starts as `[]` takes the type the step gives it (map, filter).
        if (hasFree(init)) {
          pop(e.accuVar);
          push(e.accuVar, step);
        }
        const result = visit(e.result);
        pop(e.accuVar);
        return result;
      }
    }
  };
  visit(root);
  return { types, overloads };
}

function hasFree(t: CelType): boolean {
  switch (t.k) {
    case 'free':
      return true;
    case 'list':
    case 'optional':
      return hasFree(t.elem);
    case 'map':
      return hasFree(t.key) || hasFree(t.val);
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Size limits of the `device` variable (dynamic-resource-allocation's sizeEstimator).

interface Decl {
  readonly maxElements: bigint;
  readonly fields?: Readonly<Record<string, Decl>>;
  readonly key?: Decl;
  readonly elem?: Decl;
}

const ATTRIBUTE_DECL: Decl = { maxElements: 64n }; // DeviceAttributeMaxValueLength
const DOMAIN_DECL: Decl = { maxElements: 63n }; // DeviceMaxDomainLength
const ID_DECL: Decl = { maxElements: 32n }; // DeviceMaxIDLength
const PER_DEVICE = 32n; // ResourceSliceMaxAttributesAndCapacitiesPerDevice
const DEVICE_DECL: Decl = {
  maxElements: 0n,
  fields: {
    driver: { maxElements: 63n }, // DriverNameMaxLength
    allowMultipleAllocations: { maxElements: 1n },
    attributes: {
      maxElements: PER_DEVICE,
      key: DOMAIN_DECL,
      elem: { maxElements: PER_DEVICE, key: ID_DECL, elem: ATTRIBUTE_DECL },
    },
    capacity: {
      maxElements: PER_DEVICE,
      key: DOMAIN_DECL,
      elem: { maxElements: PER_DEVICE, key: ID_DECL, elem: { maxElements: 0n } },
    },
  },
};

function deviceSize(path: readonly string[] | undefined): Range | undefined {
  if (!path || path[0] !== 'device') return undefined;
  let node: Decl = DEVICE_DECL;
  for (const name of path.slice(1)) {
    if (name === '@items' || name === '@values') {
      if (!node.elem) return undefined;
      node = node.elem;
    } else if (name === '@keys') {
      if (!node.key) return undefined;
      node = node.key;
    } else {
      const field = node.fields?.[name];
      if (field) node = field;
      // Every attribute of a map of attributes has the same size limit, whatever its name.
      else if (node.elem === ATTRIBUTE_DECL) node = ATTRIBUTE_DECL;
      else return undefined;
    }
  }
  return { min: 0n, max: node.maxElements };
}

// ---------------------------------------------------------------------------------------------
// The estimator (cel-go's coster, with Kubernetes' function costs).

interface EntrySize {
  readonly list: boolean;
  readonly key: Range;
  readonly val: Range;
}

interface LocalVar {
  readonly path: readonly string[];
  readonly size?: Range;
  readonly entry?: EntrySize;
}

/** What the estimator knows of an argument or receiver (cel-go's AstNode). */
interface Node {
  readonly expr?: Expr;
  readonly path?: readonly string[];
  readonly type: CelType;
  readonly size?: Range;
}

const isScalar = (t: CelType): boolean =>
  ['bool', 'double', 'duration', 'int', 'timestamp', 'uint'].includes(t.k) ||
  (t.k === 'optional' && isScalar(t.elem));

const unionEntry = (a: EntrySize | undefined, b: EntrySize | undefined): EntrySize | undefined =>
  a && b ? { list: a.list, key: union(a.key, b.key), val: union(a.val, b.val) } : undefined;

class Coster {
  private readonly paths = new Map<Expr, readonly string[]>();
  private readonly sizes = new Map<Expr, Range>();
  private readonly entries = new Map<Expr, EntrySize>();
  private readonly locals = new Map<string, LocalVar[]>();

  constructor(private readonly checked: Checked) {}

  private type(e: Expr): CelType {
    return this.checked.types.get(e) ?? T.dyn;
  }

  private local(name: string): LocalVar | undefined {
    const stack = this.locals.get(name);
    return stack?.[stack.length - 1];
  }

  private pushLocal(name: string, v: LocalVar): void {
    this.locals.set(name, [...(this.locals.get(name) ?? []), v]);
  }

  private popLocal(name: string): void {
    this.locals.set(name, (this.locals.get(name) ?? []).slice(0, -1));
  }

  private path(e: Expr): readonly string[] {
    if (e.kind === 'ident') {
      const v = this.local(e.name);
      if (v) return v.path;
    }
    return this.paths.get(e) ?? [];
  }

  private size(e: Expr): Range | undefined {
    const known = this.sizes.get(e);
    if (known) return known;
    if (e.kind === 'literal' && e.size !== undefined) return fixed(e.size);
    if (e.kind === 'list') return fixed(BigInt(e.items.length));
    if (e.kind === 'map') return fixed(BigInt(e.entries.length));
    const bySchema = deviceSize(this.path(e));
    if (bySchema) {
      this.sizes.set(e, bySchema);
      return bySchema;
    }
    if (isScalar(this.type(e))) return ONE;
    if (e.kind === 'ident') return this.local(e.name)?.size;
    return undefined;
  }

  private sizeOrUnknown(n: Node): Range {
    return n.size ?? UNKNOWN;
  }

  private entry(e: Expr): EntrySize | undefined {
    const known = this.entries.get(e);
    if (known) return known;
    if (e.kind === 'ident') return this.local(e.name)?.entry;
    return undefined;
  }

  private node(e: Expr): Node {
    const path = this.path(e);
    const size = this.size(e);
    return {
      expr: e,
      type: this.type(e),
      ...(path.length > 0 && path[0] !== ACCU ? { path } : {}),
      ...(size ? { size } : {}),
    };
  }

  cost(e: Expr): Range {
    switch (e.kind) {
      case 'literal':
        return ZERO;
      case 'ident':
        this.paths.set(e, this.local(e.name)?.path ?? [e.name]);
        return ONE;
      case 'select': {
        // has(): free in Kubernetes' environment (PresenceTestHasCost(false)).
        if (e.test) return this.cost(e.operand);
        let c = this.cost(e.operand);
        const k = this.type(e.operand).k;
        if (k === 'map' || k === 'struct' || k === 'param') c = add(c, ONE);
        this.paths.set(e, [...this.path(e.operand), e.field]);
        return c;
      }
      case 'call':
        return this.costCall(e);
      case 'list': {
        let c = ZERO;
        let item: Range = { min: e.items.length === 0 ? 0n : MAX_U64, max: 0n };
        for (const x of e.items) {
          c = add(c, this.cost(x));
          item = union(item, this.size(x) ?? UNKNOWN);
        }
        this.entries.set(e, { list: true, key: ONE, val: item });
        return add(c, fixed(LIST_CREATE));
      }
      case 'map': {
        let c = ZERO;
        const empty = e.entries.length === 0;
        let key: Range = { min: empty ? 0n : MAX_U64, max: 0n };
        let val: Range = { min: empty ? 0n : MAX_U64, max: 0n };
        for (const [k, v] of e.entries) {
          c = add(add(c, this.cost(k)), this.cost(v));
          key = union(key, this.size(k) ?? UNKNOWN);
          val = union(val, this.size(v) ?? UNKNOWN);
        }
        this.entries.set(e, { list: false, key, val });
        return add(c, fixed(MAP_CREATE));
      }
      case 'comprehension':
        return e.range.kind === 'list' && e.range.items.length === 0 && e.accuVar !== ACCU
          ? this.costBind(e)
          : this.costComprehension(e);
    }
  }

  private costBind(e: Extract<Expr, { kind: 'comprehension' }>): Range {
    let c = add(this.cost(e.range), this.cost(e.init));
    this.pushLocal(e.accuVar, this.localFor(e.init));
    c = add(c, this.cost(e.result));
    this.popLocal(e.accuVar);
    const s = this.size(e.result);
    if (s) this.sizes.set(e, s);
    const en = this.entry(e.result);
    if (en) this.entries.set(e, en);
    return c;
  }

  private localFor(e: Expr): LocalVar {
    const size = this.size(e);
    const entry = this.entry(e);
    return { path: this.path(e), ...(size ? { size } : {}), ...(entry ? { entry } : {}) };
  }

  private costComprehension(e: Extract<Expr, { kind: 'comprehension' }>): Range {
    let c = add(this.cost(e.range), this.cost(e.init));
    this.pushLocal(e.accuVar, this.localFor(e.init));
    // One iteration variable: a list's items or a map's keys.
    const rangeEntry = this.entry(e.range);
    const isList = rangeEntry ? rangeEntry.list : this.type(e.range).k === 'list';
    const iterSize = isList ? rangeEntry?.val : rangeEntry?.key;
    this.pushLocal(e.iterVar, {
      path: [...this.path(e.range), isList ? '@items' : '@keys'],
      ...(iterSize ? { size: iterSize } : {}),
    });
    const loop = this.cost(e.condition);
    const step = this.cost(e.step);
    this.popLocal(e.iterVar);
    c = add(c, this.cost(e.result));
    this.popLocal(e.accuVar);
    const count = this.size(e.range) ?? UNKNOWN;
    c = add(c, mul(count, add(step, loop)));
    if (e.init.kind === 'literal') {
      const s = this.size(e.init);
      if (s) this.sizes.set(e, s);
    } else if (e.init.kind === 'list' || e.init.kind === 'map') {
      this.sizes.set(e, count);
      const en = this.entry(e.step);
      if (en) this.entries.set(e, en);
    }
    return c;
  }

  private costCall(e: Extract<Expr, { kind: 'call' }>): Range {
    if (e.fn === 'dyn' && e.args.length === 1 && e.args[0]) {
      const arg = e.args[0];
      const c = add(ONE, this.cost(arg));
      const s = this.size(arg);
      if (s) this.sizes.set(e, s);
      const en = this.entry(arg);
      if (en) this.entries.set(e, en);
      return c;
    }
    const argCosts: Range[] = [];
    const args: Node[] = [];
    for (const a of e.args) {
      argCosts.push(this.cost(a));
      args.push(this.node(a));
    }
    const ids = this.checked.overloads.get(e) ?? [];
    if (ids.length === 0) return ZERO;
    let c = ZERO;
    let target: Node | undefined;
    if (e.target) {
      c = this.cost(e.target);
      target = this.node(e.target);
    }
    let fnCost: Range = { min: MAX_U64, max: 0n };
    let resultSize: Range | undefined;
    for (const id of ids) {
      const est = this.functionCost(e, id, target, args, argCosts);
      fnCost = union(fnCost, est.cost);
      if (est.resultSize) resultSize = resultSize ? union(resultSize, est.resultSize) : est.resultSize;
      const container = e.args[0];
      if (container && (id === 'index_list' || id === 'index_map')) {
        resultSize = this.entry(container)?.val;
        this.paths.set(e, [...this.path(container), id === 'index_list' ? '@items' : '@values']);
      }
      resultSize ??= this.size(e);
    }
    if (resultSize) this.sizes.set(e, resultSize);
    return add(c, fnCost);
  }

  private functionCost(
    e: Extract<Expr, { kind: 'call' }>,
    id: string,
    target: Node | undefined,
    args: readonly Node[],
    argCosts: readonly Range[],
  ): { cost: Range; resultSize?: Range } {
    const argSum = sum(argCosts);
    const k8s = kubernetesCallCost(e.fn, target, args, (n) => this.k8sSize(n));
    if (k8s)
      return { cost: add(k8s.cost, argSum), ...(k8s.resultSize ? { resultSize: k8s.resultSize } : {}) };
    const [a0, a1, a2] = args;
    const [c0 = ZERO, c1 = ZERO, c2 = ZERO] = argCosts;
    switch (id) {
      case 'string_to_bytes':
        if (a0) {
          const sz = this.sizeOrUnknown(a0);
          return {
            cost: add(factor(sz, STRING_TRAVERSAL), argSum),
            resultSize: { min: sz.min, max: mulU(sz.max, 4n) },
          };
        }
        break;
      case 'bytes_to_string':
        if (a0) {
          const sz = this.sizeOrUnknown(a0);
          return {
            cost: add(factor(sz, STRING_TRAVERSAL), argSum),
            resultSize: { min: sz.min / 4n, max: sz.max },
          };
        }
        break;
      case 'starts_with_string':
      case 'ends_with_string':
        if (a0) return { cost: add(factor(this.sizeOrUnknown(a0), STRING_TRAVERSAL), argSum) };
        break;
      case 'in_list':
        if (a1) return { cost: add(factor(this.sizeOrUnknown(a1), 1), argSum) };
        break;
      case 'matches':
      case 'matches_string': {
        const [str, re] = id === 'matches_string' ? [target, a0] : [a0, a1];
        if (str && re) {
          const strCost = factor(add(this.sizeOrUnknown(str), ONE), STRING_TRAVERSAL);
          const reCost = factor(this.sizeOrUnknown(re), REGEX_LENGTH);
          return { cost: add(mul(strCost, reCost), argSum) };
        }
        break;
      }
      case 'contains_string':
        if (target && a0) {
          const strCost = factor(this.sizeOrUnknown(target), STRING_TRAVERSAL);
          const subCost = factor(this.sizeOrUnknown(a0), STRING_TRAVERSAL);
          return { cost: add(mul(strCost, subCost), argSum) };
        }
        break;
      case 'logical_and':
      case 'logical_or':
        return { cost: { min: c0.min, max: add(c0, c1).max } };
      case 'conditional': {
        if (!a1 || !a2) break;
        const size = union(this.sizeOrUnknown(a1), this.sizeOrUnknown(a2));
        const en = unionEntry(a1.expr && this.entry(a1.expr), a2.expr && this.entry(a2.expr));
        if (en) this.entries.set(e, en);
        return { cost: add(c0, union(c1, c2)), resultSize: size };
      }
      case 'add_string':
      case 'add_bytes':
      case 'add_list':
        if (a0 && a1) {
          const size = add(this.sizeOrUnknown(a0), this.sizeOrUnknown(a1));
          const en = unionEntry(a0.expr && this.entry(a0.expr), a1.expr && this.entry(a1.expr));
          if (en) this.entries.set(e, en);
          if (id === 'add_list') return { cost: add(ONE, argSum), resultSize: size };
          return { cost: add(factor(size, STRING_TRAVERSAL), argSum), resultSize: size };
        }
        break;
      default:
        if (
          id === 'equals' ||
          id === 'not_equals' ||
          /^(less|less_equals|greater|greater_equals)_(string|bytes)$/.test(id)
        ) {
          const l = a0 ? this.sizeOrUnknown(a0) : UNKNOWN;
          const r = a1 ? this.sizeOrUnknown(a1) : UNKNOWN;
          const smallestMax = r.max < l.max ? r.max : l.max;
          const cost = factor({ min: smallestMax > 0n ? 1n : 0n, max: smallestMax }, STRING_TRAVERSAL);
          return { cost: add(cost, argSum) };
        }
    }
    return { cost: add(ONE, argSum) };
  }

  /** Kubernetes' sizeEstimate: the computed size, else the schema's, else unknown. */
  private k8sSize(n: Node): Range {
    return n.size ?? deviceSize(n.path) ?? UNKNOWN;
  }
}

/** apiserver/pkg/cel/library/cost.go EstimateCallCost, for the functions selectors have. */
function kubernetesCallCost(
  fn: string,
  target: Node | undefined,
  args: readonly Node[],
  size: (n: Node) => Range,
): { cost: Range; resultSize?: Range } | undefined {
  const [a0, a1] = args;
  switch (fn) {
    case 'isSorted':
    case 'sum':
    case 'max':
    case 'min':
    case 'indexOf':
    case 'lastIndexOf':
    case 'includes': {
      if (!target) return undefined;
      const el = listElement(target);
      if (el) {
        let elCost = ONE;
        if (el.type.k === 'string' || el.type.k === 'bytes')
          elCost = add(elCost, factor(size(el), STRING_TRAVERSAL));
        return { cost: mul(size(target), elCost) };
      }
      if (fn === 'includes') return { cost: size(target) };
      return { cost: factor(size(target), STRING_TRAVERSAL) };
    }
    case 'lowerAscii':
    case 'upperAscii':
    case 'substring':
    case 'trim':
      if (target) {
        const sz = size(target);
        return { cost: factor(sz, STRING_TRAVERSAL), resultSize: sz };
      }
      return undefined;
    case 'replace':
      if (target && args.length >= 2 && a0 && a1) return replaceCost(size(target), size(a0), size(a1));
      return undefined;
    case 'split':
      if (target) {
        const sz = size(target);
        let max = sz.max;
        const limit = args[1]?.expr;
        if (
          args.length > 1 &&
          limit?.kind === 'literal' &&
          limit.type.k === 'int' &&
          limit.value !== undefined
        )
          max = limit.value < 0n ? BigInt.asUintN(64, limit.value) : limit.value;
        return { cost: factor(sz, 2 * STRING_TRAVERSAL), resultSize: { min: 0n, max } };
      }
      return undefined;
    case 'join':
      if (target) {
        const listSize = size(target);
        const el = listElement(target);
        let sz = el ? mul(listSize, size(el)) : ZERO;
        if (a0) {
          const sep = size(a0);
          sz = add(
            sz,
            mul(sep, {
              min: listSize.min > 0n ? listSize.min - 1n : 0n,
              max: listSize.max > 0n ? listSize.max - 1n : 0n,
            }),
          );
        }
        return { cost: factor(sz, STRING_TRAVERSAL), resultSize: sz };
      }
      return undefined;
    case 'find':
    case 'findAll':
      if (target && a0) {
        const sz = size(target);
        const strCost = factor(add(sz, ONE), STRING_TRAVERSAL);
        const reCost = factor(size(a0), REGEX_LENGTH);
        return { cost: mul(strCost, reCost), resultSize: { min: 0n, max: sz.max } };
      }
      return undefined;
    case 'quantity':
    case 'isQuantity':
    case 'semver':
    case 'isSemver':
      if (a0) return { cost: factor(size(a0), STRING_TRAVERSAL) };
      return undefined;
    case 'sign':
    case 'asInteger':
    case 'isInteger':
    case 'asApproximateFloat':
    case 'isGreaterThan':
    case 'isLessThan':
    case 'compareTo':
    case 'add':
    case 'sub':
    case 'major':
    case 'minor':
    case 'patch':
      return { cost: ONE };
    case '_==_':
      if (a0 && a1 && sameType(a0.type, a1.type) && a0.type.k === 'struct') {
        if (a0.type.name === 'kubernetes.Quantity' || a0.type.name === 'kubernetes.Semver')
          return { cost: ONE };
      }
      return undefined;
    default:
      return undefined;
  }
}

/** The element of a list receiver, as Kubernetes' estimator sees it (its path + `@items`). */
function listElement(n: Node): Node | undefined {
  const t = n.type;
  const param = t.k === 'list' ? t.elem : t.k === 'map' ? t.key : t.k === 'optional' ? t.elem : undefined;
  if (!param) return undefined;
  return { type: param, ...(n.path ? { path: [...n.path, '@items'] } : {}) };
}

function replaceCost(sz: Range, toReplace: Range, replaceWith: Range): { cost: Range; resultSize: Range } {
  let countMax: bigint;
  let countMin: bigint;
  let retainedMax = 0n;
  let retainedMin = 0n;
  if (toReplace.min === 0n) {
    countMax = sz.max < MAX_U64 ? sz.max + 1n : sz.max;
    retainedMax = sz.max;
  } else if (replaceWith.max <= toReplace.min) {
    countMax = 0n;
    retainedMax = sz.max;
  } else {
    countMax = BigInt(Math.ceil(Number(sz.max) / Number(toReplace.min)));
  }
  if (toReplace.max === 0n) {
    countMin = sz.min < MAX_U64 ? sz.min + 1n : sz.min;
    retainedMin = sz.min;
  } else if (toReplace.max <= replaceWith.min) {
    countMin = 0n;
    retainedMin = sz.min;
  } else {
    countMin = BigInt(Math.ceil(Number(sz.min) / Number(toReplace.max)));
  }
  const size = add(mul({ min: countMin, max: countMax }, replaceWith), {
    min: retainedMin,
    max: retainedMax,
  });
  return { cost: factor(sz, 2 * STRING_TRAVERSAL), resultSize: size };
}

// ---------------------------------------------------------------------------------------------

export interface CostEstimate {
  readonly min: bigint;
  readonly max: bigint;
}

/**
 * The apiserver's worst-case cost estimate of a selector already parsed by cel-js (the
 * original AST, before explain's rewrites). Throws {@link CostEstimateUnsupported} for an AST
 * form it does not know.
 */
export function estimateSelectorCost(ast: ASTNode): CostEstimate {
  const expr = toExpr(ast);
  return new Coster(check(expr)).cost(expr);
}
