import type { Redis } from 'ioredis';
import type { Kv } from './kv';
import { RedisKv } from './kv';

/**
 * Who is online: an account is online while it has an open real-time
 * connection on any instance. Each instance marks its connected accounts
 * with a heartbeat; a mark expires after `ttlSeconds` unless renewed, so an
 * instance that dies leaves nobody online for longer than that (SPEC: 60 s).
 * Account ids may be given dashed or in the wire form (32 hex): they are
 * compared in one form, and `online` answers with the ids as they were asked.
 */
export interface Presence {
  /**
   * Re-marks these accounts as connected to this instance (the periodic
   * renewal). Answers those that had no live mark on any instance, this
   * one's included, just before: they were offline (their marks expired
   * while this instance stalled, or the store lost them) and are online
   * again with this mark, each answered to one caller only.
   */
  heartbeat(instance: string, accountIds: string[]): Promise<string[]>;
  /**
   * Marks the account as connected to this instance, in one atomic step with
   * the question whether another instance had it online: true when the
   * account came online with this mark.
   */
  arrive(instance: string, accountId: string): Promise<boolean>;
  /**
   * This instance no longer has a connection for the account: its mark goes,
   * in one atomic step with the question whether one is left anywhere. True
   * when the account is offline now.
   */
  leave(instance: string, accountId: string): Promise<boolean>;
  /** Which of these accounts are online on any instance. */
  online(accountIds: string[]): Promise<Set<string>>;
  /**
   * Accounts (at most `limit`) whose every mark expired without a `leave`:
   * their instances died (SIGKILL, a lost host) and nobody announced them
   * offline. Each such account is answered once, to one caller of all
   * instances, which announces it.
   */
  expired(limit: number): Promise<string[]>;
}

/** One spelling of an account id (UUID dashed or not, any case) for keys and comparisons. */
function idKey(id: string): string {
  return id.replace(/-/g, '').toLowerCase();
}

/** Wraps a store that compares keys so that any spelling of an id finds its mark. */
class NormalisedPresence implements Presence {
  constructor(private readonly inner: Presence) {}

  async heartbeat(instance: string, accountIds: string[]): Promise<string[]> {
    const back = new Set(await this.inner.heartbeat(instance, accountIds.map(idKey)));
    return accountIds.filter((a) => back.has(idKey(a)));
  }

  arrive(instance: string, accountId: string): Promise<boolean> {
    return this.inner.arrive(instance, idKey(accountId));
  }

  leave(instance: string, accountId: string): Promise<boolean> {
    return this.inner.leave(instance, idKey(accountId));
  }

  async online(accountIds: string[]): Promise<Set<string>> {
    const on = await this.inner.online(accountIds.map(idKey));
    return new Set(accountIds.filter((a) => on.has(idKey(a))));
  }

  expired(limit: number): Promise<string[]> {
    return this.inner.expired(limit);
  }
}

/** Default lifetime of a presence mark (PRESENCE_TTL_SECONDS); instances renew marks every third of it. */
export const PRESENCE_TTL_SECONDS = 45;

/**
 * The sorted set of every account with a mark, scored with the time its last
 * mark expires (only ever raised): an account scored in the past lost all its
 * marks without a `leave`.
 */
const EXPIRIES_KEY = 'presence-expiries';

// KEYS[1] the account's set, KEYS[2] the expiries; ARGV: instance, now, until,
// ttl seconds, account. Sets this instance's mark, then counts the live marks
// of the others in the same step.
const ARRIVE_SCRIPT = `
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[5])
return redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') - 1
`;

// KEYS[1] the account's set, KEYS[2] the expiries; ARGV: instance, now,
// account. The live marks left once this one is gone; with none left the
// leaver announces the account, so it leaves the expiries.
const LEAVE_SCRIPT = `
redis.call('ZREM', KEYS[1], ARGV[1])
local left = redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf')
if left == 0 then redis.call('ZREM', KEYS[2], ARGV[3]) end
return left
`;

// KEYS[1] the expiries; ARGV: now, limit. Takes the accounts whose last mark
// expired, in the same step, so each is answered to one caller only.
const EXPIRED_SCRIPT = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
`;

// KEYS[1] the expiries, KEYS[2..] the accounts' sets; ARGV: instance, now,
// until, ttl seconds, then the accounts (in the order of their keys). Renews
// this instance's marks; answers the (1-based) positions of the accounts that
// had no live mark left, in the same step, so of two instances renewing or
// arriving at once only one finds an account offline.
const HEARTBEAT_SCRIPT = `
local back = {}
for i = 2, #KEYS do
  if redis.call('ZCOUNT', KEYS[i], ARGV[2], '+inf') == 0 then back[#back + 1] = i - 1 end
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
  redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[3 + i])
