import type { Knex } from 'knex';
import { wireMessageHead } from '../messenger/db/wire';
import * as lastMessageColumns from './011_chat_last_message';

/**
 * The chat row keeps its last message as wire JSON (up to the time, which is
 * `last_seq_at`; db/wire.ts `wireMessageHead`) instead of migration 011's four
 * columns: the chat list then appends it to its item as it is, instead of
 * building a JSON object per page row (docs/performance.md, "The last message
 * as JSON on the chat row"). Every write path (`storeBatch`, `insertMessage`)
 * sets it in the chat-row update it already makes; no index covers it, so
 * those updates stay HOT.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE chats ADD COLUMN last_message_head text');
  await knex.raw(`UPDATE chats SET last_message_head = ${wireMessageHead('last_message_id', 'last_member_id', 'last_user_name', 'last_text')}
                   WHERE last_message_id IS NOT NULL`);
  await knex.raw(`
    ALTER TABLE chats
      DROP COLUMN last_message_id,
      DROP COLUMN last_member_id,
      DROP COLUMN last_user_name,
      DROP COLUMN last_text`);
}

/**
 * Puts each chat's last message (the one at `last_seq`) on its row where it
 * is not there yet, as the write paths would have: for tests and the
 * benchmark after they store messages with SQL of their own.
 */
export async function fillLastMessages(knex: Knex): Promise<void> {
  await knex.raw(FILL_LAST_MESSAGE_HEADS_SQL);
}

/** `fillLastMessages`'s statement (no parameters; the benchmark runs it over pg). */
export const FILL_LAST_MESSAGE_HEADS_SQL = `
    UPDATE chats c
       SET last_message_head = ${wireMessageHead('m.id', 'm.member_id', 'cm.user_name', 'm.text')}
      FROM messages m JOIN chat_members cm ON cm.id = m.member_id
     WHERE c.last_seq > 0 AND m.chat_id = c.id AND m.seq = c.last_seq`;

/** Back to 011: its columns, filled from `messages` as its migration fills them, then the head goes. */
export async function down(knex: Knex): Promise<void> {
  await lastMessageColumns.up(knex);
  await knex.raw('ALTER TABLE chats DROP COLUMN last_message_head');
}
