/**
 * `explainClaim`: why a ResourceClaim's requests match (or do not match) the devices in a set
 * of ResourceSlices, as the scheduler would decide it. Pure: claim, DeviceClasses and slices
 * in; a structured report out. The CLI (`gpu-dra explain`) renders it.
 *
 * For every request (and every `firstAvailable` subrequest) each device is evaluated against
 * the DeviceClass selectors first, then the request's own, in order, as the scheduler does. A
 * device either matches, fails a selector (the report names the selector, the clause of an
 * `&&`/`||` chain that decided it, and the attribute values it read), or makes a selector fail
 * with an evaluation error: in Kubernetes such an error aborts scheduling of the whole claim.
 *
 * Not modelled: allocations already held by other claims, device taints and tolerations,
 * node selection, consumable capacity and counters; `matchAttribute` constraints are checked
 * per attribute value, without the exact distinct-device search.
 */
import { serialize, type ASTNode } from '@marcbachmann/cel-js';
import {
  splitQualifiedName,
  toCelDevice,
  DeviceConversionError,
  type CelDevice,
  type DeviceInput,
} from './device.js';
import { celErrorMessage, compileSelector, evaluateValue, type CompiledSelector } from './env.js';
import {
  deviceClaimOf,
  type CelDeviceSelector,
  type DeviceClass,
  type DeviceConstraint,
  type DeviceRequest,
  type ExactDeviceRequest,
  type ResourceClaim,
  type ResourceClaimTemplate,
  type ResourceSlice,
} from '../api/resource.js';
import { Quantity } from './quantity.js';
import { childNodes } from './rewrite.js';
import { Semver } from './semver.js';

// ---------------------------------------------------------------------------------------------
// Input: the API objects (src/api/resource.ts); a claim may come as a ResourceClaimTemplate.

export type ClaimObject = ResourceClaim | ResourceClaimTemplate;

// ---------------------------------------------------------------------------------------------
// Report

export interface SelectorInfo {
  readonly source: 'class' | 'request';
  /** Index within the class's or the request's `selectors`. */
  readonly index: number;
  readonly expression: string;
  readonly compileError?: string;
}

export interface ValueSeen {
  readonly expression: string;
  readonly value?: string;
  readonly error?: string;
}

export interface SelectorFailure {
  readonly source: 'class' | 'request';
  readonly index: number;
  readonly expression: string;
  /** The sub-expression of an `&&`/`||` chain that decided the result, when narrower than `expression`. */
  readonly clause?: string;
  /** Attribute/capacity values the failing selector (or clause) read from this device. */
  readonly values: readonly ValueSeen[];
  /** Set when the selector did not return false but failed to evaluate. */
  readonly error?: string;
}

export interface DeviceExplanation {
  readonly driver: string;
  readonly pool: string;
  readonly node?: string;
  readonly device: string;
  readonly outcome: 'match' | 'no-match' | 'error';
  readonly failure?: SelectorFailure;
}

export interface RequestExplanation {
  /** `req` or `req/sub`. */
  readonly name: string;
  readonly deviceClassName: string;
  readonly classFound: boolean;
  readonly allocationMode: 'ExactCount' | 'All';
  readonly count: number;
  readonly adminAccess: boolean;
  readonly selectors: readonly SelectorInfo[];
  readonly devices: readonly DeviceExplanation[];
  /** Names (`pool/device`) of the matching devices. */
  readonly matching: readonly string[];
  /** Devices whose evaluation failed: Kubernetes aborts the claim's scheduling on any of them. */
  readonly errors: number;
  /** Enough matching devices and no evaluation error and no compile error. */
  readonly satisfiable: boolean;
  /** Why not, in one line, when not satisfiable. */
  readonly reason?: string;
}

export interface TopRequestExplanation extends RequestExplanation {
  /** For `firstAvailable`: each alternative, in order. */
  readonly subrequests?: readonly RequestExplanation[];
  /** For `firstAvailable`: the first alternative that can be satisfied. */
  readonly chosen?: string;
}

