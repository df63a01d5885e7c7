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

function collect(node: ASTNode, found: { node: ASTNode; field: string; operand: ASTNode }[]): void {
  const h = hasOverIndex(node);
  if (h) {
    found.push({ node, ...h });
    return;
  }
  for (const c of childNodes(node)) collect(c, found);
}

/**
 * Rewrites every `has(e.f)` that cel-js cannot evaluate into `("f" in e)`. Returns the input
 * unchanged when there is nothing to rewrite. Throws what `parseAst` throws on a syntax error.
 */
export function rewriteHasMacros(expression: string, parseAst: AstParser): string {
  const ast = parseAst(expression);
  const found: { node: ASTNode; field: string; operand: ASTNode }[] = [];
  collect(ast, found);
  if (found.length === 0) return expression;
  found.sort((a, b) => b.node.start - a.node.start);
  let out = expression;
  for (const f of found) {
    const operand = rewriteHasMacros(serialize(f.operand), parseAst);
    const replacement = `(${JSON.stringify(f.field)} in (${operand}))`;
    out = out.slice(0, f.node.start) + replacement + out.slice(f.node.end);
  }
  return out;
}
