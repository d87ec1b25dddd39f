/** The processes a benchmark starts: spawned, waited for, stopped, and all killed at the end. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const children: ChildProcess[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `node <args>` from the repository root with `env` added; stdout dropped, stderr shown. */
export function start(args: string[], env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
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

/** Kills whatever is still running (the benchmark's last step, also on failure). */
export function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
