/**
 * `gpu-dra explain`: its flags; the CEL evaluator and YAML parser (src/cli/actions/explain.ts)
 * load only when it runs.
 */
import type { Command } from 'commander';
import { DRIVER_FLAGS } from '../../node/flags.js';

export interface ExplainOptions {
  readonly filename: string;
  readonly slices?: string;
  readonly kubeconfig?: string;
  readonly profile?: string;
  readonly driverName: string;
  readonly deviceClasses?: string;
  readonly json?: boolean;
  readonly all?: boolean;
}

export function registerExplainCommand(program: Command): void {
  program
    .command('explain')
    .description(
      "explain which devices a claim's requests match, and why the others do not (scheduler CEL semantics)",
    )
    .requiredOption(
      '-f, --filename <file>',
      'YAML with ResourceClaim(s) or ResourceClaimTemplate(s) ("-" for stdin)',
    )
    .option('--slices <file>', 'ResourceSlices to match against (YAML/JSON, multi-document or List)')
    .option('--kubeconfig <path>', 'read ResourceSlices and DeviceClasses from this cluster')
    .option(
      '--profile <name>',
      'match against a simulated node (fake NVML profile: h100-8x, a100-mig, mixed, ...)',
    )
    .option(
      '--driver-name <name>',
      'driver name for the default DeviceClasses and --profile slices',
      process.env[DRIVER_FLAGS.driverName.env] ?? DRIVER_FLAGS.driverName.default,
    )
    .option(
      '--device-classes <file>',
      `DeviceClasses (default: gpu.<driver> and mig.<driver> as deploy/deviceclass.yaml installs them)`,
    )
    .option('--json', 'print the reports as JSON')
    .option('--all', 'list every device, not the first 10 of each outcome')
    .action(async (opts: ExplainOptions) => {
      const { runExplainCommand } = await import('../actions/explain.js');
      await runExplainCommand(opts);
    });
}
