import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { deviceEnvKey, type CdiSpec } from '../../src/cdi/spec.js';
import type { NodePrepareResourceResponse } from '../../src/kubelet/proto.js';

const repo = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);
const UID = '5e1f0c2a-7d1b-4c3e-9a8f-2b6d4e0a1c93';

/** The text between the header line starting with `from` and the next `# ` header after it. */
function section(stdout: string, from: string): string {
  const start = stdout.indexOf(from);
  expect(start, `header ${from}`).toBeGreaterThanOrEqual(0);
  const body = stdout.slice(stdout.indexOf('\n', start) + 1);
  const end = body.search(/^# (?!warning:)/m); // the slices' own warnings are comments too
  return end < 0 ? body : body.slice(0, end);
}

interface DemoJson {
  profile: string;
  driverName: string;
  nodeName: string;
  warnings: string[];
  inventory: { gpus: { uuid: string; migDevices: { uuid: string }[] }[] };
  slices: { spec: { devices: { name: string }[] } }[];
  prepared: {
    claim: { status: { allocation: { devices: { results: { request: string; device: string }[] } } } };
    request: { claims: { uid: string; namespace: string; name: string }[] };
    response: NodePrepareResourceResponse;
    cdiSpecFile: string;
    cdiSpec: CdiSpec;
    container: {
      deviceNodes: { path: string; type?: string; major?: number; minor?: number }[];
      env: string[];
    };
    unprepare: { error: string; cdiSpecRemoved: boolean; checkpointClaims: number };
  } | null;
}

describe('gpu-dra demo (the embedded default)', () => {
  it('tells the story on one page: the GPUs, the devices published, the claim, what its container receives', async () => {
    const { stdout } = await run('node', [path.join(repo, 'dist/gpu-dra.mjs'), 'demo']);
    const lines = stdout.trimEnd().split('\n');
    expect(lines.length).toBeLessThanOrEqual(50);
    expect(lines.every((l) => l.length <= 160)).toBe(true);
    // 1. One line per simulated GPU.
    const gpus = lines.filter((l) => /^ {3}gpu \d+ +NVIDIA H100 80GB HBM3 +79\.6 GiB +0000:/.test(l));
    expect(gpus).toHaveLength(8);
    expect(gpus[0]).toMatch(/^ {3}gpu 0 .* 0000:00:06\.0 {2}MIG off$/);
    // 2. The devices published: counts and names, not the YAML.
    expect(stdout).toContain('8 devices in 1 ResourceSlice(s) of pool demo-node');
    expect(stdout).toMatch(/^ {3}demo-node-gpu\.dra\.dev-[0-9a-f]{8}-0: gpu-0, gpu-1, gpu-2, …, gpu-7$/m);
    expect(stdout).not.toContain('apiVersion: resource.k8s.io/v1');
    // 3. The claim and the device it got, prepared over the socket.
    expect(stdout).toContain('ResourceClaim default/demo-claim');
    expect(stdout).toContain('request "gpu" → device gpu-0');
    expect(stdout).toMatch(/NodePrepareResources on the plugin's socket: ok \(\d+\.\d ms\)/);
    expect(stdout).toContain(`→ CDI device k8s.gpu.dra.dev/claim=${UID}-gpu-0`);
    // 4. What the container receives, in a few lines; the CDI JSON stays behind --verbose.
    expect(stdout).toMatch(
      /^ {3}device nodes {2}\/dev\/nvidiactl, \/dev\/nvidia-uvm, \/dev\/nvidia-uvm-tools, \/dev\/nvidia0$/m,
    );
    expect(stdout).toMatch(/^ {3}env {11}NVIDIA_VISIBLE_DEVICES=void$/m);
    expect(stdout).toMatch(/^ {17}GPU_DRA_DEVICE_GPU_0=GPU-6a5915e5-c913-b8b9-41dc-75d55806210b$/m);
    expect(stdout).toMatch(/^ {3}mounts {8}15 driver files, read-only \(nvidia-smi, libcuda\.so\.1, /m);
    expect(stdout).toContain('then NodeUnprepareResources: ok, CDI spec removed');
    expect(stdout).not.toContain('"cdiVersion"');
    expect(stdout).toContain('--verbose');
  });

  it('keeps a 29-GPU MIG node on one page', async () => {
    const { stdout } = await run('node', [
      path.join(repo, 'dist/gpu-dra.mjs'),
      'demo',
      '--profile',
      'big-mig',
    ]);
    const lines = stdout.trimEnd().split('\n');
    expect(lines.length).toBeLessThanOrEqual(50);
    expect(lines.filter((l) => /^ {3}gpu \d+ /.test(l))).toHaveLength(8);
    expect(stdout).toContain('… and 21 more GPUs like these');
    expect(stdout).toContain('MIG on: 7× 1g.5gb');
    expect(stdout).toMatch(/203 devices in \d+ ResourceSlice\(s\) of pool demo-node/);
  });

  it('--verbose discovers the simulated h100-8x node, prints its ResourceSlices, and prepares a claim over the plugin socket', async () => {
    const started = Date.now();
    const { stdout } = await run('node', [path.join(repo, 'dist/gpu-dra.mjs'), 'demo', '--verbose']);
    const elapsed = Date.now() - started;
    expect(stdout).toContain('driver 580.159.04, CUDA 13.0, 8 GPU(s)');
    expect(stdout).toContain('GPU-6a5915e5-c913-b8b9-41dc-75d55806210b');
    const slices = parseAllDocuments(section(stdout, '# The ResourceSlices')).map(
      (d) => d.toJSON() as { kind: string; spec: { devices: { name: string }[] } },
    );
    expect(slices.map((s) => s.kind)).toEqual(['ResourceSlice']);
    expect(slices[0]?.spec.devices.map((d) => d.name)).toEqual(
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `gpu-${i}`),
    );

    // The prepared claim: registration info, then the NodePrepareResources exchange as YAML.
    expect(stdout).toMatch(
      /GetInfo → DRAPlugin gpu\.dra\.dev, endpoint \/\S+\/plugins\/gpu\.dra\.dev\/dra\.sock/,
    );
    expect(stdout).toContain(`ResourceClaim default/demo-claim (uid ${UID})`);
    expect(stdout).toContain('request gpu → device gpu-0 (pool demo-node)');
    const exchange = parse(section(stdout, '# NodePrepareResources over')) as {
      request: { claims: { uid: string }[] };
      response: NodePrepareResourceResponse;
    };
    expect(exchange.request.claims).toEqual([{ namespace: 'default', uid: UID, name: 'demo-claim' }]);
    expect(exchange.response).toMatchObject({
      error: '',
      devices: [
        {
          request_names: ['gpu'],
          pool_name: 'demo-node',
          device_name: 'gpu-0',
          cdi_device_ids: [`k8s.gpu.dra.dev/claim=${UID}-gpu-0`],
        },
      ],
    });

    // The spec file, printed as written.
    expect(stdout).toMatch(
      new RegExp(`# The CDI spec the driver wrote: /\\S+/cdi/k8s\\.gpu\\.dra\\.dev-claim_${UID}\\.json`),
    );
    const spec = JSON.parse(section(stdout, '# The CDI spec the driver wrote')) as CdiSpec;
    expect(spec.kind).toBe('k8s.gpu.dra.dev/claim');
    expect(spec.devices.map((d) => d.name)).toEqual([`${UID}-gpu-0`]);

    // What the container gets: exactly gpu-0's node plus the control nodes, its UUID, the driver files.
    const container = section(stdout, '# What a container using the claim receives');
    const nodes = [...container.matchAll(/^ {2}(\/dev\/\S+)\s+c (\d+):(\d+)/gm)].map(
      (m) => `${m[1]} ${m[2]}:${m[3]}`,
    );
    expect(nodes.sort()).toEqual([
      '/dev/nvidia-uvm 238:0',
      '/dev/nvidia-uvm-tools 238:1',
      '/dev/nvidia0 195:0',
      '/dev/nvidiactl 195:255',
    ]);
    expect(container).toContain('  NVIDIA_VISIBLE_DEVICES=void\n');
    expect(container).toContain('  GPU_DRA_DEVICE_GPU_0=GPU-6a5915e5-c913-b8b9-41dc-75d55806210b\n');
    expect(container).toMatch(
      /^ {2}\/usr\/lib\/x86_64-linux-gnu\/libcuda\.so\.1 +← \/\S+\/driver\/usr\/lib/m,
    );
    expect(container).toMatch(/^ {2}\/usr\/bin\/nvidia-smi /m);

    expect(stdout).toContain(
      '# NodeUnprepareResources: ok; CDI spec removed: yes; claims left in the checkpoint: 0',
    );
    expect(elapsed).toBeLessThan(5_000); // ~0.7 s here; generous for loaded CI machines
  });

  it('runs another profile as JSON, preparing a MIG device', async () => {
    const { stdout } = await run('node', [
      path.join(repo, 'dist/gpu-dra.mjs'),
      'demo',
      '--profile',
      'a100-mig',
      '--json',
    ]);
    const out = JSON.parse(stdout) as DemoJson;
    expect(out).toMatchObject({
      profile: 'a100-mig',
      driverName: 'gpu.dra.dev',
      nodeName: 'demo-node',
      warnings: [],
    });
    expect(out.inventory.gpus).toHaveLength(2);
    const names = out.slices.flatMap((s) => s.spec.devices.map((d) => d.name));
    expect(names).toContain('gpu-0-mig-3g20gb-9-4');
    expect(names.every((n) => n.includes('-mig-'))).toBe(true);

    const p = out.prepared;
    if (!p) throw new Error('no prepared section');
    const [result] = p.claim.status.allocation.devices.results;
    expect(result?.request).toBe('mig');
    expect(names).toContain(result?.device);
    expect(p.request.claims).toEqual([{ namespace: 'default', uid: UID, name: 'demo-claim' }]);
    expect(p.response.error).toBe('');
    expect(p.response.devices.map((d) => d.cdi_device_ids)).toEqual([
      [`k8s.gpu.dra.dev/claim=${UID}-${result?.device ?? ''}`],
    ]);
    expect(path.basename(p.cdiSpecFile)).toBe(`k8s.gpu.dra.dev-claim_${UID}.json`);
    expect(p.cdiSpec.devices).toHaveLength(1);

    // A MIG device: its parent's node and its GI/CI access caps, with numbers from /proc/devices.
    const paths = p.container.deviceNodes.map((n) => n.path);
    expect(paths).toContain('/dev/nvidia0');
    expect(paths).not.toContain('/dev/nvidia1');
    const caps = p.container.deviceNodes.filter((n) => n.path.startsWith('/dev/nvidia-caps/'));
    expect(caps).toHaveLength(2);
    for (const c of caps) expect(c).toMatchObject({ type: 'c', major: 241 });
    const migUuids = out.inventory.gpus.flatMap((g) => g.migDevices.map((m) => m.uuid));
    // The one device's UUID, under its own key.
    const visible = p.container.env.filter((e) => e.startsWith('GPU_DRA_DEVICE_')).map((e) => e.split('='));
    expect(visible.map(([key]) => key)).toEqual([deviceEnvKey(result?.device ?? '?')]);
    expect(migUuids).toContain(visible[0]?.[1]);

    expect(p.unprepare).toEqual({ error: '', cdiSpecRemoved: true, checkpointClaims: 0 });
  });

  it('names an unknown profile and lists the known ones', async () => {
    const err = (await run('node', [path.join(repo, 'dist/gpu-dra.mjs'), 'demo', '--profile', 'nope']).catch(
      (e: unknown) => e,
    )) as { code: number; stderr: string };
    expect(err.code).not.toBe(0);
    expect(err.stderr).toMatch(/nope/);
    expect(err.stderr).toMatch(/h100-8x/);
  });
});
