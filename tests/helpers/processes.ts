import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');

/** A child process of this repository's code, run from TypeScript sources in one process (no wrapper). */
export interface Child {
  proc: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal) once the process has ended. */
  exited: Promise<number | NodeJS.Signals | null>;
}

/** Starts `entry` (e.g. messenger/consumer.ts) with `env` on top of this process's environment. */
export function startChild(entry: string, env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));
  return { proc, output: () => out, exited };
}

/** Stops a child with `signal` and waits for it, at most `ms` (then SIGKILL). */
export async function stopChild(child: Child, signal: NodeJS.Signals = 'SIGTERM', ms = 10_000): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill(signal);
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), ms);
  await child.exited;
  clearTimeout(timer);
}