export interface ConstraintExplanation {
  readonly matchAttribute: string;
  readonly requests: readonly string[];
  /** Per attribute value: how many matching devices each request has with that value. */
  readonly groups: readonly {
    readonly value: string;
    readonly perRequest: Readonly<Record<string, number>>;
  }[];
  readonly satisfiable: boolean;
}

export interface ExplainReport {
  readonly claim: { readonly kind: string; readonly name: string; readonly namespace?: string };
  readonly devicesConsidered: number;
  readonly requests: readonly TopRequestExplanation[];
  readonly constraints: readonly ConstraintExplanation[];
  readonly warnings: readonly string[];
  /** Every request (and constraint) can be satisfied by the devices given, ignoring other claims. */
  readonly satisfiable: boolean;
}

// ---------------------------------------------------------------------------------------------

interface Candidate {
  readonly driver: string;
  readonly pool: string;
  readonly node?: string;
  readonly input: DeviceInput;
  readonly cel?: CelDevice;
  readonly conversionError?: string;
}

function candidatesOf(slices: readonly ResourceSlice<DeviceInput>[]): Candidate[] {
  const out: Candidate[] = [];
  for (const slice of slices) {
    const { driver, pool, nodeName } = slice.spec;
    for (const input of slice.spec.devices ?? []) {
      const base = { driver, pool: pool.name, input, ...(nodeName ? { node: nodeName } : {}) };
      try {
        out.push({ ...base, cel: toCelDevice(driver, input) });
      } catch (err) {
        if (!(err instanceof DeviceConversionError)) throw err;
        out.push({ ...base, conversionError: err.message });
      }
    }
  }
  return out;
}

interface PreparedSelector extends SelectorInfo {
  readonly compiled?: CompiledSelector;
  /** Valid for Kubernetes, but beyond what explain can evaluate. */
  readonly unsupported?: true;
}

function selectorInfo(s: PreparedSelector): SelectorInfo {
  return {
    source: s.source,
    index: s.index,
    expression: s.expression,
    ...(s.compileError ? { compileError: s.compileError } : {}),
  };
}

function prepareSelectors(
  source: 'class' | 'request',
  specs: readonly CelDeviceSelector[] | undefined,
): PreparedSelector[] {
  return (specs ?? []).map((s, index) => {
    const expression = s.cel?.expression ?? '';
    const c = compileSelector(expression);
    if (c.ok) return { source, index, expression, compiled: c.selector };
    return {
      source,
      index,
      expression,
      compileError: c.error,
      ...(c.unsupported ? { unsupported: true } : {}),
    };
  });
}

function formatValue(v: unknown): string {
  if (v instanceof Quantity) return v.describe();
  if (v instanceof Semver) return `semver ${v.toString()}`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `[${v.map(formatValue).join(', ')}]`;
  if (typeof v === 'object') return `{${Object.keys(v).join(', ')}}`;
  return typeof v;
}

/** Root identifier of a select/index chain, or undefined. */
function chainRoot(node: ASTNode): string | undefined {
  let n: ASTNode = node;
  for (;;) {
    if (n.op === 'id') return n.args;
    if (n.op === '.' || n.op === '.?') n = n.args[0];
    else if (n.op === '[]' || n.op === '[?]') n = n.args[0];
    else return undefined;
  }
}

function isAccess(node: ASTNode): boolean {
  return node.op === '.' || node.op === '.?' || node.op === '[]' || node.op === '[?]';
}

