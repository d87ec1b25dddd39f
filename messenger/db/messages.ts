import { prepared, type Queryable } from '../infra/db';
import { jsonTextArray, wireMessageEnd, wireMessageHead } from './wire';

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
 * `insertMessage`'s statement (exported for the benchmark's baseline; its
 * parameters come from `insertMessageParams`). The message id is drawn first,
 * so the chat-row update can keep it as the chat's last message.
 */
export const INSERT_MESSAGE_SQL = `WITH member AS (
        SELECT id, user_name, gen_random_uuid() AS message_id FROM chat_members
         WHERE id = ? AND chat_id = ? AND (?::uuid IS NULL OR account_id = ?::uuid)),
      chat AS (
        UPDATE chats c SET last_seq = c.last_seq + 1, last_seq_at = greatest(c.last_seq_at, clock_timestamp()),
               last_message_head = ${wireMessageHead('member.message_id', 'member.id', 'member.user_name', '?::text')}
          FROM member WHERE c.id = ?
         RETURNING c.id, c.last_seq, c.last_seq_at, member.message_id),
      ins AS (
        INSERT INTO messages (id, chat_id, member_id, seq, text, created_at)
        SELECT chat.message_id, chat.id, ?, chat.last_seq, ?, chat.last_seq_at FROM chat
        RETURNING id, seq, created_at)
     SELECT ins.id, ins.seq::int AS seq, ins.created_at, member.user_name FROM ins, member`;

/** The parameters of INSERT_MESSAGE_SQL, in order. */
export function insertMessageParams(chatId: string, memberId: string, accountId: string | null, text: string): (string | null)[] {
  return [memberId, chatId, accountId, accountId, text, chatId, memberId, text];
}

/**
 * Stores a message as `memberId` in one statement. The chat row's counter is
 * taken with UPDATE, which holds the row lock until commit: per-chat sequence
 * order is therefore commit order, and a reader paging by sequence never
 * sees a later message before an earlier one. `accountId` (auth on) must own
 * the member, so nobody posts under another account's user_id. Sets the chat's
 * `last_seq_at` and last message as `storeBatch` does (the chat list ranks by
 * the one and shows the other).
 */
export async function insertMessage(
  db: Queryable,
  chatId: string,
  memberId: string,
  accountId: string | null,
  text: string,
): Promise<InsertResult> {
  const res = (await db.raw(INSERT_MESSAGE_SQL, insertMessageParams(chatId, memberId, accountId, text))
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
    .options(prepared('insert-message'))) as { rows: StoredMessage[] };
  const row = res.rows[0];
  if (row !== undefined) return row;
  const m = await memberOfChat(db, chatId, memberId, accountId);
  return 'missing' in m ? m : { missing: 'member' };
}

/** One message of a batch to store: the id is the app's (UUIDv7). */
export interface BatchItem {
  id: string;
  chatId: string;
  memberId: string;
  /** With auth on, the account that must own the member; null skips the check. */
  accountId: string | null;
  text: string;
  /** `Idempotency-Key` and whose namespace it is in; the key row is written in the same statement. */
  key?: { ownerId: string; key: string };
}

/** A message the batch stored, by its index in the batch. */
export interface StoredInBatch extends StoredMessage {
  index: number;
}

/**
 * How long an idempotency key holds its first answer. Written into the SQL
 * below as a literal so the statements stay constant (prepared once).
 */
export const IDEMPOTENCY_TTL_HOURS = 24;

