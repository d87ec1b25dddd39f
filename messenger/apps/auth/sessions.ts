import { createHash, randomBytes } from 'node:crypto';
import type { Db, Queryable } from '../../infra/db';
import type { Kv } from '../../infra/kv';
import type { EventBus } from '../../events';
import {
  findSession,
  insertSession,
  lockSession,
  markFirstUse,
  revokeChainSessions,
  revokeSession,
  revokeUserSessions,
} from '../../db/sessions';
import { insertChain, lockChain, revokeChain, revokeUserChains, type ChainRow } from '../../db/session-chains';
import { findRefreshToken, insertRefreshToken, retireRefreshToken, setSuccessor } from '../../db/refresh-tokens';
import { findUserById, lockPasswordHash } from '../../db/users';
import { Unauthorized } from '../../errors';
import { parseId } from '../../ids';
import type { Session } from '../../types';

const HEADER = /^session_id\s+(\S+)\s*$/i;
const REFRESH_TOKEN = /^[A-Za-z0-9_-]{43}$/;

/** What login and refresh answer. */
export interface Issued {
  sessionId: string;
  refreshToken: string;
  /** Seconds the session lives (never past the end of its chain). */
  expiresIn: number;
}

interface Cached {
  a: string;
  n: string;
  e: number;
  /** Set for a session made by a refresh: its first use must be recorded once (see `resolve`). */
  w?: 1;
}

function parseCached(raw: string): Cached | undefined {
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v !== 'object' || v === null) return undefined;
    const { a, n, e, w } = v as Record<string, unknown>;
    if (typeof a === 'string' && typeof n === 'string' && typeof e === 'number') return w === 1 ? { a, n, e, w } : { a, n, e };
  } catch {
    // A value we cannot read is treated as absent and rebuilt from PostgreSQL.
  }
  return undefined;
}

function sessionHash(hex: string): Buffer {
  return createHash('sha256').update(Buffer.from(hex, 'hex')).digest();
}

function refreshHash(token: string): Buffer {
  return createHash('sha256').update(Buffer.from(token, 'base64url')).digest();
}

const sessionKey = (hash: Buffer) => `session:${hash.toString('hex')}`;

/** A pair written in a transaction, cached once it committed. */
interface NewPair {
  issued: Issued;
  hash: Buffer;
  expiresAt: number;
}

type RefreshOutcome =
  | { kind: 'issued'; pair: NewPair; accountId: string; userName: string; ended: Buffer[]; reason: string }
  | { kind: 'invalid' }
  | { kind: 'stolen'; accountId: string; ended: Buffer[] };

/**
 * Sessions and login chains. A session is a 128-bit CSPRNG token given to the
 * client once; Redis holds the live ones (with a TTL) and PostgreSQL the
 * record (created, expires, revoked, first used), both keyed by the token's
 * SHA-256. A login starts a chain: its session plus a refresh token (256
 * random bits, stored as SHA-256 only). Refreshing replaces the chain's pair;
 * the chain ends `refreshTtlSeconds` after the login whatever happens.
 *
 * Every change that ends sessions is committed first, then their Redis
 * entries are dropped and `session.ended` is published (each instance's
 * real-time connections of those sessions close).
 */
export class SessionStore {
  constructor(
    private readonly db: Db,
    private readonly kv: Kv,
    private readonly events: EventBus,
    private readonly ttlSeconds: number,
    private readonly refreshTtlSeconds: number,
  ) {}

  /**
   * Starts a login chain for the account: its first session and refresh
   * token, or undefined when the account's password is no longer
   * `passwordHash`, the one the login's password was checked against (a
   * password change committed during the comparison: its "every other
   * session ends" must not miss a login with the old password that was in
   * flight). The hash is read under a share lock, so a change either waits
   * for this login and then ends its session, or is seen here.
   */
  async login(accountId: string, userName: string, passwordHash: string): Promise<Issued | undefined> {
    const pair = await this.db.transaction(async (trx) => {
      if ((await lockPasswordHash(trx, accountId)) !== passwordHash) return undefined;
      const expiresAt = new Date(Date.now() + this.refreshTtlSeconds * 1000);
      const chainId = await insertChain(trx, accountId, expiresAt);
      return this.issue(trx, { id: chainId, user_id: accountId, expires_at: expiresAt, revoked_at: null });
    });
    if (pair === undefined) return undefined;
    // A login's session has no earlier token that could be retried: its first use need not be recorded.
    await this.cache(pair, accountId, userName, false);
    // Read back after caching: a change that ended the session after the commit may have dropped it
    // from the store before it was put there, and no first use would look again.
    const row = await findSession(this.db, pair.hash);
    if (row === undefined || row.revoked_at !== null) await this.kv.del(sessionKey(pair.hash));
    return pair.issued;
  }

