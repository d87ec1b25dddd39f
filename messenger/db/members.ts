import type { Queryable } from '../infra/db';

/**
 * Joins `userName` to the chat and returns the member id; joining again
 * returns the same id (per account with auth on, per name with auth off).
 * Undefined when the chat does not exist.
 */
export async function joinChat(
  db: Queryable,
  chatId: string,
  userName: string,
  accountId: string | null,
): Promise<string | undefined> {
  // A concurrent join of the same identity can commit between our snapshot and
  // our insert, leaving neither branch a row; the second try sees it.
  return (await joinOnce(db, chatId, userName, accountId)) ?? joinOnce(db, chatId, userName, accountId);
}

async function joinOnce(
  db: Queryable,
  chatId: string,
  userName: string,
  accountId: string | null,
): Promise<string | undefined> {
  // Insert-or-fetch in one statement: ON CONFLICT DO NOTHING returns no row
  // for an existing member, so the second branch finds it. Safe under races
  // because the unique index decides who wins.
  const conflict =
    accountId === null
      ? '(chat_id, user_name) WHERE account_id IS NULL'
      : '(chat_id, account_id) WHERE account_id IS NOT NULL';
  const existing = accountId === null ? 'user_name = ? AND account_id IS NULL' : 'account_id = ?';
  const res = (await db.raw(
    `WITH chat AS (SELECT id FROM chats WHERE id = ?),
          ins AS (
            INSERT INTO chat_members (chat_id, user_name, account_id)
            SELECT chat.id, ?, ?::uuid FROM chat
            ON CONFLICT ${conflict} DO NOTHING
            RETURNING id)
     SELECT id FROM ins
     UNION ALL
     SELECT m.id FROM chat_members m, chat WHERE m.chat_id = chat.id AND ${existing}`,
    [chatId, userName, accountId, accountId ?? userName],
  )) as { rows: { id: string }[] };
  return res.rows[0]?.id;
}

/** Every chat the account may read: those it created and those it joined. */
export async function readableChats(db: Queryable, accountId: string): Promise<string[]> {
  const res = (await db.raw(
    `SELECT id AS chat_id FROM chats WHERE owner_id = ?
     UNION
     SELECT chat_id FROM chat_members WHERE account_id = ?`,
    [accountId, accountId],
  )) as { rows: { chat_id: string }[] };
  return res.rows.map((r) => r.chat_id);
}

/** The account that created the chat (null: none, or no such chat). */
export async function chatOwner(db: Queryable, chatId: string): Promise<string | null> {
  const row = (await db('chats').select('owner_id').where({ id: chatId }).first()) as { owner_id: string | null } | undefined;
  return row?.owner_id ?? null;
}

/** The account's identities: one per chat it joined (chat, member id, name shown there). */
export async function identitiesOf(db: Queryable, accountId: string): Promise<{ chat_id: string; id: string; user_name: string }[]> {
  return db('chat_members').select('chat_id', 'id', 'user_name').where({ account_id: accountId });
}
