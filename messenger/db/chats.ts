import type { Queryable } from '../infra/db';

/** Creates a chat owned by `ownerId` (null when auth is off). */
export async function insertChat(db: Queryable, chatName: string, ownerId: string | null): Promise<string> {
  const rows = (await db('chats').insert({ chat_name: chatName, owner_id: ownerId }).returning('id')) as { id: string }[];
  return rows[0].id;
}