/** Maximal `device....` access chains inside `node` (e.g. `device.attributes["d"].x`). */
function deviceReads(node: ASTNode, out: ASTNode[] = []): ASTNode[] {
  if (isAccess(node) && chainRoot(node) === 'device') {
    // Stop at `device.attributes` / `device.capacity` themselves: only leaf reads are useful.
    const text = serialize(node);
    if (text !== 'device.attributes' && text !== 'device.capacity' && text !== 'device') out.push(node);
    return out;
  }
  if (node.op === 'rcall') {
    // A method call on a device read: show the receiver (`...memory` of `...memory.compareTo(x)`).
    const [, receiver, args] = node.args;
    deviceReads(receiver, out);
    for (const a of args) deviceReads(a, out);
    return out;
  }
  for (const c of childNodes(node)) deviceReads(c, out);
  return out;
}

function valuesSeen(node: ASTNode, device: CelDevice): ValueSeen[] {
  const seen = new Map<string, ValueSeen>();
  for (const read of deviceReads(node)) {
    const expression = serialize(read);
    if (seen.has(expression)) continue;
    try {
      seen.set(expression, { expression, value: formatValue(evaluateValue(expression, device)) });
    } catch (err) {
      seen.set(expression, { expression, error: celErrorMessage(err) });
    }
  }
  return [...seen.values()];
}

type ClauseResult = { kind: 'value'; value: unknown } | { kind: 'error'; error: string };

function evalClause(node: ASTNode, device: CelDevice): ClauseResult {
  try {
    return { kind: 'value', value: evaluateValue(serialize(node), device) };
  } catch (err) {
    return { kind: 'error', error: celErrorMessage(err) };
  }
}

function flatten(node: ASTNode, op: '&&' | '||'): ASTNode[] {
  if (node.op !== op) return [node];
  const [l, r] = node.args;
  return [...flatten(l, op), ...flatten(r, op)];
}

/**
 * The narrowest clause of an `&&`/`||` chain that explains a false (or failed) result: for
 * `a && b && c`, the first operand that is false or errors; for `a || b`, the whole chain
 * (every operand was false). Recurses into the deciding clause.
 */
function decidingClause(node: ASTNode, device: CelDevice): ASTNode {
  if (node.op === '&&') {
    for (const operand of flatten(node, '&&')) {
      const r = evalClause(operand, device);
      if (r.kind === 'error' || r.value !== true) return decidingClause(operand, device);
    }
  }
  return node;
}

function explainFailure(sel: PreparedSelector, device: CelDevice, error?: string): SelectorFailure {
  const compiled = sel.compiled;
  const base = { source: sel.source, index: sel.index, expression: sel.expression };
  if (!compiled) return { ...base, values: [], ...(error ? { error } : {}) };
  let clauseNode: ASTNode = compiled.ast;
  try {
    clauseNode = decidingClause(compiled.ast, device);
  } catch {
    clauseNode = compiled.ast;
  }
  const clause = clauseNode === compiled.ast ? undefined : serialize(clauseNode);
  let values: ValueSeen[] = [];
  try {
    values = valuesSeen(clauseNode, device);
  } catch {
    values = [];
  }
  return { ...base, ...(clause ? { clause } : {}), values, ...(error ? { error } : {}) };
}

function deviceKey(c: Candidate): string {
  return `${c.pool}/${c.input.name}`;
}

function explainDevice(c: Candidate, selectors: readonly PreparedSelector[]): DeviceExplanation {
  const base = { driver: c.driver, pool: c.pool, device: c.input.name, ...(c.node ? { node: c.node } : {}) };
  // A selector that cannot run at all (does not compile, or the device has no CEL form).
  const unevaluable = (sel: PreparedSelector, error: string): DeviceExplanation => ({
    ...base,
    outcome: 'error',
    failure: { source: sel.source, index: sel.index, expression: sel.expression, values: [], error },
  });
  for (const sel of selectors) {
    if (!sel.compiled) return unevaluable(sel, sel.compileError ?? 'compile error');
    if (!c.cel) return unevaluable(sel, c.conversionError ?? 'device not convertible');
    const verdict = sel.compiled.run(c.cel);
    if (!verdict.ok) return { ...base, outcome: 'error', failure: explainFailure(sel, c.cel, verdict.error) };
    if (!verdict.matches) return { ...base, outcome: 'no-match', failure: explainFailure(sel, c.cel) };
  }
  return { ...base, outcome: 'match' };
}

