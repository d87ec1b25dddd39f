import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * Room in the trigram index's pending list for the cleaner beside the write
 * path (messenger/apps/messages/index-upkeep.ts): it may grow to 1 MB before
 * an insert moves it into the index itself. The cleaner moves the lists
 * after each store (INDEX_CLEAN_MS apart), so at the write rates measured
 * they stay below the limits and inserts rarely pay for the move; the limits
 * bound how much a search scans besides the index when the cleaner is off
 * (the embedded mode) or behind. At 256 kB (008) a synchronizer batch of a
 * few hundred messages filled the list on its own, so almost every batch
 * paid for a move. The full-text index keeps its 64 kB (009): at 256 kB,
 * with the list full, the planner priced that index above reading the
 * caller's chats (the EXPLAIN test in tests/search.test.ts), and a message's
 * few words fill it slowly.
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (gin_pending_list_limit = 1024);
  `);
}

/** The limit of 008. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (gin_pending_list_limit = 256);
  `);
}
