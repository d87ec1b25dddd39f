import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * Conversations: direct chats, read markers, join order, and the indexes the
 * chat list and the people search use.
 *
 * - A direct chat is a chat row carrying its two accounts in a fixed order
 *   (smaller uuid first); the unique index on that pair is what makes "one
 *   direct chat per pair" hold when both sides create it at the same moment
 *   (insert-or-fetch, never check-then-insert).
 * - A read marker stores the per-chat `seq` of the last message the account
 *   has read, so unread = chats.last_seq - marker.seq: O(1) per chat.
 * - join_order numbers memberships, so members are listed in join order even
 *   when two joined in the same transaction (a direct chat's two members).
 *   Adding it rewrites chat_members once.
 * - users_name_prefix_idx: lower(user_name) under the "C" collation, so a
 *   `LIKE 'abc%'` on it is a range scan of the index in index order, which a
 *   LIMIT stops early (the people search never reads every match).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER TABLE chats ADD COLUMN direct_a uuid REFERENCES users (id) ON DELETE CASCADE;
    ALTER TABLE chats ADD COLUMN direct_b uuid REFERENCES users (id) ON DELETE CASCADE;
    ALTER TABLE chats ADD CONSTRAINT chats_direct_pair_ck
      CHECK ((direct_a IS NULL AND direct_b IS NULL) OR direct_a < direct_b);
    CREATE UNIQUE INDEX chats_direct_pair_uq ON chats (direct_a, direct_b) WHERE direct_a IS NOT NULL;
    CREATE INDEX chats_owner_idx ON chats (owner_id);

    ALTER TABLE chat_members ADD COLUMN join_order bigint GENERATED ALWAYS AS IDENTITY;
    CREATE INDEX chat_members_chat_order_idx ON chat_members (chat_id, join_order);

    CREATE TABLE read_markers (
      account_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      chat_id uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
      seq bigint NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (account_id, chat_id)
    );
    CREATE INDEX read_markers_chat_idx ON read_markers (chat_id);

    CREATE INDEX users_name_prefix_idx ON users ((lower(user_name) COLLATE "C"), user_name);
  `);
}

/** Drops everything `up` created. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP INDEX IF EXISTS users_name_prefix_idx;
    DROP TABLE IF EXISTS read_markers;
    DROP INDEX IF EXISTS chat_members_chat_order_idx;
    ALTER TABLE chat_members DROP COLUMN IF EXISTS join_order;
    DROP INDEX IF EXISTS chats_owner_idx;
    DROP INDEX IF EXISTS chats_direct_pair_uq;
    ALTER TABLE chats DROP CONSTRAINT IF EXISTS chats_direct_pair_ck;
    ALTER TABLE chats DROP COLUMN IF EXISTS direct_b;
    ALTER TABLE chats DROP COLUMN IF EXISTS direct_a;
  `);
}
