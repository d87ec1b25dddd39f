import assert from 'node:assert/strict';
import type { ChainableCommander } from 'ioredis';
import { MemoryKv, RedisKv, type RateLimitResult } from '../messenger/infra/kv';
import { createLogger } from '../messenger/infra/logger';
import { MODE, RUN_ID } from './helpers/env';

/** A clock the test moves by hand. */
function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

const r = (allowed: boolean, remaining: number, resetMs: number, retryAfterMs: number): RateLimitResult => ({ allowed, remaining, resetMs, retryAfterMs });

describe('GCRA rate limit (memory store, controlled clock)', () => {
  it('with limit 5 per 1000 ms lets exactly 5 through at one instant, then refuses with the exact wait', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    const got: RateLimitResult[] = [];
    for (let i = 0; i < 7; i++) got.push(await kv.rateLimit('k', 5, 1000));
    assert.deepEqual(got, [
      r(true, 4, 200, 0),
      r(true, 3, 400, 0),
      r(true, 2, 600, 0),
      r(true, 1, 800, 0),
      // The 5th lands exactly on the period: allowed (the comparison is strict).
      r(true, 0, 1000, 0),
      r(false, 0, 1000, 200),
      r(false, 0, 1000, 200),
    ]);
    await kv.close();
  });

  it('refuses one millisecond before the next slot and allows at the slot exactly', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) assert.equal((await kv.rateLimit('k', 5, 1000)).allowed, true);
    clock.advance(199);
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(false, 0, 801, 1));
    clock.advance(1);
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(true, 0, 1000, 0));
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(false, 0, 1000, 200));
    await kv.close();
  });

  it('gives the whole burst back after an idle period, not more', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) await kv.rateLimit('k', 5, 1000);
    clock.advance(5000);
    const burst: boolean[] = [];
    for (let i = 0; i < 6; i++) burst.push((await kv.rateLimit('k', 5, 1000)).allowed);
    assert.deepEqual(burst, [true, true, true, true, true, false]);
    await kv.close();
  });

  it('spreads a partial refill: 500 ms after a used-up 5/s allowance, exactly 2 more', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) await kv.rateLimit('k', 5, 1000);
    clock.advance(500);
    const burst: RateLimitResult[] = [];
    for (let i = 0; i < 3; i++) burst.push(await kv.rateLimit('k', 5, 1000));
    assert.deepEqual(burst, [r(true, 1, 700, 0), r(true, 0, 900, 0), r(false, 0, 900, 100)]);
    await kv.close();
  });

  it('with a limit that does not divide the period (3 per 1000 ms) still lets exactly 3 through', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    const got: boolean[] = [];
    const remaining: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await kv.rateLimit('k', 3, 1000);
      got.push(res.allowed);
      remaining.push(res.remaining);
    }
    assert.deepEqual(got, [true, true, true, false]);
    assert.deepEqual(remaining, [2, 1, 0, 0]);
    await kv.close();
  });

  it('limit 1: one request, then the next only after the full period', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    assert.deepEqual(await kv.rateLimit('k', 1, 1000), r(true, 0, 1000, 0));
    assert.deepEqual(await kv.rateLimit('k', 1, 1000), r(false, 0, 1000, 1000));
    clock.advance(999);
    assert.equal((await kv.rateLimit('k', 1, 1000)).allowed, false);
    clock.advance(1);
    assert.equal((await kv.rateLimit('k', 1, 1000)).allowed, true);
    await kv.close();
  });

  it('a used-up guard key refuses without charging the key; the guard is read, not charged', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) await kv.rateLimit('g', 5, 1000);
    assert.deepEqual(await kv.rateLimit('k', 5, 1000, 'g'), r(false, 0, 1000, 200));
    // Not charged by the refusal: the key's own allowance is whole.
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(true, 4, 200, 0));
    // A guard with room left lets the key through and is not charged either.
    assert.deepEqual(await kv.rateLimit('k2', 5, 1000, 'g2'), r(true, 4, 200, 0));
    assert.deepEqual(await kv.rateLimit('g2', 5, 1000), r(true, 4, 200, 0));
    // A guard one slot from free still refuses, and frees at the slot.
    clock.advance(199);
    assert.equal((await kv.rateLimit('k3', 5, 1000, 'g')).allowed, false);
    clock.advance(1);
    assert.equal((await kv.rateLimit('k3', 5, 1000, 'g')).allowed, true);
    await kv.close();
  });

  it('forgets a key once its arrival time has passed (the stored TAT expires)', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    await kv.rateLimit('k', 5, 1000);
    assert.equal(await kv.get('k'), String(clock.now() + 200));
    clock.advance(200);
    assert.equal(await kv.get('k'), String(clock.now()));
    clock.advance(1);
    assert.equal(await kv.get('k'), null);
    await kv.close();
  });
});

