// What the image runs, read from the Dockerfile, so that tests and benchmarks start the driver
// with the same `node` flags as a DaemonSet pod does.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const DOCKERFILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'Dockerfile');

/** The runtime stage's ENTRYPOINT (JSON form), e.g. `["node", "--flag", "/app/dist/gpu-dra.mjs"]`. */
export function imageEntrypoint(dockerfile = DOCKERFILE): string[] {
  const lines = fs.readFileSync(dockerfile, 'utf8').split('\n');
  const last = lines.filter((l) => /^ENTRYPOINT\s/.test(l)).at(-1);
  if (last === undefined) throw new Error(`${dockerfile}: no ENTRYPOINT`);
  return JSON.parse(last.replace(/^ENTRYPOINT\s+/, '')) as string[];
}

/** The `node` flags between `node` and the script in the image's ENTRYPOINT. */
export function imageNodeFlags(dockerfile = DOCKERFILE): string[] {
  const [command, ...rest] = imageEntrypoint(dockerfile);
  if (command !== 'node' || rest.length === 0)
    throw new Error(`unexpected ENTRYPOINT ${JSON.stringify([command, ...rest])}`);
  return rest.slice(0, -1);
}