// One statement, so one transaction and one WAL flush for the whole batch
// (exported for the benchmark's bare baseline, which runs the very same SQL):
// - member: the items whose user_id is a member of their chat (owned by the
//   account when one is given) and whose id is not stored yet (a redelivered
//   write-behind message);
// - keyed: their idempotency keys, inserted; a key held by another (even
//   concurrent: the insert waits for that transaction) returns nothing, so
//   that item is dropped, and the caller answers the first message's id;
// - locked: the chat rows, locked in id order, so two batches touching the
//   same chats cannot deadlock;
// - chat: one update per chat moves its counter by the number of its items,
//   takes the time once the lock is held (never before an earlier message's
//   time: max with the chat's last) and keeps the chat's last item as its
//   last message (migration 012: its wire JSON up to the time, which the
//   chat list reads there);
// - ins: one multi-row insert, each item numbered after the counter's old value
//   in batch order;
// - the result: each inserted row with its author's name, by key. (It used to
//   join the inserted rows back to the input to return each one's place in the
//   batch; with the CTEs estimated at one row, that join was a nested loop,
//   quadratic in the batch: 18 of 50 ms for 500 rows. The caller maps ids to
//   places instead.)
export const STORE_BATCH = `
WITH input AS (
  SELECT * FROM json_to_recordset(?::json)
    AS t(o int, id uuid, chat_id uuid, member_id uuid, account_id uuid, text text, owner_id uuid, key text)
), member AS (
  SELECT i.*, m.user_name FROM input i
    JOIN chat_members m ON m.id = i.member_id AND m.chat_id = i.chat_id
   WHERE (i.account_id IS NULL OR m.account_id = i.account_id)
     AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.id = i.id)
), keyed AS (
  INSERT INTO idempotency_keys AS k (owner_id, key, message_id)
  SELECT owner_id, key, id FROM member WHERE key IS NOT NULL
  ON CONFLICT (owner_id, key) DO UPDATE SET message_id = EXCLUDED.message_id, created_at = now()
   WHERE k.created_at < now() - interval '${IDEMPOTENCY_TTL_HOURS} hours'
  RETURNING message_id
), accepted AS (
  SELECT m.*, row_number() OVER (PARTITION BY m.chat_id ORDER BY m.o) AS n, count(*) OVER (PARTITION BY m.chat_id) AS cnt
    FROM member m
   WHERE m.key IS NULL OR m.id IN (SELECT message_id FROM keyed)
), locked AS (
  SELECT c.id FROM chats c WHERE c.id IN (SELECT chat_id FROM accepted) ORDER BY c.id FOR UPDATE
), chat AS (
  UPDATE chats c SET last_seq = c.last_seq + a.cnt, last_seq_at = greatest(c.last_seq_at, clock_timestamp()),
         last_message_head = ${wireMessageHead('a.id', 'a.member_id', 'a.user_name', 'a.text')}
    FROM (SELECT DISTINCT ON (chat_id) chat_id, cnt, id, member_id, user_name, text FROM accepted ORDER BY chat_id, n DESC) a
   WHERE c.id = a.chat_id AND c.id IN (SELECT id FROM locked)
  RETURNING c.id, c.last_seq - a.cnt AS base, c.last_seq_at AS at
), ins AS (
  INSERT INTO messages (id, chat_id, member_id, seq, text, created_at)
  SELECT a.id, a.chat_id, a.member_id, chat.base + a.n, a.text, chat.at
    FROM accepted a JOIN chat ON chat.id = a.chat_id
   ORDER BY a.chat_id, a.n
  ON CONFLICT (id) DO NOTHING
  RETURNING id, member_id, seq, created_at
)
SELECT ins.id, ins.seq::int AS seq, ins.created_at, (SELECT m.user_name FROM chat_members m WHERE m.id = ins.member_id) AS user_name
  FROM ins`;

/**
 * Stores a batch of messages in one statement (group commit: one chat-row
 * update per chat, one multi-row insert, one commit). Per-chat order is the
 * batch order, after every message committed before. Items whose member is
 * not theirs to post as, whose id is stored already, or whose key is taken
 * are left out; the caller finds out which with `whyNotStored`.
 */
