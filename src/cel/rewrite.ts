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

interface Rewrite {
  readonly node: ASTNode;
  /** The text that replaces the node; `inner` rewrites a sub-expression the same way. */
  replacement(inner: (e: ASTNode) => string): string;
}

function collect(node: ASTNode, found: Rewrite[]): void {
  const h = hasOverIndex(node);
  if (h) {
    found.push({ node, replacement: (inner) => `(${JSON.stringify(h.field)} in (${inner(h.operand)}))` });
    return;
  }
  const d = domainIn(node);
  if (d) {
    found.push({ node, replacement: (inner) => `(size((${inner(d.map)})[(${inner(d.key)})]) > 0)` });
    return;
  }
  const m = matchesCall(node);
  if (m) {
    found.push({ node, replacement: (inner) => `(${inner(m.s)}).${RE2_MATCHES}(${inner(m.p)})` });
    return;
  }
  for (const c of childNodes(node)) collect(c, found);
}

/**
 * Rewrites every `has(e.f)` that cel-js cannot evaluate into `("f" in e)`, and every domain
 * membership test on the device's maps (see above). Returns the input unchanged when there is
 * nothing to rewrite. Throws what `parseAst` throws on a syntax error.
 */
export function rewriteHasMacros(expression: string, parseAst: AstParser): string {
  const ast = parseAst(expression);
  const found: Rewrite[] = [];
  collect(ast, found);
  if (found.length === 0) return expression;
  found.sort((a, b) => b.node.start - a.node.start);
  const inner = (e: ASTNode): string => rewriteHasMacros(serialize(e), parseAst);
  let out = expression;
  for (const f of found) {
    out = out.slice(0, f.node.start) + f.replacement(inner) + out.slice(f.node.end);
  }
  return out;
}
