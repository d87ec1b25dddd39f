import { Redis } from 'ioredis';
import type { Config } from '../config';
import type { Logger } from './logger';

/**
 * The small key-value store behind sessions, task state, throttling and the
 * cache: Redis in the services mode, a Map in the embedded mode. Keys are
 * prefixed by the implementation.
 */
export interface Kv {
  readonly kind: 'redis' | 'memory';
  get(key: string): Promise<string | null>;
  /** Stores `value`; with `ttlSeconds` it expires after that long. */
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  del(key: string): Promise<void>;
  /** Reads and deletes `key` in one atomic step (GETDEL): of concurrent takers, one gets the value. */
  take(key: string): Promise<string | null>;
  /**
   * Atomically adds `by` (default 1) and returns the new value, never below 0;
   * a new key expires after `ttlSeconds`.
   */
  incr(key: string, ttlSeconds?: number, by?: number): Promise<number>;
  /** Several values in one round trip (null for a missing key). */
  mget(keys: string[]): Promise<(string | null)[]>;
  /**
   * mget, with each value as its UTF-8 bytes: what a response body that is a
   * stored value (a cached page) is sent as, with no decoding into a string
   * and encoding back on the way out.
   */
  mgetBytes(keys: string[]): Promise<(Buffer | null)[]>;
  /** Seconds until `key` expires; 0 when it does not exist or never expires. */
  ttl(key: string): Promise<number>;
  /**
   * Takes one request from `key`'s allowance of `limit` per `periodMs`
   * (GCRA: no more than `limit` in any window of `periodMs`, bursts included),
   * atomically for every instance sharing the store. With `guardKey`, the
   * request is also refused while that key's allowance is used up; the guard
   * is read, not charged.
   */
  rateLimit(key: string, limit: number, periodMs: number, guardKey?: string): Promise<RateLimitResult>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** The outcome of one rate-limited request. */
export interface RateLimitResult {
  allowed: boolean;
  /** Requests still allowed right now. */
  remaining: number;
  /** Milliseconds until the full allowance is back. */
  resetMs: number;
  /** When refused, milliseconds until one request is allowed again. */
  retryAfterMs: number;
}

/**
 * GCRA on a stored "theoretical arrival time" (TAT). Each request moves the
 * TAT one interval (period / limit) into the future; a request is refused when
 * that would put the TAT more than one period ahead of now. Redis's own clock
 * (TIME) is used, so instances with skewed clocks still share one limit.
 */
function gcra(now: number, storedTat: number | undefined, limit: number, periodMs: number): RateLimitResult & { tat: number } {
  const interval = periodMs / limit;
  const tat = Math.max(storedTat ?? now, now);
  const next = tat + interval;
  if (next - now > periodMs) {
    return { allowed: false, remaining: 0, resetMs: tat - now, retryAfterMs: next - now - periodMs, tat };
  }
  const remaining = Math.floor((periodMs - (next - now)) / interval);
  return { allowed: true, remaining, resetMs: next - now, retryAfterMs: 0, tat: next };
}

// The same arithmetic as gcra() above, in one atomic step inside Redis.
const RATE_LIMIT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
if KEYS[2] ~= KEYS[1] then
  local g = tonumber(redis.call('GET', KEYS[2]) or now)
  if g + interval - now > period then
    return {0, 0, math.ceil(g - now), math.ceil(g + interval - now - period)}
  end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > period then
  return {0, 0, math.ceil(tat - now), math.ceil(nxt - now - period)}
end
redis.call('SET', KEYS[1], tostring(nxt), 'PX', math.ceil(nxt - now) + 1)
return {1, math.floor((period - (nxt - now)) / interval), math.ceil(nxt - now), 0}
`;

const INCR_SCRIPT = `
local by = tonumber(ARGV[2])
local n = redis.call('INCRBY', KEYS[1], by)
if n <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
if n == by and tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
`;

type RedisWithScripts = Redis & {
  msgRateLimit(key: string, guardKey: string, limit: number, periodMs: number): Promise<[number, number, number, number]>;
  msgIncr(key: string, ttl: number, by: number): Promise<number>;
};

/** Redis-backed store; commands fail at once (503) while Redis is away, and it reconnects with backoff. */
export class RedisKv implements Kv {
  readonly kind = 'redis' as const;
  readonly redis: RedisWithScripts;

  constructor(url: string, prefix: string, log: Logger) {
    const redis = new Redis(url, {
      keyPrefix: prefix,
      // Fail fast instead of queueing: a request answers 503 rather than hanging.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 3000,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 3000),
      // The commands of one turn of the event loop (the session lookups of concurrent requests) go out in one write.
      enableAutoPipelining: true,
    });
    redis.defineCommand('msgRateLimit', { numberOfKeys: 2, lua: RATE_LIMIT_SCRIPT });
    redis.defineCommand('msgIncr', { numberOfKeys: 1, lua: INCR_SCRIPT });
    let down = false;
    redis.on('error', (err: Error) => {
      if (!down) log.warn({ err: err.message }, 'redis connection error');
      down = true;
    });
    redis.on('ready', () => {
      if (down) log.info('redis connection restored');
      down = false;
    });
    this.redis = redis as RedisWithScripts;
  }

  /** Waits up to `ms` for the first connection; the service starts either way. */
  async waitReady(ms: number): Promise<boolean> {
    if (this.redis.status === 'ready') return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.redis.off('ready', onReady);
        resolve(false);
      }, ms);
      const onReady = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.redis.once('ready', onReady);
    });
  }

  async get(key: string): Promise<string | null> {
    return this.redis.get(key);
  }

  async set(key: string, value: string, ttlSeconds?: number): Promise<void> {
    if (ttlSeconds === undefined) await this.redis.set(key, value);
    else await this.redis.set(key, value, 'EX', Math.max(1, Math.ceil(ttlSeconds)));
  }

  async del(key: string): Promise<void> {
    await this.redis.del(key);
  }

  async take(key: string): Promise<string | null> {
    return this.redis.getdel(key);
  }

  async incr(key: string, ttlSeconds = 0, by = 1): Promise<number> {
    return Number(await this.redis.msgIncr(key, Math.ceil(ttlSeconds), by));
  }

  async mget(keys: string[]): Promise<(string | null)[]> {
    return keys.length === 0 ? [] : this.redis.mget(...keys);
  }

  async mgetBytes(keys: string[]): Promise<(Buffer | null)[]> {
    return keys.length === 0 ? [] : this.redis.mgetBuffer(...keys);
  }

  async ttl(key: string): Promise<number> {
    return Math.max(0, await this.redis.ttl(key));
  }

  async rateLimit(key: string, limit: number, periodMs: number, guardKey = key): Promise<RateLimitResult> {
    const [allowed, remaining, resetMs, retryAfterMs] = await this.redis.msgRateLimit(key, guardKey, limit, periodMs);
    return { allowed: Number(allowed) === 1, remaining: Number(remaining), resetMs: Number(resetMs), retryAfterMs: Number(retryAfterMs) };
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

interface Entry {
  value: string;
  expiresAt: number;
}

/** In-process store for the embedded mode: the same behaviour, for one process only. */
export class MemoryKv implements Kv {
  readonly kind = 'memory' as const;
  private readonly map = new Map<string, Entry>();
  private readonly sweeper: NodeJS.Timeout;

  /** `now` is the clock (epoch ms); tests pass their own to reach exact GCRA and TTL boundaries. */
  constructor(private readonly now: () => number = Date.now) {
    // Expired keys are dropped on read; this sweep bounds memory for keys never read again.
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.map) if (e.expiresAt <= now) this.map.delete(k);
  }

  private live(key: string): Entry | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt <= this.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e;
  }

  async get(key: string): Promise<string | null> {
    return this.live(key)?.value ?? null;
  }

  async set(key: string, value: string, ttlSeconds?: number): Promise<void> {
    const expiresAt = ttlSeconds === undefined ? Infinity : this.now() + Math.max(1, Math.ceil(ttlSeconds)) * 1000;
    this.map.set(key, { value, expiresAt });
  }

  async del(key: string): Promise<void> {
    this.map.delete(key);
  }

  async take(key: string): Promise<string | null> {
    const value = this.live(key)?.value ?? null;
    this.map.delete(key);
    return value;
  }

  async incr(key: string, ttlSeconds = 0, by = 1): Promise<number> {
    const e = this.live(key);
    const n = Number(e?.value ?? 0) + by;
    if (n <= 0) {
      this.map.delete(key);
      return 0;
    }
    if (e === undefined) this.map.set(key, { value: String(n), expiresAt: ttlSeconds > 0 ? this.now() + ttlSeconds * 1000 : Infinity });
    else e.value = String(n);
    return n;
  }

  async mget(keys: string[]): Promise<(string | null)[]> {
    return keys.map((k) => this.live(k)?.value ?? null);
  }

  async mgetBytes(keys: string[]): Promise<(Buffer | null)[]> {
    return keys.map((k) => {
      const value = this.live(k)?.value;
      return value === undefined ? null : Buffer.from(value, 'utf8');
    });
  }

  async ttl(key: string): Promise<number> {
    const e = this.live(key);
    return e === undefined || e.expiresAt === Infinity ? 0 : Math.ceil((e.expiresAt - this.now()) / 1000);
  }

  async rateLimit(key: string, limit: number, periodMs: number, guardKey = key): Promise<RateLimitResult> {
    const now = this.now();
    if (guardKey !== key) {
      const g = this.live(guardKey);
      const guard = gcra(now, g === undefined ? undefined : Number(g.value), limit, periodMs);
      if (!guard.allowed) return { allowed: false, remaining: 0, resetMs: guard.resetMs, retryAfterMs: guard.retryAfterMs };
    }
    const stored = this.live(key);
    const { tat, ...result } = gcra(now, stored === undefined ? undefined : Number(stored.value), limit, periodMs);
    if (result.allowed) this.map.set(key, { value: String(tat), expiresAt: tat + 1 });
    return result;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.map.clear();
  }
}

/** Redis when REDIS_URL is set, else the in-process store. */
export function createKv(config: Config, log: Logger): Kv {
  return config.redisUrl === undefined ? new MemoryKv() : new RedisKv(config.redisUrl, config.redisPrefix, log);
}
