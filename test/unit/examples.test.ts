/**
 * examples/claims/*.yaml: structurally valid resource.k8s.io/v1 objects whose pods reference
 * them correctly (or, device-plugin style, a pod whose extended resources a DeviceClass backs:
 * its claim is the one the scheduler makes), with selectors that compile and opaque configs the driver accepts; and the
 * `# expect:` lines of each hold, under `explain` semantics, against the slices the driver
 * publishes for the fake NVML profiles h100-8x, a100-mig and mixed (real discovery through the
 * fake NVML, as on a node).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { compileSelector } from '../../src/cel/index.js';
import { explainClaim, type ClaimObject } from '../../src/cel/explain.js';
import { extendedResourceClaim } from '../../src/cel/extendedResources.js';
import { validateOpaqueParameters } from '../../src/driver/opaqueConfig.js';
import { discoverInventory } from '../../src/nvml/discover.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import { withSimulatedNode } from '../support/sim.js';
import { EXAMPLE_PROFILES, parseExpectations, type ExampleProfile } from '../support/exampleExpectations.js';
import { deviceClaimOf, type DeviceClass, type ResourceSlice } from '../../src/api/resource.js';
import type { DeviceInput } from '../../src/cel/device.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIR = path.join(ROOT, 'examples/claims');
const DRIVER = 'gpu.dra.dev';
const PROFILES = EXAMPLE_PROFILES;

const dnsLabel = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
  .max(63);
const dnsSubdomain = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/)
  .max(253);
const metadata = z.strictObject({
  name: dnsSubdomain,
  namespace: dnsLabel.optional(),
  labels: z.record(z.string(), z.string()).optional(),
});
const selector = z.strictObject({ cel: z.strictObject({ expression: z.string().min(1) }) });
const exact = z.strictObject({
  deviceClassName: dnsSubdomain,
  selectors: z.array(selector).max(32).optional(),
  allocationMode: z.enum(['ExactCount', 'All']).optional(),
  count: z.number().int().positive().optional(),
  adminAccess: z.boolean().optional(),
  capacity: z.strictObject({ requests: z.record(z.string(), z.string()) }).optional(),
});
const request = z
  .strictObject({
    name: dnsLabel,
    exactly: exact.optional(),
    firstAvailable: z
      .array(exact.extend({ name: dnsLabel }))
      .min(1)
      .max(8)
      .optional(),
  })
  .refine(
    (r) => (r.exactly === undefined) !== (r.firstAvailable === undefined),
    'exactly one of exactly/firstAvailable',
  );
const devices = z.strictObject({
  requests: z.array(request).min(1),
  constraints: z
    .array(z.strictObject({ requests: z.array(z.string()).optional(), matchAttribute: z.string() }))
    .optional(),
  config: z
    .array(
      z.strictObject({
        requests: z.array(z.string()).optional(),
        opaque: z.strictObject({ driver: z.string(), parameters: z.unknown() }),
      }),
    )
    .optional(),
});
const claimSchema = z.strictObject({
  apiVersion: z.literal('resource.k8s.io/v1'),
  kind: z.literal('ResourceClaim'),
  metadata,
  spec: z.strictObject({ devices }),
});
const templateSchema = z.strictObject({
  apiVersion: z.literal('resource.k8s.io/v1'),
  kind: z.literal('ResourceClaimTemplate'),
  metadata,
  spec: z.strictObject({ spec: z.strictObject({ devices }) }),
});
const podSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Pod'),
  metadata,
  spec: z.strictObject({
    restartPolicy: z.enum(['Always', 'OnFailure', 'Never']).optional(),
    // Absent from a device-plugin-style pod (extended resources backed by DRA).
    resourceClaims: z
      .array(
        z
          .strictObject({
            name: dnsLabel,
            resourceClaimTemplateName: z.string().optional(),
            resourceClaimName: z.string().optional(),
          })
          .refine(
            (c) => (c.resourceClaimName === undefined) !== (c.resourceClaimTemplateName === undefined),
            'one claim source',
          ),
      )
      .min(1)
      .optional(),
    containers: z
      .array(
        z.strictObject({
          name: dnsLabel,
          image: z.string().min(1),
          command: z.array(z.string()).optional(),
          resources: z.union([
            z.strictObject({
              claims: z.array(z.strictObject({ name: dnsLabel, request: z.string().optional() })).min(1),
            }),
            // An extended resource a DeviceClass backs, counted in whole devices.
            z.strictObject({ limits: z.record(z.string(), z.number().int().positive()) }),
          ]),
        }),
      )
      .min(1),
  }),
});
const namespaceSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Namespace'),
  metadata,
});

type Obj = { kind?: string; metadata?: { name?: string; namespace?: string } } & Record<string, unknown>;
const files = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
const examples = files.map((file) => {
  const text = fs.readFileSync(path.join(DIR, file), 'utf8');
  const objects = parseAllDocuments(text).map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJS() as Obj;
  });
  return { file, text, objects, expectations: parseExpectations(text) };
});

const deviceClasses = parseAllDocuments(
  fs.readFileSync(path.join(ROOT, 'deploy/deviceclass.yaml'), 'utf8'),
).map((d) => d.toJS() as DeviceClass);

/**
 * The example's claim: its ResourceClaim(Template), or for a device-plugin-style pod the claim
 * the scheduler makes for its extended resources on deploy/deviceclass.yaml's classes.
 */