function explainExact(
  name: string,
  spec: ExactDeviceRequest,
  classes: ReadonlyMap<string, DeviceClass>,
  candidates: readonly Candidate[],
): RequestExplanation {
  const cls = classes.get(spec.deviceClassName);
  const selectors = [
    ...prepareSelectors('class', cls?.spec?.selectors),
    ...prepareSelectors('request', spec.selectors),
  ];
  const allocationMode = spec.allocationMode ?? 'ExactCount';
  const count = allocationMode === 'All' ? 0 : (spec.count ?? 1);
  const devices = cls ? candidates.map((c) => explainDevice(c, selectors)) : [];
  const matching = devices.filter((d) => d.outcome === 'match').map((d) => `${d.pool}/${d.device}`);
  const errors = devices.filter((d) => d.outcome === 'error').length;
  const compileErrors = selectors.filter((s) => s.compileError);
  let reason: string | undefined;
  if (!cls) reason = `DeviceClass ${spec.deviceClassName} not found`;
  else if (compileErrors[0]?.unsupported) reason = compileErrors[0].compileError;
  else if (compileErrors.length > 0)
    reason = `selector does not compile: ${compileErrors[0]?.compileError ?? ''}`;
  else if (errors > 0)
    reason = `${errors} device(s) make a selector fail to evaluate: the scheduler aborts the claim`;
  else if (allocationMode === 'All' && matching.length === 0)
    reason = 'allocationMode All but no device matches';
  else if (matching.length < count) reason = `needs ${count} device(s), ${matching.length} match`;
  return {
    name,
    deviceClassName: spec.deviceClassName,
    classFound: cls !== undefined,
    allocationMode,
    count,
    adminAccess: spec.adminAccess ?? false,
    selectors: selectors.map(selectorInfo),
    devices,
    matching,
    errors,
    satisfiable: reason === undefined,
    ...(reason !== undefined ? { reason } : {}),
  };
}

function explainRequest(
  req: DeviceRequest,
  classes: ReadonlyMap<string, DeviceClass>,
  candidates: readonly Candidate[],
): TopRequestExplanation {
  if (req.exactly) return explainExact(req.name, req.exactly, classes, candidates);
  const subs = (req.firstAvailable ?? []).map((s) =>
    explainExact(`${req.name}/${s.name}`, s, classes, candidates),
  );
  // The scheduler tries alternatives in order; an evaluation error aborts the claim.
  let chosen: RequestExplanation | undefined;
  let abort: RequestExplanation | undefined;
  for (const s of subs) {
    if (s.errors > 0 || s.selectors.some((x) => x.compileError)) {
      abort = s;
      break;
    }
    if (s.satisfiable) {
      chosen = s;
      break;
    }
  }
  const shown = chosen ?? abort ?? subs[subs.length - 1];
  const reason = chosen
    ? undefined
    : subs.length === 0
      ? 'request has neither exactly nor firstAvailable'
      : abort
        ? `alternative ${abort.name}: ${abort.reason ?? 'error'}`
        : 'no alternative can be satisfied';
  return {
    name: req.name,
    deviceClassName: shown?.deviceClassName ?? '',
    classFound: shown?.classFound ?? false,
    allocationMode: shown?.allocationMode ?? 'ExactCount',
    count: shown?.count ?? 0,
    adminAccess: shown?.adminAccess ?? false,
    selectors: shown?.selectors ?? [],
    devices: shown?.devices ?? [],
    matching: shown?.matching ?? [],
    errors: shown?.errors ?? 0,
    satisfiable: chosen !== undefined,
    ...(reason !== undefined ? { reason } : {}),
    subrequests: subs,
    ...(chosen ? { chosen: chosen.name } : {}),
  };
}

