/**
 * README's `gpu-dra driver` flag table, rendered from the flag table (flags.ts). Only
 * `npm run docs` and the test that keeps README in step import this; the CLI never does.
 */
import type { ReadmeTable } from '../util/readmeTable.js';
import { DRIVER_FLAGS, driverFlagNames, flagName, type FlagSpec } from './flags.js';

export function driverFlagTable(): ReadmeTable {
  return {
    name: 'driver-flags',
    header: ['flag', 'env', 'default', 'what it does'],
    rows: driverFlagNames().map((name) => {
      const spec: FlagSpec = DRIVER_FLAGS[name];
      const flag = spec.value === undefined ? flagName(name) : `${flagName(name)} ${spec.value}`;
      let unset = spec.unset ?? '';
      if (spec.default !== undefined) unset = `\`${spec.default}\``;
      else if (spec.required) unset = 'required';
      return [`\`${flag}\``, `\`${spec.env}\``, unset, spec.help];
    }),
  };
}
