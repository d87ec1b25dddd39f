import type { Queryable } from '../infra/db';

export interface UserRow {
  id: string;
  user_name: string;
  password_hash: string;
}

/** Inserts a user; throws PostgreSQL 23505 when the name is taken. */
export async function insertUser(db: Queryable, userName: string, passwordHash: string): Promise<string> {
  const rows = (await db('users').insert({ user_name: userName, password_hash: passwordHash }).returning('id')) as {
    id: string;
  }[];
  return rows[0].id;
}

/** The user with this exact name, if any. */
export async function findUserByName(db: Queryable, userName: string): Promise<UserRow | undefined> {
  return db('users').select('id', 'user_name', 'password_hash').where({ user_name: userName }).first();
}

/** The account with this id: its name, creation time and password hash. */
export async function findUserById(
  db: Queryable,
  id: string,
): Promise<{ user_name: string; created_at: Date; password_hash: string } | undefined> {
  return db('users').select('user_name', 'created_at', 'password_hash').where({ id }).first();
}

/** Replaces an account's password hash. */
export async function updatePasswordHash(db: Queryable, id: string, passwordHash: string): Promise<void> {
  await db('users').where({ id }).update({ password_hash: passwordHash });
}
