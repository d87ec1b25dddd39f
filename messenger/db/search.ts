import type { Knex } from 'knex';
import type { Db } from '../infra/db';

export interface FoundMessage {
  id: string;
  chat_id: string;
  /** The author's member id in the chat (the API's user_id). */
  member_id: string;
  user_name: string;
  text: string;
  created_at: Date;
  /** Its place in its chat: orders the messages of one chat that share a time (one batch). */
  seq: number;
}

/**
 * What a phrase asks for: its words (letters and digits, lowercased, each
 * once), and its runs of symbols such as emoji (which neither the full-text
 * parser nor pg_trgm see). When the phrase has neither (only punctuation),
 * `symbols` holds its whitespace-separated pieces, so it still matches itself.
 */
export interface SearchTerms {
  phrase: string;
  words: string[];
  symbols: string[];
}

// Letters, digits and combining marks, as the full-text parser and pg_trgm see words.
const WORD = /[\p{L}\p{N}][\p{L}\p{N}\p{M}]*/gu;
// A symbol with what may follow it inside one emoji: skin tones, variation selectors, joiners.
const SYMBOL = /\p{S}[\p{S}\p{M}\u200d]*/gu;

/** Splits a phrase into the words and symbol runs every result must contain. */
export function searchTerms(phrase: string): SearchTerms {
  const trimmed = phrase.trim();
  const words = [...new Set(Array.from(trimmed.matchAll(WORD), (m) => m[0].toLowerCase()))];
  let symbols = [...new Set(Array.from(trimmed.matchAll(SYMBOL), (m) => m[0]))];
  if (words.length === 0 && symbols.length === 0) symbols = [...new Set(trimmed.split(/\s+/).filter((s) => s.length > 0))];
  return { phrase: trimmed, words, symbols };
}

const SELECT = `
  SELECT m.id, m.chat_id, m.member_id, cm.user_name, m.text, m.created_at, m.seq::int AS seq
    FROM messages m
    JOIN chat_members cm ON cm.id = m.member_id
   WHERE m.chat_id IN (SELECT chat_id FROM chat_members WHERE account_id = ?)`;

// Messages of the chats the account is a member of. The tsvector expression
// must stay identical to the index in migrations/002_search.ts.
const EXACT = `${SELECT}
     AND to_tsvector('simple'::regconfig, m.text) @@ phraseto_tsquery('simple'::regconfig, ?)
     %SYMBOLS%
   ORDER BY m.created_at DESC, m.seq DESC, m.id DESC
   LIMIT ?`;

// The full-text parser drops symbols, so each symbol run is checked as it is.
function symbolConditions(terms: SearchTerms): string {
  return terms.symbols.map(() => 'AND strpos(m.text, ?) > 0').join('\n     ');
}

/** The exact query of a phrase: its words as a phrase, and its symbol runs as they are. */
function exactSql(terms: SearchTerms): string {
  return EXACT.replace('%SYMBOLS%', symbolConditions(terms));
}

/**
 * The near-match query for a phrase: every word must be in the text, exactly
 * or within the typo tolerance (strict word similarity `<<%`, which compares
 * the word with whole words of the text, so one strong word cannot stand in
 * for another), and every symbol run must occur in it as it is. The trigram
 * index serves the word conditions; a phrase of symbols alone has nothing
 * for it (pg_trgm ignores non-word characters) and reads the caller's chats.
 */
function nearSql(terms: SearchTerms): { sql: string; bindings: string[] } {
  const sql = `${SELECT}
     ${terms.words.map(() => 'AND ? <<% m.text').join('\n     ')}
     ${symbolConditions(terms)}
     AND NOT (m.id = ANY (?::uuid[]))
   ORDER BY m.created_at DESC, m.seq DESC, m.id DESC
   LIMIT ?`;
  return { sql, bindings: [...terms.words, ...terms.symbols] };
}

/**
 * Lowest strict word similarity at which a word of the text still counts as a
 * phrase word: one typo in a five-letter word (0.33) passes, a word sharing
 * only its first letters with it ('hello', 'helicopter': 0.21) does not.
 */
export const FUZZY_THRESHOLD = 0.3;

/** The SQL of the exact phrase query, for EXPLAIN in tests. */
export const EXACT_SEARCH_SQL = exactSql({ phrase: '', words: [], symbols: [] });

/** The SQL of the near-match query of a phrase and its bindings before the account (for EXPLAIN in tests). */
export function nearSearchSql(phrase: string): { sql: string; terms: string[] } {
  const { sql, bindings } = nearSql(searchTerms(phrase));
  return { sql, terms: bindings };
}

/** Runs `run` in a transaction whose statements PostgreSQL cancels after `timeoutMs` (code 57014). */
export async function withDeadline<T>(db: Db, timeoutMs: number, run: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return db.transaction(async (trx) => {
    // SET LOCAL takes no bind parameters; the value is an integer we computed.
    await trx.raw(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    return run(trx);
  });
}

/** Messages matching the phrase exactly (case-insensitive, words in order), newest first. */
export async function searchExact(db: Db, accountId: string, phrase: string, limit: number, timeoutMs: number): Promise<FoundMessage[]> {
  // A phrase without words has no full-text query (it would match nothing, with a notice).
  const terms = searchTerms(phrase);
  if (terms.words.length === 0) return [];
  return withDeadline(db, timeoutMs, async (trx) => {
    const res = (await trx.raw(exactSql(terms), [accountId, terms.phrase, ...terms.symbols, limit])) as { rows: FoundMessage[] };
    return res.rows;
  });
}

/** Messages containing every word of the phrase (typos allowed) and its symbols, excluding `exclude`, newest first. */
export async function searchFuzzy(
  db: Db,
  accountId: string,
  phrase: string,
  exclude: string[],
  limit: number,
  timeoutMs: number,
): Promise<FoundMessage[]> {
  const terms = searchTerms(phrase);
  if (terms.words.length === 0 && terms.symbols.length === 0) return [];
  const { sql, bindings } = nearSql(terms);
  return withDeadline(db, timeoutMs, async (trx) => {
    await trx.raw(`SET LOCAL pg_trgm.strict_word_similarity_threshold = ${FUZZY_THRESHOLD}`);
    const res = (await trx.raw(sql, [accountId, ...bindings, exclude, limit])) as { rows: FoundMessage[] };
    return res.rows;
  });
}

/**
 * The messages of a search result page by id (dashed), in the order given; an
 * id that is not stored is left out. A task keeps only the ids of its results,
 * so what it holds does not grow with the length of the messages found.
 */
export async function foundMessages(db: Db, ids: string[]): Promise<FoundMessage[]> {
  if (ids.length === 0) return [];
  const res = (await db.raw(
    `SELECT m.id, m.chat_id, m.member_id, cm.user_name, m.text, m.created_at, m.seq::int AS seq
       FROM json_array_elements_text(?::json) WITH ORDINALITY AS r(id, n)
       JOIN messages m ON m.id = r.id::uuid
       JOIN chat_members cm ON cm.id = m.member_id
      ORDER BY r.n`,
    [JSON.stringify(ids)],
  )) as { rows: FoundMessage[] };
  return res.rows;
}
