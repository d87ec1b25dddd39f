import type { Knex } from 'knex';
import { nameKey } from '../messenger/names';

/**
 * Account names unique after normalisation (messenger/names.ts): a
 * `name_key` column with a unique index. Existing accounts get their key in
 * creation order; a later account whose key is already taken (it would have
 * been refused under the new rule) keeps a NULL key and logs in by its exact
 * name, as before.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE users ADD COLUMN name_key text');
  const users = (await knex('users').select('id', 'user_name').orderBy([{ column: 'created_at' }, { column: 'id' }])) as {
    id: string;
    user_name: string;
  }[];
  const taken = new Set<string>();
  for (const u of users) {
    const key = nameKey(u.user_name);
    if (taken.has(key)) continue;
    taken.add(key);
    await knex('users').where({ id: u.id }).update({ name_key: key });
  }
  await knex.raw('CREATE UNIQUE INDEX users_name_key_uq ON users (name_key)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS users_name_key_uq');
  await knex.raw('ALTER TABLE users DROP COLUMN IF EXISTS name_key');
}
