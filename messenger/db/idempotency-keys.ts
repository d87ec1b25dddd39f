import { prepared, type Queryable } from '../infra/db';
import { IDEMPOTENCY_TTL_HOURS } from './messages';

const LIVE = `created_at > now() - interval '${IDEMPOTENCY_TTL_HOURS} hours'`;

/** The message id a live key was first answered with, if any. */
export async function keyedMessage(db: Queryable, ownerId: string, key: string): Promise<string | undefined> {
  const res = (await db.raw(`SELECT message_id FROM idempotency_keys WHERE owner_id = ? AND key = ? AND ${LIVE}`, [ownerId, key]).options(
    // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
    prepared('keyed-message'),
  )) as { rows: { message_id: string }[] };
  return res.rows[0]?.message_id;
}

/**
 * Maps the key to `messageId` unless a live mapping exists (an expired one is
 * taken over); returns the id the key maps to now: `messageId` when this call
 * took it, the first one otherwise. A concurrent reservation of the same key
 * waits for the other transaction, so both callers agree on one id.
 */
export async function reserveKey(db: Queryable, ownerId: string, key: string, messageId: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const res = (await db.raw(
      `INSERT INTO idempotency_keys AS k (owner_id, key, message_id) VALUES (?, ?, ?)
       ON CONFLICT (owner_id, key) DO UPDATE SET message_id = EXCLUDED.message_id, created_at = now()
        WHERE NOT (k.${LIVE})
       RETURNING message_id`,
      [ownerId, key, messageId],
    // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
    ).options(prepared('reserve-key'))) as { rows: { message_id: string }[] };
    if (res.rows[0] !== undefined) return res.rows[0].message_id;
    const first = await keyedMessage(db, ownerId, key);
    // Gone between the two statements (released after a failed publish, or expired): try again.
    if (first !== undefined || attempt >= 2) return first ?? messageId;
  }
}

/** Gives a key back (its message could not be queued), so a retry is not answered with an id that was never sent. */
export async function releaseKey(db: Queryable, ownerId: string, key: string, messageId: string): Promise<void> {
  await db.raw('DELETE FROM idempotency_keys WHERE owner_id = ? AND key = ? AND message_id = ?', [ownerId, key, messageId]);
}

/** Deletes expired keys; returns how many. */
export async function deleteExpiredKeys(db: Queryable): Promise<number> {
  const res = (await db.raw(`DELETE FROM idempotency_keys WHERE NOT (${LIVE})`)) as { rowCount?: number; affectedRows?: number };
  return res.rowCount ?? res.affectedRows ?? 0;
}
