/** Every generated README table, for `npm run docs` (scripts/docs.mjs). */
import { driverFlagTable } from './flagDocs.js';
import { errorCodeTable } from '../util/errorDocs.js';
import { withTable, type ReadmeTable } from '../util/readmeTable.js';

export const README_TABLES: readonly (() => ReadmeTable)[] = [driverFlagTable, errorCodeTable];

export function withGeneratedTables(readme: string): string {
  return README_TABLES.reduce((text, table) => withTable(text, table()), readme);
}
