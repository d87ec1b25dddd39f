/** The processes a benchmark starts: spawned, waited for, stopped, and all killed at the end. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const children: ChildProcess[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `node <args>` from the repository root with `env` added; stdout dropped (or written to the file `out`), stderr shown. */
export function start(args: string[], env: Record<string, string>, out?: string): ChildProcess {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', out === undefined ? 'ignore' : fs.openSync(out, 'w'), 'inherit'] });
  children.push(child);
  return child;
}

/** SIGTERM, then SIGKILL after 8 s; resolves once the process has exited. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 8000);
  await done;
  clearTimeout(t);
}

/** Waits up to 60 s for `port` to answer `pathName` below 500; fails early when `child` exits. */
export async function waitHttp(port: number, pathName = '/ping', child?: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`the process for port ${port} exited with code ${child.exitCode}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}${pathName}`);
      if (r.status < 500) return;
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  throw new Error(`nothing answers on port ${port}`);
}

/** Milliseconds per clock tick of /proc/<pid>/stat (USER_HZ). */
export const TICK_MS = 1000 / 100;

/** The processes `pid` started (a cluster primary's workers), from /proc; none once it is gone. */
export function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** CPU ticks (user + system) a process and its threads used so far; 0 once it is gone. */
export function cpuTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

/** The peak resident memory (VmHWM) of a process so far, in MB. */
export function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}

/** Kills whatever is still running (the benchmark's last step, also on failure). */
export function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
