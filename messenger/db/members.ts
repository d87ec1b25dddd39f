import type { Queryable } from '../infra/db';

/** A membership as joining answers it. */
export interface Joined {
  id: string;
  /** The name the member is shown under (the first one given, on a repeat join). */
  userName: string;
  /** True when this call made the membership, false when it existed. */
  created: boolean;
}

/**
 * Joins `userName` to the chat and returns the member; joining again returns
 * the same id (per account with auth on, per name with auth off).
 * Undefined when the chat does not exist, or is a direct chat the account is
 * not one of the two of (nobody else can join those).
 */
export async function joinChat(
  db: Queryable,
  chatId: string,
  userName: string,
  accountId: string | null,
): Promise<Joined | undefined> {
  // A concurrent join of the same identity can commit between our snapshot and
  // our insert, leaving neither branch a row; the second try sees it.
  return (await joinOnce(db, chatId, userName, accountId)) ?? joinOnce(db, chatId, userName, accountId);
}

async function joinOnce(
  db: Queryable,
  chatId: string,
  userName: string,
  accountId: string | null,
): Promise<Joined | undefined> {
  // Insert-or-fetch in one statement: ON CONFLICT DO NOTHING returns no row
  // for an existing member, so the second branch finds it. Safe under races
  // because the unique index decides who wins.
  const conflict =
    accountId === null
      ? '(chat_id, user_name) WHERE account_id IS NULL'
      : '(chat_id, account_id) WHERE account_id IS NOT NULL';
  const existing = accountId === null ? 'user_name = ? AND account_id IS NULL' : 'account_id = ?';
  const res = (await db.raw(
    `WITH chat AS (
            SELECT id FROM chats
             WHERE id = ? AND (direct_a IS NULL OR ?::uuid IN (direct_a, direct_b))),
          ins AS (
            INSERT INTO chat_members (chat_id, user_name, account_id)
            SELECT chat.id, ?, ?::uuid FROM chat
            ON CONFLICT ${conflict} DO NOTHING
            RETURNING id, user_name)
     SELECT id, user_name, true AS created FROM ins
     UNION ALL
     SELECT m.id, m.user_name, false FROM chat_members m, chat WHERE m.chat_id = chat.id AND ${existing}`,
    [chatId, accountId, userName, accountId, accountId ?? userName],
  )) as { rows: { id: string; user_name: string; created: boolean }[] };
  const row = res.rows[0];
  return row === undefined ? undefined : { id: row.id, userName: row.user_name, created: row.created };
}

/** One member of a chat, for the members list. */
export interface MemberRow {
  id: string;
  user_name: string;
  account_id: string | null;
}

/**
 * The members of a chat in join order, or undefined when the chat does not
 * exist or this account may not read it (creator or member may; with auth off,
 * `accountId` null, anyone may read a group chat and nobody a direct one).
 * `afterId`: only the members who joined after that member of this chat
 * ('bad-cursor' when it is not one); `limit`: at most that many (null: all).
 * One round trip: the access check, the cursor and the list are one statement.
 */
export async function membersOf(
  db: Queryable,
  chatId: string,
  accountId: string | null,
  afterId: string | null = null,
  limit: number | null = null,
): Promise<MemberRow[] | 'bad-cursor' | undefined> {
  const res = (await db.raw(
    `WITH c AS (
        SELECT c.id FROM chats c
         WHERE c.id = ?
           AND (CASE WHEN ?::uuid IS NULL THEN c.direct_a IS NULL
                     ELSE c.owner_id = ?::uuid OR EXISTS (
                       SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid) END)),
          cur AS (
        SELECT m.join_order FROM chat_members m, c WHERE ?::uuid IS NOT NULL AND m.id = ?::uuid AND m.chat_id = c.id)
     SELECT c.id AS chat_id, (?::uuid IS NULL OR EXISTS (SELECT 1 FROM cur)) AS cursor_ok, m.id, m.user_name, m.account_id
       FROM c LEFT JOIN LATERAL (
             SELECT m.id, m.user_name, m.account_id, m.join_order FROM chat_members m
              WHERE m.chat_id = c.id AND (?::uuid IS NULL OR m.join_order > (SELECT join_order FROM cur))
              ORDER BY m.join_order LIMIT ?) m ON true
      ORDER BY m.join_order`,
    [chatId, accountId, accountId, accountId, afterId, afterId, afterId, afterId, limit],
  )) as { rows: (MemberRow & { chat_id: string; cursor_ok: boolean; id: string | null })[] };
  if (res.rows.length === 0) return undefined;
  if (!res.rows[0].cursor_ok) return 'bad-cursor';
  return res.rows.filter((r) => r.id !== null).map(({ id, user_name, account_id }) => ({ id: id as string, user_name, account_id }));
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
