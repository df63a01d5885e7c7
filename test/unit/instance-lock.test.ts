// The node-wide lock two plugin instances share during a rolling update: flock semantics across
// processes (taken, refused, dropped by the kernel when the holder is killed), and InstanceLock's
// epochs: exclusive between instances, parallel within one, fair when both stay busy.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileLock } from '../../src/util/fileLock.js';
import { InstanceLock } from '../../src/util/instanceLock.js';

const repo = path.resolve(import.meta.dirname, '../..');
let dir: string;
const opened: { close(): void }[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gdra-lock-'));
});
afterEach(() => {
  for (const l of opened.splice(0)) l.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(name: string): FileLock {
  const lock = FileLock.open(path.join(dir, name));
  opened.push(lock);
  return lock;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('FileLock', () => {
  it('is refused while another process holds it and free once the kernel drops the killed holder’s lock', async () => {
    const file = path.join(dir, 'state.lock');
    // Another process takes the flock the way the driver does (libc through koffi) and keeps it.
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import fs from 'node:fs'; import koffi from 'koffi';
         const flock = koffi.load('libc.so.6').func('int flock(int fd, int operation)');
         const fd = fs.openSync(${JSON.stringify(file)}, 'a+');
         if (flock(fd, 2) !== 0) process.exit(3);
         process.stdout.write('locked\\n');
         setInterval(() => {}, 1000);`,
      ],
      { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('locked')) resolve();
      });
      child.on('exit', (code) => {
        reject(new Error(`lock holder exited ${String(code)}`));
      });
    });
    const lock = open('state.lock');
    expect(lock.tryLock()).toBe(false);
    const aborted = new AbortController();
    setTimeout(() => {
      aborted.abort(new Error('gave up'));
    }, 50);
    await expect(lock.lock({ signal: aborted.signal })).rejects.toThrow('gave up');
    expect(lock.isHeld).toBe(false);

    child.kill('SIGKILL');
    await exited;
    await lock.lock();
    expect(lock.isHeld).toBe(true);
  });

  it('conflicts between two descriptors of one process, as between two instances', () => {
    const a = open('x.lock');
    const b = open('x.lock');
    expect(a.tryLock()).toBe(true);
    expect(b.tryLock()).toBe(false);
    a.unlock();
    expect(b.tryLock()).toBe(true);
    expect(a.tryLock()).toBe(false);
  });
});

/** One plugin instance's lock on the shared directory, counting its epochs. */
function instance(onAcquired: () => Promise<void> = () => Promise.resolve()): InstanceLock {
  const lock = new InstanceLock({ main: open('state.lock'), queue: open('state-queue.lock'), onAcquired });
  return lock;
}

describe('InstanceLock', () => {
  it('never lets two instances work at once, while one instance’s works overlap; no update is lost', async () => {
    const counterFile = path.join(dir, 'counter');
    fs.writeFileSync(counterFile, '0');
    const a = instance();
    const b = instance();
    const running = new Map<InstanceLock, number>([
      [a, 0],
      [b, 0],
    ]);
    let maxWithin = 0;
    let overlapAcross = 0;
    let increments = 0;
    // A read-modify-write whose read and write are split by a wait: lost updates if unserialized.
    const work = (self: InstanceLock, other: InstanceLock) => async () => {
      running.set(self, (running.get(self) ?? 0) + 1);
      maxWithin = Math.max(maxWithin, running.get(self) ?? 0);
      if ((running.get(other) ?? 0) > 0) overlapAcross++;
      await sleep(1);
      running.set(self, (running.get(self) ?? 0) - 1);
    };
    const increment = async (): Promise<void> => {
      const n = Number(fs.readFileSync(counterFile, 'utf8'));
      await sleep(1);
      fs.writeFileSync(counterFile, String(n + 1));
      increments++;
    };
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) jobs.push(a.run(work(a, b)), b.run(work(b, a)));
    await Promise.all(jobs);
    // Within an instance the file's updates are chained (as the checkpoint's group commit
    // orders them); across instances only the lock keeps them from interleaving.
    let chainA = Promise.resolve();
    let chainB = Promise.resolve();
    const counted: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      counted.push(a.run(() => (chainA = chainA.then(increment))));
      counted.push(b.run(() => (chainB = chainB.then(increment))));
    }
    await Promise.all(counted);
    expect(overlapAcross).toBe(0);
    expect(maxWithin).toBeGreaterThan(1);
    expect(increments).toBe(40);
    expect(fs.readFileSync(counterFile, 'utf8')).toBe('40');
  });

  it('runs onAcquired once per epoch, before the epoch’s work', async () => {
    const order: string[] = [];
    const a = instance(() => {
      order.push('acquired');
      return Promise.resolve();
    });
    await Promise.all([
      a.run(async () => {
        order.push('w1');
        await sleep(5);
      }),
      a.run(() => {
        order.push('w2');
        return Promise.resolve();
      }),
    ]);
    await a.run(() => {
      order.push('w3');
      return Promise.resolve();
    });
    expect(order).toEqual(['acquired', 'w1', 'w2', 'acquired', 'w3']);
    expect(a.acquisitions).toBe(2);
  });

  it('hands over to a waiting instance although the holder never goes idle', async () => {
    const a = instance();
    const b = instance();
    let stop = false;
    let aWorks = 0;
    const aJobs: Promise<unknown>[] = [];
    // A never goes idle: each work starts the next before it ends.
    const busyWork = async (): Promise<void> => {
      aWorks++;
      await sleep(1);
      if (!stop) aJobs.push(a.run(busyWork));
      await sleep(2);
    };
    const keepBusy = async (): Promise<void> => {
      await a.run(busyWork);
    };
    const busy = keepBusy();
    await sleep(20);
    const started = Date.now();
    await b.run(() => Promise.resolve());
    const waited = Date.now() - started;
    stop = true;
    await busy;
    while (aJobs.length > 0) await aJobs.shift();
    expect(aWorks).toBeGreaterThan(3);
    expect(waited).toBeLessThan(1_000);
  });

  it('a failing onAcquired fails the waiting works and releases the lock', async () => {
    let fail = true;
    const a = instance(() => (fail ? Promise.reject(new Error('unreadable')) : Promise.resolve()));
    const b = instance();
    await expect(a.run(() => Promise.resolve('x'))).rejects.toThrow('unreadable');
    await expect(b.run(() => Promise.resolve('y'))).resolves.toBe('y');
    fail = false;
    await expect(a.run(() => Promise.resolve('z'))).resolves.toBe('z');
  });
});
