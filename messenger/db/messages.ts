import { prepared, type Queryable } from '../infra/db';

export interface MessageRow {
  id: string;
  text: string;
  member_id: string;
  user_name: string;
  created_at: Date;
}

/** A stored message: its id, place in the chat and what the poster is called there. */
export interface StoredMessage {
  id: string;
  seq: number;
  user_name: string;
  created_at: Date;
}

export type InsertResult = StoredMessage | { missing: 'chat' | 'member' };

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
        SELECT id, user_name FROM chat_members
         WHERE id = ? AND chat_id = ? AND (?::uuid IS NULL OR account_id = ?::uuid)),
      chat AS (
        UPDATE chats SET last_seq = last_seq + 1
         WHERE id = ? AND EXISTS (SELECT 1 FROM member)
         RETURNING id, last_seq),
      ins AS (
        INSERT INTO messages (chat_id, member_id, seq, text)
        SELECT chat.id, ?, chat.last_seq, ? FROM chat
        RETURNING id, seq, created_at)
     SELECT ins.id, ins.seq::int AS seq, ins.created_at, member.user_name FROM ins, member`,
    [memberId, chatId, accountId, accountId, chatId, memberId, text],
  ).options(prepared('insert-message'))) as { rows: StoredMessage[] };
  const row = res.rows[0];
  if (row !== undefined) return row;
  const chat = await db('chats').select('id').where({ id: chatId }).first();
  return { missing: chat === undefined ? 'chat' : 'member' };
}

/** A page of a chat, or why there is none. */
export type PageResult = { rows: MessageRow[] } | { missing: 'chat' | 'cursor' };

/**
 * Up to `limit` messages of the chat after the cursor message (null: from the
 * start), oldest first, in one round trip that also answers whether the chat
 * exists, whether this account may read it (null account: auth is off, anyone
 * may) and whether the cursor is a message of this chat. A chat the account
 * may not read is reported missing, like one that does not exist.
 */
export async function pageOfChat(
  db: Queryable,
  chatId: string,
  accountId: string | null,
  cursorId: string | null,
  limit: number,
): Promise<PageResult> {
  const res = (await db.raw(
    `WITH c AS (
        SELECT c.id,
               (?::uuid IS NULL OR c.owner_id = ?::uuid OR EXISTS (
                  SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid)) AS allowed,
               CASE WHEN ?::uuid IS NULL THEN 0::bigint
                    ELSE (SELECT seq FROM messages WHERE id = ?::uuid AND chat_id = c.id) END AS cursor_seq
          FROM chats c WHERE c.id = ?)
     SELECT c.allowed, c.cursor_seq IS NOT NULL AS cursor_ok, p.id, p.text, p.member_id, p.user_name, p.created_at
       FROM c LEFT JOIN LATERAL (
         SELECT m.id, m.text, m.member_id, cm.user_name, m.created_at, m.seq
           FROM messages m JOIN chat_members cm ON cm.id = m.member_id
          WHERE c.allowed AND m.chat_id = c.id AND m.seq > c.cursor_seq
          ORDER BY m.seq
          LIMIT ?) p ON true
      ORDER BY p.seq`,
    [accountId, accountId, accountId, cursorId, cursorId, chatId, limit],
  ).options(prepared('page-of-chat'))) as { rows: (Omit<MessageRow, 'id'> & { allowed: boolean; cursor_ok: boolean; id: string | null })[] };
  const first = res.rows[0];
  if (first === undefined || !first.allowed) return { missing: 'chat' };
  if (!first.cursor_ok) return { missing: 'cursor' };
  if (first.id === null) return { rows: [] };
  return { rows: res.rows.map(({ id, text, member_id, user_name, created_at }) => ({ id: id as string, text, member_id, user_name, created_at })) };
}

/** A stored message with its place in the chat, as the real-time gateway sends it. */
export interface SeqMessageRow extends MessageRow {
  seq: number;
}

/** Where a resume of one chat starts, or why it cannot. */
export type ResumePoint = { afterSeq: number } | { missing: 'chat' | 'cursor' };

/**
 * The position after which a client that has read up to `cursorId` (null:
 * nothing yet) continues, when `accountId` may read the chat (its creator or
 * a member; null account: anyone). A chat the account may not read is missing.
 */
export async function resumePoint(db: Queryable, chatId: string, accountId: string | null, cursorId: string | null): Promise<ResumePoint> {
  const res = (await db.raw(
    `SELECT (?::uuid IS NULL OR c.owner_id = ?::uuid OR EXISTS (
               SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid)) AS allowed,
            CASE WHEN ?::uuid IS NULL THEN 0::bigint
                 ELSE (SELECT seq FROM messages WHERE id = ?::uuid AND chat_id = c.id) END AS cursor_seq
       FROM chats c WHERE c.id = ?`,
    [accountId, accountId, accountId, cursorId, cursorId, chatId],
  )) as { rows: { allowed: boolean; cursor_seq: string | number | null }[] };
  const row = res.rows[0];
  if (row === undefined || !row.allowed) return { missing: 'chat' };
  if (row.cursor_seq === null) return { missing: 'cursor' };
  return { afterSeq: Number(row.cursor_seq) };
}

/**
 * Up to `limit` messages of the chat after position `afterSeq`, in chat
 * order, with the chat's current last position (what a client that is told
 * to page instead has been brought up to).
 */
export async function messagesAfter(
  db: Queryable,
  chatId: string,
  afterSeq: number,
  limit: number,
): Promise<{ rows: SeqMessageRow[]; lastSeq: number }> {
  const res = (await db.raw(
    `SELECT c.last_seq::int AS last_seq, p.id, p.text, p.member_id, p.user_name, p.created_at, p.seq
       FROM chats c LEFT JOIN LATERAL (
         SELECT m.id, m.text, m.member_id, cm.user_name, m.created_at, m.seq::int AS seq
           FROM messages m JOIN chat_members cm ON cm.id = m.member_id
          WHERE m.chat_id = c.id AND m.seq > ?
          ORDER BY m.seq
          LIMIT ?) p ON true
      WHERE c.id = ?
      ORDER BY p.seq`,
    [afterSeq, limit, chatId],
  ).options(prepared('messages-after'))) as { rows: (Omit<SeqMessageRow, 'id'> & { id: string | null; last_seq: number })[] };
  const first = res.rows[0];
  if (first === undefined) return { rows: [], lastSeq: afterSeq };
  const rows = first.id === null ? [] : res.rows.map(({ id, text, member_id, user_name, created_at, seq }) => ({ id: id as string, text, member_id, user_name, created_at, seq: Number(seq) }));
  return { rows, lastSeq: Number(first.last_seq) };
}
