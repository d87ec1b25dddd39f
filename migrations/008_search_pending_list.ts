import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * The trigram index (typo-tolerant search) takes new messages through GIN's
 * pending list (`fastupdate = on`), kept small (`gin_pending_list_limit` =
 * 256 kB): an insert appends its entries to the list, and when the list
 * passes 256 kB the inserting statement moves it into the index in one
 * sorted pass. A message has some fifty trigrams; inserting them straight
 * into the index (fastupdate off, as 002 made it) was most of the cost of
 * storing a message, and bounded how fast one chat could be written
 * (docs/storage-modes.md has the measurements). A search scans the list
 * besides the index, which at 256 kB stays cheap.
 *
 * The full-text index keeps fastupdate off: a message has a handful of words,
 * so inserting them directly is cheap, and a pending list would make the
 * planner price that index higher and sometimes prefer scanning the caller's
 * chats for an exact search (the EXPLAIN test in tests/search.test.ts).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (fastupdate = on, gin_pending_list_limit = 256);
  `);
}

/** Back to inserting straight into the index, with what waits in its list moved in first. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (fastupdate = off);
    ALTER INDEX messages_text_trgm_idx RESET (gin_pending_list_limit);
    SELECT gin_clean_pending_list('messages_text_trgm_idx'::regclass);
  `);
}