describe('memory store TTLs (controlled clock)', () => {
  it('set with a TTL expires exactly then; ttl counts down in whole seconds, rounded up', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    await kv.set('a', 'x', 10);
    assert.equal(await kv.ttl('a'), 10);
    clock.advance(9_001);
    assert.equal(await kv.ttl('a'), 1);
    assert.equal(await kv.get('a'), 'x');
    clock.advance(999);
    assert.equal(await kv.get('a'), null);
    assert.equal(await kv.ttl('a'), 0);
    await kv.close();
  });

  it('incr starts the TTL on the first increment only, and never goes below 0', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    assert.equal(await kv.incr('n', 60), 1);
    clock.advance(30_000);
    assert.equal(await kv.incr('n', 60), 2);
    assert.equal(await kv.ttl('n'), 30);
    assert.equal(await kv.incr('n', 60, -5), 0);
    assert.equal(await kv.get('n'), null);
    assert.equal(await kv.incr('m'), 1);
    assert.equal(await kv.ttl('m'), 0, 'no TTL asked: never expires');
    await kv.close();
  });
});

if (MODE === 'services') {
  describe('GCRA rate limit (Redis script, Redis clock)', () => {
    let kv: RedisKv;
    let n = 0;
    const key = () => `gcra:${++n}`;
    before(async () => {
      kv = new RedisKv(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', `test:${RUN_ID}:`, createLogger('silent'));
      assert.equal(await kv.waitReady(5000), true);
    });
    after(async () => kv.close());

    type Call = [string, number, number, string?];
    /**
     * Runs the calls back to back in one MULTI between two TIMEs, and retries
     * until both TIMEs fall in the same millisecond: then every call saw the
     * same `now`, and the results are exact. `calls` is asked again for each
     * attempt and must name fresh keys: a missed attempt has charged its own.
     */
    async function atOneInstant(calls: (() => Call[])): Promise<RateLimitResult[]> {
      for (let attempt = 0; attempt < 20; attempt++) {
        const list = calls();
        // The script is defined on the client (defineCommand), so a MULTI has it too.
        const m = kv.redis.multi() as ChainableCommander & { msgRateLimit(key: string, guard: string, limit: number, period: number): ChainableCommander };
        m.time();
        for (const [k, limit, period, guard] of list) m.msgRateLimit(k, guard ?? k, limit, period);
        m.time();
        const out = (await m.exec()) ?? [];
        const ms = (i: number) => {
          const [s, us] = out[i][1] as [string, string];
          return Number(s) * 1000 + Math.floor(Number(us) / 1000);
        };
        if (ms(0) !== ms(out.length - 1)) continue;
        return out.slice(1, -1).map(([err, v]) => {
          assert.equal(err, null);
          const [allowed, remaining, resetMs, retryAfterMs] = (v as number[]).map(Number);
          return r(allowed === 1, remaining, resetMs, retryAfterMs);
        });
      }
      throw new Error('no attempt ran within one millisecond');
    }

    it('with limit 5 per 1000 ms lets exactly 5 through at one instant, then refuses with the exact wait', async () => {
      const got = await atOneInstant(() => {
        const k = key();
        return Array.from({ length: 7 }, () => [k, 5, 1000] as Call);
      });
      assert.deepEqual(got, [
        r(true, 4, 200, 0),
        r(true, 3, 400, 0),
        r(true, 2, 600, 0),
        r(true, 1, 800, 0),
        r(true, 0, 1000, 0),
        r(false, 0, 1000, 200),
        r(false, 0, 1000, 200),
      ]);
    });

    it('a used-up guard key refuses without charging the key', async () => {
      const got = await atOneInstant(() => {
        const [g, k] = [key(), key()];
        return [...Array.from({ length: 5 }, () => [g, 5, 1000] as Call), [k, 5, 1000, g], [k, 5, 1000]];
      });
      assert.deepEqual(got.slice(5), [r(false, 0, 1000, 200), r(true, 4, 200, 0)]);
    });

    it('limit 3 per 1000 ms: exactly 3, and the stored TAT expires with it', async () => {
      // A fresh key for each attempt: an attempt that missed the millisecond has charged its key already.
      let k = '';
      const got = await atOneInstant(() => {
        k = key();
        return Array.from({ length: 4 }, () => [k, 3, 1000] as Call);
      });
      assert.deepEqual(got.map((x) => [x.allowed, x.remaining]), [[true, 2], [true, 1], [true, 0], [false, 0]]);
      const pttl = await kv.redis.pttl(k);
      assert.ok(pttl > 0 && pttl <= 1001, `TAT key lives until the allowance is back (pttl ${pttl})`);
    });

    it('lets the next request through once the wait it announced has passed', async () => {
      let k = '';
      const [, , , , , refused] = await atOneInstant(() => {
        k = key();
        return Array.from({ length: 6 }, () => [k, 5, 1000] as Call);
      });
      assert.equal(refused.allowed, false);
      await new Promise((res) => setTimeout(res, refused.retryAfterMs + 5));
      assert.equal((await kv.rateLimit(k, 5, 1000)).allowed, true);
    });
  });
}
