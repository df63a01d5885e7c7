import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultDeviceClasses } from '../../src/cel/classes.js';
import { explainClaim, selectorReferences, type ClaimObject } from '../../src/cel/explain.js';
import { parseAst } from '../../src/cel/index.js';
import { parseObjects, renderExplainReport, runExplain } from '../../src/cli/actions/explain.js';
import { registerExplainCommand } from '../../src/cli/commands/explain.js';
import { inventoryFixture } from '../support/inventoryFixture.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import type { DeviceRequest, ResourceSlice } from '../../src/api/resource.js';
import type { DeviceInput } from '../../src/cel/device.js';

const D = 'gpu.dra.dev';
const classes = defaultDeviceClasses();
const slicesOf = (profile: 'h100-8x' | 'a100-mig', driverName = D): ResourceSlice<DeviceInput>[] => [
  ...buildSlices(inventoryFixture(profile), { nodeName: `node-${profile}`, driverName }).slices,
];
const h100x8 = slicesOf('h100-8x');
const a100mig = slicesOf('a100-mig');

function claim(
  requests: DeviceRequest[],
  extra: Partial<{ constraints: { requests?: string[]; matchAttribute: string }[] }> = {},
): ClaimObject {
  return {
    kind: 'ResourceClaim',
    metadata: { name: 'c', namespace: 'ns' },
    spec: { devices: { requests, ...extra } },
  };
}
function gpuRequest(selectors: string[] = [], count?: number, name = 'gpu'): DeviceRequest {
  return {
    name,
    exactly: {
      deviceClassName: `gpu.${D}`,
      selectors: selectors.map((expression) => ({ cel: { expression } })),
      ...(count ? { count } : {}),
    },
  };
}

