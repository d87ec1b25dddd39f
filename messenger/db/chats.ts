import { prepared, type Queryable } from '../infra/db';
import { jsonTextArray, wireId, wireMessageEnd } from './wire';

/** Creates a chat owned by `ownerId` (null when auth is off). */
export async function insertChat(db: Queryable, chatName: string, ownerId: string | null): Promise<string> {
  const rows = (await db('chats').insert({ chat_name: chatName, owner_id: ownerId }).returning('id')) as { id: string }[];
  return rows[0].id;
}

/** A direct chat as `openDirectChat` answers it. */
export interface DirectChat {
  chatId: string;
  /** The caller's member id in it. */
  memberId: string;
  /** True when this call made the chat; `members` then holds both memberships. */
  created: boolean;
  members: { id: string; user_name: string; account_id: string }[];
}

/**
 * The one direct chat of two accounts, made if there is none. Insert-or-fetch:
 * the chat and both memberships are one statement whose insert the unique
 * index on the ordered pair lets only one caller win; a loser (or a repeat
 * call) finds the winner's chat with a second statement, whose fresh snapshot
 * sees it. The caller is the creator and joins first; both join under their
 * account names. The stored chat_name is both names (the list shows each
 * side the other's name).
 */
export async function openDirectChat(db: Queryable, callerId: string, otherId: string): Promise<DirectChat> {
  const created = (await db.raw(
    `WITH pair AS (SELECT least(?::uuid, ?::uuid) AS a, greatest(?::uuid, ?::uuid) AS b),
          names AS (SELECT u.id, u.user_name FROM users u, pair WHERE u.id IN (pair.a, pair.b)),
          chat AS (
            INSERT INTO chats (chat_name, owner_id, direct_a, direct_b)
            SELECT left((SELECT user_name FROM names WHERE id = pair.a) || ', ' || (SELECT user_name FROM names WHERE id = pair.b), 255),
                   ?::uuid, pair.a, pair.b
              FROM pair
            ON CONFLICT (direct_a, direct_b) WHERE direct_a IS NOT NULL DO NOTHING
            RETURNING id),
          mem AS (
            INSERT INTO chat_members (chat_id, user_name, account_id)
            SELECT chat.id, names.user_name, names.id FROM chat, names
             ORDER BY names.id = ?::uuid DESC
            RETURNING id, chat_id, user_name, account_id, join_order)
     SELECT id, chat_id, user_name, account_id FROM mem ORDER BY join_order`,
    [callerId, otherId, callerId, otherId, callerId, callerId],
  )) as { rows: { id: string; chat_id: string; user_name: string; account_id: string }[] };
  const rows = created.rows;
  if (rows.length > 0) {
    const mine = rows.find((r) => r.account_id === callerId) as (typeof rows)[number];
    return { chatId: mine.chat_id, memberId: mine.id, created: true, members: rows.map(({ id, user_name, account_id }) => ({ id, user_name, account_id })) };
  }
  const found = (await db.raw(
    `SELECT c.id AS chat_id, m.id AS member_id
       FROM chats c JOIN chat_members m ON m.chat_id = c.id AND m.account_id = ?::uuid
      WHERE c.direct_a = least(?::uuid, ?::uuid) AND c.direct_b = greatest(?::uuid, ?::uuid)`,
    [callerId, callerId, otherId, callerId, otherId],
  )) as { rows: { chat_id: string; member_id: string }[] };
  const row = found.rows[0];
  if (row === undefined) throw new Error('direct chat neither created nor found');
  return { chatId: row.chat_id, memberId: row.member_id, created: false, members: [] };
}

