/**
 * Test helpers for simulated nodes: a temporary directory with the fake NVML's configuration and
 * host tree, removed afterwards, with `FAKE_NVML_CONFIG` pointing at it while it is in use.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { inject } from 'vitest';

import { createSimulatedNode, type SimulatedNode } from '../../src/sim/fakeHost.js';
import type { FakeNvmlConfig } from '../../src/sim/fakeNvml.js';

/** The fake NVML built by the global setup. */
export function fakeNvmlLib(): string {
  return process.env.GPU_DRA_FAKE_NVML_LIB ?? inject('fakeNvmlLib');
}

export interface TempSimulatedNode extends SimulatedNode, AsyncDisposable {
  /** Removes the directory and restores `FAKE_NVML_CONFIG`. */
  cleanup(): Promise<void>;
}

/**
 * Creates a simulated node in a fresh temporary directory and points `FAKE_NVML_CONFIG` at it
 * (the fake reads it at the next nvmlInit that starts from a zero reference count).
 *
 * With a callback: runs it and cleans up afterwards. Without: returns the node; call `cleanup()`
 * (e.g. in afterEach) or use `await using node = await withSimulatedNode('h100-8x')`.
 */
export function withSimulatedNode(profile: string | FakeNvmlConfig): Promise<TempSimulatedNode>;
export function withSimulatedNode<T>(
  profile: string | FakeNvmlConfig,
  fn: (node: SimulatedNode) => Promise<T> | T,
): Promise<T>;
export async function withSimulatedNode<T>(
  profile: string | FakeNvmlConfig,
  fn?: (node: SimulatedNode) => Promise<T> | T,
): Promise<T | TempSimulatedNode> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gpu-dra-node-'));
  const previous = process.env.FAKE_NVML_CONFIG;
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    if (previous === undefined) delete process.env.FAKE_NVML_CONFIG;
    else process.env.FAKE_NVML_CONFIG = previous;
    await rm(dir, { recursive: true, force: true });
  };
  let node: SimulatedNode;
  try {
    node = await createSimulatedNode(profile, dir, { libPath: fakeNvmlLib() });
  } catch (err) {
    await cleanup();
    throw err;
  }
  process.env.FAKE_NVML_CONFIG = node.configPath;
  if (fn === undefined) {
    return Object.assign(node, { cleanup, [Symbol.asyncDispose]: cleanup });
  }
  try {
    return await fn(node);
  } finally {
    await cleanup();
  }
}

/**
 * The `gpu-dra driver` flags that put it on a simulated node: its fake NVML and host paths.
 * `devRoot` overrides the node's dev/ (the parity test's real device nodes).
 */
/** The simulated node's host roots, as `gpu-dra driver` options (parseDriverConfig's input). */
export function simHostOptions(
  sim: SimulatedNode,
): Record<'devRoot' | 'procRoot' | 'sysRoot' | 'driverRoot', string> {
  const h = sim.hostPaths;
  return { devRoot: h.devRoot, procRoot: h.procRoot, sysRoot: h.sysRoot, driverRoot: h.driverRoot };
}

export function simNodeFlags(sim: SimulatedNode, devRoot = sim.hostPaths.devRoot): string[] {
  const h = sim.hostPaths;
  return [
    `--nvml-lib=${sim.libPath}`,
    `--dev-root=${devRoot}`,
    `--proc-root=${h.procRoot}`,
    `--sys-root=${h.sysRoot}`,
    `--driver-root=${h.driverRoot}`,
  ];
}
