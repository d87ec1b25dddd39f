import type pg from 'pg';
import { FILL_LAST_MESSAGE_HEADS_SQL } from '../migrations/012_chat_last_message_json';

/**
 * The chat-list data: `chats` chats the account `account` (member name `name`) owns and joined, exactly
 * `messages` messages spread unevenly over them (chat k of 0..chats-1 gets about 2·messages·(k+1)/(chats·(chats+1)),
 * rounded so the counts add up; at 100,000 a few chats get none), last message times scattered so the
 * activity order is not the creation order, chats.last_seq/last_seq_at set from the stored messages, and read markers in two chats of
 * three (some fully read, some behind), each chat's last message on its row as the app keeps it. Returns the number of messages stored.
 */
export async function fillChatList(db: pg.Pool, account: string, name: string, chats: number, messages: number): Promise<number> {
  await db.query(
    `WITH c AS (
       INSERT INTO chats (chat_name, owner_id, created_at)
       SELECT 'list ' || g, $1::uuid, now() - interval '30 days' + g * interval '1 second' FROM generate_series(1, $2::int) AS g
       RETURNING id)
     INSERT INTO chat_members (chat_id, user_name, account_id) SELECT id, $3, $1::uuid FROM c`,
    [account, chats, name],
  );
  const stored = await db.query(
    `WITH l AS (
       SELECT m.chat_id, m.id AS member_id, (row_number() OVER (ORDER BY m.chat_id) - 1)::bigint AS k
         FROM chat_members m WHERE m.account_id = $1::uuid)
     INSERT INTO messages (chat_id, member_id, seq, text, created_at)
     SELECT l.chat_id, l.member_id, s, 'list message ' || s || ' ' || left(md5(s::text), 12),
            now() - ((l.k * 7919) % $2::bigint) * interval '1 minute' - (n.n - s) * interval '1 second'
       FROM l
       CROSS JOIN LATERAL (SELECT ($3::bigint * (l.k + 1) * (l.k + 2)) / ($2::bigint * ($2::bigint + 1))
                                - ($3::bigint * l.k * (l.k + 1)) / ($2::bigint * ($2::bigint + 1)) AS n) n
       CROSS JOIN LATERAL generate_series(1, n.n) AS s`,
    [account, chats, messages],
  );
  await db.query(
    `UPDATE chats c SET last_seq = x.seq, last_seq_at = x.at
       FROM (SELECT m.chat_id, max(m.seq) AS seq, max(m.created_at) AS at
               FROM messages m JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.account_id = $1::uuid
              GROUP BY m.chat_id) x
      WHERE c.id = x.chat_id`,
    [account],
  );
  await fillLastMessages(db);
  await db.query(
    `INSERT INTO read_markers (account_id, chat_id, seq)
     SELECT $1::uuid, x.id, CASE WHEN x.r % 3 = 1 THEN x.last_seq ELSE greatest(x.last_seq - x.r % 37, 0) END
       FROM (SELECT c.id, c.last_seq, row_number() OVER (ORDER BY c.id) AS r
               FROM chats c JOIN chat_members cm ON cm.chat_id = c.id AND cm.account_id = $1::uuid
              WHERE c.last_seq > 0) x
      WHERE x.r % 3 <> 0`,
    [account],
  );
  return stored.rowCount ?? 0;
}

/**
 * Puts each chat's last message onto its row, as every write path of the app keeps it (migration 012's
 * fill), for chats whose messages the bench stored with SQL of its own.
 */
export async function fillLastMessages(db: pg.Pool): Promise<void> {
  await db.query(FILL_LAST_MESSAGE_HEADS_SQL);
}
