import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * Room in the search indexes' pending lists for the cleaner beside the write
 * path (messenger/apps/messages/index-upkeep.ts): the trigram index's list
 * may grow to 2 MB and the full-text index's to 512 kB before an insert moves
 * it into the index itself. The cleaner moves the lists after each store
 * (INDEX_CLEAN_MS apart), so at the write rates measured they stay far below
 * these limits and no insert pays for the move; the limits only bound how
 * much a search scans besides the index when the cleaner is off or behind.
 * At 256 and 64 kB (008, 009) a synchronizer batch of a few hundred messages
 * filled a list on its own, so almost every batch paid for a move.
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (gin_pending_list_limit = 1024);
    ALTER INDEX messages_text_fts_idx SET (gin_pending_list_limit = 256);
  `);
}

/** The limits of 008 and 009. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER INDEX messages_text_trgm_idx SET (gin_pending_list_limit = 256);
    ALTER INDEX messages_text_fts_idx SET (gin_pending_list_limit = 64);
  `);
}