export async function storeBatch(db: Queryable, items: BatchItem[]): Promise<StoredInBatch[]> {
  const input = items.map((it, o) => ({
    o, id: it.id, chat_id: it.chatId, member_id: it.memberId, account_id: it.accountId, text: it.text,
    owner_id: it.key?.ownerId ?? null, key: it.key?.key ?? null,
  }));
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
  const res = (await db.raw(STORE_BATCH, [JSON.stringify(input)]).options(prepared('store-batch'))) as { rows: StoredMessage[] };
  const place = new Map(items.map((it, i) => [it.id, i]));
  return res.rows.map((r) => ({ ...r, index: place.get(r.id) as number }));
}

/**
 * Locks the chat rows of a write-behind batch in id order, inside its
 * transaction, before `storeBatch`: the insert's snapshot is then taken after
 * any other synchronizer's batch for these chats committed, so a message
 * that batch stored is seen and skipped rather than numbered twice.
 */
export async function lockChats(trx: Queryable, chatIds: string[]): Promise<void> {
  await trx.raw(
    `SELECT id FROM chats WHERE id IN (SELECT value::uuid FROM json_array_elements_text(?::json)) ORDER BY id FOR UPDATE`,
    [JSON.stringify([...new Set(chatIds)])],
  );
}

/** Which of `ids` are stored already, each with its place, time and author's name, by id. */
export async function storedMessages(db: Queryable, ids: string[]): Promise<Map<string, StoredMessage>> {
  if (ids.length === 0) return new Map();
  const res = (await db.raw(
    `SELECT x.id, x.seq::int AS seq, x.created_at, m.user_name
       FROM messages x JOIN chat_members m ON m.id = x.member_id
      WHERE x.id IN (SELECT value::uuid FROM json_array_elements_text(?::json))`,
    [JSON.stringify(ids)],
  )) as { rows: StoredMessage[] };
  return new Map(res.rows.map((r) => [r.id, r]));
}

/**
 * The poster's name in the chat when `memberId` is a member of `chatId` that
 * `accountId` (when given) owns, else which of the two is missing. A chat
 * the account may not read (neither its creator nor a member) is missing
 * like one that does not exist: answering "member" there would tell a
 * stranger that the chat exists.
 */
export async function memberOfChat(
  db: Queryable,
  chatId: string,
  memberId: string,
  accountId: string | null,
): Promise<{ userName: string } | { missing: 'chat' | 'member' }> {
  const res = (await db.raw(
    `SELECT c.id AS chat, m.user_name,
            CASE WHEN m.user_name IS NOT NULL OR ?::uuid IS NULL OR c.owner_id = ?::uuid THEN true
                 ELSE EXISTS (SELECT 1 FROM chat_members x WHERE x.chat_id = c.id AND x.account_id = ?::uuid) END AS readable
       FROM chats c
       LEFT JOIN chat_members m ON m.chat_id = c.id AND m.id = ? AND (?::uuid IS NULL OR m.account_id = ?::uuid)
      WHERE c.id = ?`,
    [accountId, accountId, accountId, memberId, accountId, accountId, chatId],
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
  ).options(prepared('member-of-chat'))) as { rows: { chat: string; user_name: string | null; readable: boolean }[] };
  const row = res.rows[0];
  if (row === undefined || !row.readable) return { missing: 'chat' };
  if (row.user_name === null) return { missing: 'member' };
  return { userName: row.user_name };
}

/**
 * A page of a chat: its messages as the JSON text of their wire form and the
 * id of the last one (null on an empty page), or why there is none.
 */
export type PageResult = { messages: string; lastId: string | null } | { missing: 'chat' | 'cursor' };

/**
 * The page statement (exported for the benchmark's baseline; its parameters
 * come from `pageOfChatParams`). The chat row answers whether the chat
 * exists, whether the account may read it and where the cursor is; the page
 * is an index range of (chat_id, seq) after the cursor. The messages come out
 * as one text, the JSON array of their wire form (db/wire.ts), built by
 * PostgreSQL, so the web process sends it without parsing rows and
 * serialising them again (docs/performance.md, "Lists as JSON from
 * PostgreSQL").
 */