describe('explainClaim', () => {
  it('matches any GPU with the class alone', () => {
    const r = explainClaim(claim([gpuRequest()]), classes, h100x8);
    expect(r.satisfiable).toBe(true);
    expect(r.devicesConsidered).toBe(8);
    expect(r.requests[0]?.matching).toEqual([
      'node-h100-8x/gpu-0',
      ...Array.from({ length: 7 }, (_, i) => `node-h100-8x/gpu-${i + 1}`),
    ]);
    expect(r.requests[0]?.selectors.map((s) => s.source)).toEqual(['class']);
    expect(r.claim).toEqual({ kind: 'ResourceClaim', name: 'c', namespace: 'ns' });
  });

  it('names the failing selector, its values, and warns about the 80Gi trap', () => {
    const r = explainClaim(
      claim([gpuRequest([`device.capacity['${D}'].memory.compareTo(quantity('80Gi')) >= 0`])]),
      classes,
      h100x8,
    );
    const req = r.requests[0];
    expect(r.satisfiable).toBe(false);
    expect(req?.matching).toEqual([]);
    expect(req?.reason).toBe('needs 1 device(s), 0 match');
    const d = req?.devices[0];
    expect(d?.outcome).toBe('no-match');
    expect(d?.failure).toMatchObject({ source: 'request', index: 0 });
    expect(d?.failure?.values).toEqual([
      { expression: `device.capacity["${D}"].memory`, value: '81559Mi = 85520809984 (79.65Gi)' },
    ]);
    expect(r.warnings.join('\n')).toMatch(
      /8 device\(s\) have memory just below 80Gi \(NVIDIA H100 80GB HBM3: 81559Mi = 85520809984 \(79\.65Gi\)\)/,
    );
  });

  it('narrows a failing && chain to the clause that decided it', () => {
    const r = explainClaim(
      claim([
        gpuRequest([
          `device.attributes['${D}'].architecture == 'Hopper' && device.attributes['${D}'].productName.startsWith('NVIDIA A100')`,
        ]),
      ]),
      classes,
      h100x8,
    );
    const f = r.requests[0]?.devices[0]?.failure;
    expect(f?.clause).toBe(`device.attributes["${D}"].productName.startsWith("NVIDIA A100")`);
    expect(f?.values).toEqual([
      { expression: `device.attributes["${D}"].productName`, value: '"NVIDIA H100 80GB HBM3"' },
    ]);
  });

  it('evaluates class selectors first (a MIG class on whole GPUs fails at the class)', () => {
    const r = explainClaim(
      claim([{ name: 'mig', exactly: { deviceClassName: `mig.${D}` } }]),
      classes,
      h100x8,
    );
    const f = r.requests[0]?.devices[0]?.failure;
    expect(f).toMatchObject({ source: 'class', index: 0, clause: `device.attributes["${D}"].type == "mig"` });
    expect(f?.values).toEqual([{ expression: `device.attributes["${D}"].type`, value: '"gpu"' }]);
  });

  it('reports a missing attribute as an evaluation error that aborts the claim, as the scheduler does', () => {
    const r = explainClaim(
      claim([gpuRequest([`device.attributes['${D}'].profile == '1g.10gb'`])]),
      classes,
      h100x8,
    );
    const req = r.requests[0];
    expect(req?.errors).toBe(8);
    expect(req?.satisfiable).toBe(false);
    expect(req?.reason).toMatch(/aborts the claim/);
    expect(req?.devices[0]?.outcome).toBe('error');
    expect(req?.devices[0]?.failure?.error).toMatch(/No such key: profile/);
    expect(req?.devices[0]?.failure?.values[0]).toMatchObject({
      expression: `device.attributes["${D}"].profile`,
      error: expect.stringMatching(/No such key/) as unknown,
    });
    expect(r.warnings.join('\n')).toMatch(
      /reads device\.attributes\["gpu\.dra\.dev"\]\.profile, which no device publishes/,
    );
  });

  it('guarded selectors (has, optionals) evaluate without errors', () => {
    for (const e of [
      `!has(device.attributes['${D}'].profile) || device.attributes['${D}'].profile == '1g.5gb'`,
      `device.attributes['${D}'].?profile.orValue('') == ''`,
    ]) {
      const r = explainClaim(claim([gpuRequest([e])]), classes, h100x8);
      expect(r.requests[0]?.errors, e).toBe(0);
      expect(r.requests[0]?.matching.length, e).toBe(8);
    }
  });

  it('flags attributes no device publishes, with a suggestion', () => {
    const r = explainClaim(
      claim([
        gpuRequest([
          `device.attributes['${D}'].productname == 'x'`,
          `device.attributes['nvidia.com'].model == 'x'`,
        ]),
      ]),
      classes,
      h100x8,
    );
    const w = r.warnings.join('\n');
    expect(w).toMatch(/productname, which no device publishes \(did you mean productName\?\)/);
    expect(w).toMatch(
      /no device publishes attributes in domain "nvidia.com" \(domains seen: gpu.dra.dev, resource.kubernetes.io\)/,
    );
  });

  it('finds references through has(), in, .? and cel.bind', () => {
    const refs = selectorReferences(
      parseAst(
        `has(device.attributes['a.io'].x) && 'y' in device.attributes['b.io'] && device.capacity['c.io'].?z.hasValue() && cel.bind(v, device.attributes['d.io'], v.w == 1)`,
      ),
    );
    expect(refs.map((r) => `${r.kind}:${r.domain}/${r.id}`).sort()).toEqual([
      'attributes:a.io/x',
      'attributes:b.io/y',
      'attributes:d.io/w',
      'capacity:c.io/z',
    ]);
  });

  it('reports unknown classes and selectors that do not compile', () => {
    const r = explainClaim(
      claim([
        { name: 'x', exactly: { deviceClassName: 'nope' } },
        gpuRequest(['device.driver =='], 1, 'bad'),
      ]),
      classes,
      h100x8,
    );
    expect(r.requests[0]).toMatchObject({
      classFound: false,
      satisfiable: false,
      reason: 'DeviceClass nope not found',
    });
    expect(r.requests[1]?.reason).toMatch(/^selector does not compile/);
    expect(r.requests[1]?.selectors[1]?.compileError).toMatch(/compilation failed/);
    expect(r.warnings.join('\n')).toMatch(
      /DeviceClass nope not found \(known: gpu.gpu.dra.dev, mig.gpu.dra.dev\)/,
    );
  });

  it('picks the first satisfiable firstAvailable alternative', () => {
    const fa: DeviceRequest = {
      name: 'gpu',
      firstAvailable: [
        {
          name: 'mig',
          deviceClassName: `mig.${D}`,
          selectors: [{ cel: { expression: `device.attributes['${D}'].profile == '3g.20gb'` } }],
        },
        { name: 'whole', deviceClassName: `gpu.${D}` },
      ],
    };
    expect(explainClaim(claim([fa]), classes, a100mig).requests[0]).toMatchObject({
      chosen: 'gpu/mig',
      satisfiable: true,
      matching: ['node-a100-mig/gpu-0-mig-3g20gb-9-4'],
    });
    const onH100 = explainClaim(claim([fa]), classes, h100x8).requests[0];
    expect(onH100).toMatchObject({ chosen: 'gpu/whole', satisfiable: true });
    expect(onH100?.subrequests?.[0]).toMatchObject({ name: 'gpu/mig', satisfiable: false });
  });

  it('checks matchAttribute constraints per attribute value', () => {
    const pcie = 'resource.kubernetes.io/pcieRoot';
    const two = explainClaim(
      claim([gpuRequest([], 2, 'gpus')], { constraints: [{ requests: ['gpus'], matchAttribute: pcie }] }),
      classes,
      h100x8,
    );
    expect(two.satisfiable).toBe(true);
    expect(two.constraints[0]?.groups).toEqual([
      { value: 'pci0000:00', perRequest: { gpus: 2 } },
      { value: 'pci0000:40', perRequest: { gpus: 2 } },
      { value: 'pci0000:80', perRequest: { gpus: 2 } },
      { value: 'pci0000:c0', perRequest: { gpus: 2 } },
    ]);
    const three = explainClaim(
      claim([gpuRequest([], 3, 'gpus')], { constraints: [{ matchAttribute: pcie }] }),
      classes,
      h100x8,
    );
    expect(three.requests[0]?.satisfiable).toBe(true);
    expect(three.constraints[0]?.satisfiable).toBe(false);
    expect(three.satisfiable).toBe(false);
  });

  it('handles a ResourceClaimTemplate and an empty device set', () => {
    const tpl: ClaimObject = {
      kind: 'ResourceClaimTemplate',
      metadata: { name: 't' },
      spec: { spec: { devices: { requests: [gpuRequest()] } } },
    };
    const r = explainClaim(tpl, classes, []);
    expect(r.satisfiable).toBe(false);
    expect(r.warnings).toContain('no devices: the slices given publish no devices');
  });

  it('honours another driver name', () => {
    const nv = slicesOf('h100-8x', 'gpu.nvidia.com');
    const r = explainClaim(
      {
        kind: 'ResourceClaim',
        metadata: { name: 'c' },
        spec: { devices: { requests: [{ name: 'g', exactly: { deviceClassName: 'gpu.nvidia.com' } }] } },
      },
      defaultDeviceClasses('gpu.nvidia.com'),
      nv,
    );
    expect(r.requests[0]?.matching.length).toBe(8);
    // Our classes do not select another driver's devices.
    expect(explainClaim(claim([gpuRequest()]), classes, nv).requests[0]?.matching).toEqual([]);
  });
});