end
return back
`;

// KEYS: the accounts' sets; ARGV[1] now. The (1-based) positions of the keys with a live mark.
const ONLINE_SCRIPT = `
local on = {}
for i, key in ipairs(KEYS) do
  if redis.call('ZCOUNT', key, ARGV[1], '+inf') > 0 then on[#on + 1] = i end
end
return on
`;

/** Accounts asked about by one ONLINE_SCRIPT call (its keys and reply stay small). */
const ONLINE_CHUNK = 1000;

/**
 * Redis: one sorted set per account, `presence:<account>`, whose members are
 * instance ids scored with the time their mark expires. Online = a score in
 * the future (ZCOUNT), asked in one script per ONLINE_CHUNK accounts; the key
 * itself expires too, so nothing is left behind by dead instances.
 */
class RedisPresence implements Presence {
  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
  ) {}

  async heartbeat(instance: string, accountIds: string[]): Promise<string[]> {
    const ids = [...new Set(accountIds)];
    const back: string[] = [];
    const now = Date.now();
    const until = now + this.ttlSeconds * 1000;
    // One script per ONLINE_CHUNK accounts (its keys and reply stay small).
    for (let at = 0; at < ids.length; at += ONLINE_CHUNK) {
      const chunk = ids.slice(at, at + ONLINE_CHUNK);
      const keys = [EXPIRIES_KEY, ...chunk.map((a) => `presence:${a}`)];
      const on = (await this.redis.eval(HEARTBEAT_SCRIPT, keys.length, ...keys, instance, now, until, this.ttlSeconds, ...chunk)) as number[];
      for (const i of on) back.push(chunk[Number(i) - 1]);
    }
    return back;
  }

  async arrive(instance: string, accountId: string): Promise<boolean> {
    const now = Date.now();
    const others = await this.redis.eval(ARRIVE_SCRIPT, 2, `presence:${accountId}`, EXPIRIES_KEY, instance, now, now + this.ttlSeconds * 1000, this.ttlSeconds, accountId);
    return Number(others) === 0;
  }

  async leave(instance: string, accountId: string): Promise<boolean> {
    return Number(await this.redis.eval(LEAVE_SCRIPT, 2, `presence:${accountId}`, EXPIRIES_KEY, instance, Date.now(), accountId)) === 0;
  }

  async expired(limit: number): Promise<string[]> {
    return (await this.redis.eval(EXPIRED_SCRIPT, 1, EXPIRIES_KEY, Date.now(), limit)) as string[];
  }

  async online(accountIds: string[]): Promise<Set<string>> {
    const ids = [...new Set(accountIds)];
    const out = new Set<string>();
    const now = Date.now();
    // One script per ONLINE_CHUNK accounts, answering only the online ones:
    // a command per account (the members list of a 50,000-member chat) cost
    // 50,000 queued commands and replies at once, ~80 MB of heap per request.
    for (let at = 0; at < ids.length; at += ONLINE_CHUNK) {
      const chunk = ids.slice(at, at + ONLINE_CHUNK);
      const on = (await this.redis.eval(ONLINE_SCRIPT, chunk.length, ...chunk.map((a) => `presence:${a}`), now)) as number[];
      for (const i of on) out.add(chunk[Number(i) - 1]);
    }
    return out;
  }
}

/** The embedded mode: one process, marks with an expiry time in a Map. */
class MemoryPresence implements Presence {
  private readonly marks = new Map<string, Map<string, number>>();
  /** When each marked account's last mark expires (see EXPIRIES_KEY). */
  private readonly expiries = new Map<string, number>();

  constructor(private readonly ttlSeconds: number) {}

  async heartbeat(instance: string, accountIds: string[]): Promise<string[]> {
    const now = Date.now();
    const until = now + this.ttlSeconds * 1000;
    const back: string[] = [];
    for (const a of new Set(accountIds)) {
      if (![...(this.marks.get(a)?.values() ?? [])].some((u) => u > now)) back.push(a);
      let m = this.marks.get(a);
      if (m === undefined) {
        m = new Map();
        this.marks.set(a, m);
      }
      m.set(instance, until);
      this.expiries.set(a, Math.max(until, this.expiries.get(a) ?? 0));
    }
    return back;
  }

  async arrive(instance: string, accountId: string): Promise<boolean> {
    const now = Date.now();
    const others = [...(this.marks.get(accountId) ?? [])].some(([i, until]) => i !== instance && until > now);
    await this.heartbeat(instance, [accountId]);
    return !others;
  }

  async leave(instance: string, accountId: string): Promise<boolean> {
    const m = this.marks.get(accountId);
    m?.delete(instance);
    if (m !== undefined && m.size === 0) this.marks.delete(accountId);
    const offline = (await this.online([accountId])).size === 0;
    if (offline) this.expiries.delete(accountId);
    return offline;
  }

  async expired(limit: number): Promise<string[]> {
    const now = Date.now();
    const out: string[] = [];
    for (const [a, until] of this.expiries) {
      if (out.length >= limit) break;
      if (until > now) continue;
      this.expiries.delete(a);
      this.marks.delete(a);
      out.push(a);
    }
    return out;
  }

  async online(accountIds: string[]): Promise<Set<string>> {
    const now = Date.now();
    const out = new Set<string>();
    for (const a of accountIds) {
      for (const until of this.marks.get(a)?.values() ?? []) if (until > now) out.add(a);
    }
    return out;
  }
}

/** Presence over the deployment's key-value store: Redis keys with a TTL, or memory. */
export function createPresence(kv: Kv, ttlSeconds = PRESENCE_TTL_SECONDS): Presence {
  return new NormalisedPresence(kv instanceof RedisKv ? new RedisPresence(kv.redis, ttlSeconds) : new MemoryPresence(ttlSeconds));
}
