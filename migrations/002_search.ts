import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * Full-text and typo-tolerant search over message text. The 'simple'
 * configuration lowercases and splits words without stemming, so it serves
 * every language alike (Russian and English in the same chat); the search
 * query uses the very same expression, which is what lets it use the index.
 * fastupdate is off: a new message goes straight into the index instead of a
 * pending list that every search would have to scan until the next vacuum
 * (with the list, the planner prefers scanning the caller's chats instead).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(
    knex,
    `
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX messages_text_fts_idx ON messages USING gin (to_tsvector('simple'::regconfig, text)) WITH (fastupdate = off);
    CREATE INDEX messages_text_trgm_idx ON messages USING gin (text gin_trgm_ops) WITH (fastupdate = off);
    `,
  );
}

/** Drops the search indexes (the extension stays: other objects may use it). */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP INDEX IF EXISTS messages_text_trgm_idx;
    DROP INDEX IF EXISTS messages_text_fts_idx;
  `);
}
