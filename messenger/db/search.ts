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
 * Shortest and longest words (in characters) whose swapped spellings a near
 * match also accepts. Swapping two neighbouring letters of a word of three or
 * fewer mostly gives another word ('on'/'no', 'of'/'fo', 'cat'/'act'), and
 * changes most of it, so those are left to the trigram match. From seven
 * letters on, the trigram match alone finds a swap (it changes four of the
 * word's trigrams: at least 4/12 = 0.33 at seven letters; all 31,500 swaps of
 * 3,000 random words of 7 to 16 letters passed, and those of words with
 * doubled letters such as 'balloon'), so the longest bound, with room to
 * spare, only keeps the query of a long phrase small.
 */
export const SWAP_MIN_LENGTH = 4;
export const SWAP_MAX_LENGTH = 12;

// A letter or digit (not a combining mark, which stays with its letter).
const SWAPPABLE = /^[\p{L}\p{N}]$/u;

/**
 * The spellings of a word with two neighbouring letters swapped ('mnago' for
 * 'mango'), each once and never the word itself (a doubled letter swaps into
 * the same word), for words of SWAP_MIN_LENGTH to SWAP_MAX_LENGTH characters.
 */
export function swapVariants(word: string): string[] {
  const chars = Array.from(word);
  if (chars.length < SWAP_MIN_LENGTH || chars.length > SWAP_MAX_LENGTH) return [];
  const variants = new Set<string>();
  for (let i = 0; i + 1 < chars.length; i++) {
    if (chars[i] === chars[i + 1] || !SWAPPABLE.test(chars[i]) || !SWAPPABLE.test(chars[i + 1])) continue;
    const swapped = [...chars];
    [swapped[i], swapped[i + 1]] = [chars[i + 1], chars[i]];
    variants.add(swapped.join(''));
  }
  return [...variants];
}

/**
 * The condition one phrase word puts on a message, and its bindings: the word
 * within the typo tolerance (strict word similarity `<<%`, which compares the
 * word with whole words of the text, so one strong word cannot stand in for
 * another), or one of its swapped spellings as a whole word of the text (an
 * OR of them against the full-text index: a swap destroys most trigrams of a
 * short word, 'mnago' and 'mango' share none of their inner ones).
 */
function wordCondition(word: string, variants: string[]): { sql: string; bindings: string[] } {
  if (variants.length === 0) return { sql: 'AND ? <<% m.text', bindings: [word] };
  return {
    sql: "AND (? <<% m.text OR to_tsvector('simple'::regconfig, m.text) @@ to_tsquery('simple'::regconfig, ?))",
    // Words are letters, digits and marks only (WORD), so they need no quoting in a tsquery.
    bindings: [word, variants.join(' | ')],
  };
}

/**
 * The near-match query for a phrase: every word must be in the text, exactly
 * or within the typo tolerance or with two neighbouring letters swapped
 * (wordCondition), and every symbol run must occur in it as it is. The
 * trigram and full-text indexes serve the word conditions; a phrase of
 * symbols alone has nothing for them (pg_trgm ignores non-word characters)
 * and reads the caller's chats.
 */
function nearSql(terms: SearchTerms, present: (variant: string) => boolean): { sql: string; bindings: string[] } {
  const words = terms.words.map((w) => wordCondition(w, swapVariants(w).filter(present)));
  const sql = `${SELECT}
     ${words.map((w) => w.sql).join('\n     ')}
     ${symbolConditions(terms)}
     AND NOT (m.id = ANY (?::uuid[]))
   ORDER BY m.created_at DESC, m.seq DESC, m.id DESC
   LIMIT ?`;
  return { sql, bindings: [...words.flatMap((w) => w.bindings), ...terms.symbols] };
}

/**
 * Lowest strict word similarity at which a word of the text still counts as a
 * phrase word: one typo in a five-letter word (0.33) passes, a word sharing
 * only its first letters with it ('hello', 'helicopter': 0.21) does not.
 */
export const FUZZY_THRESHOLD = 0.3;

/** The SQL of the exact phrase query, for EXPLAIN in tests. */
export const EXACT_SEARCH_SQL = exactSql({ phrase: '', words: [], symbols: [] });

/**
 * The SQL of the near-match query of a phrase and its bindings before the
 * account (for EXPLAIN in tests), with every swapped spelling of its words, as
 * if each occurred in some message.
 */
export function nearSearchSql(phrase: string): { sql: string; terms: string[] } {
  const { sql, bindings } = nearSql(searchTerms(phrase), () => true);
  return { sql, terms: bindings };
}

/**
 * Which of the swapped spellings occur as a word of some message: one probe of
 * the full-text index each. Most of them are not words at all; left in the
 * near-match query, the planner prices each at up to 0.5 % of the table (it
 * has no statistics for a word that is nowhere), which over 240,000 messages
 * made 'hello world' take 246 ms instead of 137 (medians of five), and with
 * stale statistics on chat_members turned it to reading the caller's 40 chats
 * one by one (540 ms). With only the spellings that occur, a phrase none of
 * whose swapped spellings is a word anywhere runs the query it ran before.
 */
const PRESENT_VARIANTS = `
  SELECT v FROM unnest(?::text[]) AS v
   WHERE EXISTS (SELECT 1 FROM messages m WHERE to_tsvector('simple'::regconfig, m.text) @@ to_tsquery('simple'::regconfig, v))`;

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
  const variants = [...new Set(terms.words.flatMap(swapVariants))];
  return withDeadline(db, timeoutMs, async (trx) => {
    await trx.raw(`SET LOCAL pg_trgm.strict_word_similarity_threshold = ${FUZZY_THRESHOLD}`);
    const present = new Set<string>();
    if (variants.length > 0) {
      const found = (await trx.raw(PRESENT_VARIANTS, [variants])) as { rows: { v: string }[] };
      for (const r of found.rows) present.add(r.v);
    }
    const { sql, bindings } = nearSql(terms, (v) => present.has(v));
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