function attributeValueKey(device: DeviceInput, driver: string, qualified: string): string | undefined {
  const [domain, id] = splitQualifiedName(qualified, driver);
  for (const [name, v] of Object.entries(device.attributes ?? {})) {
    const [d, i] = splitQualifiedName(name, driver);
    if (d === domain && i === id) {
      const raw =
        v.string ??
        v.version ??
        (v.int !== undefined ? String(v.int) : v.bool !== undefined ? String(v.bool) : undefined);
      return raw === undefined ? undefined : raw;
    }
  }
  return undefined;
}

function explainConstraints(
  constraints: readonly DeviceConstraint[],
  requests: readonly TopRequestExplanation[],
  candidates: readonly Candidate[],
): ConstraintExplanation[] {
  const byKey = new Map(candidates.map((c) => [deviceKey(c), c]));
  return constraints
    .filter((c): c is DeviceConstraint & { matchAttribute: string } => typeof c.matchAttribute === 'string')
    .map((c) => {
      const names = c.requests && c.requests.length > 0 ? c.requests : requests.map((r) => r.name);
      const groups = new Map<string, Record<string, number>>();
      const needs: Record<string, number> = {};
      for (const reqName of names) {
        const [top, sub] = reqName.split('/');
        const r = requests.find((x) => x.name === top);
        const alt = sub
          ? r?.subrequests?.find((s) => s.name === reqName)
          : (r?.subrequests?.find((s) => s.name === r.chosen) ?? r);
        needs[reqName] = alt
          ? Math.max(alt.count, alt.allocationMode === 'All' ? alt.matching.length : 0)
          : 0;
        for (const key of alt?.matching ?? []) {
          const cand = byKey.get(key);
          const v = cand ? attributeValueKey(cand.input, cand.driver, c.matchAttribute) : undefined;
          if (v === undefined) continue;
          const g = groups.get(v) ?? {};
          g[reqName] = (g[reqName] ?? 0) + 1;
          groups.set(v, g);
        }
      }
      const list = [...groups.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([value, perRequest]) => ({ value, perRequest }));
      const satisfiable = list.some((g) => names.every((n) => (g.perRequest[n] ?? 0) >= (needs[n] ?? 0)));
      return { matchAttribute: c.matchAttribute, requests: names, groups: list, satisfiable };
    });
}

// ---------------------------------------------------------------------------------------------
// Static checks of selectors against what the devices publish

interface Reference {
  readonly kind: 'attributes' | 'capacity';
  readonly domain: string;
  readonly id: string;
}

/** `device.attributes["d"]` / `device.capacity["d"]` with a literal domain. */
function domainAccess(
  node: ASTNode,
  aliases: ReadonlyMap<string, Omit<Reference, 'id'>>,
): Omit<Reference, 'id'> | undefined {
  if (node.op === 'id') return aliases.get(node.args);
  if (node.op !== '[]' && node.op !== '[?]') return undefined;
  const [target, key] = node.args;
  if (key.op !== 'value' || typeof key.args !== 'string') return undefined;
  if (target.op !== '.') return undefined;
  const [root, field] = target.args;
  if (root.op !== 'id' || root.args !== 'device') return undefined;
  if (field !== 'attributes' && field !== 'capacity') return undefined;
  return { kind: field, domain: key.args };
}

function bindParts(node: ASTNode): { name: string; value: ASTNode; body: ASTNode } | undefined {
  if (node.op === 'rcall') {
    const [fn, receiver, args] = node.args;
    if (fn === 'bind' && receiver.op === 'id' && receiver.args === 'cel' && args.length === 3) {
      const [v, value, body] = args;
      if (v?.op === 'id' && value && body) return { name: v.args, value, body };
    }
  }
  return undefined;
}

