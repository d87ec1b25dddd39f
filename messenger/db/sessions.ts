import type { Queryable } from '../infra/db';

export interface SessionRow {
  user_id: string;
  user_name: string;
  expires_at: Date;
  revoked_at: Date | null;
}

/** Records a new session (by the SHA-256 of its token). */
export async function insertSession(db: Queryable, tokenHash: Buffer, userId: string, expiresAt: Date): Promise<void> {
  await db('sessions').insert({ token_hash: tokenHash, user_id: userId, expires_at: expiresAt });
}

/** The session with this token hash, with its user's name. */
export async function findSession(db: Queryable, tokenHash: Buffer): Promise<SessionRow | undefined> {
  return db('sessions as s')
    .join('users as u', 'u.id', 's.user_id')
    .select('s.user_id', 'u.user_name', 's.expires_at', 's.revoked_at')
    .where('s.token_hash', tokenHash)
    .first();
}

/** Marks a session revoked; a revoked session never comes back. */
export async function revokeSession(db: Queryable, tokenHash: Buffer): Promise<void> {
  await db('sessions').where('token_hash', tokenHash).whereNull('revoked_at').update({ revoked_at: db.fn.now() });
}
