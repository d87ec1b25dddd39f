import type { Queryable } from '../infra/db';

export interface RefreshTokenRow {
  chain_id: string;
  /** The session answered together with this token. */
  session_hash: Buffer;
  exchanged_at: Date | null;
  successor_hash: Buffer | null;
  retired_at: Date | null;
}

/** Records a refresh token (by its SHA-256) issued with the session `sessionHash`. */
export async function insertRefreshToken(db: Queryable, tokenHash: Buffer, chainId: string, sessionHash: Buffer): Promise<void> {
  await db('refresh_tokens').insert({ token_hash: tokenHash, chain_id: chainId, session_hash: sessionHash });
}

/** The refresh token with this hash, if any. */
export async function findRefreshToken(db: Queryable, tokenHash: Buffer): Promise<RefreshTokenRow | undefined> {
  const row = (await db('refresh_tokens')
    .select('chain_id', 'session_hash', 'exchanged_at', 'successor_hash', 'retired_at')
    .where('token_hash', tokenHash)
    .first()) as (Omit<RefreshTokenRow, 'session_hash' | 'successor_hash'> & { session_hash: Uint8Array; successor_hash: Uint8Array | null }) | undefined;
  if (row === undefined) return undefined;
  // PGlite answers bytea as a Uint8Array, pg as a Buffer: callers always get a Buffer.
  return { ...row, session_hash: Buffer.from(row.session_hash), successor_hash: row.successor_hash === null ? null : Buffer.from(row.successor_hash) };
}

/** Records that the token was presented and answered with `successorHash` (the first exchange keeps its time). */
export async function setSuccessor(db: Queryable, tokenHash: Buffer, successorHash: Buffer): Promise<void> {
  await db('refresh_tokens')
    .where('token_hash', tokenHash)
    .update({ exchanged_at: db.raw('coalesce(exchanged_at, now())'), successor_hash: successorHash });
}

/** Retires a token that a retry replaced before it was ever used. */
export async function retireRefreshToken(db: Queryable, tokenHash: Buffer): Promise<void> {
  await db('refresh_tokens').where('token_hash', tokenHash).whereNull('retired_at').update({ retired_at: db.fn.now() });
}
