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
