// CPU and memory of processes from /proc, for the fleet harness: which process binds first.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process (all its threads) in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // After the command name (which may hold spaces): utime is field 14, stime 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** VmRSS and its anonymous part (RssAnon) in KiB; zeros once the process is gone. */
export function rssKiB(pid: number): { rss: number; anon: number } {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  } catch {
    return { rss: 0, anon: 0 };
  }
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? 0);
  return { rss: field('VmRSS'), anon: field('RssAnon') };
}

/**
 * The pids of the peers binary's processes (etcd, apiserver, controller-manager, scheduler,
 * kubelet-dra) whose command line mentions `dir` (the cluster's temp dir), by subcommand.
 */
export function controlPlanePids(binary: string, dir: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const [cmd, sub] = argv;
    if (cmd !== binary || sub === undefined || !argv.some((a) => a.includes(dir))) continue;
    out.set(sub, [...(out.get(sub) ?? []), Number(entry)]);
  }
  return out;
}