/**
 * The chat-list statement (exported for the EXPLAIN test and the benchmark's
 * baseline; its parameters come from `chatsOfAccountParams`). Two steps:
 * rank the account's chats by activity and keep the page; only then look up
 * names, identity, marker and the last message for the rows of that page.
 *
 * - The account's chats are the ones it owns plus the ones it joined and does
 *   not own: two disjoint branches, so no de-duplication of 2 × n ids (a
 *   UNION's hash aggregate) before the ranking.
 * - Activity is `coalesce(last_seq_at, created_at)`: every write sets
 *   `last_seq_at` to the stored time of the chat's last message (the time its
 *   messages carry), and migration 007 backfilled the chats last written
 *   before that column existed, so no probe into messages is needed here.
 * - The last message is on the chat row as wire JSON up to its time
 *   (migration 012: every write path keeps it there; `last_seq_at` is the
 *   time), so the ranking carries it, no page row probes messages, and the
 *   item only appends it.
 * - Each other column of a page row is an index probe by key (scalar
 *   subqueries), whatever the row estimates of a generic plan say.
 * - The answer is one text: the JSON array of the list items in their wire
 *   form (db/wire.ts), built by PostgreSQL. The web process sends it as it
 *   is, instead of parsing 100 rows of 10 columns into objects and
 *   serialising them again (750-780 µs of a worker's CPU per list against
 *   109-116 µs for the one JSON column; docs/performance.md, "Lists as JSON
 *   from PostgreSQL"). Each item is concatenated in SPEC's key order, with
 *   `to_json` escaping the texts exactly as row_to_json does, rather than
 *   built with row_to_json over a row of subqueries: fewer objects per row
 *   and the same bytes (docs/performance.md, "The last message as JSON on
 *   the chat row").
 */
export const CHATS_OF_ACCOUNT_SQL = `WITH mine AS (
        SELECT c.id, c.chat_name, c.direct_a, c.direct_b, c.last_seq, coalesce(c.last_seq_at, c.created_at) AS activity,
               c.last_message_head, c.last_seq_at
          FROM chats c WHERE c.owner_id = ?::uuid
        UNION ALL
        SELECT c.id, c.chat_name, c.direct_a, c.direct_b, c.last_seq, coalesce(c.last_seq_at, c.created_at),
               c.last_message_head, c.last_seq_at
          FROM chat_members m JOIN chats c ON c.id = m.chat_id
         WHERE m.account_id = ?::uuid AND c.owner_id IS DISTINCT FROM ?::uuid),
      page AS (
        SELECT * FROM mine ORDER BY activity DESC, id DESC LIMIT ?)
     SELECT ${jsonTextArray(`'{"chat_id":"' || ${wireId('c.id')}
              || '","chat_name":' || to_json(CASE WHEN c.direct_a IS NULL THEN c.chat_name
                    ELSE coalesce((SELECT o.user_name FROM users o
                                    WHERE o.id = CASE WHEN c.direct_a = ?::uuid THEN c.direct_b ELSE c.direct_a END), c.chat_name) END)::text
              || ',"user_id":' || coalesce('"' || ${wireId('(SELECT me.id FROM chat_members me WHERE me.chat_id = c.id AND me.account_id = ?::uuid)')} || '"', 'null')
              || ',"direct":' || (c.direct_a IS NOT NULL)::text
              || ',"last_message":' || coalesce(c.last_message_head || ${wireMessageEnd('c.last_seq_at')}, 'null')
              || ',"unread":' || greatest(c.last_seq - coalesce((SELECT r.seq FROM read_markers r WHERE r.account_id = ?::uuid AND r.chat_id = c.id), 0), 0)::text
              || '}'`, 'c.activity DESC, c.id DESC')} AS chats
       FROM page c`;

/** The parameters of CHATS_OF_ACCOUNT_SQL, in order. */
export function chatsOfAccountParams(accountId: string, limit: number): (string | number)[] {
  return [accountId, accountId, accountId, limit, accountId, accountId, accountId];
}

/**
 * The chats an account created or joined, most recent activity first (its
 * last message, else its creation), as the JSON text of the list's items
 * (`chat_id`, `chat_name`, `user_id`, `direct`, `last_message`, `unread`, the
 * wire form SPEC.md gives), in one statement (no query per chat). Each chat
 * of the account costs one row of the ranking (read from its chat row, which
 * also holds its last message); each chat of the page two index probes by
 * key: membership and the read marker. Unread is
 * `last_seq - marker`, never a count over messages. A direct chat is named
 * after the other account.
 */
export async function chatListJson(db: Queryable, accountId: string, limit: number): Promise<string> {
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
  const res = (await db.raw(CHATS_OF_ACCOUNT_SQL, chatsOfAccountParams(accountId, limit)).options(prepared('chats-of-account'))) as {
    rows: { chats: string }[];
  };
  return res.rows[0].chats;
}