/** Every literal attribute/capacity reference in a selector (direct, `.?`, `in`, `has`, `cel.bind`). */
export function selectorReferences(ast: ASTNode): Reference[] {
  const out: Reference[] = [];
  const walk = (node: ASTNode, aliases: ReadonlyMap<string, Omit<Reference, 'id'>>): void => {
    const bind = bindParts(node);
    if (bind) {
      walk(bind.value, aliases);
      const target = domainAccess(bind.value, aliases);
      const next = new Map(aliases);
      if (target) next.set(bind.name, target);
      else next.delete(bind.name);
      walk(bind.body, next);
      return;
    }
    if (node.op === '.' || node.op === '.?') {
      const [target, field] = node.args;
      const d = domainAccess(target, aliases);
      if (d) out.push({ ...d, id: field });
    } else if (node.op === '[]' || node.op === '[?]') {
      const [target, key] = node.args;
      const d = domainAccess(target, aliases);
      if (d && key.op === 'value' && typeof key.args === 'string') out.push({ ...d, id: key.args });
    } else if (node.op === 'in') {
      const [key, target] = node.args;
      const d = domainAccess(target, aliases);
      if (d && key.op === 'value' && typeof key.args === 'string') out.push({ ...d, id: key.args });
    }
    for (const c of childNodes(node)) walk(c, aliases);
  };
  walk(ast, new Map());
  return out;
}

/** Literal `quantity("...")` arguments in a selector. */
function quantityLiterals(ast: ASTNode, out: Quantity[] = []): Quantity[] {
  if (ast.op === 'call') {
    const [name, args] = ast.args;
    const a = args[0];
    if (name === 'quantity' && a?.op === 'value' && typeof a.args === 'string') {
      const q = Quantity.tryParse(a.args);
      if (q) out.push(q);
    }
  }
  for (const c of childNodes(ast)) quantityLiterals(c, out);
  return out;
}