export const PAGE_OF_CHAT_SQL = `WITH c AS (
        SELECT c.id,
               (?::uuid IS NULL OR c.owner_id = ?::uuid OR EXISTS (
                  SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid)) AS allowed,
               CASE WHEN ?::uuid IS NULL THEN 0::bigint
                    ELSE (SELECT seq FROM messages WHERE id = ?::uuid AND chat_id = c.id) END AS cursor_seq
          FROM chats c WHERE c.id = ?),
      p AS (
        SELECT p.* FROM c CROSS JOIN LATERAL (
          SELECT m.id, m.text, m.member_id, cm.user_name, m.created_at, m.seq
            FROM messages m JOIN chat_members cm ON cm.id = m.member_id
           WHERE c.allowed AND m.chat_id = c.id AND m.seq > c.cursor_seq
           ORDER BY m.seq
           LIMIT ?) p)
     SELECT c.allowed, c.cursor_seq IS NOT NULL AS cursor_ok,
            (SELECT ${jsonTextArray(`${wireMessageHead('p.id', 'p.member_id', 'p.user_name', 'p.text')} || ${wireMessageEnd('p.created_at')}`, 'p.seq')}
               FROM p) AS messages,
            (SELECT p.id FROM p ORDER BY p.seq DESC LIMIT 1) AS last_id
       FROM c`;

/** The parameters of PAGE_OF_CHAT_SQL, in order. */
export function pageOfChatParams(chatId: string, accountId: string | null, cursorId: string | null, limit: number): (string | number | null)[] {
  return [accountId, accountId, accountId, cursorId, cursorId, chatId, limit];
}

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
  const res = (await db.raw(PAGE_OF_CHAT_SQL, pageOfChatParams(chatId, accountId, cursorId, limit))
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
    .options(prepared('page-of-chat'))) as { rows: { allowed: boolean; cursor_ok: boolean; messages: string; last_id: string | null }[] };
  const row = res.rows[0];
  if (row === undefined || !row.allowed) return { missing: 'chat' };
  if (!row.cursor_ok) return { missing: 'cursor' };
  return { messages: row.messages, lastId: row.last_id };
}

/** A stored message with its place in the chat, as the real-time gateway sends it. */
export interface SeqMessageRow extends MessageRow {
  seq: number;
}

/** One chat of a resume: where it starts (or why it cannot) and, when it can, what follows (as `messagesAfter`). */
export type ResumeReplay = { missing: 'chat' | 'cursor' } | { afterSeq: number; rows: SeqMessageRow[]; lastSeq: number };

/**
 * For each chat of a resume, in the order asked, in one statement: where a
 * client that has read up to `cursorId` (null: nothing yet) continues, when
 * `accountId` may read the chat (its creator or a member; null account:
 * anyone), and up to `limit` messages after that point with the chat's
 * current last position. A chat the account may not read is missing, and so
 * is a cursor that is not a message of the chat.
 */