  /** Reads the Authorization header; throws the matching 401 when it does not name a live session. */
  async resolve(header: string | undefined): Promise<Session> {
    const m = header === undefined ? null : HEADER.exec(header);
    const id = m === null ? null : parseId(m[1]);
    if (id === null) throw new Unauthorized('auth-failed');
    return this.resolveHash(sessionHash(id.replace(/-/g, '')).toString('hex'));
  }

  /** The live session whose token has this SHA-256 (hex); throws the matching 401 otherwise. */
  async resolveHash(tokenHash: string): Promise<Session> {
    const hash = Buffer.from(tokenHash, 'hex');
    const key = sessionKey(hash);
    const raw = await this.kv.get(key);
    const cached = raw === null ? undefined : parseCached(raw);
    if (cached !== undefined && cached.e > Date.now()) {
      if (cached.w === 1) await this.recordFirstUse(hash, cached);
      return { accountId: cached.a, userName: cached.n, tokenHash, expiresAt: cached.e };
    }
    // Not in Redis: expired, logged out, unknown, or Redis lost it. Only the
    // database can tell, and a live session found there is put back.
    const row = await findSession(this.db, hash);
    if (row === undefined || row.revoked_at !== null) throw new Unauthorized('invalid-session-id');
    const expiresAt = row.expires_at.getTime();
    const left = expiresAt - Date.now();
    if (left <= 0) throw new Unauthorized('session-id-expired');
    const restored: Cached = { a: row.user_id, n: row.user_name, e: expiresAt };
    if (row.first_used_at === null) await this.recordFirstUse(hash, restored);
    else await this.kv.set(key, JSON.stringify(restored), left / 1000);
    return { accountId: row.user_id, userName: row.user_name, tokenHash, expiresAt };
  }

  /**
   * Records a session's first authenticated request, once: one conditional
   * UPDATE, then the Redis entry is rewritten without the mark, so later
   * requests are Redis reads only. The UPDATE waits for a refresh holding
   * the row (and that refresh sees it), so "used" and "retired by a retry"
   * cannot both win. Read back after the rewrite: a session revoked in
   * between is dropped again rather than brought back to life.
   */
  private async recordFirstUse(hash: Buffer, cached: Cached): Promise<void> {
    await markFirstUse(this.db, hash);
    const { w: _mark, ...used } = cached;
    await this.kv.set(sessionKey(hash), JSON.stringify(used), Math.max(1, (cached.e - Date.now()) / 1000));
    const row = await findSession(this.db, hash);
    if (row === undefined || row.revoked_at !== null) {
      await this.kv.del(sessionKey(hash));
      throw new Unauthorized('invalid-session-id');
    }
  }

  /**
   * Exchanges a refresh token for a new pair, or answers 401
   * invalid-refresh-token. The rules, decided under a lock on the chain row
   * (so concurrent presenters of one token are served one after the other):
   * - a current token is exchanged: new pair, the old session ends;
   * - a token already exchanged whose newest pair is wholly unused (session
   *   never authenticated a request, refresh token never presented) is a
   *   retry of a lost answer, or the second of two concurrent presenters:
   *   a fresh pair, and the unused one ends;
   * - one exchanged whose pair was used is reuse: the whole chain ends;
   * - unknown, retired by a retry, revoked or expired: nothing changes.
   */
  async refresh(token: string): Promise<Issued> {
    if (!REFRESH_TOKEN.test(token)) throw new Unauthorized('invalid-refresh-token');
    const hash = refreshHash(token);
    const outcome = await this.db.transaction(async (trx): Promise<RefreshOutcome> => {
      const first = await findRefreshToken(trx, hash);
      if (first === undefined) return { kind: 'invalid' };
      const chain = await lockChain(trx, first.chain_id);
      if (chain === undefined || chain.revoked_at !== null || chain.expires_at.getTime() <= Date.now()) return { kind: 'invalid' };
      const user = await findUserById(trx, chain.user_id);
      // Read again under the lock: another refresh of this chain may have just committed.
      const tok = await findRefreshToken(trx, hash);
      if (user === undefined || tok === undefined || tok.retired_at !== null) return { kind: 'invalid' };
      if (tok.exchanged_at === null) {
        const pair = await this.issue(trx, chain);
        await setSuccessor(trx, hash, refreshHash(pair.issued.refreshToken));
        const ended = (await revokeSession(trx, tok.session_hash)) ? [tok.session_hash] : [];
        return { kind: 'issued', pair, accountId: chain.user_id, userName: user.user_name, ended, reason: 'refresh' };
      }
      const next = tok.successor_hash === null ? undefined : await findRefreshToken(trx, tok.successor_hash);
      const nextSession = next === undefined ? undefined : await lockSession(trx, next.session_hash);
      const unused =
        next !== undefined &&
        nextSession !== undefined &&
        next.exchanged_at === null &&
        nextSession.first_used_at === null &&
        nextSession.revoked_at === null;
      if (next !== undefined && unused && tok.successor_hash !== null) {
        const pair = await this.issue(trx, chain);
        await retireRefreshToken(trx, tok.successor_hash);
        await setSuccessor(trx, hash, refreshHash(pair.issued.refreshToken));
        const ended = (await revokeSession(trx, next.session_hash)) ? [next.session_hash] : [];
        return { kind: 'issued', pair, accountId: chain.user_id, userName: user.user_name, ended, reason: 'refresh-retry' };
      }
      await revokeChain(trx, chain.id);
      return { kind: 'stolen', accountId: chain.user_id, ended: await revokeChainSessions(trx, chain.id) };
    });
    if (outcome.kind === 'invalid') throw new Unauthorized('invalid-refresh-token');
    if (outcome.kind === 'stolen') {
      await this.ended(outcome.accountId, outcome.ended, 'refresh-token-reuse');
      throw new Unauthorized('invalid-refresh-token');
    }
    await this.ended(outcome.accountId, outcome.ended, outcome.reason);
    await this.cache(outcome.pair, outcome.accountId, outcome.userName, true);
    return outcome.pair.issued;
  }

