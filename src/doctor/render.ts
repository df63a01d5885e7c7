/** `gpu-dra doctor`'s output: text for people, JSON for tools, and the exit status. */
import type { CheckResult } from './checks.js';
import { hasErrors } from './checks.js';

export interface DoctorReport {
  /** No finding of severity error. */
  readonly ok: boolean;
  readonly errors: number;
  readonly warnings: number;
  readonly checks: readonly CheckResult[];
}

export function doctorReport(checks: readonly CheckResult[]): DoctorReport {
  const all = checks.flatMap((c) => c.findings);
  return {
    ok: !hasErrors(checks),
    errors: all.filter((f) => f.severity === 'error').length,
    warnings: all.filter((f) => f.severity === 'warning').length,
    checks,
  };
}

/** Exit status: 0 when no finding is an error (warnings allowed), 1 otherwise (2 is bad usage). */
export function doctorExitCode(report: DoctorReport): number {
  return report.ok ? 0 : 1;
}

export function renderDoctorText(report: DoctorReport): string {
  const lines: string[] = [];
  for (const c of report.checks) {
    if (c.skipped !== undefined) {
      lines.push(`[skip]  ${c.title}: ${c.skipped}`);
      continue;
    }
    if (c.findings.length === 0) {
      lines.push(`[ok]    ${c.title}${c.ok ? `: ${c.ok}` : ''}`);
      continue;
    }
    const worst = c.findings.some((f) => f.severity === 'error') ? '[ERROR]' : '[warn] ';
    lines.push(`${worst} ${c.title}`);
    for (const f of c.findings) {
      lines.push(`  ${f.severity === 'error' ? 'error' : 'warning'}: ${f.problem}`);
      for (const e of f.evidence) lines.push(`    evidence: ${e}`);
      lines.push(`    fix:      ${f.fix}`);
    }
  }
  const plural = (n: number, w: string): string => `${String(n)} ${w}${n === 1 ? '' : 's'}`;
  lines.push(
    '',
    report.errors + report.warnings === 0
      ? 'no findings'
      : `${plural(report.errors, 'error')}, ${plural(report.warnings, 'warning')}`,
  );
  return `${lines.join('\n')}\n`;
}
