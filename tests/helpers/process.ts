import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

const ROOT = path.resolve(__dirname, '../..');

/** A free TCP port on 127.0.0.1 (free when asked; good enough for a test). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One JSON log line of a child process. */
export type LogLine = Record<string, unknown> & { msg?: string; pid?: number };

/** A service entrypoint running as its own process, its JSON log parsed as it comes. */
export class ServiceProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters = new Set<() => void>();

  /** Runs `script` (a TypeScript entrypoint under messenger/) with exactly `env` plus PATH and HOME. */
  constructor(script: string, env: Record<string, string>) {
    // tsx as a loader rather than through npx: signals reach the service itself, not a wrapper.
    this.child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, script)], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    this.child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.lines.push({ msg: line });
        }
        for (const w of this.waiters) w();
      }
    });
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Waits until `count` log lines match `test`; fails after `ms` or if the process exits first. */
  async waitFor(test: (l: LogLine) => boolean, count = 1, ms = 30_000): Promise<LogLine[]> {
    const found = () => this.lines.filter(test);
    if (found().length >= count) return found();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve(found());
      };
      const check = () => {
        if (found().length >= count) done();
      };
      const timer = setTimeout(() => done(new Error(`timed out waiting for a log line; stderr: ${this.stderr.join('')}`)), ms);
      this.waiters.add(check);
      void this.exited.then(({ code }) => done(new Error(`process exited (${code}) early; stderr: ${this.stderr.join('')}`)));
    });
  }

  /** Kills the process (and so its workers) if it is still running. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
