import type { Queryable } from '../infra/db';

export interface ChainRow {
  id: string;
  user_id: string;
  expires_at: Date;
  revoked_at: Date | null;
}

/** Starts a login chain that ends at `expiresAt` whatever happens; returns its id. */
export async function insertChain(db: Queryable, userId: string, expiresAt: Date): Promise<string> {
  const rows = (await db('session_chains').insert({ user_id: userId, expires_at: expiresAt }).returning('id')) as { id: string }[];
  return rows[0].id;
}

/** The chain, locked until the transaction ends: every change to one chain's tokens happens under this lock. */
export async function lockChain(db: Queryable, id: string): Promise<ChainRow | undefined> {
  return db('session_chains').select('id', 'user_id', 'expires_at', 'revoked_at').where('id', id).forUpdate().first();
}

/** Ends a chain: none of its refresh tokens works again. */
export async function revokeChain(db: Queryable, id: string): Promise<void> {
  await db('session_chains').where('id', id).whereNull('revoked_at').update({ revoked_at: db.fn.now() });
}

/** Ends every chain of an account except `keep`. */
export async function revokeUserChains(db: Queryable, userId: string, keep?: string | null): Promise<void> {
  let q = db('session_chains').where('user_id', userId).whereNull('revoked_at');
  if (keep !== undefined && keep !== null) q = q.whereNot('id', keep);
  await q.update({ revoked_at: db.fn.now() });
}

/** How long an ended login's rows are kept after it expired: meanwhile its tokens still get `session-id-expired`, after it `invalid-session-id`. */
export const ENDED_LOGIN_KEPT_DAYS = 7;

/**
 * Deletes what logins that expired more than ENDED_LOGIN_KEPT_DAYS ago left
 * behind: their chains, with their sessions and refresh tokens (ON DELETE
 * CASCADE), and sessions of no chain past their end. Nothing of them can be
 * used again, and without this the three tables grew by a row each per
 * login and refresh for ever. Returns the number of chains and chainless
 * sessions deleted.
 */
export async function deleteEndedLogins(db: Queryable): Promise<number> {
  const chains = (await db.raw(
    `DELETE FROM session_chains WHERE expires_at < now() - make_interval(days => ?)`,
    [ENDED_LOGIN_KEPT_DAYS],
  )) as { rowCount?: number; affectedRows?: number };
  const sessions = (await db.raw(
    `DELETE FROM sessions WHERE chain_id IS NULL AND expires_at < now() - make_interval(days => ?)`,
    [ENDED_LOGIN_KEPT_DAYS],
  )) as { rowCount?: number; affectedRows?: number };
  return (chains.rowCount ?? chains.affectedRows ?? 0) + (sessions.rowCount ?? sessions.affectedRows ?? 0);
}
