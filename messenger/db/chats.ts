import type { Queryable } from '../infra/db';

/** Creates a chat owned by `ownerId` (null when auth is off). */
export async function insertChat(db: Queryable, chatName: string, ownerId: string | null): Promise<string> {
  const rows = (await db('chats').insert({ chat_name: chatName, owner_id: ownerId }).returning('id')) as { id: string }[];
  return rows[0].id;
}

/** True when the chat exists. */
export async function chatExists(db: Queryable, chatId: string): Promise<boolean> {
  return (await db('chats').select('id').where({ id: chatId }).first()) !== undefined;
}

export interface ChatAccess {
  /** The account may read the chat: it created it or is a member. */
  allowed: boolean;
  /** The sequence number of the cursor message when it belongs to this chat. */
  cursorSeq: string | null;
}

/**
 * One round trip answering: does the chat exist, may this account read it
 * (null account: auth is off, anyone may), and where is the cursor message.
 */
export async function chatAccess(
  db: Queryable,
  chatId: string,
  accountId: string | null,
  cursorId: string | null,
): Promise<ChatAccess | undefined> {
  const row = (await db.raw(
    `SELECT (?::uuid IS NULL OR c.owner_id = ?::uuid OR EXISTS (
              SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid)) AS allowed,
            (SELECT seq::text FROM messages WHERE id = ?::uuid AND chat_id = c.id) AS cursor_seq
       FROM chats c WHERE c.id = ?`,
    [accountId, accountId, accountId, cursorId, chatId],
  )) as { rows: { allowed: boolean; cursor_seq: string | null }[] };
  const r = row.rows[0];
  return r === undefined ? undefined : { allowed: r.allowed, cursorSeq: r.cursor_seq };
}