function published(candidates: readonly Candidate[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (kind: string, driver: string, names: readonly string[]): void => {
    for (const n of names) {
      const [domain, id] = splitQualifiedName(n, driver);
      const key = `${kind}:${domain}`;
      const set = out.get(key) ?? new Set<string>();
      set.add(id);
      out.set(key, set);
    }
  };
  for (const c of candidates) {
    add('attributes', c.driver, Object.keys(c.input.attributes ?? {}));
    add('capacity', c.driver, Object.keys(c.input.capacity ?? {}));
  }
  return out;
}

function staticWarnings(selectors: readonly PreparedSelector[], candidates: readonly Candidate[]): string[] {
  const warnings = new Set<string>();
  const pub = published(candidates);
  for (const sel of selectors) {
    if (!sel.compiled) continue;
    const where = `${sel.source} selector ${sel.index} (${sel.expression})`;
    for (const ref of selectorReferences(sel.compiled.ast)) {
      const ids = pub.get(`${ref.kind}:${ref.domain}`);
      const text = `device.${ref.kind}["${ref.domain}"].${ref.id}`;
      if (!ids) {
        const domains = [...pub.keys()]
          .filter((k) => k.startsWith(`${ref.kind}:`))
          .map((k) => k.slice(ref.kind.length + 1));
        warnings.add(
          `${where} reads ${text}, but no device publishes ${ref.kind} in domain "${ref.domain}"` +
            (domains.length > 0 ? ` (domains seen: ${domains.join(', ')})` : ''),
        );
      } else if (!ids.has(ref.id)) {
        const near = [...ids].find((i) => i.toLowerCase() === ref.id.toLowerCase());
        warnings.add(
          `${where} reads ${text}, which no device publishes` +
            (near ? ` (did you mean ${near}?)` : ` (published: ${[...ids].sort().join(', ')})`),
        );
      }
    }
    // The "80GB GPU has less than 80Gi" trap: memory just below a quantity the selector names.
    const refsMemory = selectorReferences(sel.compiled.ast).some(
      (r) => r.kind === 'capacity' && r.id === 'memory',
    );
    if (!refsMemory) continue;
    for (const q of quantityLiterals(sel.compiled.ast)) {
      const near = new Map<string, number>();
      for (const c of candidates) {
        const mem = c.cel?.capacity[c.driver]?.['memory'];
        if (!mem) continue;
        if (mem.compareTo(q) < 0 && mem.nanos * 100n >= q.nanos * 95n) {
          const product = c.input.attributes?.['productName']?.string ?? c.input.name;
          const key = `${product}: ${mem.describe()}`;
          near.set(key, (near.get(key) ?? 0) + 1);
        }
      }
      for (const [what, n] of near) {
        warnings.add(
          `${where}: ${n} device(s) have memory just below ${q.toString()} (${what}); ` +
            `a GPU sold as "${q.toString().replace(/i$/, '').replace(/G$/, 'GB')}" reports less than ${q.toString()}, ` +
            `so a ">= ${q.toString()}" test excludes it: compare with a lower quantity or select by productName`,
        );
      }
    }
  }
  return [...warnings];
}

// ---------------------------------------------------------------------------------------------

/**
 * Explains how `claim` would match the devices of `slices`, given the DeviceClasses. Pure and
 * deterministic (devices in slice order).
 */
export function explainClaim(
  claim: ClaimObject,
  classes: readonly DeviceClass[],
  slices: readonly ResourceSlice<DeviceInput>[],
): ExplainReport {
  const classMap = new Map<string, DeviceClass>();
  for (const c of classes) if (c.metadata?.name) classMap.set(c.metadata.name, c);
  const candidates = candidatesOf(slices);
  const devicesSpec = deviceClaimOf(claim) ?? {};
  const warnings: string[] = [];
  for (const c of candidates) if (c.conversionError) warnings.push(c.conversionError);

  const requests = (devicesSpec.requests ?? []).map((r) => explainRequest(r, classMap, candidates));
  const constraints = explainConstraints(devicesSpec.constraints ?? [], requests, candidates);

  // Attribute references are checked against the devices a selector actually sees: class
  // selectors against every device, request selectors against those the class lets through.
  const staticSet = new Set<string>();
  const checkedClasses = new Set<string>();
  for (const r of devicesSpec.requests ?? []) {
    const specs = r.exactly ? [r.exactly] : (r.firstAvailable ?? []);
    for (const s of specs) {
      const cls = classMap.get(s.deviceClassName);
      if (!cls) {
        warnings.push(
          `request ${r.name}: DeviceClass ${s.deviceClassName} not found (known: ${[...classMap.keys()].sort().join(', ') || 'none'})`,
        );
        continue;
      }
      const classSelectors = prepareSelectors('class', cls.spec?.selectors);
      if (!checkedClasses.has(s.deviceClassName)) {
        checkedClasses.add(s.deviceClassName);
        for (const w of staticWarnings(classSelectors, candidates)) staticSet.add(w);
      }
      const inClass = candidates.filter((c) => {
        const cel = c.cel;
        if (!cel) return false;
        return classSelectors.every((sel) => {
          const v = sel.compiled?.run(cel);
          return v?.ok === true && v.matches;
        });
      });
      if (inClass.length === 0) continue;
      for (const w of staticWarnings(prepareSelectors('request', s.selectors), inClass)) staticSet.add(w);
    }
  }
  warnings.push(...staticSet);
  if (candidates.length === 0) warnings.push('no devices: the slices given publish no devices');

  return {
    claim: {
      kind: claim.kind ?? 'ResourceClaim',
      name: claim.metadata?.name ?? '',
      ...(claim.metadata?.namespace ? { namespace: claim.metadata.namespace } : {}),
    },
    devicesConsidered: candidates.length,
    requests,
    constraints,
    warnings,
    satisfiable:
      requests.length > 0 && requests.every((r) => r.satisfiable) && constraints.every((c) => c.satisfiable),
  };
}
