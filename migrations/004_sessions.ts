import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * Login chains and refresh tokens. A login starts a chain; each refresh
 * replaces the chain's session and refresh token with a new pair, so the
 * chain is the unit that theft detection, logout and the absolute lifetime
 * (`REFRESH_TTL_SECONDS`) act on. Refresh tokens, like session tokens, are
 * stored only as their SHA-256.
 *
 * The chain row is what concurrent refreshes lock (`SELECT … FOR UPDATE`), so
 * every change to one chain's tokens is serialised. `first_used_at` on a
 * session tells a retried refresh (the answer was lost, the new session never
 * used) from a stolen token being replayed (the new session was used).
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    CREATE TABLE session_chains (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      revoked_at timestamptz
    );
    CREATE INDEX session_chains_user_id_idx ON session_chains (user_id);

    ALTER TABLE sessions ADD COLUMN chain_id uuid REFERENCES session_chains (id) ON DELETE CASCADE;
    ALTER TABLE sessions ADD COLUMN first_used_at timestamptz;
    CREATE INDEX sessions_chain_id_idx ON sessions (chain_id);

    -- exchanged_at: presented once and rotated; successor_hash: the latest token
    -- answered for it (a retry moves it); retired_at: replaced by a retry before use.
    CREATE TABLE refresh_tokens (
      token_hash bytea PRIMARY KEY,
      chain_id uuid NOT NULL REFERENCES session_chains (id) ON DELETE CASCADE,
      session_hash bytea NOT NULL REFERENCES sessions (token_hash) ON DELETE CASCADE,
      created_at timestamptz NOT NULL DEFAULT now(),
      exchanged_at timestamptz,
      successor_hash bytea,
      retired_at timestamptz
    );
    CREATE INDEX refresh_tokens_chain_id_idx ON refresh_tokens (chain_id);
  `);
}

/** Drops the chains and refresh tokens, and the sessions' columns for them. */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP TABLE IF EXISTS refresh_tokens;
    ALTER TABLE sessions DROP COLUMN IF EXISTS first_used_at;
    ALTER TABLE sessions DROP COLUMN IF EXISTS chain_id;
    DROP TABLE IF EXISTS session_chains;
  `);
}