  /** Logout: ends this session's login chain (its refresh token stops working too). */
  async logout(session: Session): Promise<void> {
    const hash = Buffer.from(session.tokenHash, 'hex');
    const ended = await this.db.transaction(async (trx) => {
      const row = await findSession(trx, hash);
      if (row?.chain_id === null || row?.chain_id === undefined) return (await revokeSession(trx, hash)) ? [hash] : [];
      await revokeChain(trx, row.chain_id);
      return revokeChainSessions(trx, row.chain_id);
    });
    await this.ended(session.accountId, ended, 'logout');
    // Dropped even when PostgreSQL had it revoked already (Redis cannot be refilled from it).
    await this.kv.del(sessionKey(hash));
  }

  /**
   * Ends every session and chain of the account, except `keep` (its session
   * and chain), with `alsoInTransaction` committed together with it; when
   * that answers false, nothing ends and endAll answers false.
   */
  async endAll(accountId: string, reason: string, keep?: Session, alsoInTransaction?: (trx: Queryable) => Promise<boolean>): Promise<boolean> {
    const keepHash = keep === undefined ? undefined : Buffer.from(keep.tokenHash, 'hex');
    const ended = await this.db.transaction(async (trx) => {
      if (alsoInTransaction !== undefined && !(await alsoInTransaction(trx))) return undefined;
      const keepChain = keepHash === undefined ? undefined : (await findSession(trx, keepHash))?.chain_id;
      await revokeUserChains(trx, accountId, keepChain);
      return revokeUserSessions(trx, accountId, keepHash);
    });
    if (ended === undefined) return false;
    await this.ended(accountId, ended, reason);
    return true;
  }

  /** Writes a new session and refresh token of `chain` (inside the caller's transaction). */
  private async issue(trx: Queryable, chain: ChainRow): Promise<NewPair> {
    const sessionId = randomBytes(16).toString('hex');
    const hash = sessionHash(sessionId);
    // One clock reading for both: a session of SESSION_TTL_SECONDS says so (3600, not 3599 after the inserts' milliseconds).
    const now = Date.now();
    const expiresAt = Math.min(now + this.ttlSeconds * 1000, chain.expires_at.getTime());
    await insertSession(trx, hash, chain.user_id, new Date(expiresAt), chain.id);
    const refreshToken = randomBytes(32).toString('base64url');
    await insertRefreshToken(trx, refreshHash(refreshToken), chain.id, hash);
    const expiresIn = Math.max(1, Math.floor((expiresAt - now) / 1000));
    return { issued: { sessionId, refreshToken, expiresIn }, hash, expiresAt };
  }

  private async cache(pair: NewPair, accountId: string, userName: string, watchFirstUse: boolean): Promise<void> {
    const cached: Cached = { a: accountId, n: userName, e: pair.expiresAt };
    if (watchFirstUse) cached.w = 1;
    await this.kv.set(sessionKey(pair.hash), JSON.stringify(cached), Math.max(1, (pair.expiresAt - Date.now()) / 1000));
  }

  /** After commit: drops the ended sessions from Redis and tells every instance. */
  private async ended(accountId: string, hashes: Buffer[], reason: string): Promise<void> {
    if (hashes.length === 0) return;
    await Promise.all(hashes.map((h) => this.kv.del(sessionKey(h))));
    await this.events.publish('session.ended', { accountId, tokenHashes: hashes.map((h) => h.toString('hex')), reason });
  }
}
