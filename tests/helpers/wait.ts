import type { Db } from '../../messenger/infra/db';
/**
 * Polls `check` every `everyMs` until it returns true, for at most `ms`;
 * fails with `what` after that. Tests wait for a condition with this rather
 * than sleeping for a guessed time.
 */
export async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The same database, except that the raw statements `holds` picks wait until
 * `release()`: for tests that need something to happen while a statement of
 * the server is in flight. `held(n)` resolves once `n` of them are waiting.
 */
export function gatedDb(db: Db, holds: (sql: string, bindings: unknown[]) => boolean): { db: Db; held: (n?: number) => Promise<void>; release: () => void } {
  let waiting = 0;
  const waiters: { n: number; done: () => void }[] = [];
  let release: () => void = () => undefined;
  const released = new Promise<void>((r) => (release = r));
  const gated = new Proxy(db, {
    get(target, prop) {
      if (prop !== 'raw') return Reflect.get(target, prop) as unknown;
      return (sql: string, bindings: unknown[]) => {
        if (!holds(sql, bindings)) return target.raw(sql, bindings as never);
        waiting++;
        for (const w of waiters) if (waiting >= w.n) w.done();
        return released.then(() => target.raw(sql, bindings as never));
      };
    },
  });
  const held = (n = 1) => new Promise<void>((done) => (waiting >= n ? done() : waiters.push({ n, done })));
  return { db: gated, held, release };
}
