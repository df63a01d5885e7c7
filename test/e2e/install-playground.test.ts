// `npm run playground` end to end: the playground process (test/playground/main.ts through its
// TypeScript loader, as the npm script runs it) sets up a cluster with deploy/ installed and an
// example running, prints what the pod got, and removes everything on exit: with
// --exit-after-setup right after the report, otherwise on SIGTERM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { ensurePeersBinary } from './support/peers.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the playground. With `until`, sends SIGTERM once stdout matches it. Rejects when it does
 * not exit within `timeoutMs`.
 */
function playground(args: string[], until?: RegExp, timeoutMs = 300_000): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['GPU_DRA_KEEP_TMP'];
  delete env['PLAYGROUND_EXIT'];
  const child = spawn(
    process.execPath,
    ['--enable-source-maps', '--import', './test/playground/loader.js', 'test/playground/main.ts', ...args],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  let signalled = false;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
    if (until && !signalled && until.test(stdout)) {
      signalled = true;
      child.kill('SIGTERM');
    }
  });
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`playground did not exit within ${String(timeoutMs)}ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The cluster's temp dir, from the kubeconfig path the playground prints. */
function clusterDir(stdout: string): string {
  const kubeconfig = /^Kubeconfig \(cluster admin\): (\S+)$/m.exec(stdout)?.[1];
  if (!kubeconfig) throw new Error(`no kubeconfig line in:\n${stdout}`);
  return path.dirname(path.dirname(kubeconfig));
}

describe('npm run playground', () => {
  beforeAll(async () => {
    // Build (or find) the peers here, under the hook timeout, not in the playground process.
    await ensurePeersBinary();
  }, 3_600_000);

  it('--exit-after-setup: reports the allocation and CDI edits of the single-GPU example on h100-8x, then removes everything', async () => {
    const run = await playground(['--exit-after-setup']);
    const { stdout } = run;
    expect(run.code, `${stdout}\n${run.stderr}`).toBe(0);
    expect(stdout).toMatch(/^ {2}node +gpu-node .*fake NVML profile h100-8x: 8 GPUs/m);
    expect(stdout).toMatch(/^ {2}deploy\/ +namespace\.yaml: Namespace gpu-dra$/m);
    expect(stdout).toMatch(/^ +daemonset\.yaml: DaemonSet gpu-dra\/gpu-dra-kubelet-plugin$/m);
    expect(stdout).toMatch(/^ {2}plugin pod +gpu-dra\/gpu-dra-kubelet-plugin-\w+ Running on gpu-node /m);
    expect(stdout).toContain(
      'as system:serviceaccount:gpu-dra:gpu-dra-kubelet-plugin, node-name gpu-node from its pod-bound token',
    );
    expect(stdout).toMatch(/^ {2}published +8 devices in \d+ ResourceSlice\(s\): gpu-0 gpu-1 /m);
    expect(stdout).toMatch(/^Pod default\/single-gpu: Running on gpu-node$/m);
    const allocated =
      /^ {2}request gpu -> gpu\.dra\.dev gpu-node\/gpu-(\d) {2}\(NVIDIA H100 80GB HBM3, GPU-/m.exec(stdout);
    expect(allocated, stdout).not.toBeNull();
    // Exactly one GPU node, the allocated one, next to the control nodes.
    const gpuNodes = [...stdout.matchAll(/^ {4}(\/dev\/nvidia\d+) {2}c 195:(\d+)$/gm)];
    expect(gpuNodes.map((m) => m[1])).toEqual([`/dev/nvidia${allocated?.[1] ?? '?'}`]);
    expect(stdout).toMatch(/^ {4}\/dev\/nvidiactl {2}c 195:255$/m);
    expect(stdout).toMatch(/^ {4}NVIDIA_VISIBLE_DEVICES=void$/m);
    // The allocated GPU's UUID under its own key, and no other device's.
    const deviceEnv = [...stdout.matchAll(/^ {4}(GPU_DRA_DEVICE_\w+)=(GPU-[0-9a-f-]+)$/gm)];
    expect(deviceEnv.map((m) => m[1])).toEqual([`GPU_DRA_DEVICE_GPU_${allocated?.[1] ?? '?'}`]);
    expect(stdout).toMatch(
      /^ {4}\/usr\/lib\/x86_64-linux-gnu\/libcuda\.so\.1 {2}<- {2}\S+ {2}\(ro,nosuid,nodev,bind\)$/m,
    );
    // The hints: kubectl and the explain line.
    const dir = clusterDir(stdout);
    expect(stdout).toContain(`export KUBECONFIG=${dir}/kubeconfigs/admin.yaml`);
    expect(stdout).toContain(
      `node dist/gpu-dra.mjs explain -f examples/claims/mig-1g.yaml --kubeconfig ${dir}/kubeconfigs/admin.yaml`,
    );
    expect(stdout).not.toContain('Running until Ctrl-C');
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('an example the node cannot satisfy stays Pending and explain says why; SIGTERM tears down', async () => {
    const run = await playground(['--profile', 'a100-mig'], /^Running until Ctrl-C/m);
    const { stdout } = run;
    expect(run.code, `${stdout}\n${run.stderr}`).toBe(0);
    expect(stdout).toMatch(/^Pod default\/single-gpu: Pending: Unschedulable: .*cannot allocate all claims/m);
    expect(stdout).toMatch(/^ {2}ResourceClaimTemplate single-gpu: NOT satisfiable/m);
    expect(run.stderr).toContain('SIGTERM: stopping the driver, the node and the control plane');
    expect(fs.existsSync(clusterDir(stdout))).toBe(false);
  });
});
