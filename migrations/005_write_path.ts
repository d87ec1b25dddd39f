import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * The write path (docs/storage-modes.md):
 * - `chats.last_seq_at`: the time of the chat's last message. A new message's
 *   `created_at` is max(this, clock_timestamp()) taken while the chat row is
 *   locked, so a message later in the chat order never carries an earlier
 *   time, even when the clock steps back.
 * - `idempotency_keys`: `Idempotency-Key` / WebSocket `client_id` → the
 *   message id first answered, per owner (the account; with auth off the
 *   posting user_id). The primary key is what makes a racing retry lose.
 *   No foreign key to messages: in the write-behind mode the row comes later,
 *   in the no-storage mode never. Rows older than 24 h are expired (ignored,
 *   then deleted by the messages app).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    ALTER TABLE chats ADD COLUMN last_seq_at timestamptz;

    CREATE TABLE idempotency_keys (
      owner_id uuid NOT NULL,
      key varchar(255) NOT NULL,
      message_id uuid NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (owner_id, key)
    );
    CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
  `);
}

/** Drops what `up` added. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP TABLE IF EXISTS idempotency_keys;
    ALTER TABLE chats DROP COLUMN IF EXISTS last_seq_at;
  `);
}
