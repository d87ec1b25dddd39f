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

/** Seven requests at one instant against 5 per 1000 ms: five pass, the others wait the whole second. */
const SEVEN_AT_ONCE = [
  r(true, 4, 1000, 0),
  r(true, 3, 1000, 0),
  r(true, 2, 1000, 0),
  r(true, 1, 1000, 0),
  r(true, 0, 1000, 0),
  r(false, 0, 1000, 1000),
  r(false, 0, 1000, 1000),
];

/** How many of `times` (sorted) fall in the busiest window of `periodMs`. */
function busiestWindow(times: number[], periodMs: number): number {
  let best = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while (times[j] - times[i] >= periodMs) i++;
    best = Math.max(best, j - i + 1);
  }
  return best;
}

describe('rate limit, sliding window (memory store, controlled clock)', () => {
  it('with limit 5 per 1000 ms lets exactly 5 through at one instant, then refuses until they leave the window', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    const got: RateLimitResult[] = [];
    for (let i = 0; i < 7; i++) got.push(await kv.rateLimit('k', 5, 1000));
    assert.deepEqual(got, SEVEN_AT_ONCE);
    await kv.close();
  });

  it('never lets more than the limit through in any window, also right after an idle spell (a request every millisecond for 3 s)', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    const admitted: number[] = [];
    for (let t = 0; t < 3000; t++) {
      if ((await kv.rateLimit('k', 100, 1000)).allowed) admitted.push(clock.now());
      clock.advance(1);
    }
    // A token bucket (the GCRA this replaced) let 100 + 99 through in the first second.
    assert.equal(busiestWindow(admitted, 1000), 100);
    assert.equal(admitted.length, 300, 'and the whole allowance of each second is used');
    await kv.close();
  });

  it('frees one request as each admitted one leaves the window, at the millisecond it announced', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) {
      assert.equal((await kv.rateLimit('k', 5, 1000)).allowed, true);
      clock.advance(100);
    }
    // t = 500: five in the window, the oldest (t = 0) leaves at 1000; all are gone at 1400.
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(false, 0, 900, 500));
    clock.advance(499);
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(false, 0, 401, 1));
    clock.advance(1);
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(true, 0, 1000, 0));
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(false, 0, 1000, 100));
    await kv.close();
  });

  it('gives the whole allowance back after an idle period, not more', async () => {
    const clock = manualClock();
    const kv = new MemoryKv(clock.now);
    for (let i = 0; i < 5; i++) await kv.rateLimit('k', 5, 1000);
    clock.advance(5000);
    const burst: boolean[] = [];
    for (let i = 0; i < 6; i++) burst.push((await kv.rateLimit('k', 5, 1000)).allowed);
    assert.deepEqual(burst, [true, true, true, true, true, false]);
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
    assert.deepEqual(await kv.rateLimit('k', 5, 1000, 'g'), r(false, 0, 1000, 1000));
    // Not charged by the refusal: the key's own allowance is whole.
    assert.deepEqual(await kv.rateLimit('k', 5, 1000), r(true, 4, 1000, 0));
    // A guard with room left lets the key through and is not charged either.
    assert.deepEqual(await kv.rateLimit('k2', 5, 1000, 'g2'), r(true, 4, 1000, 0));
    assert.deepEqual(await kv.rateLimit('g2', 5, 1000), r(true, 4, 1000, 0));
    // A guard one millisecond from free still refuses, and frees at that millisecond.
    clock.advance(999);
    assert.equal((await kv.rateLimit('k3', 5, 1000, 'g')).allowed, false);
    clock.advance(1);
    assert.equal((await kv.rateLimit('k3', 5, 1000, 'g')).allowed, true);
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
  describe('rate limit, sliding window (Redis script, Redis clock)', () => {
    let kv: RedisKv;
    let n = 0;
    const key = () => `rw:${++n}`;
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

    it('with limit 5 per 1000 ms lets exactly 5 through at one instant, then refuses until they leave the window', async () => {
      const got = await atOneInstant(() => {
        const k = key();
        return Array.from({ length: 7 }, () => [k, 5, 1000] as Call);
      });
      assert.deepEqual(got, SEVEN_AT_ONCE);
    });

    it('never lets more than the limit through in a second of back-to-back requests (by Redis\'s clock)', async () => {
      const k = key();
      const admitted: number[] = [];
      const end = Date.now() + 1500;
      while (Date.now() < end) {
        const m = kv.redis.multi() as ChainableCommander & { msgRateLimit(key: string, guard: string, limit: number, period: number): ChainableCommander };
        m.msgRateLimit(k, k, 20, 1000);
        // The time the script itself admitted at: it pushes its own clock's
        // `now` onto the list. (A separate TIME before the script can read
        // the millisecond before the script's, and so see 21 in a window.)
        m.lindex(k, 0);
        const out = (await m.exec()) ?? [];
        if ((out[0][1] as number[])[0] === 1) admitted.push(Number(out[1][1]));
      }
      // A token bucket (the GCRA this replaced) let 20 + 19 through in the first second.
      assert.equal(busiestWindow(admitted, 1000), 20);
      assert.ok(admitted.length > 20, 'requests pass again once the first ones have left the window');
    });

    it('a used-up guard key refuses without charging the key', async () => {
      const got = await atOneInstant(() => {
        const [g, k] = [key(), key()];
        return [...Array.from({ length: 5 }, () => [g, 5, 1000] as Call), [k, 5, 1000, g], [k, 5, 1000]];
      });
      assert.deepEqual(got.slice(5), [r(false, 0, 1000, 1000), r(true, 4, 1000, 0)]);
    });

    it('limit 3 per 1000 ms: exactly 3, and the key expires with its window', async () => {
      // A fresh key for each attempt: an attempt that missed the millisecond has charged its key already.
      let k = '';
      const got = await atOneInstant(() => {
        k = key();
        return Array.from({ length: 4 }, () => [k, 3, 1000] as Call);
      });
      assert.deepEqual(got.map((x) => [x.allowed, x.remaining]), [[true, 2], [true, 1], [true, 0], [false, 0]]);
      const pttl = await kv.redis.pttl(k);
      assert.ok(pttl > 0 && pttl <= 1000, `the key lives until the allowance is back (pttl ${pttl})`);
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
