import type { Knex } from 'knex';

/**
 * The chat list ranks an account's chats by `coalesce(chats.last_seq_at,
 * created_at)` alone (messenger/db/chats.ts), without a probe into messages
 * per chat. Every write path sets `last_seq_at` to the stored time of the
 * chat's last message (its messages carry that time), but a chat last written
 * before 005 added the column has it NULL: this fills it from the chat's last
 * message, once. No index is added: `last_seq_at` changes with every message,
 * and an index on it would turn each of those chat-row updates from a HOT
 * update into one that writes every index of `chats`.
 *
 * Rollback leaves the filled times in place: they are the values the earlier
 * statement computed for those chats anyway, and the write path keeps them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(
    `UPDATE chats c SET last_seq_at = m.created_at
       FROM messages m
      WHERE c.last_seq_at IS NULL AND c.last_seq > 0 AND m.chat_id = c.id AND m.seq = c.last_seq`,
  );
}

/** Nothing to undo (see above). */
export async function down(): Promise<void> {}