export async function resumeReplays(
  db: Queryable,
  accountId: string | null,
  asked: { chatId: string; cursorId: string | null }[],
  limit: number,
): Promise<ResumeReplay[]> {
  if (asked.length === 0) return [];
  const res = (await db.raw(
    `WITH asked AS (
       SELECT a.ord, a.chat_id, a.cursor_id FROM unnest(?::uuid[], ?::uuid[]) WITH ORDINALITY AS a(chat_id, cursor_id, ord)
     ), points AS (
       SELECT asked.ord, c.id AS chat_id, c.last_seq::int AS last_seq,
              c.id IS NOT NULL AND (?::uuid IS NULL OR c.owner_id = ?::uuid OR EXISTS (
                SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.account_id = ?::uuid)) AS allowed,
              CASE WHEN asked.cursor_id IS NULL THEN 0
                   ELSE (SELECT seq::int FROM messages WHERE id = asked.cursor_id AND chat_id = c.id) END AS cursor_seq
         FROM asked LEFT JOIN chats c ON c.id = asked.chat_id
     )
     SELECT p.ord::int AS ord, p.allowed, p.cursor_seq, p.last_seq, r.id, r.text, r.member_id, r.user_name, r.created_at, r.seq
       FROM points p LEFT JOIN LATERAL (
         SELECT m.id, m.text, m.member_id, cm.user_name, m.created_at, m.seq::int AS seq
           FROM messages m JOIN chat_members cm ON cm.id = m.member_id
          WHERE p.allowed AND m.chat_id = p.chat_id AND m.seq > p.cursor_seq
          ORDER BY m.seq
          LIMIT ?) r ON true
      ORDER BY p.ord, r.seq`,
    // A null cursor is a NULL element of the array (the driver writes it so); knex's types only know string[].
    [asked.map((a) => a.chatId), asked.map((a) => a.cursorId) as string[], accountId, accountId, accountId, limit],
  )) as {
    rows: (Omit<SeqMessageRow, 'id'> & { ord: number; allowed: boolean; cursor_seq: number | null; last_seq: number; id: string | null })[];
  };
  const out: ResumeReplay[] = asked.map(() => ({ missing: 'chat' }));
  for (const r of res.rows) {
    const at = Number(r.ord) - 1;
    if (!r.allowed) continue;
    if (r.cursor_seq === null) {
      out[at] = { missing: 'cursor' };
      continue;
    }
    let replay = out[at];
    if ('missing' in replay) {
      replay = { afterSeq: Number(r.cursor_seq), rows: [], lastSeq: Number(r.last_seq) };
      out[at] = replay;
    }
    if (r.id !== null) replay.rows.push({ id: r.id, text: r.text, member_id: r.member_id, user_name: r.user_name, created_at: r.created_at, seq: Number(r.seq) });
  }
  return out;
}

/** The position (seq) of a stored message of a chat; undefined when it is not one. */
export async function seqOfMessage(db: Queryable, chatId: string, messageId: string): Promise<number | undefined> {
  const res = (await db.raw('SELECT seq::int AS seq FROM messages WHERE id = ? AND chat_id = ?', [messageId, chatId])) as { rows: { seq: number }[] };
  const row = res.rows[0];
  return row === undefined ? undefined : Number(row.seq);
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
  // Stryker disable next-line StringLiteral: only names the prepared statement (PGlite ignores it, PostgreSQL only caches the plan under it): same rows either way
  ).options(prepared('messages-after'))) as { rows: (Omit<SeqMessageRow, 'id'> & { id: string | null; last_seq: number })[] };
  const first = res.rows[0];
  if (first === undefined) return { rows: [], lastSeq: afterSeq };
  const rows = first.id === null ? [] : res.rows.map(({ id, text, member_id, user_name, created_at, seq }) => ({ id: id as string, text, member_id, user_name, created_at, seq: Number(seq) }));
  return { rows, lastSeq: Number(first.last_seq) };
}

/**
 * Moves what waits in the search indexes' pending lists (migrations 008-010)
 * into the indexes, unless another process is doing it right now (then it
 * returns null at once). Inserts that fill a list while this runs skip the
 * move themselves, so the move leaves the write path. Returns the pending
 * pages removed. Needs the role that owns the indexes (42501 otherwise).
 */
export async function cleanSearchPendingLists(db: Queryable): Promise<number | null> {
  const res = (await db.raw(
    // The advisory lock (held to the end of this statement) keeps a second process from queueing behind the first.
    `SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('messenger: clean search pending lists'))
                 THEN gin_clean_pending_list('messages_text_trgm_idx'::regclass) + gin_clean_pending_list('messages_text_fts_idx'::regclass)
            END AS pages`,
  )) as { rows: { pages: string | number | null }[] };
  const pages = res.rows[0]?.pages;
  return pages === null || pages === undefined ? null : Number(pages);
}
