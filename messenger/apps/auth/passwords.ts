import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { getRounds } from 'bcryptjs';

// Plain JavaScript run with `eval`, so the threads need no TypeScript loader
// and work the same from the sources (tests) and the compiled build. bcryptjs
// is required by the absolute path the main thread resolved.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptPath);
if (workerData.nice > 0) {
  // Linux keeps a nice value per thread, and setpriority() on a thread id sets that thread's alone:
  // the thread finds its id in /proc/thread-self. Elsewhere (no such file) it keeps the process's.
  try {
    const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
    require('node:os').setPriority(tid, Math.min(19, require('node:os').getPriority(tid) + workerData.nice));
  } catch {}
}
parentPort.on('message', (m) => {
  try {
    const result = m.op === 'hash' ? bcrypt.hashSync(m.password, m.cost) : bcrypt.compareSync(m.password, m.hash);
    parentPort.postMessage({ id: m.id, result });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

type Job = { op: 'hash'; password: string; cost: number } | { op: 'compare'; password: string; hash: string };

interface Pending {
  job: Job;
  resolve: (v: string | boolean) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: { id: number; task: Pending } | undefined;
}

/**
 * bcrypt off the event loop: a small pool of worker threads
 * (`BCRYPT_THREADS`; by default the cores divided among the web workers,
 * rounded up) runs every hash and compare, so a burst of
 * logins does not stall the other requests of the process. Threads start on
 * first use; a thread that dies fails its job and is replaced. On Linux each
 * thread lowers its own priority by `nice` (BCRYPT_NICE): a hash is CPU work
 * for tens of milliseconds, and at equal priority the threads of logins in
 * flight take the cores from the event loops and PostgreSQL, whose requests
 * each need a little CPU often; niced, they run on what those leave.
 */
export class PasswordHasher {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 0;
  private dummy: Promise<string> | undefined;
  private closed = false;

  constructor(
    private readonly cost: number,
    private readonly threads: number,
    private readonly nice = 0,
  ) {}

  /** A bcrypt hash of `password` at the configured cost. */
  async hash(password: string): Promise<string> {
    return (await this.run({ op: 'hash', password, cost: this.cost })) as string;
  }

  /**
   * True when `password` matches `hash`. Without a hash (no such account) it
   * compares against a throwaway hash of the same cost and answers false, so
   * an unknown name takes as long as a wrong password.
   */
  async verify(password: string, hash: string | undefined): Promise<boolean> {
    if (hash !== undefined) return (await this.run({ op: 'compare', password, hash })) as boolean;
    this.dummy ??= this.hash(randomBytes(18).toString('base64'));
    await this.run({ op: 'compare', password, hash: await this.dummy });
    return false;
  }

  /** True when `hash` was made at another cost than the configured one (BCRYPT_COST changed since): a login re-hashes it. */
  needsRehash(hash: string): boolean {
    return getRounds(hash) !== this.cost;
  }

  /** Stops the threads; jobs still queued fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new Error('password hasher closed'));
    const slots = this.slots.splice(0);
    // A job running in a thread fails too: once its slot is out of the pool, the thread's exit no longer settles it.
    for (const s of slots) {
      s.busy?.task.reject(new Error('password hasher closed'));
      s.busy = undefined;
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private run(job: Job): Promise<string | boolean> {
    if (this.closed) return Promise.reject(new Error('password hasher closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => s.busy === undefined);
      if (slot === undefined && this.slots.length < this.threads) slot = this.spawn();
      if (slot === undefined) return;
      const task = this.queue.shift() as Pending;
      const id = ++this.nextId;
      slot.busy = { id, task };
      slot.worker.ref();
      slot.worker.postMessage({ id, ...task.job });
    }
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptPath: require.resolve('bcryptjs'), nice: this.nice } });
    const slot: Slot = { worker, busy: undefined };
    worker.unref();
    worker.on('message', (m: { id: number; result?: string | boolean; error?: string }) => {
      const busy = slot.busy;
      if (busy === undefined || busy.id !== m.id) return;
      slot.busy = undefined;
      worker.unref();
      if (m.error !== undefined) busy.task.reject(new Error(m.error));
      else busy.task.resolve(m.result as string | boolean);
      this.pump();
    });
    const fail = (err: Error) => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      this.slots.splice(i, 1);
      slot.busy?.task.reject(err);
      slot.busy = undefined;
      if (!this.closed) this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`password thread exited with code ${code}`)));
    this.slots.push(slot);
    return slot;
  }
}
