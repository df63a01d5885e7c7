// The `gpu-dra driver` flag table (src/node/flags.ts) is the one place a flag is defined:
// these tests hold the commander options, the parsed config, the README table and the
// source tree to it.
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerDriverCommand } from '../../src/cli/commands/driver.js';
import { parseDriverConfig } from '../../src/node/config.js';
import { driverFlagTable } from '../../src/node/flagDocs.js';
import { expectedRows, readmeRows, renderTable } from '../../src/util/readmeTable.js';
import { DRIVER_FLAGS, driverFlagNames, flagName, type DriverFlags } from '../../src/node/flags.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const inCluster = { KUBERNETES_SERVICE_HOST: '10.0.0.1' };

/** Parses `driver <args>` with `env` as the process environment; returns commander's options. */
function driverOptions(args: string[], env: Record<string, string> = {}): DriverFlags {
  const saved = { ...process.env };
  try {
    for (const k of driverFlagNames()) Reflect.deleteProperty(process.env, DRIVER_FLAGS[k].env);
    Object.assign(process.env, env);
    const program = new Command().exitOverride();
    let opts: DriverFlags | undefined;
    registerDriverCommand(program).action((o: DriverFlags) => {
      opts = o;
    });
    program.parse(['driver', ...args], { from: 'user' });
    if (!opts) throw new Error('driver action did not run');
    return opts;
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) Reflect.deleteProperty(process.env, k);
    Object.assign(process.env, saved);
  }
}

describe('driver flag table', () => {
  it('defines every `gpu-dra driver` option, named after its key, with its env twin in the help', () => {
    const cmd = registerDriverCommand(new Command());
    expect(cmd.options.map((o) => o.attributeName())).toEqual(driverFlagNames());
    for (const o of cmd.options) {
      const name = driverFlagNames().find((k) => k === o.attributeName());
      if (!name) throw new Error(`${o.long ?? o.flags} is not in the table`);
      expect(o.long).toBe(flagName(name));
      expect(o.description).toContain(`env ${DRIVER_FLAGS[name].env}`);
    }
    expect(new Set(driverFlagNames().map((k) => DRIVER_FLAGS[k].env)).size).toBe(driverFlagNames().length);
  });

  it('reads each env twin, and a given flag wins over it', () => {
    const env = { NODE_NAME: 'from-env', DEVICE_CHECK_INTERVAL: '5m', NVIDIA_DRIVER_ROOT: '/env/root' };
    expect(driverOptions([], env)).toMatchObject({
      nodeName: 'from-env',
      deviceCheckInterval: '5m',
      driverRoot: '/env/root',
    });
    expect(driverOptions(['--node-name', 'from-flag', '--driver-root', '/flag/root'], env)).toMatchObject({
      nodeName: 'from-flag',
      driverRoot: '/flag/root',
    });
  });

  it.each([
    [{ CLEANUP_ON_EXIT: 'true' }, [], true],
    [{ CLEANUP_ON_EXIT: '1' }, [], true],
    [{ CLEANUP_ON_EXIT: 'false' }, [], false],
    [{}, [], false],
    [{ CLEANUP_ON_EXIT: 'false' }, ['--cleanup-on-exit'], true],
  ])('reads the --cleanup-on-exit switch with env %o and args %o as %s', (env, args, expected) => {
    const opts = driverOptions(['--node-name', 'n', ...args], env);
    expect(parseDriverConfig(opts, inCluster).cleanupOnExit).toBe(expected);
  });

  it.each([
    ['CLEANUP_ON_EXIT', '--cleanup-on-exit'],
    ['DEVICE_EVENTS', '--device-events'],
    ['CLAIM_STATUS', '--claim-status'],
    ['DEVICE_METADATA', '--device-metadata'],
  ])('refuses %s=yes, naming %s and the values it takes', (env, flag) => {
    const opts = driverOptions(['--node-name', 'n'], { [env]: 'yes' });
    expect(() => parseDriverConfig(opts, inCluster)).toThrow(`${flag}: must be true, false, 1 or 0`);
  });

  it('its defaults pass validation and are what the config gets when nothing is given', () => {
    const config = parseDriverConfig(driverOptions(['--node-name', 'n']), inCluster);
    expect(config.driverName).toBe(DRIVER_FLAGS.driverName.default);
    expect(config.hostPaths.driverRoot).toBe(DRIVER_FLAGS.driverRoot.default);
    expect(config.deviceCheckIntervalMs).toBe(30_000);
    expect(config.logLevel).toBe(DRIVER_FLAGS.logLevel.default);
  });

  it('names the missing required flag and its env twin', () => {
    expect(() => parseDriverConfig(driverOptions([]), inCluster)).toThrow(
      /--node-name: is required \(env NODE_NAME\)/,
    );
  });

  it('matches the README table (after changing src/node/flags.ts, run `npm run docs`)', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const table = driverFlagTable();
    const rows = readmeRows(readme, table.name);
    expect(rows, 'README.md lacks the driver-flags markers').toBeDefined();
    expect(rows, 'README.md driver flag table is stale: run `npm run docs`').toEqual(expectedRows(table));
    expect(renderTable(table).split('\n')).toHaveLength(driverFlagNames().length + 2);
  });

  it('is the only reader of its env twins: src/ reads none of them from process.env by name', () => {
    const envNames = new Set<string>(driverFlagNames().map((k) => DRIVER_FLAGS[k].env));
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) {
          const src = fs.readFileSync(p, 'utf8');
          for (const m of src.matchAll(/process\.env(?:\[\s*['"`](\w+)['"`]\s*\]|\.(\w+))/g)) {
            const name = m[1] ?? m[2] ?? '';
            if (envNames.has(name)) offenders.push(`${path.relative(ROOT, p)}: ${name}`);
          }
        }
      }
    };
    walk(path.join(ROOT, 'src'));
    expect(offenders).toEqual([]);
  });
});
