import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { PasswordHasher } from '../messenger/apps/auth/passwords';

/** The pool's threads (private; read to play a thread that dies). */
const threadsOf = (h: PasswordHasher) => (h as unknown as { slots: { worker: Worker }[] }).slots.map((s) => s.worker);

describe('PasswordHasher (bcrypt in worker threads)', () => {
  it('with one thread, runs many jobs queued at once, each with its own answer', async () => {
    const h = new PasswordHasher(4, 1);
    try {
      const passwords = ['a', 'b', 'c', 'd', 'e', 'f'];
      const hashes = await Promise.all(passwords.map((p) => h.hash(p)));
      for (const hash of hashes) assert.match(hash, /^\$2b\$04\$/);
      assert.equal(threadsOf(h).length, 1);
      const checks = await Promise.all(passwords.flatMap((p, i) => [h.verify(p, hashes[i]), h.verify(`${p}x`, hashes[i])]));
      assert.deepEqual(checks, passwords.flatMap(() => [true, false]));
      // No account: compared against a throwaway hash, never a match.
      assert.equal(await h.verify('a', undefined), false);
    } finally {
      await h.close();
    }
  });

  it('never starts more threads than configured', async () => {
    const h = new PasswordHasher(4, 2);
    try {
      await Promise.all(Array.from({ length: 6 }, (_, i) => h.hash(`p${i}`)));
      assert.equal(threadsOf(h).length, 2);
    } finally {
      await h.close();
    }
  });

  it('a job the thread cannot do fails with its error; the pool goes on', async () => {
    const h = new PasswordHasher(4, 1);
    try {
      await assert.rejects(h.hash(42 as unknown as string), /Illegal arguments/);
      assert.equal(await h.verify('a', await h.hash('a')), true);
    } finally {
      await h.close();
    }
  });

  it('a thread that dies fails its job, and is replaced for the next one', async () => {
    const h = new PasswordHasher(4, 1);
    try {
      const job = h.hash('lost');
      const [worker] = threadsOf(h);
      await worker.terminate();
      await assert.rejects(job, /^Error: password thread exited with code \d+$/);
      assert.deepEqual(threadsOf(h), []);
      assert.equal(await h.verify('next', await h.hash('next')), true);
      assert.equal(threadsOf(h).length, 1);
      assert.notEqual(threadsOf(h)[0], worker);
    } finally {
      await h.close();
    }
  });

  it('after close, running, queued and new jobs fail with "password hasher closed"', async () => {
    // Cost 12: the first job is still running in the thread when close() comes.
    const h = new PasswordHasher(12, 1);
    const running = h.hash('first');
    const queued = h.hash('second');
    const threads = threadsOf(h);
    assert.equal(threads.length, 1);
    const exited = new Promise<number>((resolve) => threads[0].once('exit', resolve));
    const closing = h.close();
    await assert.rejects(queued, /password hasher closed/);
    // The running job settles too, rather than being left pending forever.
    await assert.rejects(running, /password hasher closed/);
    await closing;
    assert.deepEqual(threadsOf(h), []);
    // The thread itself is stopped (it would otherwise keep the process alive).
    await exited;
    assert.equal(threads[0].threadId, -1);
    await assert.rejects(h.hash('later'), /password hasher closed/);
    await assert.rejects(h.verify('x', undefined), /password hasher closed/);
  });
});
