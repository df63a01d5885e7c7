/**
 * README's troubleshooting table, rendered from the error catalog (errorCatalog.ts). Only
 * `npm run docs` and the test that keeps README in step import this; the CLI never does.
 */
import { ERROR_CATALOG, type ErrorCode } from './errorCatalog.js';
import type { ReadmeTable } from './readmeTable.js';

export function errorCodeTable(): ReadmeTable {
  const codes = Object.keys(ERROR_CATALOG) as ErrorCode[];
  return {
    name: 'error-codes',
    header: ['code', 'what it means', 'what to do'],
    rows: codes.map((code) => [`\`${code}\``, ERROR_CATALOG[code].means, ERROR_CATALOG[code].action]),
  };
}
