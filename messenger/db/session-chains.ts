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
