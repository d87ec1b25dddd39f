import type { Queryable } from '../infra/db';
import { nameKey } from '../names';

export interface UserRow {
  id: string;
  user_name: string;
  password_hash: string;
}

/** Inserts a user; throws PostgreSQL 23505 when the name (or one with the same key, names.ts) is taken. */
export async function insertUser(db: Queryable, userName: string, passwordHash: string): Promise<string> {
  const rows = (await db('users').insert({ user_name: userName, name_key: nameKey(userName), password_hash: passwordHash }).returning('id')) as {
    id: string;
  }[];
  return rows[0].id;
}

/**
 * The account this name stands for: the one with its key (names.ts), else
 * (an account older than the rule, without a key) the one with exactly this name.
 */
export async function findUserByName(db: Queryable, userName: string): Promise<UserRow | undefined> {
  return db('users')
    .select('id', 'user_name', 'password_hash')
    .where({ name_key: nameKey(userName) })
    .orWhere({ user_name: userName })
    .orderByRaw('(name_key IS NULL)')
    .first();
}

/** The account with this id: its name, creation time and password hash. */
export async function findUserById(
  db: Queryable,
  id: string,
): Promise<{ user_name: string; created_at: Date; password_hash: string } | undefined> {
  return db('users').select('user_name', 'created_at', 'password_hash').where({ id }).first();
}

/**
 * The account's password hash, locked until the transaction ends: a
 * password change (an UPDATE of the row) waits for it, and it for one.
 */
export async function lockPasswordHash(trx: Queryable, id: string): Promise<string | undefined> {
  const row = (await trx('users').select('password_hash').where({ id }).forShare().first()) as { password_hash: string } | undefined;
  return row?.password_hash;
}

/** Replaces an account's password hash if it still is `expected`; false (nothing changed) when it is not. */
export async function updatePasswordHash(db: Queryable, id: string, passwordHash: string, expected: string): Promise<boolean> {
  const n = await db('users').where({ id, password_hash: expected }).update({ password_hash: passwordHash });
  return n > 0;
}

/**
 * The people-search statement (exported for the EXPLAIN test): account names
 * whose key (`nameKey`, what login and name uniqueness match: NFKC, case
 * folded; lower(user_name) for an account without one) starts with the
 * prefix's key, in the order of users_name_prefix_idx (that expression under
 * the "C" collation, migration 013), so the LIKE is an index range and LIMIT
 * stops the scan early. Parameters: the prefix's key with `!`, `%` and `_`
 * escaped by `!`, then the limit.
 */
export const NAMES_BY_PREFIX_SQL = `SELECT user_name FROM users
  WHERE coalesce(name_key, lower(user_name)) COLLATE "C" LIKE ? || '%' ESCAPE '!'
  ORDER BY coalesce(name_key, lower(user_name)) COLLATE "C", user_name
  LIMIT ?`;

/** Escapes LIKE's wildcards (and the escape character itself) so the prefix matches literally. */
export function likePrefix(prefix: string): string {
  return prefix.replace(/[!%_]/g, '!$&');
}

/**
 * Up to `limit` account names starting with `prefix` the way names are
 * matched at login (full-width, case and composition aside), in key order.
 */
export async function namesByPrefix(db: Queryable, prefix: string, limit: number): Promise<string[]> {
  const res = (await db.raw(NAMES_BY_PREFIX_SQL, [likePrefix(nameKey(prefix)), limit])) as { rows: { user_name: string }[] };
  return res.rows.map((r) => r.user_name);
}
