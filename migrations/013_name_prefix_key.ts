import type { Knex } from 'knex';
import { runStatements } from './util';

/**
 * People search by the normalised name (messenger/names.ts `nameKey`, what
 * login and name uniqueness use): users_name_prefix_idx was on
 * lower(user_name), so a full-width (`ＡＬＩ`) or differently composed prefix
 * found nothing. It is now on the key, under the "C" collation as before (a
 * `LIKE 'abc%'` is a range scan in index order that a LIMIT stops early); an
 * account left without a key by 006 (a name taken twice before keys existed)
 * is searched by lower(user_name), as before. Same index name: the EXPLAIN
 * test and the plans name it.
 */
export async function up(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP INDEX IF EXISTS users_name_prefix_idx;
    CREATE INDEX users_name_prefix_idx ON users ((coalesce(name_key, lower(user_name)) COLLATE "C"), user_name);
  `);
}

/** Back to 003's index on lower(user_name). */
export async function down(knex: Knex): Promise<void> {
  await runStatements(knex, `
    DROP INDEX IF EXISTS users_name_prefix_idx;
    CREATE INDEX users_name_prefix_idx ON users ((lower(user_name) COLLATE "C"), user_name);
  `);
}