describe('gpu-dra explain (CLI)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'explain-test-'));
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const write = (name: string, text: string): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const claimFile = write(
    'claim.yaml',
    [
      stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'ignored' } }),
      stringify(claim([gpuRequest([`device.capacity['${D}'].memory.compareTo(quantity('80Gi')) >= 0`])])),
    ].join('---\n'),
  );
  const slicesFile = write('slices.yaml', stringify({ apiVersion: 'v1', kind: 'List', items: h100x8 }));

  it('parses multi-document YAML and Lists', () => {
    expect(parseObjects(fs.readFileSync(claimFile, 'utf8'), 'x').map((o) => o.kind)).toEqual([
      'Pod',
      'ResourceClaim',
    ]);
    expect(parseObjects(fs.readFileSync(slicesFile, 'utf8'), 'x').map((o) => o.kind)).toEqual([
      'ResourceSlice',
    ]);
  });

  it('explains from files and renders for people', async () => {
    const [report] = await runExplain({ filename: claimFile, slices: slicesFile, driverName: D });
    expect(report?.satisfiable).toBe(false);
    const text = renderExplainReport(report ?? ({} as never));
    expect(text).toMatch(/^ResourceClaim ns\/c: NOT satisfiable \(8 device\(s\) considered\)/);
    expect(text).toMatch(
      /request gpu: class gpu.gpu.dra.dev, 1 device\(s\): 0 match, 0 error\(s\) -> NOT SATISFIABLE: needs 1 device\(s\), 0 match/,
    );
    expect(text).toContain(
      '  no-match: request[0] is false (saw device.capacity["gpu.dra.dev"].memory = 81559Mi = 85520809984 (79.65Gi))\n' +
        '    8 device(s): node-h100-8x/gpu-0, node-h100-8x/gpu-1, node-h100-8x/gpu-2',
    );
    expect(text).toMatch(/warning: .*just below 80Gi/);
  });

  it('runs as a commander command with --json and sets the exit code', async () => {
    const program = new Command().exitOverride();
    registerExplainCommand(program);
    const out: string[] = [];
    const write0 = process.stdout.write.bind(process.stdout);
    process.stdout.write = (s: string) => {
      out.push(s);
      return true;
    };
    try {
      await program.parseAsync([
        'node',
        'gpu-dra',
        'explain',
        '-f',
        claimFile,
        '--slices',
        slicesFile,
        '--json',
      ]);
    } finally {
      process.stdout.write = write0;
    }
    const parsed = JSON.parse(out.join('')) as { satisfiable: boolean; requests: { name: string }[] };
    expect(parsed.satisfiable).toBe(false);
    expect(parsed.requests[0]?.name).toBe('gpu');
    expect(process.exitCode).toBe(1);
    process.exitCode = 0;
  });

  it('explains a device-plugin-style pod as the claim the scheduler makes for it', async () => {
    const podFile = write(
      'pod.yaml',
      stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'dp', namespace: 'ns' },
        spec: { containers: [{ name: 'c', resources: { limits: { [`${D}/gpu`]: 9 } } }] },
      }),
    );
    const [report] = await runExplain({ filename: podFile, slices: slicesFile, driverName: D });
    expect(report?.claim).toEqual({ kind: 'ResourceClaim', name: 'dp-extended-resources', namespace: 'ns' });
    expect(report?.satisfiable).toBe(false);
    expect(report?.requests.map((r) => [r.name, r.count, r.matching.length])).toEqual([
      ['container-0-request-0', 9, 8],
    ]);
    // A pod asking for no extended resource a class backs is no claim.
    const plain = write('plain.yaml', stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } }));
    await expect(runExplain({ filename: plain, slices: slicesFile, driverName: D })).rejects.toThrow(
      /no Pod asking for an extended resource a DeviceClass backs/,
    );
  });

  it('refuses ambiguous or missing device sources and files without claims', async () => {
    await expect(runExplain({ filename: claimFile, driverName: D })).rejects.toThrow(/exactly one of/);
    await expect(runExplain({ filename: slicesFile, slices: slicesFile, driverName: D })).rejects.toThrow(
      /no ResourceClaim/,
    );
    await expect(
      runExplain({ filename: path.join(dir, 'missing.yaml'), slices: slicesFile, driverName: D }),
    ).rejects.toThrow(/cannot read/);
  });
});
