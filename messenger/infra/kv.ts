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
   * Takes one request from `key`'s allowance of `limit` per `periodMs`: a
   * sliding window, so no window of `periodMs` ever holds more than `limit`
   * admitted requests, bursts included; atomically for every instance sharing
   * the store. With `guardKey`, the request is also refused while that key's
   * allowance is used up; the guard is read, not charged.
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
 * The sliding window's arithmetic, on the times (epoch ms) of the requests a
 * key admitted within the last period, newest first. A request is admitted
 * while fewer than `limit` of them are younger than `periodMs`; refused, it
 * may come back when the `limit`-th newest leaves the window. Redis's own
 * clock (TIME) is used in the script below, so instances with skewed clocks
 * still share one limit.
 */
function slidingWindow(now: number, times: number[], limit: number, periodMs: number): RateLimitResult {
  const n = times.length;
  if (n >= limit) {
    return { allowed: false, remaining: 0, resetMs: times[0] + periodMs - now, retryAfterMs: times[limit - 1] + periodMs - now };
  }
  return { allowed: true, remaining: limit - n - 1, resetMs: periodMs, retryAfterMs: 0 };
}

// slidingWindow() in one atomic step inside Redis. A key is a list of admission
// times, newest first; the times that left the window are popped from its tail
// (each once), and the key expires one period after its newest.
const RATE_LIMIT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local function live(key)
  while true do
    local oldest = redis.call('LINDEX', key, -1)
    if not oldest or now - tonumber(oldest) < period then break end
    redis.call('RPOP', key)
  end
  return redis.call('LLEN', key)
end
local function refused(key)
  local newest = tonumber(redis.call('LINDEX', key, 0))
  local freeing = tonumber(redis.call('LINDEX', key, limit - 1))
  return {0, 0, newest + period - now, freeing + period - now}
end
if KEYS[2] ~= KEYS[1] and live(KEYS[2]) >= limit then return refused(KEYS[2]) end
local n = live(KEYS[1])
if n >= limit then return refused(KEYS[1]) end
redis.call('LPUSH', KEYS[1], now)
redis.call('PEXPIRE', KEYS[1], period)
return {1, limit - n - 1, period, 0}
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

/** Key prefix of a cached page (the caching app's `page:<chat>:…`); the only keys the memory store may evict. */
export const CACHED_PAGE_PREFIX = 'page:';

interface Entry {
  value: string;
  expiresAt: number;
}

/**
 * Keys of the memory store that may be dropped, least recently used first,
 * once their values together pass `maxBytes` (the cached pages: whatever is
 * dropped is read again from the database).
 */
export interface Evictable {
  prefix: string;
  maxBytes: number;
}

/** In-process store for the embedded mode: the same behaviour, for one process only. */
export class MemoryKv implements Kv {
  readonly kind = 'memory' as const;
  private readonly map = new Map<string, Entry>();
  /** Rate-limit windows: each key's admission times within its period, newest first. */
  private readonly windows = new Map<string, { times: number[]; periodMs: number }>();
  private readonly sweeper: NodeJS.Timeout;
  /** The evictable keys and their sizes in bytes, least recently used first (a Map keeps insertion order). */
  private readonly lru = new Map<string, number>();
  private lruBytes = 0;

  /**
   * `now` is the clock (epoch ms); tests pass their own to reach exact window
   * and TTL boundaries. With `evictable`, the keys under its prefix are bounded
   * in bytes all together (Redis has maxmemory for that; a process has not).
   */
  constructor(
    private readonly now: () => number = Date.now,
    private readonly evictable?: Evictable,
  ) {
    // Expired keys are dropped on read; this sweep bounds memory for keys never read again.
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  /** Bytes held by the evictable keys (their keys and values). */
  evictableBytes(): number {
    return this.lruBytes;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.map) if (e.expiresAt <= now) this.remove(k);
    for (const [k, w] of this.windows) if (this.window(k, w.periodMs, now).length === 0) this.windows.delete(k);
  }

  private remove(key: string): void {
    this.map.delete(key);
    const size = this.lru.get(key);
    if (size !== undefined) {
      this.lru.delete(key);
      this.lruBytes -= size;
    }
  }

  /** Marks an evictable key as just used (with `size` when it was stored), then evicts past the bound. */
  private touch(key: string, size?: number): void {
    const ev = this.evictable;
    if (ev === undefined || !key.startsWith(ev.prefix)) return;
    const old = this.lru.get(key);
    if (old === undefined && size === undefined) return;
    const bytes = size ?? old ?? 0;
    this.lru.delete(key);
    this.lru.set(key, bytes);
    this.lruBytes += bytes - (old ?? 0);
    for (const [k] of this.lru) {
      if (this.lruBytes <= ev.maxBytes) break;
      this.remove(k);
    }
  }

  /** The admission times of `key` still within `periodMs` of `now`, newest first (older ones dropped). */
  private window(key: string, periodMs: number, now: number): number[] {
    const w = this.windows.get(key);
    if (w === undefined) return [];
    while (w.times.length > 0 && now - w.times[w.times.length - 1] >= periodMs) w.times.pop();
    return w.times;
  }

  private live(key: string): Entry | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt <= this.now()) {
      this.remove(key);
      return undefined;
    }
    this.touch(key);
    return e;
  }

  async get(key: string): Promise<string | null> {
    return this.live(key)?.value ?? null;
  }

  async set(key: string, value: string, ttlSeconds?: number): Promise<void> {
    const expiresAt = ttlSeconds === undefined ? Infinity : this.now() + Math.max(1, Math.ceil(ttlSeconds)) * 1000;
    this.map.set(key, { value, expiresAt });
    this.touch(key, Buffer.byteLength(key) + Buffer.byteLength(value));
  }

  async del(key: string): Promise<void> {
    this.remove(key);
  }

  async take(key: string): Promise<string | null> {
    const value = this.live(key)?.value ?? null;
    this.remove(key);
    return value;
  }

  async incr(key: string, ttlSeconds = 0, by = 1): Promise<number> {
    const e = this.live(key);
    const n = Number(e?.value ?? 0) + by;
    if (n <= 0) {
      this.remove(key);
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
      const guard = slidingWindow(now, this.window(guardKey, periodMs, now), limit, periodMs);
      if (!guard.allowed) return guard;
    }
    const times = this.window(key, periodMs, now);
    const result = slidingWindow(now, times, limit, periodMs);
    if (result.allowed) {
      if (times.length === 0) this.windows.set(key, { times: [now], periodMs });
      else times.unshift(now);
    }
    return result;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.map.clear();
    this.windows.clear();
    this.lru.clear();
    this.lruBytes = 0;
  }
}

/**
 * Redis when REDIS_URL is set, else the in-process store, whose cached pages
 * are bounded all together by CACHE_MEMORY_MAX_BYTES (Redis bounds them with
 * its maxmemory policy instead).
 */
export function createKv(config: Config, log: Logger): Kv {
  return config.redisUrl === undefined
    ? new MemoryKv(Date.now, { prefix: CACHED_PAGE_PREFIX, maxBytes: config.cache.memoryMaxBytes })
    : new RedisKv(config.redisUrl, config.redisPrefix, log);
}
