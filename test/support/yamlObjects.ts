// The objects of a multi-document YAML file (deploy/, examples/claims/), empty documents left out.
import fs from 'node:fs';
import { parseAllDocuments } from 'yaml';

export function readYamlObjects<T = Record<string, unknown>>(file: string): T[] {
  return parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as T | null)
    .filter((o): o is T => o !== null);
}
