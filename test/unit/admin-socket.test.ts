// The plugin's local admin channel (src/node/adminSocket.ts): HTTP on a 0600 Unix socket that
// reports the plugin's status and clears XID taints, and its client, which the `gpu-dra taints`
// and `gpu-dra doctor` commands use.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

import {
  AdminSocketError,
  adminRequest,
  adminSocketPath,
  clearXidTaints,
  fetchAdminStatus,
  parseClearRequest,
  startAdminSocket,
  type AdminServer,
  type AdminStatus,
} from '../../src/node/adminSocket.js';
import { isGpuDraError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/log.js';

const STATUS: AdminStatus = {
  apiVersion: 1,
  driverName: 'gpu.dra.dev',
  nodeName: 'node-a',
  pid: 42,
  registration: { registered: true, at: '2026-01-01T00:00:00.000Z' },
  sockets: { dra: '/x/dra.sock', registration: '/y/gpu.dra.dev-reg.sock' },
  slicesPublished: true,
  taints: { 'gpu-0': [{ key: 'gpu.dra.dev/xid', value: '48', effect: 'NoSchedule' }] },
  xidTaints: { 'gpu-0': [{ key: 'gpu.dra.dev/xid', value: '48', effect: 'NoSchedule' }] },
};

const dirs: string[] = [];
const servers: AdminServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempPluginsDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-admin-'));
  dirs.push(d);
  return path.join(d, 'plugins');
}

async function serve(requests: (readonly string[] | 'all')[] = []): Promise<string> {
  const socket = adminSocketPath(tempPluginsDir(), 'gpu.dra.dev');
  servers.push(
    await startAdminSocket(
      socket,
      {
        status: () => STATUS,
        clearXidTaints: (devices) => {
          requests.push(devices);
          return devices === 'all' ? ['gpu-0', 'gpu-1'] : devices.filter((d) => d === 'gpu-0');
        },
      },
      silentLogger(),
    ),
  );
  return socket;
}

