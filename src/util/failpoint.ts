/**
 * Crash points for tests: `GPU_DRA_FAILPOINTS=mig-created,...` makes the process SIGKILL itself
 * when it reaches a named point, as a power loss or OOM kill would, with no cleanup running. Read
 * once at start; a name not listed costs one Set lookup.
 */
const armed = new Set(
  (process.env['GPU_DRA_FAILPOINTS'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
);

/** The names in use, so a test cannot arm a point the code no longer has. */
export const FAILPOINTS = [
  /** Dynamic MIG: NVML made the claim's MIG devices; their ids are not yet in the checkpoint. */
  'mig-created',
] as const;

export function failpoint(name: (typeof FAILPOINTS)[number]): void {
  if (armed.has(name)) process.kill(process.pid, 'SIGKILL');
}
