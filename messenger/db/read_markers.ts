import { prepared, type Queryable } from '../infra/db';

/**
 * Read markers: one row per (account, chat) holding the per-chat `seq` of the
 * last message the account has read. Every write is an upsert whose update
 * only applies when it moves the marker forward (`WHERE read_markers.seq <
 * EXCLUDED.seq`): PostgreSQL re-evaluates that condition on the latest row
 * version under the row lock, so concurrent calls never move it backwards.
 */

/** Where a marker stands after a read, and whether this call moved it. */
export interface MarkerState {
  moved: boolean;
  /** The marker's seq now. */
  seq: number;
  /** Messages after the marker: the chat's last seq minus the marker's. */
  unread: number;
}

export type MarkReadResult = MarkerState | { missing: 'chat' | 'message' };

/**
 * Moves the account's marker in the chat to `messageId` (null: a malformed
 * id) unless it is already there or further. The chat must exist and the
 * account must be its creator or a member (else `missing: 'chat'`); the
 * message must be one of that chat's (else `missing: 'message'`). Nothing is
 * written in either case.
 */
export async function markRead(db: Queryable, accountId: string, chatId: string, messageId: string | null): Promise<MarkReadResult> {
  const res = (await db.raw(
    `WITH c AS (
        SELECT c.id, c.last_seq FROM chats c
         WHERE c.id = ?
           AND (c.owner_id = ?::uuid OR EXISTS (
                  SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid))),
      msg AS (SELECT m.seq FROM messages m, c WHERE m.id = ?::uuid AND m.chat_id = c.id),
      up AS (
        INSERT INTO read_markers (account_id, chat_id, seq)
        SELECT ?::uuid, c.id, msg.seq FROM c, msg
        ON CONFLICT (account_id, chat_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
         WHERE read_markers.seq < EXCLUDED.seq
        RETURNING seq)
     SELECT c.last_seq, msg.seq AS message_seq, (SELECT seq FROM up) AS moved_to
       FROM c LEFT JOIN msg ON true`,
    [chatId, accountId, accountId, messageId, accountId],
  )) as { rows: { last_seq: string | number; message_seq: string | number | null; moved_to: string | number | null }[] };
  const row = res.rows[0];
  if (row === undefined) return { missing: 'chat' };
  if (row.message_seq === null) return { missing: 'message' };
  if (row.moved_to !== null) {
    const seq = Number(row.moved_to);
    return { moved: true, seq, unread: Math.max(Number(row.last_seq) - seq, 0) };
  }
  // Not moved: the marker was already there or further (maybe moved by a
  // concurrent call this statement's snapshot predates); read where it is now.
  return { moved: false, ...(await markerOf(db, accountId, chatId)) };
}

/** Where the account's marker in the chat stands (seq 0 when it has none) and what is unread after it. */
export async function markerOf(db: Queryable, accountId: string, chatId: string): Promise<{ seq: number; unread: number }> {
  const res = (await db.raw(
    `SELECT coalesce(r.seq, 0) AS seq, c.last_seq
       FROM chats c LEFT JOIN read_markers r ON r.account_id = ?::uuid AND r.chat_id = c.id
      WHERE c.id = ?`,
    [accountId, chatId],
  )) as { rows: { seq: string | number; last_seq: string | number }[] };
  const row = res.rows[0];
  const seq = Number(row?.seq ?? 0);
  return { seq, unread: Math.max(Number(row?.last_seq ?? 0) - seq, 0) };
}

/** A marker to move forward, and the message it moves to. */
export interface MarkerMove {
  accountId: string;
  chatId: string;
  seq: number;
  messageId: string;
}

/** A marker a batch moved, with what is left unread after it. */
export interface MovedMarker extends MarkerMove {
  unread: number;
}

/**
 * Moves each account's marker in each chat to the given message (its seq)
 * when that is further than where it stands, in one statement for all of
 * them: the posters' markers after their posts (so their own messages never
 * count as unread). At most one move per (account, chat); rows are written in
 * key order, so two concurrent batches cannot deadlock. Answers the markers
 * that moved.
 *
 * Its commit does not wait for the WAL flush (`synchronous_commit` off for
 * this statement's transaction alone), so the 201 of a post waits for one
 * disk flush, its message's, not two. The price: if PostgreSQL itself
 * crashes (not a clean stop), the moves of the last fraction of a second
 * (at most three `wal_writer_delay`s) can be lost, leaving a poster's own
 * newest messages counted as unread to them until their next read. Nothing
 * else is affected: the messages are committed durably, a marker is never
 * corrupt or ahead, and `POST /v1/chats/{chat_id}/read` (markRead) commits
 * synchronously.
 */
export async function advanceMarkers(db: Queryable, moves: MarkerMove[]): Promise<MovedMarker[]> {
  if (moves.length === 0) return [];
  const res = (await db.raw(
    `WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
      input AS (
        SELECT * FROM json_to_recordset(?::json) AS t(account_id uuid, chat_id uuid, seq bigint)),
      up AS (
        INSERT INTO read_markers AS r (account_id, chat_id, seq)
        SELECT account_id, chat_id, seq FROM input ORDER BY account_id, chat_id
        ON CONFLICT (account_id, chat_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
         WHERE r.seq < EXCLUDED.seq
        RETURNING r.account_id, r.chat_id, r.seq)
     SELECT up.account_id, up.chat_id, up.seq, c.last_seq FROM async, up JOIN chats c ON c.id = up.chat_id`,
    [JSON.stringify(moves.map((m) => ({ account_id: m.accountId, chat_id: m.chatId, seq: m.seq })))],
    // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
  ).options(prepared('advance-markers'))) as { rows: { account_id: string; chat_id: string; seq: string | number; last_seq: string | number }[] };
  const byKey = new Map(moves.map((m) => [`${m.accountId}|${m.chatId}`, m]));
  const moved: MovedMarker[] = [];
  for (const row of res.rows) {
    const move = byKey.get(`${row.account_id}|${row.chat_id}`);
    if (move === undefined) continue;
    const seq = Number(row.seq);
    moved.push({ ...move, seq, unread: Math.max(Number(row.last_seq) - seq, 0) });
  }
  return moved;
}
