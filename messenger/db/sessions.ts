import type { Queryable } from '../infra/db';

// PGlite answers bytea as a Uint8Array, pg as a Buffer: callers always get a Buffer.
const asBuffer = (v: Uint8Array) => (Buffer.isBuffer(v) ? v : Buffer.from(v));

export interface SessionRow {
  user_id: string;
  user_name: string;
  expires_at: Date;
  revoked_at: Date | null;
  first_used_at: Date | null;
  chain_id: string | null;
}

/** Records a new session (by the SHA-256 of its token), optionally as part of a login chain. */
export async function insertSession(db: Queryable, tokenHash: Buffer, userId: string, expiresAt: Date, chainId?: string): Promise<void> {
  await db('sessions').insert({ token_hash: tokenHash, user_id: userId, expires_at: expiresAt, chain_id: chainId ?? null });
}

/** The session with this token hash, with its user's name. */
export async function findSession(db: Queryable, tokenHash: Buffer): Promise<SessionRow | undefined> {
  return db('sessions as s')
    .join('users as u', 'u.id', 's.user_id')
    .select('s.user_id', 'u.user_name', 's.expires_at', 's.revoked_at', 's.first_used_at', 's.chain_id')
    .where('s.token_hash', tokenHash)
    .first();
}

/** The session row, locked until the transaction ends (a first use waits for it, and it for a first use). */
export async function lockSession(trx: Queryable, tokenHash: Buffer): Promise<{ first_used_at: Date | null; revoked_at: Date | null } | undefined> {
  return trx('sessions').select('first_used_at', 'revoked_at').where('token_hash', tokenHash).forUpdate().first();
}

/**
 * Records the first request a live session authenticated; false when it was
 * used before or is revoked (the caller tells which with `findSession`).
 */
export async function markFirstUse(db: Queryable, tokenHash: Buffer): Promise<boolean> {
  const n = await db('sessions')
    .where('token_hash', tokenHash)
    .whereNull('first_used_at')
    .whereNull('revoked_at')
    .update({ first_used_at: db.fn.now() });
  return n > 0;
}

/** Marks a session revoked; a revoked session never comes back. True when it was live until now. */
export async function revokeSession(db: Queryable, tokenHash: Buffer): Promise<boolean> {
  const n = await db('sessions').where('token_hash', tokenHash).whereNull('revoked_at').update({ revoked_at: db.fn.now() });
  return n > 0;
}

/** Revokes every live session of a chain; returns the token hashes it ended. */
export async function revokeChainSessions(db: Queryable, chainId: string): Promise<Buffer[]> {
  const rows = (await db('sessions')
    .where('chain_id', chainId)
    .whereNull('revoked_at')
    .update({ revoked_at: db.fn.now() })
    .returning('token_hash')) as { token_hash: Uint8Array }[];
  return rows.map((r) => asBuffer(r.token_hash));
}

/** Revokes every live session of an account except `keep`; returns the token hashes it ended. */
export async function revokeUserSessions(db: Queryable, userId: string, keep?: Buffer): Promise<Buffer[]> {
  let q = db('sessions').where('user_id', userId).whereNull('revoked_at');
  if (keep !== undefined) q = q.whereNot('token_hash', keep);
  const rows = (await q.update({ revoked_at: db.fn.now() }).returning('token_hash')) as { token_hash: Uint8Array }[];
  return rows.map((r) => asBuffer(r.token_hash));
}
