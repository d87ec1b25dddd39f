import type { Knex } from 'knex';

/**
 * The chat row keeps its last message: id, author (member id and name in the
 * chat) and text; its time is `last_seq_at`, which every write path already
 * sets to the time the message carries. The chat list (messenger/db/chats.ts)
 * then reads a page row's last message from the chat row it ranks, instead of
 * probing messages by (chat_id, last_seq) and chat_members by the author for
 * every row of the page: about half of the buffers the statement touched
 * (docs/performance.md, "Lists as JSON from PostgreSQL"). Every write path
 * (`storeBatch`, used by group commit and the synchronizer, and
 * `insertMessage`) sets the four columns in the chat-row update it already
 * makes; no index covers them, so those updates stay HOT.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE chats
      ADD COLUMN last_message_id uuid,
      ADD COLUMN last_member_id uuid,
      ADD COLUMN last_user_name text,
      ADD COLUMN last_text text`);
  await fillLastMessages(knex);
}

/**
 * Copies each chat's last message (the one at `last_seq`) onto its row where
 * it is not there yet: the migration's fill, also used by tests and the
 * benchmark after they store messages with SQL of their own.
 */
export async function fillLastMessages(knex: Knex): Promise<void> {
  await knex.raw(FILL_LAST_MESSAGES_SQL);
}

/** `fillLastMessages`'s statement (no parameters; the benchmark runs it over pg). */
export const FILL_LAST_MESSAGES_SQL = `
    UPDATE chats c
       SET last_message_id = m.id, last_member_id = m.member_id, last_user_name = cm.user_name, last_text = m.text
      FROM messages m JOIN chat_members cm ON cm.id = m.member_id
     WHERE c.last_seq > 0 AND m.chat_id = c.id AND m.seq = c.last_seq
       AND c.last_message_id IS DISTINCT FROM m.id`;

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE chats
      DROP COLUMN IF EXISTS last_message_id,
      DROP COLUMN IF EXISTS last_member_id,
      DROP COLUMN IF EXISTS last_user_name,
      DROP COLUMN IF EXISTS last_text`);
}
