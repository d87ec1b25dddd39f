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
  /** Atomically adds one and returns the new value; a new key expires after `ttlSeconds`. */
  incr(key: string, ttlSeconds?: number): Promise<number>;
  /**
   * Counts one hit in a fixed window of `windowMs` for `key`, atomically, and
   * returns the count so far and the milliseconds until the window ends.
   */
  hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

// One round trip, atomic across every instance sharing the server.
const HIT_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
`;

const INCR_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 and tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
`;

type RedisWithScripts = Redis & {
  msgHit(key: string, windowMs: number): Promise<[number, number]>;
  msgIncr(key: string, ttl: number): Promise<number>;
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
    });
    redis.defineCommand('msgHit', { numberOfKeys: 1, lua: HIT_SCRIPT });
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

  async incr(key: string, ttlSeconds = 0): Promise<number> {
    return Number(await this.redis.msgIncr(key, Math.ceil(ttlSeconds)));
  }

  async hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    const [count, resetMs] = await this.redis.msgHit(key, windowMs);
    return { count: Number(count), resetMs: Number(resetMs) };
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

  constructor() {
    // Expired keys are dropped on read; this sweep bounds memory for keys never read again.
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.map) if (e.expiresAt <= now) this.map.delete(k);
  }

  private live(key: string): Entry | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt <= Date.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e;
  }

  async get(key: string): Promise<string | null> {
    return this.live(key)?.value ?? null;
  }

  async set(key: string, value: string, ttlSeconds?: number): Promise<void> {
    const expiresAt = ttlSeconds === undefined ? Infinity : Date.now() + Math.max(1, Math.ceil(ttlSeconds)) * 1000;
    this.map.set(key, { value, expiresAt });
  }

  async del(key: string): Promise<void> {
    this.map.delete(key);
  }

  async incr(key: string, ttlSeconds = 0): Promise<number> {
    const e = this.live(key);
    if (e === undefined) {
      this.map.set(key, { value: '1', expiresAt: ttlSeconds > 0 ? Date.now() + ttlSeconds * 1000 : Infinity });
      return 1;
    }
    const n = Number(e.value) + 1;
    e.value = String(n);
    return n;
  }

  async hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    const now = Date.now();
    const e = this.live(key);
    if (e === undefined) {
      this.map.set(key, { value: '1', expiresAt: now + windowMs });
      return { count: 1, resetMs: windowMs };
    }
    const n = Number(e.value) + 1;
    e.value = String(n);
    return { count: n, resetMs: e.expiresAt - now };
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
