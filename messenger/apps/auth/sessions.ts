import { createHash, randomBytes } from 'node:crypto';
import type { Db } from '../../infra/db';
import type { Kv } from '../../infra/kv';
import { findSession, insertSession, revokeSession } from '../../db/sessions';
import { Unauthorized } from '../../errors';
import { parseId } from '../../ids';
import type { Session } from '../../types';

const HEADER = /^session_id\s+(\S+)\s*$/i;

interface Cached {
  a: string;
  n: string;
  e: number;
}

function parseCached(raw: string): Cached | undefined {
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v !== 'object' || v === null) return undefined;
    const { a, n, e } = v as Record<string, unknown>;
    if (typeof a === 'string' && typeof n === 'string' && typeof e === 'number') return { a, n, e };
  } catch {
    // A value we cannot read is treated as absent and rebuilt from PostgreSQL.
  }
  return undefined;
}

/**
 * Sessions: a 128-bit CSPRNG token given to the client once; Redis holds the
 * live ones (with a TTL) and PostgreSQL the record (created, expires,
 * revoked), both keyed by the token's SHA-256.
 */
export class SessionStore {
  constructor(
    private readonly db: Db,
    private readonly kv: Kv,
    private readonly ttlSeconds: number,
  ) {}

  private static hash(hex: string): Buffer {
    return createHash('sha256').update(Buffer.from(hex, 'hex')).digest();
  }

  private static key(hash: Buffer): string {
    return `session:${hash.toString('hex')}`;
  }

  /** Creates a session for the account and returns its token (32 hex chars). */
  async create(accountId: string, userName: string): Promise<string> {
    const token = randomBytes(16).toString('hex');
    const hash = SessionStore.hash(token);
    const expiresAt = Date.now() + this.ttlSeconds * 1000;
    await insertSession(this.db, hash, accountId, new Date(expiresAt));
    const cached: Cached = { a: accountId, n: userName, e: expiresAt };
    await this.kv.set(SessionStore.key(hash), JSON.stringify(cached), this.ttlSeconds);
    return token;
  }

  /** Reads the Authorization header; throws the matching 401 when it does not name a live session. */
  async resolve(header: string | undefined): Promise<Session> {
    const m = header === undefined ? null : HEADER.exec(header);
    const id = m === null ? null : parseId(m[1]);
    if (id === null) throw new Unauthorized('auth-failed');
    return this.resolveHash(SessionStore.hash(id.replace(/-/g, '')).toString('hex'));
  }

  /** The live session whose token has this SHA-256 (hex); throws the matching 401 otherwise. */
  async resolveHash(tokenHash: string): Promise<Session> {
    const hash = Buffer.from(tokenHash, 'hex');
    const key = SessionStore.key(hash);
    const raw = await this.kv.get(key);
    const cached = raw === null ? undefined : parseCached(raw);
    if (cached !== undefined && cached.e > Date.now()) {
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
    await this.kv.set(key, JSON.stringify(restored), left / 1000);
    return { accountId: row.user_id, userName: row.user_name, tokenHash, expiresAt };
  }

  /** Ends the session everywhere: revoked in PostgreSQL first, so Redis cannot be refilled from it. */
  async revoke(session: Session): Promise<void> {
    const hash = Buffer.from(session.tokenHash, 'hex');
    await revokeSession(this.db, hash);
    await this.kv.del(SessionStore.key(hash));
  }
}
