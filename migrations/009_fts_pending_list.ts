import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * The full-text index, too, takes new messages through GIN's pending list,
 * kept smaller than the trigram index's (`gin_pending_list_limit` = 64 kB):
 * inserting a message's words straight into the index was about a third of
 * what storing a batch cost once 008 had moved the trigrams to their list
 * (250 rows: 32 → 24 ms, docs/performance.md). A search scans the list
 * besides the index; 64 kB is eight pages, which keeps the planner's price
 * of the index below that of reading the caller's chats (the EXPLAIN test in
 * tests/search.test.ts checks the plan with a full list).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_fts_idx SET (fastupdate = on, gin_pending_list_limit = 64);
  `);
}

/** Back to inserting straight into the index, with what waits in its list moved in first. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_fts_idx SET (fastupdate = off);
    ALTER INDEX messages_text_fts_idx RESET (gin_pending_list_limit);
    SELECT gin_clean_pending_list('messages_text_fts_idx'::regclass);
  `);
}