function claimOf(objects: readonly Obj[]): ClaimObject {
  const own = objects.find((o) => o.kind === 'ResourceClaim' || o.kind === 'ResourceClaimTemplate');
  if (own !== undefined) return own;
  const pod = objects.find((o) => o.kind === 'Pod');
  const made = pod !== undefined ? extendedResourceClaim(pod, deviceClasses) : undefined;
  if (made === undefined) throw new Error('neither a claim nor a pod asking for an extended resource');
  return made;
}

describe('examples/claims', () => {
  it('has the documented set of examples', () => {
    expect(files).toEqual([
      'admin-access-monitoring.yaml',
      'extended-resource-pod.yaml',
      'first-available.yaml',
      'gpu-min-memory.yaml',
      'hopper-or-newer.yaml',
      'memory-share.yaml',
      'mig-1g.yaml',
      'mig-dynamic.yaml',
      'mps.yaml',
      'product-name.yaml',
      'shared-claim.yaml',
      'single-gpu.yaml',
      'time-slicing.yaml',
      'two-gpus-same-pcie-root.yaml',
    ]);
    const readme = fs.readFileSync(path.join(DIR, 'README.md'), 'utf8');
    for (const f of files) expect(readme, f).toContain(`\`${f}\``);
  });

  describe.each(examples)('$file', ({ text, objects, expectations }) => {
    it('starts with a comment saying what it asks for', () => {
      expect(text.split('\n')[0]).toMatch(/^# \S/);
    });

    it('parses and validates structurally', () => {
      for (const o of objects) {
        const schema = {
          ResourceClaim: claimSchema,
          ResourceClaimTemplate: templateSchema,
          Pod: podSchema,
          Namespace: namespaceSchema,
        }[o.kind ?? ''];
        expect(schema, `kind ${o.kind}`).toBeDefined();
        const r = schema?.safeParse(o);
        expect(r?.success ? [] : r?.error.issues, `${o.kind} ${o.metadata?.name}`).toEqual([]);
      }
    });

    it('pods reference the claims and requests defined beside them', () => {
      const claims = objects.filter((o) => o.kind === 'ResourceClaim' || o.kind === 'ResourceClaimTemplate');
      const pods = objects.filter((o) => o.kind === 'Pod') as unknown as z.infer<typeof podSchema>[];
      expect(pods.length).toBeGreaterThanOrEqual(1);
      if (claims.length === 0) {
        // Device-plugin style: one pod, no claims, only extended resources a class backs.
        expect(pods.length).toBe(1);
        expect(pods[0]?.spec.resourceClaims).toBeUndefined();
        for (const ctr of pods[0]?.spec.containers ?? []) expect(ctr.resources).not.toHaveProperty('claims');
        expect(claimOf(objects).spec).toBeDefined();
        return;
      }
      expect(claims.length).toBe(1);
      const c = claims[0] as unknown as ClaimObject;
      for (const pod of pods) {
        expect(pod.metadata.namespace).toBe(c.metadata?.namespace);
        for (const rc of pod.spec.resourceClaims ?? []) {
          if (c.kind === 'ResourceClaim') expect(rc.resourceClaimName).toBe(c.metadata?.name);
          else expect(rc.resourceClaimTemplateName).toBe(c.metadata?.name);
        }
        const names = new Set((pod.spec.resourceClaims ?? []).map((r) => r.name));
        for (const ctr of pod.spec.containers) {
          expect(ctr.resources).toHaveProperty('claims');
          for (const cl of 'claims' in ctr.resources ? ctr.resources.claims : [])
            expect(names.has(cl.name)).toBe(true);
        }
      }
      const ns = objects.find((o) => o.kind === 'Namespace') as z.infer<typeof namespaceSchema> | undefined;
      if (c.metadata?.namespace) expect(ns?.metadata.name).toBe(c.metadata.namespace);
    });

    it('uses existing classes, compiling selectors, known request names and valid opaque config', () => {
      const spec = deviceClaimOf(claimOf(objects));
      const classNames = new Set(deviceClasses.map((d) => d.metadata?.name));
      const requestNames = new Set<string>();
      for (const r of spec?.requests ?? []) {
        requestNames.add(r.name);
        for (const alt of r.exactly ? [r.exactly] : (r.firstAvailable ?? [])) {
          expect(classNames.has(alt.deviceClassName), alt.deviceClassName).toBe(true);
          for (const s of alt.selectors ?? []) {
            const c = compileSelector(s.cel?.expression ?? '');
            expect(c.ok ? 'ok' : c.error).toBe('ok');
          }
          if (alt.adminAccess) {
            const ns = objects.find((o) => o.kind === 'Namespace') as
              z.infer<typeof namespaceSchema> | undefined;
            expect(ns?.metadata.labels?.['resource.kubernetes.io/admin-access']).toBe('true');
          }
        }
      }
      for (const k of spec?.constraints ?? [])
        for (const n of k.requests ?? []) expect(requestNames.has(n.split('/')[0] ?? '')).toBe(true);
      for (const cfg of (spec?.config ?? []) as {
        requests?: string[];
        opaque: { driver: string; parameters: unknown };
      }[]) {
        for (const n of cfg.requests ?? []) expect(requestNames.has(n.split('/')[0] ?? '')).toBe(true);
        expect(cfg.opaque.driver).toBe(DRIVER);
        const v = validateOpaqueParameters(cfg.opaque.parameters);
        expect(v.ok ? [] : v.issues).toEqual([]);
      }
    });

    it('says what to expect on every test profile', () => {
      expect(expectations.map((e) => e.profile).sort()).toEqual([...PROFILES].sort());
      for (const e of expectations) {
        if (!e.unsatisfiable) {
          expect(e.request, JSON.stringify(e)).toBeDefined();
          expect(e.devices, JSON.stringify(e)).toBeGreaterThan(0);
        }
      }
    });
  });
});

describe('examples/claims against the simulated profiles', () => {
  const slices = new Map<ExampleProfile, ResourceSlice<DeviceInput>[]>();
  beforeAll(async () => {
    for (const profile of PROFILES) {
      const inventory = await withSimulatedNode(profile, (node) =>
        discoverInventory({ nvmlLib: node.libPath, hostPaths: node.hostPaths }),
      );
      slices.set(profile, [
        ...buildSlices(inventory, { nodeName: `node-${profile}`, driverName: DRIVER }).slices,
      ]);
    }
  });

  const cases = examples.flatMap((ex) =>
    ex.expectations.map((e) => ({ name: `${ex.file} on ${e.profile}`, ex, e })),
  );
  it.each(cases)('$name', ({ ex, e }) => {
    const report = explainClaim(claimOf(ex.objects), deviceClasses, slices.get(e.profile) ?? []);
    expect(report.devicesConsidered).toBeGreaterThan(0);
    if (e.unsatisfiable) {
      expect(report.satisfiable).toBe(false);
      return;
    }
    expect(report.warnings).toEqual([]);
    expect(report.satisfiable, JSON.stringify(report.requests.map((r) => [r.name, r.reason]))).toBe(true);
    const top = report.requests.find((r) => r.name === e.request);
    expect(top).toBeDefined();
    if (e.chosen !== undefined) expect(top?.chosen).toBe(e.chosen);
    const used = e.chosen !== undefined ? top?.subrequests?.find((s) => s.name === e.chosen) : top;
    const want = e.devices ?? 0;
    if (used?.allocationMode === 'All') expect(used.matching.length).toBe(want);
    else {
      expect(used?.count).toBe(want);
      expect(used?.matching.length).toBeGreaterThanOrEqual(want);
    }
    if (e.match) {
      const re = e.match;
      const names = (used?.matching ?? []).map((m) => m.split('/').pop() ?? '');
      expect(names.filter((n) => re.test(n)).length, names.join(' ')).toBeGreaterThanOrEqual(want);
      for (const k of report.constraints) {
        // With a constraint, the devices of a satisfying group are the ones to match.
        const ok = k.groups.filter((g) => k.requests.every((r) => (g.perRequest[r] ?? 0) >= want));
        expect(ok.length).toBeGreaterThan(0);
      }
    }
  });
});
