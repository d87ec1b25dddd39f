import type { Knex } from 'knex';
import { runStatements } from './util';

/** Users, sessions, chats, members and messages, with the indexes their queries use. */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    CREATE TABLE users (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_name varchar(255) NOT NULL UNIQUE,
      password_hash text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    -- The token itself is never stored: only its SHA-256, so a database dump
    -- does not hand out live sessions.
    CREATE TABLE sessions (
      token_hash bytea PRIMARY KEY,
      user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      revoked_at timestamptz
    );
    CREATE INDEX sessions_user_id_idx ON sessions (user_id);

    -- last_seq is the per-chat message counter; taking it with UPDATE locks the
    -- chat row until commit, so sequence order is commit order.
    CREATE TABLE chats (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      chat_name varchar(255) NOT NULL,
      owner_id uuid REFERENCES users (id) ON DELETE SET NULL,
      last_seq bigint NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    -- A member is an identity inside one chat (the API's user_id). With accounts
    -- it belongs to one account (once per chat); without, the name is the identity.
    CREATE TABLE chat_members (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      chat_id uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
      user_name varchar(255) NOT NULL,
      account_id uuid REFERENCES users (id) ON DELETE CASCADE,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX chat_members_account_uq ON chat_members (chat_id, account_id) WHERE account_id IS NOT NULL;
    CREATE UNIQUE INDEX chat_members_name_uq ON chat_members (chat_id, user_name) WHERE account_id IS NULL;
    CREATE INDEX chat_members_account_idx ON chat_members (account_id, chat_id);

    CREATE TABLE messages (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      chat_id uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
      member_id uuid NOT NULL REFERENCES chat_members (id) ON DELETE CASCADE,
      seq bigint NOT NULL,
      text text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX messages_chat_seq_uq ON messages (chat_id, seq);
    CREATE INDEX messages_member_idx ON messages (member_id);
  `);
}

/** Drops everything `up` created. */
export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TABLE IF EXISTS messages, chat_members, chats, sessions, users CASCADE');
}
