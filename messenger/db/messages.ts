import type { Queryable } from '../infra/db';

export interface MessageRow {
  id: string;
  text: string;
  member_id: string;
  user_name: string;
  created_at: Date;
}

export type InsertResult = { id: string } | { missing: 'chat' | 'member' };

/**
 * Stores a message as `memberId` in one statement. The chat row's counter is
 * taken with UPDATE, which holds the row lock until commit: per-chat sequence
 * order is therefore commit order, and a reader paging by sequence never
 * sees a later message before an earlier one. `accountId` (auth on) must own
 * the member, so nobody posts under another account's user_id.
 */
export async function insertMessage(
  db: Queryable,
  chatId: string,
  memberId: string,
  accountId: string | null,
  text: string,
): Promise<InsertResult> {
  const res = (await db.raw(
    `WITH member AS (
        SELECT id FROM chat_members
         WHERE id = ? AND chat_id = ? AND (?::uuid IS NULL OR account_id = ?::uuid)),
      chat AS (
        UPDATE chats SET last_seq = last_seq + 1
         WHERE id = ? AND EXISTS (SELECT 1 FROM member)
         RETURNING id, last_seq)
     INSERT INTO messages (chat_id, member_id, seq, text)
     SELECT chat.id, ?, chat.last_seq, ? FROM chat
     RETURNING id`,
    [memberId, chatId, accountId, accountId, chatId, memberId, text],
  )) as { rows: { id: string }[] };
  const row = res.rows[0];
  if (row !== undefined) return { id: row.id };
  const chat = await db('chats').select('id').where({ id: chatId }).first();
  return { missing: chat === undefined ? 'chat' : 'member' };
}

/** Up to `limit` messages of the chat after sequence `afterSeq`, oldest first. */
export async function listMessages(db: Queryable, chatId: string, afterSeq: string, limit: number): Promise<MessageRow[]> {
  const res = (await db.raw(
    `SELECT m.id, m.text, m.member_id, cm.user_name, m.created_at
       FROM messages m JOIN chat_members cm ON cm.id = m.member_id
      WHERE m.chat_id = ? AND m.seq > ?::bigint
      ORDER BY m.seq
      LIMIT ?`,
    [chatId, afterSeq, limit],
  )) as { rows: MessageRow[] };
  return res.rows;
}
