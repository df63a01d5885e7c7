/**
 * Fuzz run counts and seeds. CI runs each property a fixed number of times with a fixed seed, so
 * every run sees the same inputs; the long run (`npm run test:soak`) scales the counts with
 * GPU_DRA_FUZZ_SCALE and may pick another seed with GPU_DRA_FUZZ_SEED, and collects how many
 * inputs each property tried in the file GPU_DRA_FUZZ_REPORT names (one `<name> <count>` line each).
 */
import fs from 'node:fs';

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name}=${raw}: expected a positive integer`);
  return n;
}

/** How many runs a property gets: its CI count times GPU_DRA_FUZZ_SCALE (default 1). */
export function fuzzRuns(ciRuns: number): number {
  return ciRuns * positiveInt('GPU_DRA_FUZZ_SCALE', 1);
}

/** The seed: the test's own, unless GPU_DRA_FUZZ_SEED overrides it. */
export function fuzzSeed(ciSeed: number): number {
  return positiveInt('GPU_DRA_FUZZ_SEED', ciSeed);
}

/** Records that property `name` tried `count` inputs (only when GPU_DRA_FUZZ_REPORT is set). */
export function reportFuzzInputs(name: string, count: number): void {
  const file = process.env['GPU_DRA_FUZZ_REPORT'];
  if (file) fs.appendFileSync(file, `${name.replace(/\s+/g, '_')} ${String(count)}\n`);
}
