/**
 * Source rewrites that make @marcbachmann/cel-js accept selectors Kubernetes accepts.
 *
 * `has()` over an index expression. CEL's `has(e.f)` tests whether the map (or message) `e`
 * has the key `f`. cel-js implements the macro only when `e` is a chain of field selections
 * rooted at a variable (`has(a.b.c)`); Kubernetes users write `has(device.attributes["d"].x)`,
 * whose operand is rooted at an index expression, and cel-js refuses it ("has() invalid
 * argument"). For a map operand, `has(e.f)` means exactly `"f" in e`, errors included (when
 * `e` itself cannot be evaluated both forms fail the same way), and every value below
 * `device.attributes[...]` / `device.capacity[...]` is a map. So each such call is rewritten to
 * `("f" in e)`, working on the parsed AST: the call is located by its source range and `e` is
 * printed back with cel-js' serializer (rewritten recursively, in case `e` has its own `has`).
 * Calls cel-js handles itself (`has(device.driver)`, `has(m.a.b)`) are left alone.
 *
 * `"d" in device.attributes` (or `device.capacity`). Kubernetes' device maps answer a lookup of
 * a domain the device has nothing in with an empty map, yet `in` asks the real map: false for
 * such a domain. cel-js answers `in` and the lookup through the same accessor, so the empty-map
 * default would make `in` true for every domain. A domain is in the map exactly when the device
 * has something in it, so such a test is rewritten to `(size(device.attributes[d]) > 0)`.
 *
 * `s.matches(p)` (or `matches(s, p)`). Kubernetes matches with RE2 (Go's regexp): `(?i)` and
 * other inline flags, no backreferences. cel-js' own matches() uses JavaScript's RegExp and
 * cannot be overridden, so calls go to {@link RE2_MATCHES}, which the environment defines.
 */
import { serialize, type ASTNode } from '@marcbachmann/cel-js';

/** Parses an expression into an AST without evaluating it (the environment's parser). */
export type AstParser = (expression: string) => ASTNode;

/** Every AST node directly below `node` (works for macro-expanded nodes too). */
export function childNodes(node: ASTNode): ASTNode[] {
  const out: ASTNode[] = [];
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) visit(x);
    } else if (isAstNode(v)) {
      out.push(v);
    }
  };
  if (node.op === 'value' || node.op === 'id') return out;
  visit(node.args);
  return out;
}

export function isAstNode(v: unknown): v is ASTNode {
  return (
    typeof v === 'object' &&
    v !== null &&
    'op' in v &&
    'args' in v &&
    typeof (v as { op: unknown }).op === 'string'
  );
}

/** `has(e.f)` whose select chain does not end at a variable: the form cel-js rejects. */
function hasOverIndex(node: ASTNode): { field: string; operand: ASTNode } | undefined {
  if (node.op !== 'call') return undefined;
  const [name, args] = node.args;
  if (name !== 'has' || args.length !== 1) return undefined;
  const arg = args[0];
  if (!arg || arg.op !== '.') return undefined;
  let base: ASTNode = arg;
  while (base.op === '.' || base.op === '.?') base = base.args[0];
  if (base.op === 'id') return undefined;
  const [operand, field] = arg.args;
  return { field, operand };
}

/** `k in device.attributes` / `k in device.capacity`: membership in a map with a default. */
function domainIn(node: ASTNode): { key: ASTNode; map: ASTNode } | undefined {
  if (node.op !== 'in') return undefined;
  const [key, map] = node.args;
  if (map.op !== '.') return undefined;
  const [base, field] = map.args;
  if (base.op !== 'id' || base.args !== 'device' || (field !== 'attributes' && field !== 'capacity'))
    return undefined;
  return { key, map };
}

/** The environment's RE2 matches(). */
export const RE2_MATCHES = 'matchesRE2';

/** `s.matches(p)` or `matches(s, p)`: its string and pattern. */
function matchesCall(node: ASTNode): { s: ASTNode; p: ASTNode } | undefined {
  if (node.op === 'rcall') {
    const [name, receiver, args] = node.args;
    if (name === 'matches' && args.length === 1 && args[0]) return { s: receiver, p: args[0] };
  } else if (node.op === 'call') {
    const [name, args] = node.args;
    if (name === 'matches' && args.length === 2 && args[0] && args[1]) return { s: args[0], p: args[1] };
  }
  return undefined;
}

/** The node with every rewrite below applied, bottom-up; untouched subtrees are shared. */
function transform(node: ASTNode): ASTNode {
  const h = hasOverIndex(node);
  if (h)
    return {
      ...node,
      op: 'in',
      args: [{ ...node, op: 'value', args: h.field }, transform(h.operand)],
    };
  const d = domainIn(node);
  if (d) {
    const lookup = { ...node, op: '[]', args: [transform(d.map), transform(d.key)] } as ASTNode;
    const size = { ...node, op: 'call', args: ['size', [lookup]] } as ASTNode;
    return { ...node, op: '>', args: [size, { ...node, op: 'value', args: 0n }] };
  }
  const m = matchesCall(node);
  if (m) return { ...node, op: 'rcall', args: [RE2_MATCHES, transform(m.s), [transform(m.p)]] };
  return mapChildren(node, transform);
}

/** A copy of `node` whose direct child nodes are replaced by `f(child)`. */
function mapChildren(node: ASTNode, f: (n: ASTNode) => ASTNode): ASTNode {
  if (node.op === 'value' || node.op === 'id') return node;
  let changed = false;
  const visit = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(visit);
    if (isAstNode(v)) {
      const out = f(v);
      if (out !== v) changed = true;
      return out;
    }
    return v;
  };
  const args = visit(node.args);
  return changed ? ({ ...node, args } as ASTNode) : node;
}

function needsRewrite(node: ASTNode): boolean {
  if (hasOverIndex(node) || domainIn(node) || matchesCall(node)) return true;
  return childNodes(node).some(needsRewrite);
}

/**
 * Rewrites every `has(e.f)` that cel-js cannot evaluate into `("f" in e)`, every domain
 * membership test on the device's maps and every `matches` (see above), on the AST, and prints
 * the result back: splicing source text breaks on a parenthesized receiver, whose node range
 * starts inside the parenthesis. Returns the input unchanged when there is nothing to rewrite.
 * Throws what `parseAst` throws on a syntax error.
 */
export function rewriteHasMacros(expression: string, parseAst: AstParser): string {
  const ast = parseAst(expression);
  if (!needsRewrite(ast)) return expression;
  return serialize(transform(ast));
}
