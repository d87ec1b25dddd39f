import type { Knex } from 'knex';
import type { Db } from '../infra/db';

export interface FoundMessage {
  id: string;
  chat_id: string;
  text: string;
  created_at: Date;
}

// Messages of the chats the account is a member of. The tsvector expression
// must stay identical to the index in migrations/002_search.ts.
const EXACT = `
  SELECT m.id, m.chat_id, m.text, m.created_at
    FROM messages m
   WHERE m.chat_id IN (SELECT chat_id FROM chat_members WHERE account_id = ?)
     AND to_tsvector('simple'::regconfig, m.text) @@ phraseto_tsquery('simple'::regconfig, ?)
   ORDER BY m.created_at DESC, m.id DESC
   LIMIT ?`;

// word_similarity (<%) finds the phrase inside longer text despite a typo or two;
// the trigram index serves it.
const FUZZY = `
  SELECT m.id, m.chat_id, m.text, m.created_at
    FROM messages m
   WHERE m.chat_id IN (SELECT chat_id FROM chat_members WHERE account_id = ?)
     AND ? <% m.text
     AND NOT (m.id = ANY (?::uuid[]))
   ORDER BY m.created_at DESC, m.id DESC
   LIMIT ?`;

/** Lowest word similarity that still counts as a match: two typos in a short phrase pass. */
export const FUZZY_THRESHOLD = 0.45;

/** The SQL of the exact phrase query, for EXPLAIN in tests. */
export const EXACT_SEARCH_SQL = EXACT;

async function withDeadline<T>(db: Db, timeoutMs: number, run: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return db.transaction(async (trx) => {
    // SET LOCAL takes no bind parameters; the value is an integer we computed.
    await trx.raw(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    return run(trx);
  });
}

/** Messages matching the phrase exactly (case-insensitive, words in order), newest first. */
export async function searchExact(db: Db, accountId: string, phrase: string, limit: number, timeoutMs: number): Promise<FoundMessage[]> {
  return withDeadline(db, timeoutMs, async (trx) => {
    const res = (await trx.raw(EXACT, [accountId, phrase, limit])) as { rows: FoundMessage[] };
    return res.rows;
  });
}

/** Messages containing something close to the phrase (typos), excluding `exclude`, newest first. */
export async function searchFuzzy(
  db: Db,
  accountId: string,
  phrase: string,
  exclude: string[],
  limit: number,
  timeoutMs: number,
): Promise<FoundMessage[]> {
  return withDeadline(db, timeoutMs, async (trx) => {
    await trx.raw(`SET LOCAL pg_trgm.word_similarity_threshold = ${FUZZY_THRESHOLD}`);
    const res = (await trx.raw(FUZZY, [accountId, phrase, exclude, limit])) as { rows: FoundMessage[] };
    return res.rows;
  });
}
