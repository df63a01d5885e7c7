/**
 * vitest globalSetup of the `deploy` project: provisions helm for the chart tests and hands its
 * path to them as `$GPU_DRA_HELM`. Only that project needs Go (to build helm), so `unit` and
 * `e2e` do not run this.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * Debian has no helm package, so deploy/helm/install-helm.sh builds it from its Go module on
 * first use (a few minutes, cached under ~/.cache/gpu-dra/bin): the chart tests never skip.
 */
async function ensureHelm(): Promise<string> {
  const script = path.resolve(import.meta.dirname, '../../deploy/helm/install-helm.sh');
  const { stdout } = await promisify(execFile)('bash', [script], { maxBuffer: 16 * 1024 * 1024 });
  const helm = stdout.trim().split('\n').at(-1);
  if (!helm) throw new Error(`${script} printed no helm path`);
  return helm;
}

export default async function setup(): Promise<void> {
  process.env['GPU_DRA_HELM'] = await ensureHelm();
}