describe('admin socket', () => {
  it('lives beside dra.sock, mode 0600, and reports the status', async () => {
    const socket = await serve();
    expect(socket).toMatch(/plugins\/gpu\.dra\.dev\/admin\.sock$/);
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    expect(await fetchAdminStatus(socket)).toEqual(STATUS);
  });

  it('clears the named devices, or all, and says which lost a taint', async () => {
    const requests: (readonly string[] | 'all')[] = [];
    const socket = await serve(requests);
    expect(await clearXidTaints(socket, ['gpu-0', 'gpu-3'])).toEqual({ cleared: ['gpu-0'] });
    expect(await clearXidTaints(socket, 'all')).toEqual({ cleared: ['gpu-0', 'gpu-1'] });
    expect(requests).toEqual([['gpu-0', 'gpu-3'], 'all']);
  });

  it('refuses a malformed request without calling the handler', async () => {
    const requests: (readonly string[] | 'all')[] = [];
    const socket = await serve(requests);
    await expect(adminRequest(socket, 'POST', '/v1/taints/clear', { devices: [] })).rejects.toThrow(
      /"devices" must be a non-empty list/,
    );
    await expect(adminRequest(socket, 'GET', '/v1/taints/clear')).rejects.toThrow(/use POST/);
    await expect(adminRequest(socket, 'GET', '/v1/nothing')).rejects.toThrow(/no such endpoint/);
    expect(requests).toEqual([]);
  });

  it('parses clear requests strictly', () => {
    expect(parseClearRequest({ devices: ['gpu-0'] })).toEqual({ devices: ['gpu-0'] });
    expect(parseClearRequest({ all: true })).toEqual({ devices: 'all' });
    expect(parseClearRequest({ all: true, devices: ['gpu-0'] })).toHaveProperty('error');
    expect(parseClearRequest({ devices: [1] })).toHaveProperty('error');
    expect(parseClearRequest(['gpu-0'])).toHaveProperty('error');
  });

  it('replaces a stale socket from a dead plugin, and never a regular file', async () => {
    const socket = adminSocketPath(tempPluginsDir(), 'gpu.dra.dev');
    fs.mkdirSync(path.dirname(socket), { recursive: true });
    // A socket file left behind: a process bound it and died without closing it.
    const bound = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.exit(0))`,
    ]);
    expect(bound.status).toBe(0);
    expect(fs.lstatSync(socket).isSocket()).toBe(true);
    servers.push(
      await startAdminSocket(socket, { status: () => STATUS, clearXidTaints: () => [] }, silentLogger()),
    );
    expect((await fetchAdminStatus(socket)).pid).toBe(42);

    const file = adminSocketPath(tempPluginsDir(), 'gpu.dra.dev');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, 'not a socket');
    await expect(
      startAdminSocket(file, { status: () => STATUS, clearXidTaints: () => [] }, silentLogger()),
    ).rejects.toSatisfy((err) => isGpuDraError(err, 'SOCKET_PATH_OCCUPIED'));
    expect(fs.readFileSync(file, 'utf8')).toBe('not a socket');
  });

  it('takes over from a predecessor (rolling update) whose close leaves the successor serving', async () => {
    const socket = adminSocketPath(tempPluginsDir(), 'gpu.dra.dev');
    const old = await startAdminSocket(
      socket,
      { status: () => ({ ...STATUS, pid: 1 }), clearXidTaints: () => [] },
      silentLogger(),
    );
    const next = await startAdminSocket(
      socket,
      { status: () => ({ ...STATUS, pid: 2 }), clearXidTaints: () => [] },
      silentLogger(),
    );
    servers.push(next);
    expect((await fetchAdminStatus(socket)).pid).toBe(2);
    await old.close();
    expect((await fetchAdminStatus(socket)).pid).toBe(2);
    expect(fs.readdirSync(path.dirname(socket))).toEqual(['admin.sock']);
  });

  it('refuses a socket path longer than a Unix socket can hold', async () => {
    const socket = adminSocketPath(path.join(tempPluginsDir(), 'x'.repeat(100)), 'gpu.dra.dev');
    await expect(
      startAdminSocket(socket, { status: () => STATUS, clearXidTaints: () => [] }, silentLogger()),
    ).rejects.toSatisfy((err) => isGpuDraError(err, 'SOCKET_PATH_TOO_LONG'));
  });

  it('tells a caller when no plugin listens, and removes its socket on close', async () => {
    const socket = await serve();
    await servers.splice(0)[0]?.close();
    expect(fs.existsSync(socket)).toBe(false);
    const err: unknown = await fetchAdminStatus(socket).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminSocketError);
    expect((err as AdminSocketError).reachable).toBe(false);
    expect((err as AdminSocketError).code).toBe('ADMIN_SOCKET_FAILED');
    expect((err as Error).message).toMatch(/no gpu-dra plugin listens on .*admin\.sock/);
  });

  it('is what `gpu-dra taints` talks to: exit 0 cleared, 1 nothing to clear, 2 no device named', async () => {
    const socket = await serve();
    const pluginsDir = path.dirname(path.dirname(socket));
    const cli = path.resolve(import.meta.dirname, '../../dist/gpu-dra.mjs');
    const gpuDra = (...args: string[]) =>
      promisify(execFile)(process.execPath, [
        cli,
        'taints',
        ...args,
        `--kubelet-plugins-dir=${pluginsDir}`,
      ]).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e: unknown) => e as { code: number; stdout: string; stderr: string },
      );
    expect(await gpuDra('clear', '--device', 'gpu-0', 'gpu-5')).toMatchObject({
      code: 0,
      stdout: 'cleared XID taints of gpu-0; the plugin republishes its ResourceSlices\n',
    });
    expect(await gpuDra('clear', '--device', 'gpu-5')).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/no XID taint on gpu-5/) as string,
    });
    expect(await gpuDra('clear')).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--device: name the device/) as string,
    });
    expect(await gpuDra('clear', '--all', '--device', 'gpu-0')).toMatchObject({ code: 2 });
    expect(await gpuDra('list')).toMatchObject({ code: 0, stdout: 'gpu-0  gpu.dra.dev/xid=48:NoSchedule\n' });
  });
});
